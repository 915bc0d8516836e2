package placement

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

func TestChoose(t *testing.T) {
	three := func(policy v1alpha1.NextUnitPolicy, strategy v1alpha1.Strategy, max ...*int32) *v1alpha1.ResourcePolicySpec {
		s := &v1alpha1.ResourcePolicySpec{Strategy: strategy, WhenTryNextUnits: &v1alpha1.WhenTryNextUnits{Policy: policy}}
		for i := range 3 {
			u := v1alpha1.Unit{NodeSelector: map[string]string{"u": fmt.Sprint(i)}}
			if i == 2 {
				u.Resource = v1alpha1.ResourceElastic
			}
			if i < len(max) {
				u.Max = max[i]
			}
			s.Units = append(s.Units, u)
		}
		return s
	}
	lack, exceed, timeout := v1alpha1.LackResourceOrExceedMax, v1alpha1.ExceedMax, v1alpha1.TimeoutOrExceedMax
	noTerm := v1alpha1.LackResourceAndNoTerminating
	draining := UnitState{Terminating: true}
	room := UnitState{Room: true, RoomNode: "n"}
	none := UnitState{}
	cases := []struct {
		name    string
		spec    *v1alpha1.ResourcePolicySpec
		states  []UnitState
		unit    int
		node    string
		deny    bool
		waiting bool
		skipped []SkipReason
	}{
		{"first unit with room", three(lack, "", nil), []UnitState{room, room, room}, 0, "n", false, false, nil},
		{"no room spills", three(lack, "", nil), []UnitState{none, room, none}, 1, "n", false, false, []SkipReason{SkipNoRoom}},
		{"last unit needs no room", three(lack, "", nil), []UnitState{none, none, none}, 2, "", false, false, []SkipReason{SkipNoRoom, SkipNoRoom}},
		{"max reached spills", three(lack, "", ptr.To[int32](2)), []UnitState{{Count: 2, Room: true}, room, none}, 1, "n", false, false, []SkipReason{SkipAtMax}},
		{"max 0 never used", three(lack, "", ptr.To[int32](0)), []UnitState{room, room, none}, 1, "n", false, false, []SkipReason{SkipAtMax}},
		{"under max stays", three(lack, "", ptr.To[int32](2)), []UnitState{{Count: 1, Room: true, RoomNode: "a"}, room, none}, 0, "a", false, false, nil},
		{"cooling down spills", three(lack, "", nil), []UnitState{{Room: true, CoolingDown: true}, room, none}, 1, "n", false, false, []SkipReason{SkipCoolingDown}},
		{"last unit ignores cooldown", three(lack, "", nil), []UnitState{none, none, {CoolingDown: true}}, 2, "", false, false, []SkipReason{SkipNoRoom, SkipNoRoom}},
		{"exceed max ignores room", three(exceed, "", nil), []UnitState{none, none, none}, 0, "", false, false, nil},
		{"timeout ignores room", three(timeout, "", nil), []UnitState{none, none, none}, 0, "", false, false, nil},
		{"exceed max spills at max", three(exceed, "", ptr.To[int32](1), ptr.To[int32](1)), []UnitState{{Count: 1}, {Count: 3}, none}, 2, "", false, false, []SkipReason{SkipAtMax, SkipAtMax}},
		{"last at max: wait in first unit under max", three(lack, "", nil, nil, ptr.To[int32](1)), []UnitState{none, none, {Count: 1}}, 0, "", false, true,
			[]SkipReason{SkipNoRoom, SkipNoRoom, SkipAtMax}},
		{"all at max, prefer: outside", three(lack, v1alpha1.StrategyPrefer, ptr.To[int32](1), ptr.To[int32](1), ptr.To[int32](1)), []UnitState{{Count: 1}, {Count: 1}, {Count: 1}}, Outside, "", false, false,
			[]SkipReason{SkipAtMax, SkipAtMax, SkipAtMax}},
		{"all at max, default strategy is prefer", three(lack, "", ptr.To[int32](0), ptr.To[int32](0), ptr.To[int32](0)), []UnitState{none, none, none}, Outside, "", false, false,
			[]SkipReason{SkipAtMax, SkipAtMax, SkipAtMax}},
		{"no terminating: wait where pods are leaving", three(noTerm, "", nil), []UnitState{draining, room, none}, 0, "", false, true, nil},
		{"no terminating: room first", three(noTerm, "", nil), []UnitState{{Room: true, RoomNode: "a", Terminating: true}, room, none}, 0, "a", false, false, nil},
		{"no terminating: spills once none leaves", three(noTerm, "", nil), []UnitState{none, room, none}, 1, "n", false, false, []SkipReason{SkipNoRoom}},
		{"no terminating: max still spills", three(noTerm, "", ptr.To[int32](1)), []UnitState{{Count: 1, Terminating: true}, room, none}, 1, "n", false, false, []SkipReason{SkipAtMax}},
		{"terminating ignored by lack resource", three(lack, "", nil), []UnitState{draining, room, none}, 1, "n", false, false, []SkipReason{SkipNoRoom}},
		{"over maxResources spills", three(lack, "", nil), []UnitState{{Room: true, RoomNode: "a", OverMaxResources: true}, room, none}, 1, "n", false, false, []SkipReason{SkipAtMaxResources}},
		{"every unit over its caps, required: deny", three(lack, v1alpha1.StrategyRequired, ptr.To[int32](5)), []UnitState{{OverMaxResources: true}, {OverMaxResources: true}, {OverMaxResources: true}}, Outside, "", true, false,
			[]SkipReason{SkipAtMaxResources, SkipAtMaxResources, SkipAtMaxResources}},
		{"a fixed last unit needs room: wait in the first", func() *v1alpha1.ResourcePolicySpec {
			s := three(lack, "", nil)
			s.Units[2].Autoscaled = ptr.To(false)
			return s
		}(), []UnitState{none, none, none}, 0, "", false, true, []SkipReason{SkipNoRoom, SkipNoRoom, SkipNoRoom}},
		{"an autoscaled middle unit needs no room", func() *v1alpha1.ResourcePolicySpec {
			s := three(lack, "", nil)
			s.Units[1].Autoscaled = ptr.To(true)
			return s
		}(), []UnitState{none, none, none}, 1, "", false, false, []SkipReason{SkipNoRoom}},
		{"a virtual middle unit needs no room", func() *v1alpha1.ResourcePolicySpec {
			s := three(lack, "", nil)
			s.Units[1].Resource = v1alpha1.ResourceECI
			return s
		}(), []UnitState{none, none, none}, 1, "", false, false, []SkipReason{SkipNoRoom}},
		{"an unmatchable unit is skipped even with room and exceed max", func() *v1alpha1.ResourcePolicySpec {
			s := three(exceed, "", nil)
			s.Units[0].NodeSelector = map[string]string{"alibabacloud.com/nodepool-id": "np7ec7****"}
			return s
		}(), []UnitState{room, room, none}, 1, "", false, false, []SkipReason{SkipUnmatchable}},
		{"an unmatchable autoscaled unit is never the one waited in", func() *v1alpha1.ResourcePolicySpec {
			s := three(lack, "", nil)
			s.Units[2].NodeSelector = map[string]string{"u": "on prem"}
			return s
		}(), []UnitState{none, none, none}, 0, "", false, true, []SkipReason{SkipNoRoom, SkipNoRoom, SkipUnmatchable}},
		{"every unit unmatchable, prefer: outside", func() *v1alpha1.ResourcePolicySpec {
			s := three(lack, "", nil)
			for i := range s.Units {
				s.Units[i].NodeSelector = map[string]string{"u": "*"}
			}
			return s
		}(), []UnitState{room, room, room}, Outside, "", false, false, []SkipReason{SkipUnmatchable, SkipUnmatchable, SkipUnmatchable}},
		{"all at max, required: deny", three(lack, v1alpha1.StrategyRequired, ptr.To[int32](1), ptr.To[int32](1), ptr.To[int32](1)), []UnitState{{Count: 1}, {Count: 1}, {Count: 1}}, Outside, "", true, false,
			[]SkipReason{SkipAtMax, SkipAtMax, SkipAtMax}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Choose(c.spec, c.states)
			var skipped []SkipReason
			for _, s := range d.Skipped {
				skipped = append(skipped, s.Reason)
			}
			if d.Unit != c.unit || d.Node != c.node || d.Deny != c.deny || d.Waiting != c.waiting || fmt.Sprint(skipped) != fmt.Sprint(c.skipped) {
				t.Errorf("Choose = %+v, want unit %d node %q deny %v waiting %v skipped %v", d, c.unit, c.node, c.deny, c.waiting, c.skipped)
			}
			if msg := d.Explain([]string{"a", "b", "c"}); msg == "" {
				t.Error("empty explanation")
			}
		})
	}
}

func TestExplain(t *testing.T) {
	d := Decision{Unit: 1, Node: "n7", Skipped: []Skip{{0, SkipNoRoom}}}
	want := "placed on unit elastic (room on node n7); skipped ecs: no node with room"
	if got := d.Explain([]string{"ecs", "elastic"}); got != want {
		t.Errorf("Explain = %q, want %q", got, want)
	}
	d = Decision{Unit: 0, Waiting: true, ForTerminating: true}
	want = "placed on unit ecs to wait for the room its terminating pods free (LackResourceAndNoTerminating)"
	if got := d.Explain([]string{"ecs", "elastic"}); got != want {
		t.Errorf("Explain = %q, want %q", got, want)
	}
}

func TestRoomNode(t *testing.T) {
	gpuNode := func(name string, gpus int64) *corev1.Node { return node(name, nil, testobjects.Resources("8", gpus)) }
	bound := func(name, nodeName string, gpus int64) *corev1.Pod {
		p := gpuPod(name, gpus)
		p.Spec.NodeName = nodeName
		return p
	}
	nominated := gpuPod("nominated", 1)
	nominated.Status.NominatedNodeName = "a"
	reserved := gpuPod("reserved", 1)
	reserved.Annotations = map[string]string{AnnotationReservedNode: "a"}
	finished := bound("finished", "a", 1)
	finished.Status.Phase = corev1.PodFailed
	terminating := bound("terminating", "a", 1)
	terminating.DeletionTimestamp = &metav1.Time{}
	// The scheduler may bind a pod anywhere in its unit, not on the node
	// reserved for it: then the pods still waiting for the node it took
	// must fit elsewhere in the unit.
	waitingOn := func(name, node string) *corev1.Pod {
		p := gpuPod(name, 1)
		p.Annotations = map[string]string{AnnotationReservedNode: node}
		return p
	}
	boundAway := waitingOn("bound-away", "a")
	boundAway.Spec.NodeName = "b"
	twoGPUs := func(name string, pods ...*corev1.Pod) NodeUsage { return NodeUsage{Node: gpuNode(name, 2), Pods: pods} }
	inflightOn := func(id, node string) Reservation {
		return Reservation{ID: id, Node: node, Requests: PodRequests(gpuPod(id, 1))}
	}
	tainted := gpuNode("a", 1)
	tainted.Spec.Taints = []corev1.Taint{{Key: "gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	softTaint := gpuNode("a", 1)
	softTaint.Spec.Taints = []corev1.Taint{{Key: "gpu", Effect: corev1.TaintEffectPreferNoSchedule}}
	cordoned := gpuNode("a", 1)
	cordoned.Spec.Unschedulable = true

	tolerating := gpuPod("new", 1)
	tolerating.Spec.Tolerations = []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	pickyPod := gpuPod("new", 1)
	pickyPod.Spec.NodeSelector = map[string]string{"gpu-model": "h100"}
	fat := gpuPod("new", 1)
	fat.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("9")

	cases := []struct {
		name     string
		pod      *corev1.Pod
		nodes    []NodeUsage
		inflight []Reservation
		want     string
	}{
		{"empty gpu node", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1)}}, nil, "a"},
		{"bound pod takes the gpu", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1), Pods: []*corev1.Pod{bound("old", "a", 1)}}}, nil, ""},
		{"nominated pod takes the gpu", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1), Pods: []*corev1.Pod{nominated}}}, nil, ""},
		{"reserved pod takes the gpu", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1), Pods: []*corev1.Pod{reserved}}}, nil, ""},
		{"finished pod frees the gpu", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1), Pods: []*corev1.Pod{finished}}}, nil, "a"},
		{"terminating pod frees the gpu", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1), Pods: []*corev1.Pod{terminating}}}, nil, "a"},
		{"pod listed on another node is not counted", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1), Pods: []*corev1.Pod{bound("old", "b", 1)}}}, nil, "a"},
		{"in-flight reservation takes the gpu", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1)}}, []Reservation{{ID: "r", Node: "a", Requests: PodRequests(gpuPod("x", 1))}}, ""},
		{"reservation on another node", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 1)}}, []Reservation{{ID: "r", Node: "b", Requests: PodRequests(gpuPod("x", 1))}}, "a"},
		{"cpu node has no gpu", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("a", 0)}}, nil, ""},
		{"two gpus wanted, one free", gpuPod("new", 2), []NodeUsage{{Node: gpuNode("a", 2), Pods: []*corev1.Pod{bound("old", "a", 1)}}}, nil, ""},
		{"first node by name with room", gpuPod("new", 1), []NodeUsage{{Node: gpuNode("c", 1)}, {Node: gpuNode("b", 1)}, {Node: gpuNode("a", 1), Pods: []*corev1.Pod{bound("old", "a", 1)}}}, nil, "b"},
		{"cpu short", fat, []NodeUsage{{Node: gpuNode("a", 1)}}, nil, ""},
		{"untolerated taint", gpuPod("new", 1), []NodeUsage{{Node: tainted}}, nil, ""},
		{"tolerated taint", tolerating, []NodeUsage{{Node: tainted}}, nil, "a"},
		{"prefer-no-schedule taint is no bar", gpuPod("new", 1), []NodeUsage{{Node: softTaint}}, nil, "a"},
		{"cordoned", gpuPod("new", 1), []NodeUsage{{Node: cordoned}}, nil, ""},
		{"pod's own node selector excludes the node", pickyPod, []NodeUsage{{Node: gpuNode("a", 1)}}, nil, ""},
		{"bound away from its reservation: unit full", gpuPod("new", 1),
			[]NodeUsage{twoGPUs("a", waitingOn("w1", "a")), twoGPUs("b", boundAway, waitingOn("w2", "b"), waitingOn("w3", "b"))}, nil, ""},
		{"bound away from its reservation: one left", gpuPod("new", 1),
			[]NodeUsage{twoGPUs("a"), twoGPUs("b", boundAway, waitingOn("w2", "b"), waitingOn("w3", "b"))}, nil, "a"},
		{"bound away from an in-flight reservation: unit full", gpuPod("new", 1),
			[]NodeUsage{twoGPUs("a", waitingOn("w1", "a")), twoGPUs("b", boundAway)},
			[]Reservation{inflightOn("r1", "b"), inflightOn("r2", "b")}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := RoomNode(c.pod, PodRequests(c.pod), c.nodes, c.inflight)
			if got != c.want || ok != (c.want != "") {
				t.Errorf("RoomNode = %q,%v, want %q", got, ok, c.want)
			}
		})
	}
}

func TestPodsSlotCounts(t *testing.T) {
	n := node("a", nil, corev1.ResourceList{corev1.ResourcePods: resource.MustParse("1")})
	p := pod("p", nil)
	p.Spec.NodeName = "a"
	if _, ok := RoomNode(pod("new", nil), PodRequests(pod("new", nil)), []NodeUsage{{Node: n, Pods: []*corev1.Pod{p}}}, nil); ok {
		t.Error("a node with its one pod slot taken has no room")
	}
}

// TestBurst drives the tracker the way the webhook does: ten pods admitted
// before the cache shows any of them, with room for four on-prem, must put
// four on-prem and six on the elastic unit.
func TestBurst(t *testing.T) {
	rp := seedPolicy()
	clk := clocktesting.NewFakeClock(t0)
	tr := NewTracker(clk, time.Minute, time.Minute)
	onPrem := []NodeUsage{
		{Node: node("onprem-1", nil, testobjects.Resources("64", 2))},
		{Node: node("onprem-2", nil, testobjects.Resources("64", 2))},
	}
	var units []string
	for i := range 10 {
		p := gpuPod(fmt.Sprintf("burst-%d", i), 1)
		req := PodRequests(p)
		tx := tr.Begin(func(string) bool { return false })
		inflight := tx.InFlight()
		states := make([]UnitState, 2)
		for _, r := range inflight {
			idx, _ := UnitIndex(rp, r.Unit)
			states[idx].Count++
		}
		states[0].RoomNode, states[0].Room = RoomNode(p, req, onPrem, inflight)
		d := Choose(&rp.Spec, states)
		tx.Reserve(Reservation{ID: p.Name, Policy: PolicyKey(rp), Unit: UnitLabel(rp, d.Unit), Node: d.Node, Requests: req})
		tx.Done()
		units = append(units, UnitLabel(rp, d.Unit))
	}
	if got, want := strings.Join(units, ""), "0000111111"; got != want {
		t.Errorf("units = %s, want %s", got, want)
	}
}

func TestTracker(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	tr := NewTracker(clk, 10*time.Second, time.Minute)
	key := UnitKey{Policy: "default/p", Unit: "0"}

	tx := tr.Begin(nil)
	tx.Reserve(Reservation{ID: "a"})
	tx.Reserve(Reservation{ID: "b"})
	tx.Reserve(Reservation{ID: "c"})
	tx.Done()

	tx = tr.Begin(func(id string) bool { return id == "b" })
	if got := ids(tx.InFlight()); got != "a,c" {
		t.Errorf("after b was seen: %s, want a,c", got)
	}
	tx.Done()

	until := tr.Cool(key)
	if !until.Equal(t0.Add(time.Minute)) {
		t.Errorf("Cool until %v", until)
	}
	clk.Step(10 * time.Second)
	tx = tr.Begin(nil)
	if n := tx.Len(); n != 0 {
		t.Errorf("reservations past their ttl must go, %d left", n)
	}
	if !tx.CoolingDown(key) || tx.CoolingDown(UnitKey{Policy: "default/p", Unit: "1"}) {
		t.Error("only the cooled unit is cooling down")
	}
	tx.Done()
	clk.Step(50 * time.Second)
	tx = tr.Begin(nil)
	if tx.CoolingDown(key) {
		t.Error("cooldown must end")
	}
	tx.Done()
}

func ids(rs []Reservation) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.ID)
	}
	return strings.Join(s, ",")
}
