package placement

import (
	"maps"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

func TestAdopt(t *testing.T) {
	onPrem := node("onprem-0", map[string]string{"alibabacloud.com/nodepool-id": "np-xxxxx"}, nil)
	elastic := node("cloud-0", map[string]string{"alibabacloud.com/nodepool-id": "np-yyyyy"}, nil)
	stray := node("stray-0", map[string]string{"pool": "other"}, nil)
	named := func() *v1alpha1.ResourcePolicy {
		rp := seedPolicy()
		rp.Spec.Units[0].Name, rp.Spec.Units[1].Name = "onprem", "cloud"
		return rp
	}
	selected := func(mutate ...func(*corev1.Pod)) *corev1.Pod {
		p := pod("p", map[string]string{"app": "isvc.qwen-predictor"})
		for _, m := range mutate {
			m(p)
		}
		return p
	}
	boundTo := func(n string) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
	label := func(k, v string) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Labels[k] = v } }

	cases := []struct {
		name      string
		rp        *v1alpha1.ResourcePolicy
		pod       *corev1.Pod
		node      *corev1.Node
		state     AdoptState
		wantUnit  string
		wantIndex int
		wantCost  int32
	}{
		{name: "bound to an on-prem node: first unit", rp: seedPolicy(), pod: selected(boundTo("onprem-0")), node: onPrem,
			state: AdoptNow, wantUnit: "0", wantIndex: 0, wantCost: TierWidth},
		{name: "bound to an elastic node: last unit", rp: seedPolicy(), pod: selected(boundTo("cloud-0")), node: elastic,
			state: AdoptNow, wantUnit: "1", wantIndex: 1, wantCost: 0},
		{name: "named units are labelled by name", rp: named(), pod: selected(boundTo("cloud-0")), node: elastic,
			state: AdoptNow, wantUnit: "cloud", wantIndex: 1, wantCost: 0},
		{name: "a node in no unit: outside, ranked first to go", rp: seedPolicy(), pod: selected(boundTo("stray-0")), node: stray,
			state: AdoptNow, wantUnit: UnitNone, wantIndex: Outside, wantCost: -TierWidth},
		{name: "created in the policy's second: adopted", rp: seedPolicy(),
			pod: selected(boundTo("onprem-0"), func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(t0) }), node: onPrem,
			state: AdoptNow, wantUnit: "0", wantIndex: 0, wantCost: TierWidth},
		{name: "pending, not bound: wait", rp: seedPolicy(), pod: selected(), state: AdoptWait},
		{name: "bound, node unknown: wait", rp: seedPolicy(), pod: selected(boundTo("gone-0")), state: AdoptWait},
		{name: "bound, node given is another: wait", rp: seedPolicy(), pod: selected(boundTo("onprem-0")), node: elastic, state: AdoptWait},
		{name: "placed by this policy: none", rp: seedPolicy(),
			pod: selected(boundTo("cloud-0"), label(LabelPolicy, "qwen-chat"), label(LabelUnit, "0")), node: elastic, state: AdoptNone},
		{name: "placed by another policy: its record stays", rp: seedPolicy(),
			pod: selected(boundTo("cloud-0"), label(LabelPolicy, "older"), label(LabelUnit, "1")), node: elastic, state: AdoptNone},
		{name: "a unit label alone is a record too", rp: seedPolicy(),
			pod: selected(boundTo("cloud-0"), label(LabelUnit, UnitNone)), node: elastic, state: AdoptNone},
		{name: "created before the policy: ranked by node, not adopted", rp: seedPolicy(),
			pod: selected(boundTo("onprem-0"), func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(t0.Add(-time.Second)) }), node: onPrem,
			state: AdoptNone},
		{name: "finished: none", rp: seedPolicy(),
			pod: selected(boundTo("onprem-0"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), node: onPrem, state: AdoptNone},
		{name: "being deleted: none", rp: seedPolicy(),
			pod: selected(boundTo("onprem-0"), func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: t0.Add(time.Hour)} }), node: onPrem,
			state: AdoptNone},
		{name: "not selected: none", rp: seedPolicy(), pod: selected(boundTo("onprem-0"), label("app", "other")), node: onPrem, state: AdoptNone},
		{name: "another namespace: none", rp: seedPolicy(),
			pod: selected(boundTo("onprem-0"), func(p *corev1.Pod) { p.Namespace = "mallory" }), node: onPrem, state: AdoptNone},
		{name: "no policy: none", rp: nil, pod: selected(boundTo("onprem-0")), node: onPrem, state: AdoptNone},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := c.pod.DeepCopy()
			a, state := Adopt(c.rp, c.pod, c.node)
			if state != c.state {
				t.Fatalf("state = %s, want %s", state, c.state)
			}
			if !maps.Equal(before.Labels, c.pod.Labels) {
				t.Error("Adopt modified the pod")
			}
			if state != AdoptNow {
				if a.Labels != nil {
					t.Errorf("labels %v with state %s", a.Labels, state)
				}
				return
			}
			want := map[string]string{LabelPolicy: c.rp.Name, LabelUnit: c.wantUnit}
			if !maps.Equal(a.Labels, want) || a.Unit != c.wantIndex || a.Cost != c.wantCost {
				t.Errorf("adoption = %+v, want labels %v, unit %d, cost %d", a, want, c.wantIndex, c.wantCost)
			}
			// Adopted, the pod reads as placed on that unit with no node
			// lookup, at the cost the deletion-cost ranking gives it, and is
			// not adopted twice.
			adopted := c.pod.DeepCopy()
			maps.Copy(adopted.Labels, a.Labels)
			if !Placed(c.rp, adopted) {
				t.Error("the adopted pod does not read as placed")
			}
			if u := UnitOf(c.rp, adopted, nil); u != a.Unit {
				t.Errorf("UnitOf(adopted) = %d, want %d", u, a.Unit)
			}
			if got := DeletionCost(len(c.rp.Spec.Units), UnitOf(c.rp, adopted, nil)); got != a.Cost {
				t.Errorf("deletion cost of the adopted pod = %d, adoption says %d", got, a.Cost)
			}
			if _, again := Adopt(c.rp, adopted, c.node); again != AdoptNone {
				t.Errorf("adopting the adopted pod again: %s", again)
			}
		})
	}
}
