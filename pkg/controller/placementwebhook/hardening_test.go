package placementwebhook

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	rules "github.com/spillway-dev/spillway/pkg/placement"
)

// TestDryRunReservesNothing: a server-side dry run gets the answer a real
// creation would, but holds no room, so any number of them leaves the
// on-prem slot to the real pod.
func TestDryRunReservesNothing(t *testing.T) {
	e := newEnv(t, nil, seed(), gpuNode("onprem-1", onPremPool, 1))
	for range 5 {
		req := createRequest(t, predictor("dry"))
		req.DryRun = ptr.To(true)
		resp := e.hook.Handle(context.Background(), req)
		placed := &corev1.Pod{}
		if err := json.Unmarshal(applyPatch(t, resp, req.Object.Raw), placed); err != nil {
			t.Fatal(err)
		}
		if unitOf(placed) != "0" || placed.Annotations[rules.AnnotationReservedNode] != "onprem-1" {
			t.Fatalf("dry run answered unit %s node %q, want what a real creation gets (0 on onprem-1)", unitOf(placed), placed.Annotations[rules.AnnotationReservedNode])
		}
	}
	tx := e.tracker.Begin(nil)
	n := tx.Len()
	tx.Done()
	if n != 0 {
		t.Errorf("%d reservations after dry runs, want none", n)
	}
	if _, placed := e.admit(t, predictor("real")); unitOf(placed) != "0" {
		t.Errorf("the real pod after the dry runs went to unit %s, want 0", unitOf(placed))
	}
	if got := testutil.ToFloat64(e.metrics.Placements.WithLabelValues("default", "qwen-chat", "0")); got != 1 {
		t.Errorf("placements metric = %v, want only the real pod", got)
	}
}

// TestReservedNodeNeedsSpillwaysSignature: a pending pod's reserved-node
// annotation takes room on the node only when spillway signed it for that
// pod's namespace, once per placement ID.
func TestReservedNodeNeedsSpillwaysSignature(t *testing.T) {
	keys := testKeyring(t)
	// pending is a pod waiting for the scheduler with a reservation on
	// onprem-1 and the given signature; sign names the claim to sign.
	pending := func(name, ns, id string, sign func(c rules.Claim) string) *corev1.Pod {
		p := predictor(name)
		p.Namespace = ns
		p.CreationTimestamp = metav1.NewTime(t0)
		p.Labels[rules.LabelPolicy], p.Labels[rules.LabelUnit] = "qwen-chat", "0"
		p.Annotations = map[string]string{rules.AnnotationPlacementID: id, rules.AnnotationReservedNode: "onprem-1"}
		if sign != nil {
			p.Annotations[rules.AnnotationSignature] = sign(rules.ClaimOf(p))
		}
		return p
	}
	valid := func(c rules.Claim) string {
		s, err := keys.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	otherKey := func(c rules.Claim) string {
		k := rules.NewKeyring(clocktesting.NewFakeClock(t0), time.Hour)
		if err := k.Update([]byte("some other key")); err != nil {
			t.Fatal(err)
		}
		s, _ := k.Sign(c)
		return s
	}
	forVictim := func(c rules.Claim) string { c.Namespace = "default"; return valid(c) }
	cases := []struct {
		name string
		objs []client.Object
		gpus int64
		want string // unit of the new pod in namespace default
	}{
		{"signed reservation takes the gpu", []client.Object{pending("w", "default", "id-1", valid)}, 1, "1"},
		{"signed reservation of another tenant takes the gpu too", []client.Object{pending("w", "mallory", "id-1", valid)}, 1, "1"},
		{"unsigned reservation takes nothing", []client.Object{pending("w", "mallory", "id-1", nil)}, 1, "0"},
		{"signature under another key takes nothing", []client.Object{pending("w", "mallory", "id-1", otherKey)}, 1, "0"},
		{"signature copied from another namespace takes nothing", []client.Object{pending("w", "mallory", "id-1", forVictim)}, 1, "0"},
		{"garbage signature takes nothing", []client.Object{pending("w", "mallory", "id-1", func(rules.Claim) string { return "!!" })}, 1, "0"},
		{"copies of one signed placement take one gpu", []client.Object{
			pending("w1", "mallory", "id-1", valid), pending("w2", "mallory", "id-1", valid), pending("w3", "mallory", "id-1", valid),
		}, 2, "0"},
		{"two signed placements take two gpus", []client.Object{
			pending("w1", "mallory", "id-1", valid), pending("w2", "mallory", "id-2", valid),
		}, 2, "1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil, append(c.objs, seed(), gpuNode("onprem-1", onPremPool, c.gpus))...)
			if _, placed := e.admit(t, predictor("new")); unitOf(placed) != c.want {
				t.Errorf("unit = %s, want %s", unitOf(placed), c.want)
			}
		})
	}
}

// TestStripsReservedKeys: spillway.dev/ keys a pod is created with are
// removed whether or not a policy selects it, except the user keys.
func TestStripsReservedKeys(t *testing.T) {
	e := newEnv(t, nil, seed(), gpuNode("onprem-1", onPremPool, 1))
	p := predictor("p")
	p.Labels["app"] = "not-selected"
	p.Labels[rules.LabelPolicy] = "qwen-chat"
	p.Labels["x.spillway.dev/anything"] = "1"
	p.Labels["spillway.dev/workload"] = "llm"
	p.Labels["notspillway.dev/kept"] = "1"
	p.Annotations = map[string]string{
		rules.AnnotationReservedNode: "onprem-1", rules.AnnotationPlacementID: "forged",
		rules.AnnotationSignature: "forged", "example.com/kept": "1",
	}
	resp, placed := e.admit(t, p)
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result)
	}
	wantLabels := map[string]string{"app": "not-selected", "spillway.dev/workload": "llm", "notspillway.dev/kept": "1"}
	if !equality.Semantic.DeepEqual(placed.Labels, wantLabels) {
		t.Errorf("labels = %v, want %v", placed.Labels, wantLabels)
	}
	if want := map[string]string{"example.com/kept": "1"}; !equality.Semantic.DeepEqual(placed.Annotations, want) {
		t.Errorf("annotations = %v, want %v", placed.Annotations, want)
	}
	if placed.Spec.Affinity != nil {
		t.Error("an unselected pod gets no affinity")
	}
}

// TestPatchIsTargeted sends pods as JSON with fields this binary does not
// know (as a newer API server would): the patch must leave them, and must
// pin the pod exactly as rules.PinToUnit does on the typed pod.
func TestPatchIsTargeted(t *testing.T) {
	zone := corev1.NodeSelectorRequirement{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}
	cases := []struct {
		name     string
		affinity *corev1.Affinity
	}{
		{"no affinity", nil},
		{"pod affinity only", &corev1.Affinity{PodAffinity: &corev1.PodAffinity{}}},
		{"preferred node affinity only", &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 1, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{zone}}}},
		}}},
		{"no terms", &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{}}}},
		{"terms with and without expressions", &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{
				{MatchExpressions: []corev1.NodeSelectorRequirement{zone}},
				{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"n"}}}},
			},
		}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil, seed(), gpuNode("onprem-1", onPremPool, 1))
			p := predictor("p")
			p.Spec.Affinity = c.affinity.DeepCopy()
			req := createRequest(t, p)
			// Fields from the future, at the top, in the spec, inside a
			// container and inside the affinity the patch extends.
			var obj map[string]any
			if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
				t.Fatal(err)
			}
			obj["futureTopLevel"] = "kept"
			spec := obj["spec"].(map[string]any)
			spec["futureSpecField"] = map[string]any{"nested": []any{1.0, 2.0}}
			spec["containers"].([]any)[0].(map[string]any)["futureContainerField"] = true
			if aff, ok := spec["affinity"].(map[string]any); ok {
				aff["futureAffinityField"] = "kept"
			}
			raw, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			req.Object.Raw = raw

			resp := e.hook.Handle(context.Background(), req)
			out := applyPatch(t, resp, raw)
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			gotSpec := got["spec"].(map[string]any)
			if got["futureTopLevel"] != "kept" || gotSpec["futureSpecField"] == nil ||
				gotSpec["containers"].([]any)[0].(map[string]any)["futureContainerField"] != true {
				t.Errorf("the patch %s removed fields it does not set", resp.Patch)
			}
			if c.affinity != nil && gotSpec["affinity"].(map[string]any)["futureAffinityField"] != "kept" {
				t.Errorf("the patch %s rewrote the affinity instead of extending it", resp.Patch)
			}
			placed := &corev1.Pod{}
			if err := json.Unmarshal(out, placed); err != nil {
				t.Fatal(err)
			}
			// The pod's own constraints may rule the on-prem node out.
			unit, ok := rules.UnitIndex(seed(), unitOf(placed))
			if !ok || unit == rules.Outside {
				t.Fatalf("placed on unit %q", unitOf(placed))
			}
			want := p.DeepCopy()
			rules.PinToUnit(&want.Spec, seed().Spec.Units[unit].NodeSelector)
			if !equality.Semantic.DeepEqual(placed.Spec.Affinity, want.Spec.Affinity) {
				t.Errorf("affinity = %+v, want %+v", placed.Spec.Affinity, want.Spec.Affinity)
			}
			var ops []patchOp
			if err := json.Unmarshal(resp.Patch, &ops); err != nil {
				t.Fatal(err)
			}
			ours := func(path string) bool {
				return slices.ContainsFunc([]string{"/metadata/labels", "/metadata/annotations", "/spec/affinity"}, func(p string) bool { return strings.HasPrefix(path, p) })
			}
			for _, op := range ops {
				if op.Op != "add" || !ours(op.Path) {
					t.Errorf("operation %s %s is outside what spillway sets", op.Op, op.Path)
				}
			}
		})
	}
}

// TestPanicAdmitsUnchanged: a panic while placing admits the pod
// unchanged with a warning and counts it, and leaves the policy's lock
// free for the next pod.
func TestPanicAdmitsUnchanged(t *testing.T) {
	var panicked atomic.Bool
	e := newEnv(t, &interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if _, ok := list.(*corev1.PodList); ok && !panicked.Swap(true) {
			panic("boom")
		}
		return c.List(ctx, list, opts...)
	}}, seed(), gpuNode("onprem-1", onPremPool, 1))
	p := predictor("p")
	p.Labels[rules.LabelUnit] = "1"
	resp := e.hook.Handle(context.Background(), createRequest(t, p))
	if !panicked.Load() {
		t.Fatal("the interceptor never ran")
	}
	if !resp.Allowed || len(resp.Patch) != 0 || len(resp.Warnings) != 1 {
		t.Fatalf("after a panic: allowed %v patch %s warnings %v, want an unchanged admission with a warning", resp.Allowed, resp.Patch, resp.Warnings)
	}
	if got := testutil.ToFloat64(e.metrics.Errors.WithLabelValues("panic")); got != 1 {
		t.Errorf("panic errors = %v, want 1", got)
	}
	if _, placed := e.admit(t, predictor("next")); unitOf(placed) != "0" {
		t.Errorf("the next pod went to unit %s, want 0", unitOf(placed))
	}
}

// TestDifferentPoliciesDoNotSerialize: while one policy's admission holds
// its lock, another policy's pod is placed.
func TestDifferentPoliciesDoNotSerialize(t *testing.T) {
	other := seed(func(rp *v1alpha1.ResourcePolicy) { rp.Namespace = "other" })
	e := newEnv(t, nil, seed(), other, gpuNode("onprem-1", onPremPool, 1), gpuNode("onprem-2", onPremPool, 1))
	held := e.tracker.BeginPolicy("default/qwen-chat", nil)
	defer held.Done()
	p := predictor("p")
	p.Namespace = "other"
	req := createRequest(t, p)
	req.Namespace = "other"
	// Would wait forever on a single lock.
	resp := e.hook.Handle(context.Background(), req)
	placed := &corev1.Pod{}
	if err := json.Unmarshal(applyPatch(t, resp, req.Object.Raw), placed); err != nil {
		t.Fatal(err)
	}
	if unitOf(placed) != "0" {
		t.Errorf("unit = %s, want 0", unitOf(placed))
	}
}
