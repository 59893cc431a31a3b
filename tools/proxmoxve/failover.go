package proxmoxve

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
)

// FailoverWait bounds how long a VM's read waits out a failover (waitOutFailover).
var FailoverWait = 150 * time.Second

const failoverPoll = 2 * time.Second

// waitOutFailover wraps the VM resource's Read (a refresh, an import).
//
// During a failover, between the node's death and the HA manager starting the VM elsewhere, PVE
// still lists the VM on the dead node (/cluster/resources), and a read of its config through that
// node answers 595: pveproxy cannot reach the node (PVE's `proxyto => 'node'`). bpg's vmRead reads
// there and fails, so the refresh that starts every `pulumi up` and `pulumi preview` failed for the
// whole window (about 30 s in the lab, up to two minutes on a cluster: the fence delay plus the
// start). The read is tried again every 2 s for up to FailoverWait: once HA has started the VM on
// another node, /cluster/resources names that node and the read succeeds there. A node that stays
// unreachable still fails the read, FailoverWait later, with PVE's 595.
//
// Only reads are retried: nothing is written to a VM whose node cannot be reached.
func waitOutFailover(read schema.ReadContextFunc) schema.ReadContextFunc {
	return func(ctx context.Context, d *schema.ResourceData, m any) diag.Diagnostics {
		deadline := time.Now().Add(FailoverWait)
		for {
			diags := read(ctx, d, m)
			if !nodeUnreachable(diags) || time.Now().Add(failoverPoll).After(deadline) {
				return diags
			}
			select {
			case <-ctx.Done():
				return diags
			case <-time.After(failoverPoll):
			}
		}
	}
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

// withFailoverReads installs waitOutFailover on the SDKv2 provider's VM resource.
func withFailoverReads(p *schema.Provider) *schema.Provider {
	if vm, ok := p.ResourcesMap["proxmox_virtual_environment_vm"]; ok && vm.ReadContext != nil {
		vm.ReadContext = waitOutFailover(vm.ReadContext)
	}
	return p
}
