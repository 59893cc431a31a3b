package proxmoxve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/bpg/terraform-provider-proxmox/proxmox/api"
	"github.com/bpg/terraform-provider-proxmox/proxmox/cluster"
	"github.com/bpg/terraform-provider-proxmox/proxmoxtf"

	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
)

// A VM's owner: the PVE tag that starts with OwnerTagPrefix (pulumi-stack.<project>.<stack>),
// written by the program in the create call itself (bpg sends `tags` in POST /nodes/{node}/qemu).
//
// bpg treats PVE's 500 "VM <id> already exists" as transient and, on the retry, as done
// (proxmox/nodes/vms CreateVM, WithAlreadyDoneCheck): a create over an id a person or another
// stack already uses adopts that VM, and a later destroy deletes it. bpg #2925 is the same danger
// from the other side (a VM deleted outside, its id reused by an unrelated VM; closed as wontfix:
// "no unique ID other than VMID"). The tag is the missing unique mark: the VM resource's create,
// update and delete go on only when the VM at that id carries the tag the stack recorded, and
// its read drops a VM that no longer does.
const OwnerTagPrefix = "pulumi-stack."

// ownerOf: the owner tag among TAGS ("" when none).
func ownerOf(tags []string) string {
	for _, tag := range tags {
		if t := strings.ToLower(strings.TrimSpace(tag)); strings.HasPrefix(t, OwnerTagPrefix) {
			return t
		}
	}
	return ""
}

func tagList(value any) []string {
	items, _ := value.([]any)
	out := make([]string, 0, len(items))
	for _, item := range items {
		if s, ok := item.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// clusterVM: a VM as /cluster/resources lists it (PVE 7.3 and later list each guest's tags).
type clusterVM struct {
	VMID int    `json:"vmid"`
	Node string `json:"node"`
	Name string `json:"name"`
	Tags string `json:"tags"`
}

func (v clusterVM) owner() string {
	return ownerOf(strings.FieldsFunc(v.Tags, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }))
}

// errNoClient: the provider is not configured (a preview whose provider configuration is not known
// yet): the lookup cannot tell, and the preview's check gives no verdict.
var errNoClient = errors.New("the provider is not configured")

// lookupVM: the VM with this id in the cluster, nil when there is none. A variable for the tests.
var lookupVM = func(ctx context.Context, m any, vmid int) (*clusterVM, error) {
	cfg, ok := m.(proxmoxtf.ProviderConfiguration)
	if !ok {
		return nil, errNoClient
	}
	client, err := cfg.GetClient()
	if err != nil {
		return nil, err
	}
	var body struct {
		Data []clusterVM `json:"data"`
	}
	if err := client.API().DoRequest(ctx, http.MethodGet, "cluster/resources", &cluster.ResourcesListRequestBody{Type: "vm"}, &body); err != nil {
		return nil, err
	}
	for _, vm := range body.Data {
		if vm.VMID == vmid {
			return &vm, nil
		}
	}
	return nil, nil
}

// notOurs: the one-line refusal, naming the VM, who it belongs to and the ways out.
func notOurs(what string, vm *clusterVM, want string) error {
	whose := "carries no owner tag (a VM made by hand, or before pve-ceph-ha marked its VMs)"
	if owner := vm.owner(); owner != "" {
		whose = fmt.Sprintf("carries %s: it belongs to stack %s", owner, strings.TrimPrefix(owner, OwnerTagPrefix))
	}
	mine := "this stack's tag"
	if want != "" {
		mine = want
	}
	return fmt.Errorf("cannot %s VM %d (%q on %s): it is not this stack's, it %s, not %s; nothing was changed. "+
		"Give this VM another id (vms[].id), or take the VM over on purpose with `pulumi import` (README, Sharing a cluster)",
		what, vm.VMID, vm.Name, vm.Node, whose, mine)
}

// createRefusal: why a create of VM VMID carrying the PLANNED owner tag must not go on (nil: it
// may), or the error of the lookup that could not tell. A create may go on when the id is free,
// or holds the stack's own half-made VM (an interrupted `up`: the tag went in with the create
// call, so the rerun adopts it as before).
func createRefusal(ctx context.Context, m any, vmid int, planned string) (refusal, lookupErr error) {
	if vmid <= 0 {
		return nil, nil // PVE picks a free id
	}
	vm, err := lookupVM(ctx, m, vmid)
	if err != nil {
		return nil, err
	}
	if vm == nil || (planned != "" && vm.owner() == planned) {
		return nil, nil
	}
	return notOurs("create", vm, planned), nil
}

// checkCreate: the create itself is strict: an id whose owner cannot be told is not created over.
func checkCreate(ctx context.Context, m any, vmid int, planned string) error {
	refusal, err := createRefusal(ctx, m, vmid, planned)
	if err != nil {
		return fmt.Errorf("cannot create VM %d: checking who owns the id failed: %w", vmid, err)
	}
	return refusal
}

// guardCreate wraps the VM resource's Create.
func guardCreate(create func(context.Context, *schema.ResourceData, any) diag.Diagnostics) func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
	return func(ctx context.Context, d *schema.ResourceData, m any) diag.Diagnostics {
		vmid, _ := d.Get("vm_id").(int)
		if err := checkCreate(ctx, m, vmid, ownerOf(tagList(d.Get("tags")))); err != nil {
			return diag.FromErr(err)
		}
		return create(ctx, d, m)
	}
}

// guardChange wraps the VM resource's Update and Delete: the VM at the id must carry the tag the
// stack recorded (none for a VM made before the tags: the state holding it is the stack's word),
// or, for an update, the tag it is about to write.
func guardChange(what string, op func(context.Context, *schema.ResourceData, any) diag.Diagnostics) func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
	return func(ctx context.Context, d *schema.ResourceData, m any) diag.Diagnostics {
		vmid, _ := d.Get("vm_id").(int)
		if vmid <= 0 {
			return op(ctx, d, m)
		}
		before, after := d.GetChange("tags")
		recorded, planned := ownerOf(tagList(before)), ownerOf(tagList(after))
		vm, err := lookupVM(ctx, m, vmid)
		if err != nil {
			return diag.Errorf("cannot %s VM %d: checking who owns it failed: %s", what, vmid, err)
		}
		if vm == nil || vm.owner() == recorded || (planned != "" && vm.owner() == planned) {
			return op(ctx, d, m)
		}
		return diag.FromErr(notOurs(what, vm, recorded))
	}
}

// dropWhenNotOurs wraps the VM resource's Read (every refresh: the project refreshes before each
// preview, up and destroy). A VM recorded with the stack's tag that now has another tag, or none,
// is not the VM the stack made: it was deleted outside and its id reused (bpg #2925), or handed
// over by someone removing the tag. The read reports it gone, with a warning; the next `up` then
// plans a create, which the create's guard refuses, and a `destroy` leaves it alone.
func dropWhenNotOurs(read schema.ReadContextFunc) schema.ReadContextFunc {
	return func(ctx context.Context, d *schema.ResourceData, m any) diag.Diagnostics {
		recorded := ownerOf(tagList(d.Get("tags")))
		diags := read(ctx, d, m)
		if diags.HasError() || recorded == "" || d.Id() == "" {
			return diags
		}
		now := ownerOf(tagList(d.Get("tags")))
		if now == recorded {
			return diags
		}
		id := d.Id()
		node, _ := d.Get("node_name").(string)
		name, _ := d.Get("name").(string)
		d.SetId("")
		carries := "no owner tag"
		if now != "" {
			carries = now
		}
		return append(diags, diag.Diagnostic{
			Severity: diag.Warning,
			Summary: fmt.Sprintf("VM %s (%q on %s) carries %s, not %s: it is not the VM this stack made (deleted outside and its id reused?); "+
				"it is dropped from the stack's state and left alone", id, name, node, carries, recorded),
		})
	}
}

// readStatus: PVE's answer to GET /nodes/{node}/qemu/{vmid}/status/current (nil: it answered). A
// variable for the tests.
var readStatus = func(ctx context.Context, m any, node string, vmid int) error {
	cfg, ok := m.(proxmoxtf.ProviderConfiguration)
	if !ok {
		return errNoClient
	}
	client, err := cfg.GetClient()
	if err != nil {
		return err
	}
	var body map[string]any
	return client.API().DoRequest(ctx, http.MethodGet, fmt.Sprintf("nodes/%s/qemu/%d/status/current", node, vmid), nil, &body)
}

// keepWhenHidden wraps the VM resource's Read. bpg looks the VM up in /cluster/resources and
// reports it gone when the list does not hold it; PVE lists only the VMs the token may audit, so
// a token that lost VM.Audit would have every VM dropped from the state by a refresh, and the next
// `up` would "create" them again: bpg's already-exists retry adopts an ISO VM, and a template's
// create fails at its conversion ("you can't convert a template to a template"). When the read
// reports a recorded VM gone, the VM's own status is asked: PVE's 403 keeps the VM in the state and
// fails the read, naming the privilege; any other answer leaves bpg's verdict.
func keepWhenHidden(read schema.ReadContextFunc) schema.ReadContextFunc {
	return func(ctx context.Context, d *schema.ResourceData, m any) diag.Diagnostics {
		id := d.Id()
		node, _ := d.Get("node_name").(string)
		vmid, _ := d.Get("vm_id").(int)
		diags := read(ctx, d, m)
		if diags.HasError() || id == "" || d.Id() != "" || node == "" || vmid <= 0 {
			return diags
		}
		var refused *api.HTTPError
		if err := readStatus(ctx, m, node, vmid); errors.As(err, &refused) && refused.Code == http.StatusForbidden {
			d.SetId(id)
			return append(diags, diag.Errorf("cannot read VM %d on %s: %s; PVE lists only the VMs the API token may audit, so the VM "+
				"stays in the stack's state. Grant VM.Audit on /vms/%d (docs/permissions.md)", vmid, node, refused.Message, vmid)...)
		}
		return diags
	}
}

// checkPlannedCreate wraps the VM resource's CustomizeDiff, so that `pulumi preview` already
// refuses a create over a VM that is not the stack's.
func checkPlannedCreate(inner schema.CustomizeDiffFunc) schema.CustomizeDiffFunc {
	return func(ctx context.Context, d *schema.ResourceDiff, m any) error {
		if inner != nil {
			if err := inner(ctx, d, m); err != nil {
				return err
			}
		}
		if d.Id() != "" || !d.NewValueKnown("vm_id") || !d.NewValueKnown("tags") {
			return nil
		}
		vmid, _ := d.Get("vm_id").(int)
		refusal, _ := createRefusal(ctx, m, vmid, ownerOf(tagList(d.Get("tags"))))
		return refusal // a preview the API does not answer (or an unconfigured provider): no verdict; the create itself checks
	}
}

// withOwnership installs the owner checks on the SDKv2 provider's VM resource.
func withOwnership(p *schema.Provider) *schema.Provider {
	vm, ok := p.ResourcesMap["proxmox_virtual_environment_vm"]
	if !ok {
		return p
	}
	if vm.ReadContext != nil {
		vm.ReadContext = keepWhenHidden(dropWhenNotOurs(vm.ReadContext))
	}
	if vm.CreateContext != nil {
		vm.CreateContext = guardCreate(vm.CreateContext)
	}
	if vm.UpdateContext != nil {
		vm.UpdateContext = guardChange("update", vm.UpdateContext)
	}
	if vm.DeleteContext != nil {
		vm.DeleteContext = guardChange("delete", vm.DeleteContext)
	}
	vm.CustomizeDiff = checkPlannedCreate(vm.CustomizeDiff)
	return p
}
