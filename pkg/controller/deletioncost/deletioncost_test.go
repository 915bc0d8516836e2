package deletioncost

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/pkg/placement"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func seed() *v1alpha1.ResourcePolicy {
	return &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "qwen-chat", Namespace: "default", CreationTimestamp: metav1.NewTime(t0)},
		Spec: v1alpha1.ResourcePolicySpec{
			Selector: map[string]string{"app": "isvc.qwen-predictor"},
			Units: []v1alpha1.Unit{
				{Resource: "ecs", NodeSelector: map[string]string{"pool": "onprem"}},
				{Resource: "elastic", NodeSelector: map[string]string{"pool": "elastic"}},
			},
		},
	}
}

func pod(name string, labels map[string]string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	l := map[string]string{"app": "isvc.qwen-predictor"}
	for k, v := range labels {
		l[k] = v
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: l}}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func placedOn(unit string) map[string]string {
	return map[string]string{placement.LabelPolicy: "qwen-chat", placement.LabelUnit: unit}
}

func TestReconcile(t *testing.T) {
	onPremNode := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "onprem-1", Labels: map[string]string{"pool": "onprem"}}}
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
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			r := New(cl, m)
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
	r := New(cl, nil)
	reqs := r.podsOf(context.Background(), seed())
	if len(reqs) != 2 {
		t.Errorf("requests = %v, want the 2 selected pods", reqs)
	}
}
