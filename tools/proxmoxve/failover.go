package proxmoxve

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bpg/terraform-provider-proxmox/proxmoxtf"

	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
)

// keepWhileUnreachable wraps the VM resource's Read (a refresh, an import).
//
// After a node dies, until the HA manager has started its VMs elsewhere (the fence delay plus the
// start: about 30 s in the lab, up to two minutes on a cluster), PVE still lists a VM on the dead
// node (/cluster/resources), and a read of its config through any other node answers 595:
// pveproxy cannot reach the node (PVE's `proxyto => 'node'`). bpg's vmRead fails there (bpg
// #692), so the refresh that starts every `pulumi up` and `pulumi preview` failed for the whole
// window. PVE cannot tell more about the VM than the state already holds until HA moves it, so
// the read keeps the recorded state and says why in a warning: nothing waits on a dead node, and
// once HA has started the VM elsewhere the next read sees it there.
//
// Only reads: nothing is written to a VM whose node cannot be reached (guardWrites).
func keepWhileUnreachable(read schema.ReadContextFunc) schema.ReadContextFunc {
	return func(ctx context.Context, d *schema.ResourceData, m any) diag.Diagnostics {
		diags := read(ctx, d, m)
		if !nodeUnreachable(diags) {
			return diags
		}
		node, _ := d.Get("node_name").(string)
		return diag.Diagnostics{{
			Severity: diag.Warning,
			Summary:  fmt.Sprintf("VM %s: its node %s does not answer (PVE 595); its recorded state is kept until the node is back or HA has started it on another node", d.Id(), node),
		}}
	}
}

// guardWrites wraps the VM resource's Create, Update and Delete: a VM whose node the cluster has
// offline (/cluster/resources) is refused at once, in one line that names the node and what to do,
// instead of bpg's retries of PVE's 595 on every call; a 595 that still comes back (the seconds
// before the cluster marks the node) is turned into the same line.
func guardWrites(what string, op func(context.Context, *schema.ResourceData, any) diag.Diagnostics) func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
	return func(ctx context.Context, d *schema.ResourceData, m any) diag.Diagnostics {
		node, _ := d.Get("node_name").(string)
		if status := nodeStatus(ctx, m, node); status != "" && status != "online" {
			return nodeDown(what, d, node, status)
		}
		diags := op(ctx, d, m)
		if nodeUnreachable(diags) {
			return nodeDown(what, d, node, "unreachable")
		}
		return diags
	}
}

func nodeDown(what string, d *schema.ResourceData, node, status string) diag.Diagnostics {
	vm := d.Id()
	if vm == "" {
		if id, ok := d.Get("vm_id").(int); ok && id > 0 {
			vm = fmt.Sprint(id)
		}
	}
	return diag.Errorf("cannot %s VM %s: its node %s is %s (a node of the cluster is down); "+
		"bring %s back, or for a new VM set its node to a live one (vms[].node); an HA VM is started on another node by HA: run again once it has", what, vm, node, status, node)
}

// DeleteRaceWait bounds how long a VM's delete goes on trying while a start holds the VM.
var DeleteRaceWait = 120 * time.Second

// deleteAgainAfterAStart wraps the VM resource's Delete.
//
// A destroy that meets a start in flight (HA starting the VM: its HA resource was just removed,
// but the LRM's `qm start` already runs) fails in PVE's destroy_vm, whose task checks the VM again
// under the config lock: "VM <id> is running - destroy failed", or the lock's timeout ("can't lock
// file '/var/lock/qemu-server/lock-<id>.conf' - got timeout") while the start holds it. bpg read
// the VM as stopped, skipped the stop and does not retry a failed task, so the destroy failed and
// a second `pulumi destroy` was needed (stop, then delete). The delete is run again, each time
// reading the VM afresh (bpg stops a running VM before it deletes it), until it succeeds or
// DeleteRaceWait has passed.
func deleteAgainAfterAStart(del func(context.Context, *schema.ResourceData, any) diag.Diagnostics) func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
	return func(ctx context.Context, d *schema.ResourceData, m any) diag.Diagnostics {
		deadline := time.Now().Add(DeleteRaceWait)
		for {
			diags := del(ctx, d, m)
			if !racedWithAStart(diags) || time.Now().Add(deleteRetryPause).After(deadline) {
				return diags
			}
			select {
			case <-ctx.Done():
				return diags
			case <-time.After(deleteRetryPause):
			}
		}
	}
}

const deleteRetryPause = 2 * time.Second

func racedWithAStart(diags diag.Diagnostics) bool {
	for _, d := range diags {
		text := d.Summary + " " + d.Detail
		if d.Severity == diag.Error && (strings.Contains(text, "is running - destroy failed") || (strings.Contains(text, "can't lock file") && strings.Contains(text, "got timeout"))) {
			return true
		}
	}
	return false
}

// nodeStatus: the node's status in /cluster/resources ("online", "offline", ...), "" when unknown.
func nodeStatus(ctx context.Context, m any, node string) string {
	cfg, ok := m.(proxmoxtf.ProviderConfiguration)
	if !ok || node == "" {
		return ""
	}
	client, err := cfg.GetClient()
	if err != nil {
		return ""
	}
	nodes, err := client.Cluster().GetClusterResources(ctx, "node")
	if err != nil {
		return ""
	}
	for _, n := range nodes {
		if n.NodeName == node {
			return n.Status
		}
	}
	return ""
}

// nodeUnreachable: the diagnostics carry PVE's 595 (bpg: "received an HTTP 595 response").
func nodeUnreachable(diags diag.Diagnostics) bool {
	for _, d := range diags {
		if d.Severity == diag.Error && strings.Contains(d.Summary+" "+d.Detail, "HTTP 595 response") {
			return true
		}
	}
	return false
}

// withNodeFailures installs keepWhileUnreachable and guardWrites on the SDKv2 provider's VM resource.
func withNodeFailures(p *schema.Provider) *schema.Provider {
	vm, ok := p.ResourcesMap["proxmox_virtual_environment_vm"]
	if !ok {
		return p
	}
	if vm.ReadContext != nil {
		vm.ReadContext = keepWhileUnreachable(vm.ReadContext)
	}
	if vm.CreateContext != nil {
		vm.CreateContext = guardWrites("create", vm.CreateContext)
	}
	if vm.UpdateContext != nil {
		vm.UpdateContext = guardWrites("update", vm.UpdateContext)
	}
	if vm.DeleteContext != nil {
		vm.DeleteContext = guardWrites("delete", deleteAgainAfterAStart(vm.DeleteContext))
	}
	return p
}
