package placementwebhook

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	rules "github.com/spillway-dev/spillway/pkg/placement"
)

// TestUnitPodMarks: a unit's podLabels and podAnnotations are written onto
// the pods placed there (spillway's own keys still win), and only pods
// that carry them count toward its max.
func TestUnitPodMarks(t *testing.T) {
	rp := seed(func(rp *v1alpha1.ResourcePolicy) {
		rp.Spec.Units[0].Max = ptr.To[int32](1)
		rp.Spec.Units[0].PodLabels = map[string]string{"tier": "onprem"}
		rp.Spec.Units[0].PodAnnotations = map[string]string{"cost-center": "gpu"}
	})
	// A pod on the on-prem node from before the policy, without the
	// marks: it does not count toward unit 0's max.
	previous := predictor("previous")
	previous.Spec.NodeName = "onprem-1"
	e := newEnv(t, nil, rp, gpuNode("onprem-1", onPremPool, 8), previous)
	_, placed := e.admit(t, predictor("p-0"))
	if u := unitOf(placed); u != "0" {
		t.Fatalf("p-0 on unit %s, want 0: the unmarked pod does not count", u)
	}
	if placed.Labels["tier"] != "onprem" || placed.Annotations["cost-center"] != "gpu" {
		t.Errorf("marks not written: labels %v, annotations %v", placed.Labels, placed.Annotations)
	}
	if placed.Labels[rules.LabelUnit] != "0" || placed.Annotations[rules.AnnotationPlacementID] == "" {
		t.Errorf("spillway's own keys lost: labels %v, annotations %v", placed.Labels, placed.Annotations)
	}
	// Once p-0 exists with its marks, unit 0 is at its max.
	placed.Spec.NodeName = ""
	if err := e.hook.reader.(client.Client).Create(context.Background(), placed); err != nil {
		t.Fatal(err)
	}
	if _, next := e.admit(t, predictor("p-1")); unitOf(next) != "1" {
		t.Errorf("p-1 on unit %s, want 1: unit 0 holds its one marked pod", unitOf(next))
	}
}

// TestMatchLabelKeys: max counts per group of pod-template-hash, so a
// rollout's new ReplicaSet gets its own slots; a pod without the key is
// refused with a message naming it.
func TestMatchLabelKeys(t *testing.T) {
	rp := seed(func(rp *v1alpha1.ResourcePolicy) {
		rp.Spec.Units[0].Max = ptr.To[int32](1)
		rp.Spec.MatchLabelKeys = []string{"pod-template-hash"}
	})
	old := predictor("old-1")
	old.Labels["pod-template-hash"] = "old"
	old.Labels[rules.LabelPolicy], old.Labels[rules.LabelUnit] = rp.Name, "0"
	e := newEnv(t, nil, rp, gpuNode("onprem-1", onPremPool, 8), old)

	same := predictor("old-2")
	same.Labels["pod-template-hash"] = "old"
	if _, placed := e.admit(t, same); unitOf(placed) != "1" {
		t.Errorf("a second pod of the old ReplicaSet on unit %s, want 1 (its group is at max)", unitOf(placed))
	}
	fresh := predictor("new-1")
	fresh.Labels["pod-template-hash"] = "new"
	if _, placed := e.admit(t, fresh); unitOf(placed) != "0" {
		t.Errorf("the new ReplicaSet's first pod on unit %s, want 0 (its own group)", unitOf(placed))
	}
	resp, _ := e.admit(t, predictor("no-hash"))
	if resp.Allowed || !strings.Contains(resp.Result.Message, `no label "pod-template-hash"`) {
		t.Errorf("a pod without the key: allowed %v, message %q", resp.Allowed, resp.Result.Message)
	}
}

// TestLackResourceAndNoTerminating: the room of a terminating pod counts as
// free under every policy (a replacement takes its slot), but once that
// room is taken, LackResourceAndNoTerminating keeps further pods waiting
// in the unit while it still has terminating pods, where
// LackResourceOrExceedMax spills them.
func TestLackResourceAndNoTerminating(t *testing.T) {
	for _, tc := range []struct {
		policy v1alpha1.NextUnitPolicy
		want   string
	}{
		{v1alpha1.LackResourceAndNoTerminating, "0"},
		{v1alpha1.LackResourceOrExceedMax, "1"},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			rp := seed(func(rp *v1alpha1.ResourcePolicy) {
				rp.Spec.WhenTryNextUnits = &v1alpha1.WhenTryNextUnits{Policy: tc.policy}
			})
			leaving := predictor("leaving")
			leaving.Spec.NodeName = "onprem-1"
			leaving.Labels[rules.LabelPolicy], leaving.Labels[rules.LabelUnit] = rp.Name, "0"
			leaving.DeletionTimestamp = &metav1.Time{Time: t0}
			leaving.Finalizers = []string{"example.com/hold"}
			e := newEnv(t, nil, rp, gpuNode("onprem-1", onPremPool, 1), leaving)
			if _, placed := e.admit(t, predictor("replacement")); unitOf(placed) != "0" {
				t.Fatalf("the replacement on unit %s, want 0 (the leaving pod's GPU)", unitOf(placed))
			}
			resp, placed := e.admit(t, predictor("another"))
			if unitOf(placed) != tc.want {
				t.Errorf("another pod on unit %s, want %s: %s", unitOf(placed), tc.want, resp.Result.Message)
			}
		})
	}
}

// TestPreemptPolicy: the on-prem node is full of a low-priority batch
// pod. A high-priority predictor preempts it there under BeforeNextUnit
// and spills to the elastic unit under AfterAllUnits (the default); a pod
// that may not preempt spills either way.
func TestPreemptPolicy(t *testing.T) {
	never := corev1.PreemptNever
	for _, tc := range []struct {
		name     string
		policy   v1alpha1.PreemptPolicy
		priority int32
		never    bool
		want     string
	}{
		{"before next unit preempts on-prem", v1alpha1.BeforeNextUnit, 1000, false, "0"},
		{"after all units spills", v1alpha1.AfterAllUnits, 1000, false, "1"},
		{"default is after all units", "", 1000, false, "1"},
		{"equal priority cannot preempt", v1alpha1.BeforeNextUnit, 0, false, "1"},
		{"preemptionPolicy Never cannot preempt", v1alpha1.BeforeNextUnit, 1000, true, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := seed(func(rp *v1alpha1.ResourcePolicy) { rp.Spec.PreemptPolicy = tc.policy })
			batch := predictor("batch")
			batch.Labels = map[string]string{"app": "batch"}
			batch.Spec.NodeName = "onprem-1"
			e := newEnv(t, nil, rp, gpuNode("onprem-1", onPremPool, 1), batch)
			p := predictor("urgent")
			p.Spec.Priority = &tc.priority
			if tc.never {
				p.Spec.PreemptionPolicy = &never
			}
			resp, placed := e.admit(t, p)
			if unitOf(placed) != tc.want {
				t.Errorf("unit %s, want %s: %s", unitOf(placed), tc.want, resp.Result.Message)
			}
		})
	}
}

// TestVirtualUnit: a unit of resource eci without nodeSelector selects
// the virtual nodes, needs no room (they are elastic), and its pods get
// the toleration for the virtual nodes' taint.
func TestVirtualUnit(t *testing.T) {
	rp := seed(func(rp *v1alpha1.ResourcePolicy) {
		rp.Spec.Units = []v1alpha1.Unit{rp.Spec.Units[0], {Resource: "eci"}, rp.Spec.Units[1]}
	})
	// The on-prem node is full; no virtual node exists yet.
	full := predictor("full")
	full.Labels = map[string]string{"app": "other"}
	full.Spec.NodeName = "onprem-1"
	e := newEnv(t, nil, rp, gpuNode("onprem-1", onPremPool, 1), full)
	p := predictor("p-0")
	p.Spec.Tolerations = []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists}}
	resp, placed := e.admit(t, p)
	if unitOf(placed) != "1" {
		t.Fatalf("unit %s, want 1 (the virtual unit): %s", unitOf(placed), resp.Result.Message)
	}
	terms := placed.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 1 || len(terms[0].MatchExpressions) != 1 || terms[0].MatchExpressions[0].Key != "type" || terms[0].MatchExpressions[0].Values[0] != "virtual-kubelet" {
		t.Errorf("affinity %+v, want type=virtual-kubelet", terms)
	}
	if len(placed.Spec.Tolerations) != 2 || placed.Spec.Tolerations[1].Key != "virtual-kubelet.io/provider" || placed.Spec.Tolerations[1].Operator != corev1.TolerationOpExists {
		t.Errorf("tolerations %+v, want the pod's own and virtual-kubelet.io/provider", placed.Spec.Tolerations)
	}
	// A pod on the fixed unit gets no toleration.
	e = newEnv(t, nil, rp, gpuNode("onprem-1", onPremPool, 1))
	if _, placed := e.admit(t, predictor("p-1")); unitOf(placed) != "0" || len(placed.Spec.Tolerations) != 0 {
		t.Errorf("on-prem pod: unit %s, tolerations %+v", unitOf(placed), placed.Spec.Tolerations)
	}
}

// TestLackResourceAndNoTerminatingCacheBehind: a rollout deletes the old
// pod just before it creates the new one, and the webhook's cache may not
// show the deletion yet. The unit is full in the cache, so the pod would
// spill; the webhook asks the API server first and, seeing the old pod
// terminating there, keeps the new pod waiting in its unit. Without an API
// reader (the cache alone) it spills, which shows the test can fail.
func TestLackResourceAndNoTerminatingCacheBehind(t *testing.T) {
	for _, tc := range []struct {
		live bool
		want string
	}{{true, "0"}, {false, "1"}} {
		t.Run(fmt.Sprintf("live=%v", tc.live), func(t *testing.T) {
			rp := seed(func(rp *v1alpha1.ResourcePolicy) {
				rp.Spec.WhenTryNextUnits = &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.LackResourceAndNoTerminating}
			})
			old := predictor("old")
			old.Spec.NodeName = "onprem-1"
			old.Labels[rules.LabelPolicy], old.Labels[rules.LabelUnit] = rp.Name, "0"
			e := newEnv(t, nil, rp, gpuNode("onprem-1", onPremPool, 1), old)
			if tc.live {
				leaving := old.DeepCopy()
				leaving.DeletionTimestamp = &metav1.Time{Time: t0}
				leaving.Finalizers = []string{"example.com/hold"}
				api := fake.NewClientBuilder().WithScheme(scheme(t)).WithObjects(rp.DeepCopy(), leaving).Build()
				e.hook.ShareReservations(api, api)
			}
			resp, placed := e.admit(t, predictor("new"))
			if unitOf(placed) != tc.want {
				t.Errorf("the new pod on unit %s, want %s: %s", unitOf(placed), tc.want, resp.Result.Message)
			}
		})
	}
}
