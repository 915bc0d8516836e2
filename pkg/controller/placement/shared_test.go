package placement

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	rules "github.com/spillway-dev/spillway/pkg/placement"
)

// replicas returns n webhooks, each with its own tracker (as replicas
// have), on one API server (a fake client holding the policy's status).
func replicas(t *testing.T, n int, share bool, funcs *interceptor.Funcs, objs ...client.Object) []*env {
	t.Helper()
	s := scheme(t)
	b := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.ResourcePolicy{}).
		WithIndex(&corev1.Pod{}, IndexOccupiedNode, IndexOccupiedNodeFunc).
		WithIndex(&corev1.Pod{}, IndexPlacementID, IndexPlacementIDFunc)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	clk := clocktesting.NewFakeClock(t0.Add(time.Hour))
	var out []*env
	for range n {
		m, err := NewMetrics(prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		tr := rules.NewTracker(clk, 5*time.Second, 2*time.Minute)
		hook := New(c, admission.NewDecoder(s), tr, events.NewFakeRecorder(100), m, clk, testKeys)
		if share {
			hook.ShareReservations(c, c)
		}
		out = append(out, &env{hook: hook, tracker: tr, clock: clk, metrics: m})
	}
	return out
}

// TestMaxAcrossReplicas splits a burst between two replicas: with shared
// reservations the unit's max holds; without them (each replica counting
// only its own) it does not, which shows the test can fail.
func TestMaxAcrossReplicas(t *testing.T) {
	for _, tc := range []struct {
		share bool
		want  string
	}{
		{share: true, want: "001111"},
		{share: false, want: "000011"},
	} {
		t.Run(fmt.Sprintf("share=%v", tc.share), func(t *testing.T) {
			rs := replicas(t, 2, tc.share, nil,
				seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr[int32](2) }), gpuNode("onprem-1", onPremPool, 8))
			var got []string
			for i := range 6 {
				_, placed := rs[i%2].admit(t, predictor(fmt.Sprintf("p-%d", i)))
				got = append(got, unitOf(placed))
			}
			if s := strings.Join(got, ""); s != tc.want {
				t.Errorf("units = %s, want %s", s, tc.want)
			}
		})
	}
}

// TestSharedConflictsSpill: a status write that keeps conflicting never
// over-admits: the unit with a max counts as full and the pod goes to the
// next unit.
func TestSharedConflictsSpill(t *testing.T) {
	funcs := &interceptor.Funcs{SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
		return apierrors.NewConflict(schema.GroupResource{Group: "spillway.dev", Resource: "resourcepolicies"}, obj.GetName(), fmt.Errorf("busy"))
	}}
	rs := replicas(t, 1, true, funcs,
		seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr[int32](2) }), gpuNode("onprem-1", onPremPool, 8))
	_, placed := rs[0].admit(t, predictor("p-0"))
	if u := unitOf(placed); u != "1" {
		t.Errorf("unit = %s, want 1 (the unit with a max treated as full)", u)
	}
	if n := testutil.ToFloat64(rs[0].metrics.Errors.WithLabelValues(reasonShared)); n != 1 {
		t.Errorf("shared-reservation errors = %v, want 1", n)
	}
}
