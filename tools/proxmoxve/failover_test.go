package proxmoxve

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
)

func unreachable() diag.Diagnostics {
	return diag.Errorf("error retrieving VM 461: received an HTTP 595 response - Reason: No route to host")
}

func TestAReadWaitsOutAFailover(t *testing.T) {
	FailoverWait = 10 * time.Second
	calls := 0
	read := waitOutFailover(func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
		calls++
		if calls < 3 {
			return unreachable()
		}
		return nil
	})
	if diags := read(context.Background(), nil, nil); diags.HasError() || calls != 3 {
		t.Fatalf("want success on the third read, got %v after %d reads", diags, calls)
	}
}

func TestANodeThatStaysUnreachableStillFails(t *testing.T) {
	FailoverWait = 3 * time.Second
	calls := 0
	read := waitOutFailover(func(context.Context, *schema.ResourceData, any) diag.Diagnostics { calls++; return unreachable() })
	if diags := read(context.Background(), nil, nil); !nodeUnreachable(diags) || calls < 1 || calls > 2 {
		t.Fatalf("want the 595 back after the wait, got %v after %d reads", diags, calls)
	}
}

func TestOtherErrorsAreNotRetried(t *testing.T) {
	calls := 0
	read := waitOutFailover(func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
		calls++
		return diag.Errorf("rbd: listing images failed: (13) Permission denied")
	})
	if diags := read(context.Background(), nil, nil); !diags.HasError() || calls != 1 {
		t.Fatalf("want one read and its error, got %v after %d reads", diags, calls)
	}
}
