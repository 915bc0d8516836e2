package placementwebhook

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
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
		tr := rules.NewTracker(clk, 5*time.Second, 2*time.Minute)
		hook, err := New(c, admission.NewDecoder(s), events.NewFakeRecorder(100), prometheus.NewRegistry(), Options{Tracker: tr, Clock: clk, Keys: testKeys})
		if err != nil {
			t.Fatal(err)
		}
		if share {
			hook.ShareReservations(c, c)
		}
		out = append(out, &env{hook: hook, tracker: tr, clock: clk, metrics: hook.metrics})
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
				seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr.To[int32](2) }), gpuNode("onprem-1", onPremPool, 8))
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
		seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr.To[int32](2) }), gpuNode("onprem-1", onPremPool, 8))
	_, placed := rs[0].admit(t, predictor("p-0"))
	if u := unitOf(placed); u != "1" {
		t.Errorf("unit = %s, want 1 (the unit with a max treated as full)", u)
	}
	if n := testutil.ToFloat64(rs[0].metrics.Errors.WithLabelValues(reasonShared)); n != 1 {
		t.Errorf("shared-reservation errors = %v, want 1", n)
	}
}

// TestPodSeenWhileDeciding: the pods another replica placed reach this
// replica's cache after it counted the unit but before it reads the shared
// reservations. Their reservations must still count them: dropping them
// because the cache now shows the pods would leave them counted nowhere
// and admit a third pod into a unit with max 2.
func TestPodSeenWhileDeciding(t *testing.T) {
	var arrive []*corev1.Pod
	funcs := &interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if _, ok := obj.(*v1alpha1.ResourcePolicy); ok {
			for _, p := range arrive {
				if err := c.Create(ctx, p); err != nil {
					return err
				}
			}
			arrive = nil
		}
		return c.Get(ctx, key, obj, opts...)
	}}
	rs := replicas(t, 2, true, funcs,
		seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr.To[int32](2) }), gpuNode("onprem-1", onPremPool, 8))
	var fromB []*corev1.Pod
	for i := range 2 {
		_, placed := rs[1].admit(t, predictor(fmt.Sprintf("b-%d", i)))
		if u := unitOf(placed); u != "0" {
			t.Fatalf("replica B placed b-%d on unit %s, want 0", i, u)
		}
		fromB = append(fromB, placed)
	}
	// Replica A counts the unit before B's pods are in its cache; they
	// arrive when A reads the policy's status.
	arrive = fromB
	_, placed := rs[0].admit(t, predictor("a-0"))
	if u := unitOf(placed); u != "1" {
		t.Errorf("replica A placed a-0 on unit %s, want 1: unit 0 holds B's two pods", u)
	}
	if len(arrive) != 0 {
		t.Fatal("the pods never arrived: the test did not exercise the race")
	}
}

// laggingCache is a replica's cache that has not seen some pods yet.
type laggingCache struct {
	client.Reader
	hidden map[string]bool
}

func (l laggingCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := l.Reader.List(ctx, list, opts...); err != nil {
		return err
	}
	if pods, ok := list.(*corev1.PodList); ok {
		pods.Items = slices.DeleteFunc(pods.Items, func(p corev1.Pod) bool { return l.hidden[p.Name] })
	}
	return nil
}

// TestLaggingCacheOfAnotherReplica: replica A's cache has seen its two
// pods, replica B's has not. A's next placement must not remove their
// reservations from the shared state, or B counts neither pod nor
// reservation and over-fills the unit.
func TestLaggingCacheOfAnotherReplica(t *testing.T) {
	rs := replicas(t, 1, true, nil,
		seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr.To[int32](3) }), gpuNode("onprem-1", onPremPool, 8))
	a := rs[0]
	c := a.hook.reader.(client.Client)
	for i := range 2 {
		_, placed := a.admit(t, predictor(fmt.Sprintf("a-%d", i)))
		if u := unitOf(placed); u != "0" {
			t.Fatalf("a-%d on unit %s, want 0", i, u)
		}
		if err := c.Create(context.Background(), placed); err != nil {
			t.Fatal(err)
		}
	}
	if _, placed := a.admit(t, predictor("a-2")); unitOf(placed) != "0" {
		t.Fatalf("a-2 on unit %s, want 0", unitOf(placed))
	}
	// Replica B shares the API server but its cache lacks a-0 and a-1.
	tr := rules.NewTracker(a.clock, 5*time.Second, 2*time.Minute)
	b, err := New(laggingCache{Reader: c, hidden: map[string]bool{"a-0": true, "a-1": true}}, admission.NewDecoder(scheme(t)),
		events.NewFakeRecorder(100), prometheus.NewRegistry(), Options{Tracker: tr, Clock: a.clock, Keys: testKeys})
	if err != nil {
		t.Fatal(err)
	}
	b.ShareReservations(c, c)
	bEnv := &env{hook: b, tracker: tr, clock: a.clock, metrics: b.metrics}
	if _, placed := bEnv.admit(t, predictor("b-0")); unitOf(placed) != "1" {
		t.Errorf("replica B placed b-0 on unit %s, want 1: unit 0 holds a-0, a-1 and a-2", unitOf(placed))
	}
}

// TestMaxResourcesAcrossReplicas: a unit capped at 2 GPUs takes two 1-GPU
// pods of a burst split between replicas, then the rest spill.
func TestMaxResourcesAcrossReplicas(t *testing.T) {
	rs := replicas(t, 2, true, nil,
		seed(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.Units[0].MaxResources = corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("2")}
		}), gpuNode("onprem-1", onPremPool, 8))
	var got []string
	for i := range 5 {
		_, placed := rs[i%2].admit(t, predictor(fmt.Sprintf("p-%d", i)))
		got = append(got, unitOf(placed))
	}
	if s := strings.Join(got, ""); s != "00111" {
		t.Errorf("units = %s, want 00111", s)
	}
}
