package proxmoxve

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	"github.com/hashicorp/terraform-plugin-sdk/v2/terraform"
)

func unreachable() diag.Diagnostics {
	return diag.Errorf("error retrieving VM 461: received an HTTP 595 response - Reason: No route to host")
}

func vmData(t *testing.T) *schema.ResourceData {
	t.Helper()
	r := &schema.Resource{Schema: map[string]*schema.Schema{
		"node_name": {Type: schema.TypeString, Optional: true},
		"vm_id":     {Type: schema.TypeInt, Optional: true},
	}}
	d := r.Data(&terraform.InstanceState{ID: "461", Attributes: map[string]string{"node_name": "pve-node1", "vm_id": "461"}})
	return d
}

func TestAReadOfAVmOnADeadNodeKeepsItsStateAtOnce(t *testing.T) {
	calls := 0
	read := keepWhileUnreachable(func(context.Context, *schema.ResourceData, any) diag.Diagnostics { calls++; return unreachable() })
	diags := read(context.Background(), vmData(t), nil)
	if diags.HasError() || calls != 1 || len(diags) != 1 || !strings.Contains(diags[0].Summary, "pve-node1 does not answer") {
		t.Fatalf("want one read and a warning naming the node, got %v after %d reads", diags, calls)
	}
}

func TestOtherReadErrorsAreKept(t *testing.T) {
	read := keepWhileUnreachable(func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
		return diag.Errorf("rbd: listing images failed: (13) Permission denied")
	})
	if diags := read(context.Background(), vmData(t), nil); !diags.HasError() {
		t.Fatalf("want the error back, got %v", diags)
	}
}

func TestAWriteThatMeetsA595SaysTheNodeIsDownInOneLine(t *testing.T) {
	update := guardWrites("update", func(context.Context, *schema.ResourceData, any) diag.Diagnostics { return unreachable() })
	diags := update(context.Background(), vmData(t), nil)
	if len(diags) != 1 || !diags.HasError() {
		t.Fatalf("want one error, got %v", diags)
	}
	msg := diags[0].Summary
	for _, want := range []string{"cannot update VM 461", "pve-node1", "vms[].node", "run again"} {
		if !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
			t.Fatalf("%q: want one line with %q", msg, want)
		}
	}
}

func TestADeleteThatMeetsAStartInFlightIsRunAgain(t *testing.T) {
	calls := 0
	del := deleteAgainAfterAStart(func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
		calls++
		if calls == 1 {
			return diag.Errorf("error waiting for VM removal: task \"UPID:pve-node2:...:qmdestroy:461:root@pam!t:\" failed to complete with exit code: VM 461 is running - destroy failed")
		}
		return nil
	})
	if diags := del(context.Background(), vmData(t), nil); diags.HasError() || calls != 2 {
		t.Fatalf("want success on the second delete, got %v after %d", diags, calls)
	}
}

func TestOtherDeleteErrorsAreNotRetried(t *testing.T) {
	calls := 0
	del := deleteAgainAfterAStart(func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
		calls++
		return diag.Errorf("permission check failed (/vms/461, VM.Allocate)")
	})
	if diags := del(context.Background(), vmData(t), nil); !diags.HasError() || calls != 1 {
		t.Fatalf("want one delete and its error, got %v after %d", diags, calls)
	}
}
