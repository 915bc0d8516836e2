package placement

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// seedPolicy is the seed's ACK ResourcePolicy with apiVersion changed.
func seedPolicy() *v1alpha1.ResourcePolicy {
	return testobjects.ResourcePolicy(testobjects.PolicyOptions{
		Created: t0, Strategy: v1alpha1.StrategyPrefer,
		Units: testobjects.TwoUnits("alibabacloud.com/nodepool-id", "np-xxxxx", "np-yyyyy"),
	})
}

func pod(name string, labels map[string]string) *corev1.Pod {
	return testobjects.Pod(testobjects.PodOptions{Name: name, Labels: labels, Created: t0.Add(time.Minute)})
}

func node(name string, labels map[string]string, alloc corev1.ResourceList) *corev1.Node {
	return testobjects.Node(testobjects.NodeOptions{Name: name, Labels: labels, Allocatable: alloc})
}

func gpuPod(name string, gpus int64) *corev1.Pod {
	return testobjects.Pod(testobjects.PodOptions{
		Name: name, Labels: map[string]string{testobjects.AppLabel: testobjects.AppValue}, Created: t0.Add(time.Minute),
		Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("1"),
			testobjects.GPU:    *resource.NewQuantity(gpus, resource.DecimalSI),
		},
	})
}

func TestUnitLabelsAndNames(t *testing.T) {
	rp := seedPolicy()
	rp.Spec.Units = append(rp.Spec.Units, v1alpha1.Unit{Name: "spot", NodeSelector: map[string]string{"k": "v"}}, v1alpha1.Unit{Resource: "ecs", NodeSelector: map[string]string{"k": "w"}})
	cases := []struct {
		i       int
		label   string
		display string
	}{
		{0, "0", "ecs#0"},
		{1, "1", "elastic"},
		{2, "spot", "spot"},
		{3, "3", "ecs#3"},
	}
	names := DisplayNames(rp)
	for _, c := range cases {
		if got := UnitLabel(rp, c.i); got != c.label {
			t.Errorf("UnitLabel(%d) = %q, want %q", c.i, got, c.label)
		}
		if got, ok := UnitIndex(rp, c.label); !ok || got != c.i {
			t.Errorf("UnitIndex(%q) = %d,%v, want %d", c.label, got, ok, c.i)
		}
		if names[c.i] != c.display {
			t.Errorf("DisplayNames[%d] = %q, want %q", c.i, names[c.i], c.display)
		}
	}
	if got, ok := UnitIndex(rp, UnitNone); !ok || got != Outside {
		t.Errorf("UnitIndex(none) = %d,%v", got, ok)
	}
	if _, ok := UnitIndex(rp, "gone"); ok {
		t.Error("UnitIndex of an unknown label should fail")
	}
}

func TestSelectsAndWinner(t *testing.T) {
	older := seedPolicy()
	newer := seedPolicy()
	newer.Name, newer.CreationTimestamp = "newer", metav1.NewTime(t0.Add(time.Hour))
	sameAgeB := seedPolicy()
	sameAgeB.Name = "b-same-age"
	other := seedPolicy()
	other.Name, other.Spec.Selector = "other", map[string]string{"app": "other"}
	elsewhere := seedPolicy()
	elsewhere.Name, elsewhere.Namespace = "elsewhere", "prod"

	cases := []struct {
		name     string
		policies []v1alpha1.ResourcePolicy
		labels   map[string]string
		winner   string
		losers   int
	}{
		{"none selects", []v1alpha1.ResourcePolicy{*other}, map[string]string{"app": "isvc.qwen-predictor"}, "", 0},
		{"superset of labels selects", []v1alpha1.ResourcePolicy{*older}, map[string]string{"app": "isvc.qwen-predictor", "x": "y"}, "qwen-chat", 0},
		{"oldest wins", []v1alpha1.ResourcePolicy{*newer, *older}, map[string]string{"app": "isvc.qwen-predictor"}, "qwen-chat", 1},
		{"same age: name breaks the tie", []v1alpha1.ResourcePolicy{*older, *sameAgeB}, map[string]string{"app": "isvc.qwen-predictor"}, "b-same-age", 1},
		{"other namespace never selects", []v1alpha1.ResourcePolicy{*elsewhere}, map[string]string{"app": "isvc.qwen-predictor"}, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, losers := Winner(c.policies, pod("p", c.labels))
			got := ""
			if w != nil {
				got = w.Name
			}
			if got != c.winner || len(losers) != c.losers {
				t.Errorf("Winner = %q with %d losers, want %q with %d", got, len(losers), c.winner, c.losers)
			}
		})
	}
	empty := seedPolicy()
	empty.Spec.Selector = nil
	if Selects(empty, pod("p", map[string]string{"app": "x"})) {
		t.Error("an empty selector must select nothing")
	}
}

func TestUnitOfAndCounted(t *testing.T) {
	rp := seedPolicy()
	onPrem := node("onprem", map[string]string{"alibabacloud.com/nodepool-id": "np-xxxxx"}, nil)
	cloud := node("cloud", map[string]string{"alibabacloud.com/nodepool-id": "np-yyyyy"}, nil)
	foreign := node("foreign", map[string]string{"x": "y"}, nil)
	labelled := func(policy, unit string) map[string]string {
		return map[string]string{"app": "isvc.qwen-predictor", LabelPolicy: policy, LabelUnit: unit}
	}
	cases := []struct {
		name   string
		labels map[string]string
		node   *corev1.Node
		want   int
	}{
		{"label wins over node", labelled("qwen-chat", "1"), onPrem, 1},
		{"label none", labelled("qwen-chat", UnitNone), nil, Outside},
		{"other policy's label: by node", labelled("other", "1"), onPrem, 0},
		{"stale label: by node", labelled("qwen-chat", "renamed"), cloud, 1},
		{"unlabelled on a unit node", map[string]string{"app": "isvc.qwen-predictor"}, cloud, 1},
		{"unlabelled on a foreign node", map[string]string{"app": "isvc.qwen-predictor"}, foreign, Outside},
		{"unlabelled and unbound", map[string]string{"app": "isvc.qwen-predictor"}, nil, Outside},
	}
	for _, c := range cases {
		if got := UnitOf(rp, pod("p", c.labels), c.node); got != c.want {
			t.Errorf("%s: UnitOf = %d, want %d", c.name, got, c.want)
		}
	}

	before := pod("before", nil)
	before.CreationTimestamp = metav1.NewTime(t0.Add(-time.Minute))
	terminating := pod("terminating", nil)
	terminating.DeletionTimestamp = ptr.To(metav1.NewTime(t0.Add(time.Hour)))
	done := pod("done", nil)
	done.Status.Phase = corev1.PodSucceeded
	counted := []struct {
		name              string
		pod               *corev1.Pod
		ignorePrevious    bool
		ignoreTerminating *bool
		want              bool
	}{
		{"plain", pod("p", nil), false, nil, true},
		{"finished never counts", done, false, ptr.To(false), false},
		{"terminating ignored by default", terminating, false, nil, false},
		{"terminating counted when asked", terminating, false, ptr.To(false), true},
		{"previous counted by default", before, false, nil, true},
		{"previous ignored when asked", before, true, nil, false},
	}
	for _, c := range counted {
		p := seedPolicy()
		p.Spec.IgnorePreviousPod, p.Spec.IgnoreTerminatingPod = c.ignorePrevious, c.ignoreTerminating
		if got := Counted(p, c.pod); got != c.want {
			t.Errorf("%s: Counted = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestGrace(t *testing.T) {
	cases := []struct {
		name string
		when *v1alpha1.WhenTryNextUnits
		want time.Duration
		ok   bool
	}{
		{"default policy", nil, DefaultGrace, true},
		{"lack resource", &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.LackResourceOrExceedMax}, DefaultGrace, true},
		{"exceed max never re-places", &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.ExceedMax}, 0, false},
		{"timeout", &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.TimeoutOrExceedMax, Timeout: &metav1.Duration{Duration: 5 * time.Minute}}, 5 * time.Minute, true},
		{"timeout unset is ACK's 15m", &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.TimeoutOrExceedMax}, DefaultTimeout, true},
		{"no terminating", &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.LackResourceAndNoTerminating}, DefaultGrace, true},
	}
	for _, c := range cases {
		spec := seedPolicy().Spec
		spec.WhenTryNextUnits = c.when
		got, ok := Grace(&spec)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: Grace = %v,%v, want %v,%v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestPinToUnit(t *testing.T) {
	unit := map[string]string{"pool": "onprem", "gpu": "a10"}
	unitReqs := []corev1.NodeSelectorRequirement{
		{Key: "gpu", Operator: corev1.NodeSelectorOpIn, Values: []string{"a10"}},
		{Key: "pool", Operator: corev1.NodeSelectorOpIn, Values: []string{"onprem"}},
	}
	own := corev1.NodeSelectorRequirement{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}
	byName := corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"n1"}}
	cases := []struct {
		name  string
		aff   *corev1.Affinity
		terms []corev1.NodeSelectorTerm
	}{
		{"no affinity", nil, []corev1.NodeSelectorTerm{{MatchExpressions: unitReqs}}},
		{"pod affinity only", &corev1.Affinity{PodAffinity: &corev1.PodAffinity{}}, []corev1.NodeSelectorTerm{{MatchExpressions: unitReqs}}},
		{"empty required selector", &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{}}},
			[]corev1.NodeSelectorTerm{{MatchExpressions: unitReqs}}},
		{"two own terms each get the unit", &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{own}}, {MatchFields: []corev1.NodeSelectorRequirement{byName}}},
		}}}, []corev1.NodeSelectorTerm{
			{MatchExpressions: append([]corev1.NodeSelectorRequirement{own}, unitReqs...)},
			{MatchFields: []corev1.NodeSelectorRequirement{byName}, MatchExpressions: unitReqs},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := corev1.PodSpec{Affinity: c.aff}
			PinToUnit(&spec, unit)
			got := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
			if !equalTerms(got, c.terms) {
				t.Errorf("terms = %+v, want %+v", got, c.terms)
			}
			// The pinned pod must match a node of the unit and no other.
			p := &corev1.Pod{Spec: spec}
			in := node("n1", map[string]string{"pool": "onprem", "gpu": "a10", "zone": "a"}, nil)
			out := node("n1", map[string]string{"pool": "cloud", "gpu": "a10", "zone": "a"}, nil)
			if !Usable(in, p) || Usable(out, p) {
				t.Errorf("pinned pod: usable on unit node %v (want true), on other node %v (want false)", Usable(in, p), Usable(out, p))
			}
		})
	}
}

func equalTerms(a, b []corev1.NodeSelectorTerm) bool {
	if len(a) != len(b) {
		return false
	}
	eq := func(x, y []corev1.NodeSelectorRequirement) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i].Key != y[i].Key || x[i].Operator != y[i].Operator || len(x[i].Values) != len(y[i].Values) || (len(x[i].Values) > 0 && x[i].Values[0] != y[i].Values[0]) {
				return false
			}
		}
		return true
	}
	for i := range a {
		if !eq(a[i].MatchExpressions, b[i].MatchExpressions) || !eq(a[i].MatchFields, b[i].MatchFields) {
			return false
		}
	}
	return true
}

func TestDeletionCost(t *testing.T) {
	cases := []struct {
		n, unit int
		want    int32
	}{
		{2, 0, 1_000_000},
		{2, 1, 0},
		{2, Outside, -1_000_000},
		{3, 0, 2_000_000},
		{3, 2, 0},
		{1, 0, 0},
		{32, 0, 31_000_000},
	}
	for _, c := range cases {
		if got := DeletionCost(c.n, c.unit); got != c.want {
			t.Errorf("DeletionCost(%d,%d) = %d, want %d", c.n, c.unit, got, c.want)
		}
	}
	// Every later unit costs strictly less, outside least, for every size.
	for n := 1; n <= 32; n++ {
		prev := DeletionCost(n, 0)
		for u := 1; u < n; u++ {
			c := DeletionCost(n, u)
			if c-prev > -TierWidth/2 {
				t.Fatalf("n=%d: unit %d costs %d, not a tier below %d", n, u, c, prev)
			}
			prev = c
		}
		if DeletionCost(n, Outside) >= prev {
			t.Fatalf("n=%d: outside must cost least", n)
		}
	}
}

func TestStatusCoolingDown(t *testing.T) {
	now := t0.Add(time.Hour)
	until := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	cases := []struct {
		name   string
		status []v1alpha1.UnitStatus
		unit   int
		want   bool
	}{
		{"no status", nil, 0, false},
		{"running", []v1alpha1.UnitStatus{{CooldownUntil: until(time.Second)}, {}}, 0, true},
		{"other unit", []v1alpha1.UnitStatus{{CooldownUntil: until(time.Second)}, {}}, 1, false},
		{"ended", []v1alpha1.UnitStatus{{CooldownUntil: until(0)}, {}}, 0, false},
		{"status for other units", []v1alpha1.UnitStatus{{CooldownUntil: until(time.Second)}}, 0, false},
		{"index out of range", []v1alpha1.UnitStatus{{}, {}}, 5, false},
	}
	for _, c := range cases {
		rp := seedPolicy()
		rp.Status.Units = c.status
		if got := StatusCoolingDown(rp, c.unit, now); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestCountsUnitMarks: with podLabels or podAnnotations on a unit, only
// pods carrying all of them count toward its max, whoever placed them.
func TestCountsUnitMarks(t *testing.T) {
	rp := seedPolicy()
	rp.Spec.Units[0].PodLabels = map[string]string{"tier": "onprem"}
	rp.Spec.Units[0].PodAnnotations = map[string]string{"cost-center": "gpu"}
	onPrem := node("onprem-1", rp.Spec.Units[0].NodeSelector, nil)
	mk := func(name string, labels, annotations map[string]string, placedUnit string) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rp.Namespace, Labels: map[string]string{}, Annotations: annotations}}
		for k, v := range rp.Spec.Selector {
			p.Labels[k] = v
		}
		for k, v := range labels {
			p.Labels[k] = v
		}
		if placedUnit != "" {
			p.Labels[LabelPolicy], p.Labels[LabelUnit] = rp.Name, placedUnit
		} else {
			p.Spec.NodeName = onPrem.Name
		}
		return p
	}
	marks := map[string]string{"tier": "onprem"}
	ann := map[string]string{"cost-center": "gpu"}
	pods := []corev1.Pod{
		mk("placed-with-marks", marks, ann, UnitLabel(rp, 0)),
		mk("placed-without-annotation", marks, nil, UnitLabel(rp, 0)),
		mk("previous-with-marks", marks, ann, ""),
		mk("previous-without", nil, nil, ""),
		mk("elastic", nil, nil, UnitLabel(rp, 1)),
	}
	got := Counts(rp, Pointers(pods), func(string) *corev1.Node { return onPrem })
	if want := []int{2, 1}; !slices.Equal(got, want) {
		t.Errorf("Counts = %v, want %v", got, want)
	}
}

func TestGroups(t *testing.T) {
	rp := seedPolicy()
	rp.Spec.MatchLabelKeys = []string{"pod-template-hash", "track"}
	pod := func(labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: labels}}
	}
	a := pod(map[string]string{"pod-template-hash": "a", "track": "stable"})
	a2 := pod(map[string]string{"pod-template-hash": "a", "track": "stable", "other": "x"})
	b := pod(map[string]string{"pod-template-hash": "b", "track": "stable"})
	missing := pod(map[string]string{"pod-template-hash": "a"})
	if !SameGroup(rp, a, a2) || SameGroup(rp, a, b) || SameGroup(rp, a, missing) {
		t.Error("SameGroup does not group by the values of every key")
	}
	if k := MissingGroupKey(rp, missing); k != "track" {
		t.Errorf("MissingGroupKey = %q, want track", k)
	}
	if k := MissingGroupKey(rp, a); k != "" {
		t.Errorf("MissingGroupKey = %q for a pod with every key", k)
	}
	if got := InGroup(rp, []*corev1.Pod{a, b, a2, missing}, a); len(got) != 2 || got[0].Labels["other"] != "" || got[1].Labels["other"] != "x" {
		t.Errorf("InGroup kept %v, want a and a2", got)
	}
	rp.Spec.MatchLabelKeys = nil
	if got := InGroup(rp, []*corev1.Pod{a, b}, a); len(got) != 2 {
		t.Errorf("InGroup without matchLabelKeys kept %d of 2", len(got))
	}
	if !SameGroup(rp, a, b) || MissingGroupKey(rp, missing) != "" {
		t.Error("without matchLabelKeys every pod is in one group")
	}
}

func TestExceedsMaxResources(t *testing.T) {
	gpu := corev1.ResourceName("nvidia.com/gpu")
	u := &v1alpha1.Unit{MaxResources: corev1.ResourceList{gpu: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("64Gi")}}
	req := func(gpus, mem string) corev1.ResourceList {
		return corev1.ResourceList{gpu: resource.MustParse(gpus), corev1.ResourceMemory: resource.MustParse(mem), corev1.ResourceCPU: resource.MustParse("100")}
	}
	cases := []struct {
		name      string
		used, req corev1.ResourceList
		want      bool
	}{
		{"empty unit", nil, req("1", "1Gi"), false},
		{"fills it exactly", req("3", "32Gi"), req("1", "32Gi"), false},
		{"one GPU too many", req("4", "1Gi"), req("1", "1Gi"), true},
		{"memory too much", req("1", "60Gi"), req("1", "8Gi"), true},
		{"uncapped resources are free", req("0", "0"), corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1000")}, false},
		{"a pod asking nothing of a full unit", req("4", "64Gi"), corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}, false},
	}
	for _, c := range cases {
		if got := ExceedsMaxResources(u, c.used, c.req); got != c.want {
			t.Errorf("%s: ExceedsMaxResources = %v, want %v", c.name, got, c.want)
		}
	}
	if ExceedsMaxResources(&v1alpha1.Unit{}, req("100", "1Ti"), req("100", "1Ti")) {
		t.Error("a unit without maxResources exceeded")
	}
}

func TestUsageSumsCountedRequests(t *testing.T) {
	rp := seedPolicy()
	gpu := corev1.ResourceName("nvidia.com/gpu")
	rp.Spec.Units[0].MaxResources = corev1.ResourceList{gpu: resource.MustParse("8")}
	mk := func(name string, gpus int64, terminating bool) corev1.Pod {
		p := corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rp.Namespace, Labels: map[string]string{LabelPolicy: rp.Name, LabelUnit: "0"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{gpu: *resource.NewQuantity(gpus, resource.DecimalSI)},
			}}}},
		}
		for k, v := range rp.Spec.Selector {
			p.Labels[k] = v
		}
		if terminating {
			p.DeletionTimestamp = &metav1.Time{Time: t0}
		}
		return p
	}
	counts, used := Usage(rp, Pointers([]corev1.Pod{mk("a", 2, false), mk("b", 3, false), mk("gone", 4, true)}), func(string) *corev1.Node { return nil })
	if counts[0] != 2 || used[0].Name(gpu, resource.DecimalSI).Value() != 5 || used[1] != nil {
		t.Errorf("Usage = %v, %v; want 2 pods using 5 GPUs on unit 0 and nothing summed for unit 1", counts, used)
	}
}
