package placementwebhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	rules "github.com/spillway-dev/spillway/pkg/placement"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	onPremPool  = "np-xxxxx"
	elasticPool = "np-yyyyy"
	poolLabel   = "alibabacloud.com/nodepool-id"
)

func scheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// seed is the seed's ResourcePolicy with apiVersion changed.
func seed(mutate ...func(*v1alpha1.ResourcePolicy)) *v1alpha1.ResourcePolicy {
	return testobjects.ResourcePolicy(testobjects.PolicyOptions{
		Created: t0, Strategy: v1alpha1.StrategyPrefer, Units: testobjects.TwoUnits(poolLabel, onPremPool, elasticPool),
	}, mutate...)
}

func gpuNode(name, pool string, gpus int64) *corev1.Node {
	return testobjects.Node(testobjects.NodeOptions{Name: name, Labels: map[string]string{poolLabel: pool}, Allocatable: testobjects.Resources("32", gpus)})
}

func predictor(name string) *corev1.Pod {
	return testobjects.Pod(testobjects.PodOptions{
		Name: name, Labels: map[string]string{testobjects.AppLabel: testobjects.AppValue},
		Requests: corev1.ResourceList{testobjects.GPU: resource.MustParse("1")},
	}, func(p *corev1.Pod) {
		p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		p.Spec.Containers[0].Image = "vllm"
	})
}

func boundTo(p *corev1.Pod, node string) *corev1.Pod {
	p.Spec.NodeName = node
	p.Status.Phase = corev1.PodRunning
	return p
}

type env struct {
	hook    *Webhook
	tracker *rules.Tracker
	clock   *clocktesting.FakeClock
	metrics *metrics
	events  *events.FakeRecorder
}

func newEnv(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) *env {
	t.Helper()
	s := scheme(t)
	b := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).
		WithIndex(&corev1.Pod{}, IndexOccupiedNode, IndexOccupiedNodeFunc).
		WithIndex(&corev1.Pod{}, IndexPlacementID, IndexPlacementIDFunc)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	clk := clocktesting.NewFakeClock(t0.Add(time.Hour))
	tr := rules.NewTracker(clk, time.Minute, 2*time.Minute)
	rec := events.NewFakeRecorder(100)
	hook, err := New(b.Build(), admission.NewDecoder(s), rec, prometheus.NewRegistry(), Options{Tracker: tr, Clock: clk, Keys: testKeys})
	if err != nil {
		t.Fatal(err)
	}
	return &env{hook: hook, tracker: tr, clock: clk, metrics: hook.metrics, events: rec}
}

// readThroughIndex makes the webhook read pods and nodes as Register sets
// it up, from informers' stores (here holding objs' pods and nodes) and a
// ledger fed the pod events, not the client.
func (e *env) readThroughIndex(t *testing.T, objs ...client.Object) {
	t.Helper()
	indexers := podIndexers()
	indexers[toolscache.NamespaceIndex] = toolscache.MetaNamespaceIndexFunc
	idx := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, indexers)
	e.hook.ledger = rules.NewLedger()
	events := e.hook.podEvents()
	nodes := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	for _, o := range objs {
		if n, ok := o.(*corev1.Node); ok {
			if err := nodes.Add(n.DeepCopy()); err != nil {
				t.Fatal(err)
			}
		}
		if p, ok := o.(*corev1.Pod); ok {
			p = p.DeepCopy()
			if err := idx.Add(p); err != nil {
				t.Fatal(err)
			}
			events.OnAdd(p, true)
		}
	}
	e.hook.pods = idx
	e.hook.nodes = nodes
}

// testKeys stands in for the webhook's serving key.
func testKeys() ([]byte, error) { return []byte("the webhook serving key"), nil }

// testKeyring signs as a webhook with testKeys does.
func testKeyring(t *testing.T) *rules.Keyring {
	t.Helper()
	k := rules.NewKeyring(clocktesting.NewFakeClock(t0), time.Hour)
	secret, _ := testKeys()
	if err := k.Update(secret); err != nil {
		t.Fatal(err)
	}
	return k
}

var requests int

func createRequest(t *testing.T, p *corev1.Pod) admission.Request {
	t.Helper()
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	requests++
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       types.UID(fmt.Sprintf("req-%d", requests)),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "default", Operation: admissionv1.Create,
		Object: runtime.RawExtension{Raw: raw},
	}}
}

// admit runs the webhook and returns the pod as the API server would store
// it after applying the patch.
func (e *env) admit(t *testing.T, p *corev1.Pod) (admission.Response, *corev1.Pod) {
	t.Helper()
	req := createRequest(t, p)
	resp := e.hook.Handle(context.Background(), req)
	if !resp.Allowed {
		return resp, nil
	}
	if len(resp.Patch) == 0 {
		return resp, p
	}
	placed := &corev1.Pod{}
	if err := json.Unmarshal(applyPatch(t, resp, req.Object.Raw), placed); err != nil {
		t.Fatal(err)
	}
	return resp, placed
}

// applyPatch applies the response's JSON patch to raw, as the API server
// does.
func applyPatch(t *testing.T, resp admission.Response, raw []byte) []byte {
	t.Helper()
	if len(resp.Patches) != 0 {
		t.Fatalf("the webhook answers with its own encoded patch, not Patches: %v", resp.Patches)
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	out, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("applying patch %s: %v", resp.Patch, err)
	}
	return out
}

func unitOf(p *corev1.Pod) string {
	if p == nil {
		return "denied"
	}
	if u, ok := p.Labels[rules.LabelUnit]; ok {
		return u
	}
	return "unplaced"
}

func TestHandle(t *testing.T) {
	cases := []struct {
		name   string
		objs   []client.Object
		pod    *corev1.Pod
		unit   string
		node   string // reserved node annotation
		denied string // substring of the denial
	}{
		{"no policy: unplaced", []client.Object{gpuNode("onprem-1", onPremPool, 1)}, predictor("p"), "unplaced", "", ""},
		{"not selected: unplaced", []client.Object{seed(), gpuNode("onprem-1", onPremPool, 1)}, func() *corev1.Pod {
			p := predictor("p")
			p.Labels["app"] = "other"
			return p
		}(), "unplaced", "", ""},
		{"seed: on-prem has room", []client.Object{seed(), gpuNode("onprem-1", onPremPool, 1)}, predictor("p"), "0", "onprem-1", ""},
		{"seed: on-prem full spills to elastic", []client.Object{seed(), gpuNode("onprem-1", onPremPool, 1), boundTo(predictor("old"), "onprem-1")}, predictor("p"), "1", "", ""},
		{"foreign pod fills on-prem", []client.Object{seed(), gpuNode("onprem-1", onPremPool, 1), func() *corev1.Pod {
			p := boundTo(predictor("foreign"), "onprem-1")
			p.Namespace, p.Labels = "other", nil
			return p
		}()}, predictor("p"), "1", "", ""},
		{"no on-prem node at all", []client.Object{seed()}, predictor("p"), "1", "", ""},
		{"max reached by a pod placed earlier", []client.Object{seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr.To[int32](1) }),
			gpuNode("onprem-1", onPremPool, 4), func() *corev1.Pod {
				p := boundTo(predictor("old"), "onprem-1")
				p.Labels[rules.LabelPolicy], p.Labels[rules.LabelUnit] = "qwen-chat", "0"
				return p
			}()}, predictor("p"), "1", "", ""},
		{"named units label by name", []client.Object{seed(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.Units[0].Name, rp.Spec.Units[1].Name = "onprem", "cloud"
		}), gpuNode("onprem-1", onPremPool, 1)}, predictor("p"), "onprem", "onprem-1", ""},
		{"required and all at max: denied", []client.Object{seed(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.Strategy = v1alpha1.StrategyRequired
			rp.Spec.Units[0].Max, rp.Spec.Units[1].Max = ptr.To[int32](0), ptr.To[int32](0)
		})}, predictor("p"), "denied", "", "every unit is at its max"},
		{"prefer and all at max: outside", []client.Object{seed(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.Units[0].Max, rp.Spec.Units[1].Max = ptr.To[int32](0), ptr.To[int32](0)
		})}, predictor("p"), rules.UnitNone, "", ""},
		{"placement keys written by the creator are replaced", []client.Object{seed(), gpuNode("onprem-1", onPremPool, 1)}, func() *corev1.Pod {
			p := predictor("p")
			p.Labels[rules.LabelPolicy], p.Labels[rules.LabelUnit] = "qwen-chat", "1"
			p.Annotations = map[string]string{rules.AnnotationReservedNode: "elsewhere", rules.AnnotationPlacementID: "forged"}
			return p
		}(), "0", "onprem-1", ""},
		{"exceed max ignores room", []client.Object{seed(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.WhenTryNextUnits = &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.ExceedMax}
		}), gpuNode("onprem-1", onPremPool, 1), boundTo(predictor("old"), "onprem-1")}, predictor("p"), "0", "", ""},
	}
	for _, c := range cases {
		for _, indexed := range []bool{false, true} {
			name := c.name
			if indexed {
				name += " (read through the informer's indexes)"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, nil, c.objs...)
				if indexed {
					e.readThroughIndex(t, c.objs...)
				}
				resp, placed := e.admit(t, c.pod)
				if got := unitOf(placed); got != c.unit {
					t.Fatalf("unit = %s, want %s (response %+v)", got, c.unit, resp.Result)
				}
				if c.denied != "" {
					if !strings.Contains(resp.Result.Message, c.denied) {
						t.Errorf("denial %q lacks %q", resp.Result.Message, c.denied)
					}
					if got := testutil.ToFloat64(e.metrics.Denied.WithLabelValues("default", "qwen-chat")); got != 1 {
						t.Errorf("denied metric = %v", got)
					}
					return
				}
				if got := placed.Annotations[rules.AnnotationReservedNode]; got != c.node {
					t.Errorf("reserved node = %q, want %q", got, c.node)
				}
				if c.unit == "unplaced" {
					if len(resp.Patch) != 0 {
						t.Errorf("expected no patch, got %s", resp.Patch)
					}
					return
				}
				if placed.Labels[rules.LabelPolicy] != "qwen-chat" || !strings.HasPrefix(placed.Annotations[rules.AnnotationPlacementID], "req-") {
					t.Errorf("labels %v annotations %v", placed.Labels, placed.Annotations)
				}
				if !testKeyring(t).Signed(placed) {
					t.Errorf("placement %v %v is not signed", placed.Labels, placed.Annotations)
				}
				if placed.Labels["app"] != "isvc.qwen-predictor" {
					t.Error("the pod's own labels must stay")
				}
				if got := testutil.ToFloat64(e.metrics.Placements.WithLabelValues("default", "qwen-chat", c.unit)); got != 1 {
					t.Errorf("placements metric for unit %s = %v", c.unit, got)
				}
				// The deletion cost comes with the placement (the one the
				// deletioncost controller computes), except outside the
				// units, where that controller decides from the node.
				rp := c.objs[0].(*v1alpha1.ResourcePolicy)
				wantCost := ""
				if idx, ok := rules.UnitIndex(rp, c.unit); ok && idx != rules.Outside {
					wantCost = rules.FormatCost(rules.DeletionCost(len(rp.Spec.Units), idx))
				}
				if got := placed.Annotations[rules.AnnotationDeletionCost]; got != wantCost {
					t.Errorf("deletion cost = %q, want %q", got, wantCost)
				}
				aff := placed.Spec.Affinity
				if c.unit == rules.UnitNone {
					if aff != nil {
						t.Errorf("a pod placed outside the units gets no affinity, got %+v", aff)
					}
					return
				}
				idx, _ := rules.UnitIndex(rp, c.unit)
				pool := rp.Spec.Units[idx].NodeSelector[poolLabel]
				terms := aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
				if len(terms) != 1 || len(terms[0].MatchExpressions) != 1 || terms[0].MatchExpressions[0].Values[0] != pool {
					t.Errorf("affinity terms = %+v, want one term pinning %s", terms, pool)
				}
			})
		}
	}
}

func TestHandleKeepsOwnAffinity(t *testing.T) {
	e := newEnv(t, nil, seed(), gpuNode("onprem-1", onPremPool, 1))
	p := predictor("p")
	p.Spec.NodeSelector = map[string]string{"gpu": "a10"}
	zone := corev1.NodeSelectorRequirement{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}}
	p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{zone}}, {MatchExpressions: []corev1.NodeSelectorRequirement{zone}}},
	}}}
	// The on-prem node lacks gpu=a10, so the pod's own selector rules it out.
	_, placed := e.admit(t, p)
	if unitOf(placed) != "1" {
		t.Fatalf("unit = %s, want 1 (the only on-prem node does not match the pod's nodeSelector)", unitOf(placed))
	}
	terms := placed.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 2 {
		t.Fatalf("terms = %d, want the pod's 2", len(terms))
	}
	for i, term := range terms {
		if len(term.MatchExpressions) != 2 || term.MatchExpressions[0].Key != "zone" || term.MatchExpressions[1].Values[0] != elasticPool {
			t.Errorf("term %d = %+v, want zone AND the elastic pool", i, term)
		}
	}
	if placed.Spec.NodeSelector["gpu"] != "a10" {
		t.Error("the pod's nodeSelector must stay")
	}
}

// TestBurst admits ten pods before the cache shows any of them: the
// in-flight reservations must keep them from all taking on-prem's four GPUs.
func TestBurst(t *testing.T) {
	e := newEnv(t, nil, seed(), gpuNode("onprem-1", onPremPool, 2), gpuNode("onprem-2", onPremPool, 2))
	var got []string
	for i := range 10 {
		_, placed := e.admit(t, predictor(fmt.Sprintf("burst-%d", i)))
		got = append(got, unitOf(placed))
	}
	if s := strings.Join(got, ""); s != "0000111111" {
		t.Errorf("units = %s, want 0000111111", s)
	}
	// Once the reservations expire (their pods never appeared), the room is back.
	e.clock.Step(2 * time.Minute)
	if _, placed := e.admit(t, predictor("later")); unitOf(placed) != "0" {
		t.Errorf("after the reservations expired: unit %s, want 0", unitOf(placed))
	}
}

// TestBurstWithMax checks in-flight placements count toward max.
func TestBurstWithMax(t *testing.T) {
	e := newEnv(t, nil, seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr.To[int32](2) }), gpuNode("onprem-1", onPremPool, 4))
	var got []string
	for i := range 5 {
		_, placed := e.admit(t, predictor(fmt.Sprintf("p-%d", i)))
		got = append(got, unitOf(placed))
	}
	if s := strings.Join(got, ""); s != "00111" {
		t.Errorf("units = %s, want 00111", s)
	}
}

// TestReservationReleasedWhenSeen checks a reservation stops counting once
// its pod is in the cache, where the pod itself is counted instead.
func TestReservationReleasedWhenSeen(t *testing.T) {
	visible := boundTo(predictor("first"), "onprem-1")
	visible.Labels[rules.LabelPolicy], visible.Labels[rules.LabelUnit] = "qwen-chat", "0"
	visible.Annotations = map[string]string{rules.AnnotationPlacementID: "req-visible"}
	e := newEnv(t, nil, seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.Units[0].Max = ptr.To[int32](2) }), gpuNode("onprem-1", onPremPool, 4), visible)
	tx := e.tracker.Begin(nil)
	tx.Reserve(rules.Reservation{ID: "req-visible", Policy: "default/qwen-chat", Unit: "0", Node: "onprem-1", Requests: rules.PodRequests(visible)})
	tx.Done()
	// Counted once (max 2 leaves one slot), not twice.
	if _, placed := e.admit(t, predictor("second")); unitOf(placed) != "0" {
		t.Errorf("unit = %s, want 0", unitOf(placed))
	}
}

func TestCooldownSpills(t *testing.T) {
	e := newEnv(t, nil, seed(), gpuNode("onprem-1", onPremPool, 1))
	e.tracker.Cool(rules.UnitKey{Policy: "default/qwen-chat", Unit: "0"})
	if _, placed := e.admit(t, predictor("p")); unitOf(placed) != "1" {
		t.Errorf("unit = %s, want 1 while unit 0 cools down", unitOf(placed))
	}
	e.clock.Step(2 * time.Minute)
	if _, placed := e.admit(t, predictor("q")); unitOf(placed) != "0" {
		t.Errorf("unit = %s, want 0 after the cooldown", unitOf(placed))
	}
}

func TestOldestPolicyWins(t *testing.T) {
	newer := seed(func(rp *v1alpha1.ResourcePolicy) {
		rp.Name, rp.CreationTimestamp = "newer", metav1.NewTime(t0.Add(time.Minute))
		rp.Spec.Units = rp.Spec.Units[1:]
	})
	e := newEnv(t, nil, newer, seed(), gpuNode("onprem-1", onPremPool, 1))
	_, placed := e.admit(t, predictor("p"))
	if placed.Labels[rules.LabelPolicy] != "qwen-chat" || unitOf(placed) != "0" {
		t.Errorf("placed by %s on %s, want qwen-chat on 0", placed.Labels[rules.LabelPolicy], unitOf(placed))
	}
}

func TestHandleOtherRequests(t *testing.T) {
	e := newEnv(t, nil, seed())
	upd := createRequest(t, predictor("p"))
	upd.Operation = admissionv1.Update
	if resp := e.hook.Handle(context.Background(), upd); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("update: %+v", resp)
	}
	// What this binary cannot decode is admitted unchanged, as
	// failurePolicy: Ignore would.
	bad := createRequest(t, predictor("p"))
	bad.Object.Raw = []byte("{not json")
	resp := e.hook.Handle(context.Background(), bad)
	if !resp.Allowed || len(resp.Patch) != 0 || len(resp.Warnings) != 1 {
		t.Errorf("undecodable pod: allowed %v patch %s warnings %v, want an unchanged admission with a warning", resp.Allowed, resp.Patch, resp.Warnings)
	}
	if got := testutil.ToFloat64(e.metrics.Errors.WithLabelValues("decode")); got != 1 {
		t.Errorf("decode errors = %v", got)
	}
	bound := createRequest(t, boundTo(predictor("p"), "n1"))
	if resp := e.hook.Handle(context.Background(), bound); !resp.Allowed || len(resp.Patch) != 0 {
		t.Errorf("pod with nodeName: %+v", resp)
	}
}

// TestReadFailureAdmitsUnplaced checks the webhook's own trouble never
// blocks pod creation.
func TestReadFailureAdmitsUnplaced(t *testing.T) {
	e := newEnv(t, &interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		return errors.New("cache not started")
	}}, seed())
	resp, placed := e.admit(t, predictor("p"))
	if !resp.Allowed || unitOf(placed) != "unplaced" {
		t.Fatalf("allowed %v unit %s, want an unplaced admission", resp.Allowed, unitOf(placed))
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "cache not started") {
		t.Errorf("warnings = %v", resp.Warnings)
	}
	if got := testutil.ToFloat64(e.metrics.Errors.WithLabelValues("read")); got != 1 {
		t.Errorf("read errors = %v", got)
	}
}

// TestStatusCooldownSpills checks a cooldown recorded by the leader in the
// policy's status steers this replica's webhook too.
func TestStatusCooldownSpills(t *testing.T) {
	rp := seed()
	rp.Status.Units = []v1alpha1.UnitStatus{{Name: "ecs", CooldownUntil: &metav1.Time{Time: t0.Add(time.Hour + time.Minute)}}, {Name: "elastic"}}
	e := newEnv(t, nil, rp, gpuNode("onprem-1", onPremPool, 1))
	if _, placed := e.admit(t, predictor("p")); unitOf(placed) != "1" {
		t.Errorf("unit = %s, want 1 while the status says unit 0 cools down", unitOf(placed))
	}
	e.clock.Step(time.Minute)
	if _, placed := e.admit(t, predictor("q")); unitOf(placed) != "0" {
		t.Errorf("unit = %s, want 0 once the status cooldown ended", unitOf(placed))
	}
}

// TestBurstConcurrent is TestBurst with the ten admissions in parallel, as
// the API server sends them.
func TestBurstConcurrent(t *testing.T) {
	e := newEnv(t, nil, seed(), gpuNode("onprem-1", onPremPool, 2), gpuNode("onprem-2", onPremPool, 2))
	reqs := make([]admission.Request, 10)
	for i := range reqs {
		reqs[i] = createRequest(t, predictor(fmt.Sprintf("burst-%d", i)))
	}
	units := make(chan string, len(reqs))
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() {
			resp := e.hook.Handle(context.Background(), req)
			var ops []patchOp
			if err := json.Unmarshal(resp.Patch, &ops); err != nil {
				t.Error(err)
			}
			unit := "unplaced"
			for _, op := range ops {
				if op.Path == "/metadata/labels/spillway.dev~1unit" {
					unit = op.Value.(string)
				}
			}
			units <- unit
		})
	}
	wg.Wait()
	close(units)
	count := map[string]int{}
	for u := range units {
		count[u]++
	}
	if count["0"] != 4 || count["1"] != 6 {
		t.Errorf("units = %v, want 4 on 0 and 6 on 1", count)
	}
}

// TestUnsyncedStoresAreNotRead: the webhook serves before the manager's
// informers have listed everything. Until the pod and node informers have
// synced, a review must read through the client (the cache reader waits
// for them) rather than from their still-empty stores, which would show
// the on-prem unit with no node and spill the pod.
func TestUnsyncedStoresAreNotRead(t *testing.T) {
	for _, synced := range []bool{false, true} {
		t.Run(fmt.Sprintf("synced=%v", synced), func(t *testing.T) {
			objs := []client.Object{seed(), gpuNode("onprem-1", onPremPool, 1)}
			e := newEnv(t, nil, objs...)
			e.readThroughIndex(t) // empty stores: the informers have listed nothing yet
			e.hook.storesSynced = func() bool { return synced }
			_, placed := e.admit(t, predictor("p"))
			want := "0" // the on-prem node, read through the client
			if synced {
				want = "1" // the stores claim to be complete and hold no node
			}
			if got := unitOf(placed); got != want {
				t.Errorf("unit = %s, want %s", got, want)
			}
		})
	}
}
