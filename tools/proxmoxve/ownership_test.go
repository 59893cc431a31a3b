package proxmoxve

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/bpg/terraform-provider-proxmox/proxmox/api"
	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	"github.com/hashicorp/terraform-plugin-sdk/v2/terraform"
)

const lab = "pulumi-stack.pve-ceph-ha.lab"

// inCluster makes lookupVM answer VM (nil: the id is free) for the test's duration.
func inCluster(t *testing.T, vm *clusterVM) *int {
	t.Helper()
	calls := 0
	saved := lookupVM
	lookupVM = func(_ context.Context, _ any, vmid int) (*clusterVM, error) {
		calls++
		if vm == nil || vm.VMID != vmid {
			return nil, nil
		}
		return vm, nil
	}
	t.Cleanup(func() { lookupVM = saved })
	return &calls
}

var vmSchema = map[string]*schema.Schema{
	"node_name": {Type: schema.TypeString, Optional: true},
	"vm_id":     {Type: schema.TypeInt, Optional: true},
	"name":      {Type: schema.TypeString, Optional: true},
	"tags":      {Type: schema.TypeList, Optional: true, Elem: &schema.Schema{Type: schema.TypeString}},
}

// planned: a VM's data as a create sees it (no id yet), with TAGS.
func planned(t *testing.T, tags ...string) *schema.ResourceData {
	t.Helper()
	d := (&schema.Resource{Schema: vmSchema}).Data(nil)
	for key, value := range map[string]any{"vm_id": 150, "node_name": "pve-node1", "tags": tags} {
		if err := d.Set(key, value); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// recorded: a VM's data as the state holds it, with TAGS.
func recorded(t *testing.T, tags ...string) *schema.ResourceData {
	t.Helper()
	attrs := map[string]string{"node_name": "pve-node1", "vm_id": "150", "name": "app", "tags.#": strconv.Itoa(len(tags))}
	for i, tag := range tags {
		attrs["tags."+strconv.Itoa(i)] = tag
	}
	return (&schema.Resource{Schema: vmSchema}).Data(&terraform.InstanceState{ID: "150", Attributes: attrs})
}

func done(calls *int) func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
	return func(context.Context, *schema.ResourceData, any) diag.Diagnostics { *calls++; return nil }
}

func TestACreateOverAVmMadeByHandIsRefusedBeforeAnyCall(t *testing.T) {
	inCluster(t, &clusterVM{VMID: 150, Node: "pve-node2", Name: "handmade", Tags: "backup"})
	calls := 0
	diags := guardCreate(done(&calls))(context.Background(), planned(t, lab), nil)
	if !diags.HasError() || calls != 0 {
		t.Fatalf("want a refusal and no create, got %v after %d creates", diags, calls)
	}
	msg := diags[0].Summary
	for _, want := range []string{"VM 150", `"handmade"`, "pve-node2", "no owner tag", "nothing was changed", "pulumi import", "vms[].id"} {
		if !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
			t.Fatalf("%q: want one line with %q", msg, want)
		}
	}
}

func TestACreateOverAnotherStacksVmNamesThatStack(t *testing.T) {
	inCluster(t, &clusterVM{VMID: 150, Node: "pve-node1", Name: "app", Tags: "pulumi-stack.pve-ceph-ha.prod"})
	calls := 0
	diags := guardCreate(done(&calls))(context.Background(), planned(t, lab), nil)
	if !diags.HasError() || calls != 0 || !strings.Contains(diags[0].Summary, "belongs to stack pve-ceph-ha.prod") {
		t.Fatalf("want a refusal naming the other stack, got %v after %d creates", diags, calls)
	}
}

func TestACreateOnAFreeIdOrOverTheStacksOwnHalfMadeVmGoesOn(t *testing.T) {
	for _, vm := range []*clusterVM{nil, {VMID: 150, Node: "pve-node1", Tags: "no-ha;" + lab}} {
		inCluster(t, vm)
		calls := 0
		if diags := guardCreate(done(&calls))(context.Background(), planned(t, lab), nil); diags.HasError() || calls != 1 {
			t.Fatalf("%v: want the create, got %v after %d creates", vm, diags, calls)
		}
	}
}

func TestACreateWithoutAnOwnerTagNeverAdoptsAnExistingVm(t *testing.T) {
	inCluster(t, &clusterVM{VMID: 150, Node: "pve-node1"})
	calls := 0
	if diags := guardCreate(done(&calls))(context.Background(), planned(t), nil); !diags.HasError() || calls != 0 {
		t.Fatalf("want a refusal, got %v after %d creates", diags, calls)
	}
}

func TestAnUpdateOrDeleteOfAVmThatIsNoLongerTheStacksIsRefused(t *testing.T) {
	inCluster(t, &clusterVM{VMID: 150, Node: "pve-node3", Name: "other"})
	for _, what := range []string{"update", "delete"} {
		calls := 0
		diags := guardChange(what, done(&calls))(context.Background(), recorded(t, lab), nil)
		if !diags.HasError() || calls != 0 || !strings.Contains(diags[0].Summary, "cannot "+what+" VM 150") {
			t.Fatalf("%s: want a refusal, got %v after %d calls", what, diags, calls)
		}
	}
}

func TestAVmMadeBeforeTheTagsIsTheStacksBecauseTheStateHoldsIt(t *testing.T) {
	inCluster(t, &clusterVM{VMID: 150, Node: "pve-node1", Name: "app"})
	calls := 0
	if diags := guardChange("update", done(&calls))(context.Background(), recorded(t), nil); diags.HasError() || calls != 1 {
		t.Fatalf("want the update (it writes the tag), got %v after %d", diags, calls)
	}
}

func TestAReadOfAVmWhoseTagChangedDropsItWithAWarning(t *testing.T) {
	d := recorded(t, lab)
	read := dropWhenNotOurs(func(_ context.Context, d *schema.ResourceData, _ any) diag.Diagnostics {
		_ = d.Set("tags", []string{"backup"}) // what bpg reads from the VM now at id 150
		return nil
	})
	diags := read(context.Background(), d, nil)
	if diags.HasError() || d.Id() != "" || len(diags) != 1 || !strings.Contains(diags[0].Summary, "left alone") {
		t.Fatalf("want the VM dropped with a warning, got id %q and %v", d.Id(), diags)
	}
}

func TestAReadOfTheStacksOwnVmKeepsIt(t *testing.T) {
	for _, tags := range [][]string{{lab}, {}} {
		d := recorded(t, tags...)
		read := dropWhenNotOurs(func(context.Context, *schema.ResourceData, any) diag.Diagnostics { return nil })
		if diags := read(context.Background(), d, nil); len(diags) != 0 || d.Id() != "150" {
			t.Fatalf("%v: want the VM kept, got id %q and %v", tags, d.Id(), diags)
		}
	}
}

// statusAnswers makes readStatus answer ERR for the test's duration.
func statusAnswers(t *testing.T, err error) {
	t.Helper()
	saved := readStatus
	readStatus = func(context.Context, any, string, int) error { return err }
	t.Cleanup(func() { readStatus = saved })
}

func gone(_ context.Context, d *schema.ResourceData, _ any) diag.Diagnostics {
	d.SetId("") // what bpg's read does when /cluster/resources does not list the VM
	return nil
}

func TestAVmTheTokenMayNotAuditStaysInTheState(t *testing.T) {
	statusAnswers(t, &api.HTTPError{Code: 403, Message: "Permission check failed (/vms/150, VM.Audit)"})
	d := recorded(t, lab)
	diags := keepWhenHidden(gone)(context.Background(), d, nil)
	if !diags.HasError() || d.Id() != "150" || !strings.Contains(diags[0].Summary, "Grant VM.Audit on /vms/150") {
		t.Fatalf("want the VM kept and the read failed naming VM.Audit, got id %q and %v", d.Id(), diags)
	}
}

func TestAVmPveNoLongerHasIsGone(t *testing.T) {
	statusAnswers(t, &api.HTTPError{Code: 500, Message: "Configuration file 'nodes/pve-node1/qemu-server/150.conf' does not exist"})
	d := recorded(t, lab)
	if diags := keepWhenHidden(gone)(context.Background(), d, nil); diags.HasError() || d.Id() != "" {
		t.Fatalf("want the VM gone, got id %q and %v", d.Id(), diags)
	}
}
