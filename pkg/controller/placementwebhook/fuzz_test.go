package placementwebhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/controller/placementwebhook"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	rules "github.com/spillway-dev/spillway/pkg/placement"
)

const fzPool = "spillway.dev/pool"

// fzUnits maps each unit label of the fixture's policies to its node
// selector, to check the affinity a placement adds.
var fzUnits = map[string]map[string]string{"onprem": {fzPool: "onprem"}, "elastic": {fzPool: "elastic"}}

// fzPolicy is a fixture ResourcePolicy over the two pools; a nil max is
// no max.
func fzPolicy(name, app string, strategy v1alpha1.Strategy, onpremMax, elasticMax *int32) *v1alpha1.ResourcePolicy {
	return testobjects.ResourcePolicy(testobjects.PolicyOptions{
		Name: name, Selector: map[string]string{"app": app}, Strategy: strategy,
		Units: []v1alpha1.Unit{
			{Name: "onprem", NodeSelector: map[string]v1alpha1.LabelValue{fzPool: "onprem"}, Max: onpremMax},
			{Name: "elastic", NodeSelector: map[string]v1alpha1.LabelValue{fzPool: "elastic"}, Max: elasticMax},
		},
	})
}

func fzNode(name, pool string) *corev1.Node {
	return testobjects.Node(testobjects.NodeOptions{Name: name, Labels: map[string]string{fzPool: pool}, Allocatable: testobjects.Resources("32", 1)})
}

type fzRecorder struct{}

func (fzRecorder) Eventf(runtime.Object, runtime.Object, string, string, string, string, ...any) {}

// Seed pods, as the JSON an API server sends in an AdmissionReview.
var fzPods = []string{
	`{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"p-","namespace":"default","labels":{"app":"isvc"}},"spec":{"containers":[{"name":"c","image":"vllm","resources":{"requests":{"nvidia.com/gpu":"1"}}}]}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"isvc","spillway.dev/policy":"forged","spillway.dev/unit":"onprem","x.spillway.dev/y":"z","spillway.dev/workload":"w"},"annotations":{"spillway.dev/placement-id":"forged","spillway.dev/signature":"x"}},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"capped"}},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"isvc"}},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"i"}]}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":null,"annotations":{}},"spec":{"containers":[]}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"isvc","spillway.dev/a~b":"1","spillway.dev/~1":"2"}},"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]}]},{"matchExpressions":null},{"matchFields":[{"key":"metadata.name","operator":"In","values":["n"]}]}]}}},"containers":[{"name":"c","image":"i"}]}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"isvc"}},"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[]}}},"containers":[{"name":"c","image":"i"}]}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"isvc"}},"spec":{"affinity":{"podAntiAffinity":{}},"containers":[{"name":"c","image":"i"}]}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"isvc"},"labels":{"app":"other"}},"spec":{}}`,
	`{"kind":"Pod","apiVersion":"v1","metadata":null,"spec":null}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"isvc"}},"spec":{"containers":[{"name":"c","resources":{"requests":{"nvidia.com/gpu":"1e3","cpu":"-1"}}}],"overhead":{"cpu":"1"}}}`,
	`{"apiVersion":"v1","kind":"Node","metadata":{"name":"n"}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"isvc"}},"unknownField":{"nested":[1,2]},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
	// A selected pod without spec, or with "spec":null (found by fuzzing: the
	// patch added /spec/affinity under a missing /spec).
	`{"metadata":{"labels":{"app":"isvc"}}}`,
	`{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"isvc"}},"spec":null}`,
	`not json`,
	``,
	`null`,
}

// FuzzWebhookHandle sends the placement webhook AdmissionReviews of pods
// whose JSON is fuzzed. However odd the object, the webhook must answer:
// admit it (undecodable objects included, unchanged), with a JSON patch that
// applies to the object as sent and yields a pod that keeps no spillway.dev/
// key but the ones spillway sets; refuse only under the documented
// required-strategy max (the "capped" policy here); and never panic, not
// even into its own recover.
func FuzzWebhookHandle(f *testing.F) {
	for _, p := range fzPods {
		f.Add([]byte(p), false)
	}
	f.Add([]byte(fzPods[0]), true)

	scheme, err := kubescheme.New()
	if err != nil {
		f.Fatal(err)
	}
	reader := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(
			fzPolicy("gpu", "isvc", v1alpha1.StrategyPrefer, ptr.To[int32](1), nil),
			// Every unit at max under the required strategy: the one
			// documented refusal.
			fzPolicy("capped", "capped", v1alpha1.StrategyRequired, ptr.To[int32](0), ptr.To[int32](0)),
			fzNode("onprem-1", "onprem"), fzNode("elastic-1", "elastic"),
		).
		WithIndex(&corev1.Pod{}, placementwebhook.IndexOccupiedNode, placementwebhook.IndexOccupiedNodeFunc).
		WithIndex(&corev1.Pod{}, placementwebhook.IndexPlacementID, placementwebhook.IndexPlacementIDFunc).
		Build()
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	decoder := admission.NewDecoder(scheme)
	secret := []byte("0123456789abcdef0123456789abcdef")
	keys := func() ([]byte, error) { return secret, nil }
	n := 0

	f.Fuzz(func(t *testing.T, raw []byte, dryRun bool) {
		// A fresh tracker per request: reservations of earlier inputs
		// would otherwise pile up (the fake clock never expires them).
		tracker := rules.NewTracker(clk, time.Minute, 2*time.Minute)
		reg := prometheus.NewRegistry()
		hook, err := placementwebhook.New(reader, decoder, fzRecorder{}, reg,
			placementwebhook.Options{Tracker: tracker, Clock: clk, Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		n++
		req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID:       types.UID(fmt.Sprintf("fuzz-%d", n)),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default", Operation: admissionv1.Create, DryRun: &dryRun,
			Object: runtime.RawExtension{Raw: raw},
		}}
		panics := fzErrors(t, reg, "panic")
		encodes := fzErrors(t, reg, "encode")
		resp := hook.Handle(context.Background(), req)
		if d := fzErrors(t, reg, "panic") - panics; d != 0 {
			t.Fatalf("the handler panicked on %q", raw)
		}
		if d := fzErrors(t, reg, "encode") - encodes; d != 0 {
			t.Fatalf("the handler could not encode its answer to %q", raw)
		}
		if !resp.Allowed {
			msg := ""
			if resp.Result != nil {
				msg = resp.Result.Message
			}
			if !strings.HasPrefix(msg, "ResourcePolicy capped: ") {
				t.Fatalf("refused %q: %+v", raw, resp.Result)
			}
			return
		}

		var orig corev1.Pod
		origErr := decoder.DecodeRaw(runtime.RawExtension{Raw: raw}, &orig)
		if resp.Patch == nil {
			if origErr == nil {
				checkNoForgedKeys(t, raw, &orig)
			}
			return
		}
		if origErr != nil {
			t.Fatalf("patched an object that does not decode (%v): %q", origErr, raw)
		}
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch type %v", resp.PatchType)
		}
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("patch %s does not decode: %v", resp.Patch, err)
		}
		patched, err := patch.Apply(raw)
		if err != nil {
			t.Fatalf("patch %s does not apply to %q: %v", resp.Patch, raw, err)
		}
		var out corev1.Pod
		if err := decoder.DecodeRaw(runtime.RawExtension{Raw: patched}, &out); err != nil {
			t.Fatalf("the patched pod does not decode (%v): %s", err, patched)
		}
		checkNoForgedKeys(t, patched, &out)
		unit, placed := out.Labels[rules.LabelUnit]
		if !placed {
			return
		}
		// The affinity spillway adds is the typed rules.PinToUnit of the
		// pod as it arrived, and nothing else of the spec changes.
		want := orig.Spec.DeepCopy()
		if sel, inUnit := fzUnits[unit]; inUnit {
			rules.PinToUnit(want, sel)
		}
		if !equality.Semantic.DeepEqual(want, &out.Spec) {
			wj, _ := json.Marshal(want)
			gj, _ := json.Marshal(out.Spec)
			t.Fatalf("placed on %s: spec\n%s\nwant\n%s\nfrom %q with patch %s", unit, gj, wj, raw, resp.Patch)
		}
	})
}

// checkNoForgedKeys asserts the admitted pod carries spillway.dev/ keys only
// as spillway writes them: the policy and unit labels of a placement of a
// fixture policy, and the annotations of a placement (its ID being this
// request's).
func checkNoForgedKeys(t *testing.T, raw []byte, pod *corev1.Pod) {
	t.Helper()
	policy := pod.Labels[rules.LabelPolicy]
	for k, v := range pod.Labels {
		if !rules.Reserved(k) {
			continue
		}
		switch {
		case k == rules.LabelPolicy && (v == "gpu" || v == "capped"):
		case k == rules.LabelUnit && policy != "" && (v == "onprem" || v == "elastic" || v == rules.UnitNone):
		default:
			t.Fatalf("admitted with label %s=%q: %s", k, v, raw)
		}
	}
	for k, v := range pod.Annotations {
		if !rules.Reserved(k) {
			continue
		}
		switch {
		case policy == "":
		case k == rules.AnnotationPlacementID && strings.HasPrefix(v, "fuzz-"):
			continue
		case k == rules.AnnotationSignature || k == rules.AnnotationReservedNode:
			continue
		}
		t.Fatalf("admitted with annotation %s=%q: %s", k, v, raw)
	}
}

// fzErrors reads the webhook's error counter for reason from its registry
// (the webhook's instruments are its own).
func fzErrors(t *testing.T, g prometheus.Gatherer, reason string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != metricnames.PlacementWebhookErrors {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == metricnames.LabelReason && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
