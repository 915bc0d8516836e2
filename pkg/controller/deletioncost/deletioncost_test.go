package deletioncost

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/pkg/placement"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func seed() *v1alpha1.ResourcePolicy {
	return testobjects.ResourcePolicy(testobjects.PolicyOptions{Created: t0})
}

func pod(name string, labels map[string]string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	l := map[string]string{testobjects.AppLabel: testobjects.AppValue}
	maps.Copy(l, labels)
	return testobjects.Pod(testobjects.PodOptions{Name: name, Labels: l}, mutate...)
}

func placedOn(unit string) map[string]string {
	return map[string]string{placement.LabelPolicy: "qwen-chat", placement.LabelUnit: unit}
}

func TestReconcile(t *testing.T) {
	onPremNode := testobjects.Node(testobjects.NodeOptions{Name: "onprem-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.OnPremPool}})
	cases := []struct {
		name  string
		pod   *corev1.Pod
		want  string // "" = no annotation
		patch bool
	}{
		{"on-prem pod ranks high", pod("a", placedOn("0")), "1000000", true},
		{"elastic pod ranks at zero", pod("b", placedOn("1")), "0", true},
		{"pod outside the units goes first", pod("c", placedOn(placement.UnitNone)), "-1000000", true},
		{"pod placed before the policy: by its node", pod("d", nil, func(p *corev1.Pod) { p.Spec.NodeName = "onprem-1" }), "1000000", true},
		{"unplaced and unbound: outside", pod("e", nil), "-1000000", true},
		{"already right: no patch", pod("f", placedOn("0"), func(p *corev1.Pod) {
			p.Annotations = map[string]string{placement.AnnotationDeletionCost: "1000000"}
		}), "1000000", false},
		{"wrong value is corrected", pod("g", placedOn("1"), func(p *corev1.Pod) {
			p.Annotations = map[string]string{placement.AnnotationDeletionCost: "1000000", "keep": "me"}
		}), "0", true},
		{"not selected: left alone", func() *corev1.Pod {
			p := pod("h", nil)
			p.Labels["app"] = "other"
			return p
		}(), "", false},
		{"terminating: left alone", pod("i", placedOn("0"), func(p *corev1.Pod) {
			p.DeletionTimestamp, p.Finalizers = &metav1.Time{Time: t0}, []string{"x"}
		}), "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := kubescheme.New()
			if err != nil {
				t.Fatal(err)
			}
			patches := 0
			cl := fake.NewClientBuilder().WithScheme(s).WithObjects(seed(), onPremNode, c.pod).
				WithInterceptorFuncs(interceptor.Funcs{Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
					patches++
					if _, isPod := obj.(*corev1.Pod); !isPod {
						t.Errorf("patched a %T; only pods may be patched", obj)
					}
					return cl.Patch(ctx, obj, p, opts...)
				}}).Build()
			r, err := New(cl, nil, prometheus.NewRegistry(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			m := r.metrics
			key := client.ObjectKeyFromObject(c.pod)
			for range 2 { // the second pass must find nothing to do
				if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
					t.Fatal(err)
				}
			}
			got := &corev1.Pod{}
			if err := cl.Get(context.Background(), key, got); err != nil {
				t.Fatal(err)
			}
			if v := got.Annotations[placement.AnnotationDeletionCost]; v != c.want {
				t.Errorf("deletion cost = %q, want %q", v, c.want)
			}
			if c.pod.Annotations["keep"] != "" && got.Annotations["keep"] != "me" {
				t.Error("other annotations must stay")
			}
			wantPatches := 0
			if c.patch {
				wantPatches = 1
			}
			if patches != wantPatches {
				t.Errorf("patches = %d, want %d", patches, wantPatches)
			}
			if n := testutil.ToFloat64(m.Patches.WithLabelValues("default", "qwen-chat", "ok")); int(n) != wantPatches {
				t.Errorf("patch metric = %v", n)
			}
		})
	}
}

func TestPolicyMapsToItsPods(t *testing.T) {
	s, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	other := pod("other", nil)
	other.Labels["app"] = "other"
	cl := fake.NewClientBuilder().WithScheme(s).WithObjects(pod("a", nil), pod("b", placedOn("1")), other).Build()
	r, err := New(cl, nil, prometheus.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	reqs := r.podsOf(context.Background(), seed())
	if len(reqs) != 2 {
		t.Errorf("requests = %v, want the 2 selected pods", reqs)
	}
}

// TestAdoption: a selected pod admitted without placement (the webhook was
// down) gets, once bound, the placement labels of its node's unit and that
// unit's cost in one patch, with an event and a count; until bound it only
// gets the cost of a pod outside the units.
func TestAdoption(t *testing.T) {
	nodes := []client.Object{
		testobjects.Node(testobjects.NodeOptions{Name: "onprem-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.OnPremPool}}),
		testobjects.Node(testobjects.NodeOptions{Name: "cloud-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.ElasticPool}}),
	}
	after := func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(t0.Add(time.Minute)) }
	on := func(n string) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
	cases := []struct {
		name       string
		pod        *corev1.Pod
		wantUnit   string // "" = not adopted
		wantCost   string
		wantEvents int
	}{
		{"landed on-prem", pod("a", nil, after, on("onprem-1")), "0", "1000000", 1},
		{"landed on an elastic node", pod("b", nil, after, on("cloud-1")), "1", "0", 1},
		{"pending: cost of outside, labels wait", pod("c", nil, after), "", "-1000000", 0},
		{"placed by the webhook: only the cost", pod("d", placedOn("1"), after, on("onprem-1")), "1", "0", 0},
		{"older than the policy: ranked by node, not adopted", pod("e", nil, on("onprem-1")), "", "1000000", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := kubescheme.New()
			if err != nil {
				t.Fatal(err)
			}
			cl := fake.NewClientBuilder().WithScheme(s).WithObjects(append(nodes, seed(), c.pod)...).Build()
			rec := events.NewFakeRecorder(10)
			r, err := New(cl, rec, prometheus.NewRegistry(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			m := r.metrics
			key := client.ObjectKeyFromObject(c.pod)
			for range 2 { // the second pass must find nothing to do
				if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
					t.Fatal(err)
				}
			}
			got := &corev1.Pod{}
			if err := cl.Get(context.Background(), key, got); err != nil {
				t.Fatal(err)
			}
			if u := got.Labels[placement.LabelUnit]; u != c.wantUnit {
				t.Errorf("unit label = %q, want %q", u, c.wantUnit)
			}
			if c.wantUnit != "" && got.Labels[placement.LabelPolicy] != "qwen-chat" {
				t.Errorf("policy label = %q", got.Labels[placement.LabelPolicy])
			}
			if v := got.Annotations[placement.AnnotationDeletionCost]; v != c.wantCost {
				t.Errorf("deletion cost = %q, want %q", v, c.wantCost)
			}
			if n := len(rec.Events); n != c.wantEvents {
				t.Errorf("%d events, want %d", n, c.wantEvents)
			}
			adopted := 0.0
			if c.wantEvents > 0 {
				adopted = testutil.ToFloat64(m.Adopted.WithLabelValues("default", "qwen-chat", c.wantUnit))
				if ev := <-rec.Events; !strings.Contains(ev, "Adopted") || !strings.Contains(ev, c.pod.Spec.NodeName) {
					t.Errorf("event %q does not say the pod was adopted from its node", ev)
				}
			}
			if int(adopted) != c.wantEvents {
				t.Errorf("adopted metric = %v, want %d", adopted, c.wantEvents)
			}
		})
	}
}

// TestAdoptionWaitsForBinding: the pending pod is adopted when the
// scheduler binds it, not before.
func TestAdoptionWaitsForBinding(t *testing.T) {
	s, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	p := pod("p", nil, func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(t0.Add(time.Minute)) })
	n := testobjects.Node(testobjects.NodeOptions{Name: "onprem-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.OnPremPool}})
	cl := fake.NewClientBuilder().WithScheme(s).WithObjects(seed(), n, p).Build()
	r, err := New(cl, events.NewFakeRecorder(10), prometheus.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, key := context.Background(), client.ObjectKeyFromObject(p)
	reconcile := func() *corev1.Pod {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		got := &corev1.Pod{}
		if err := cl.Get(ctx, key, got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := reconcile()
	if _, ok := got.Labels[placement.LabelUnit]; ok {
		t.Fatalf("a pending pod was adopted: %v", got.Labels)
	}
	got.Spec.NodeName = "onprem-1"
	if err := cl.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	got = reconcile()
	if got.Labels[placement.LabelUnit] != "0" || got.Annotations[placement.AnnotationDeletionCost] != "1000000" {
		t.Errorf("after binding: labels %v, annotations %v; want unit 0 and cost 1000000", got.Labels, got.Annotations)
	}
}

// TestAdoptionFromAStaleView: the adoption patch names the resourceVersion
// it decided from, so a pod that changed since is not overwritten.
func TestAdoptionFromAStaleView(t *testing.T) {
	s, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	p := pod("p", nil, func(p *corev1.Pod) {
		p.CreationTimestamp = metav1.NewTime(t0.Add(time.Minute))
		p.Spec.NodeName = "onprem-1"
	})
	n := testobjects.Node(testobjects.NodeOptions{Name: "onprem-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.OnPremPool}})
	cl := fake.NewClientBuilder().WithScheme(s).WithObjects(seed(), n, p).Build()
	r, err := New(cl, nil, prometheus.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stale := &corev1.Pod{}
	if err := cl.Get(ctx, client.ObjectKeyFromObject(p), stale); err != nil {
		t.Fatal(err)
	}
	fresh := stale.DeepCopy()
	fresh.Annotations = map[string]string{"changed": "since"}
	if err := cl.Update(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	a, state := placement.Adopt(seed(), stale, n)
	if state != placement.AdoptNow {
		t.Fatalf("state %s", state)
	}
	if err := r.adopt(ctx, seed(), stale, n, a); !apierrors.IsConflict(err) {
		t.Errorf("adopting from a stale view: %v, want a conflict", err)
	}
}
