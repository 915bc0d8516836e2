package framework

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A check that ends close to the deadline may fail only because of it (a
// client's rate limiter refuses a wait it predicts would pass the
// deadline); the error names the check before it instead.
func TestPollReportsTheLastCheckNotCutShort(t *testing.T) {
	const interval = 50 * time.Millisecond
	err := Poll(context.Background(), 300*time.Millisecond, interval, func(ctx context.Context) (bool, string) {
		if dl, _ := ctx.Deadline(); time.Until(dl) < interval {
			return false, "rate: Wait(n=1) would exceed context deadline"
		}
		return false, "2 pods pending"
	})
	if err == nil || !strings.Contains(err.Error(), "2 pods pending") {
		t.Errorf("Poll = %v, want the last full check's message", err)
	}
	if err := Poll(context.Background(), time.Second, interval, func(context.Context) (bool, string) { return true, "" }); err != nil {
		t.Errorf("Poll of a met condition = %v", err)
	}
}
