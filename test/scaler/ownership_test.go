package scaler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spillway-dev/spillway/internal/testobjects"
	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/autoscaling"
	"github.com/spillway-dev/spillway/pkg/controller/inferencescaler"
	"github.com/spillway-dev/spillway/test/framework"
)

// TestDeletingScalerDeletesItsHPA: the HPA carries a controller owner
// reference to its InferenceScaler, so kube-controller-manager's garbage
// collector deletes it with the scaler.
func TestDeletingScalerDeletesItsHPA(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := framework.Namespace(t, cluster)
	deployment(t, ns, "predictor", "gc-predictor", 0)
	s := scalerFor(ns, "predictor", "predictor", 1, 3)
	create(t, s)
	s = waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)

	h, err := getHPA(ctx, ns, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	owner := metav1.GetControllerOf(h)
	if owner == nil || owner.UID != s.UID || owner.Kind != "InferenceScaler" || !ptr.Deref(owner.BlockOwnerDeletion, false) {
		t.Fatalf("HPA controller reference = %+v, want the InferenceScaler %s (uid %s) blocking owner deletion", owner, s.Name, s.UID)
	}

	if err := kc.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitHPAGone(t, ns, s.Name)
}

// TestForeignHPAIsRefused: a workload already scaled by an HPA spillway does
// not own is left alone (two HPAs on one Deployment disable each other); the
// scaler reports it and takes over once the foreign HPA is gone.
func TestForeignHPAIsRefused(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := framework.Namespace(t, cluster)
	deployment(t, ns, "predictor", "foreign-predictor", 0)
	foreign := testobjects.HPA(testobjects.HPAOptions{Name: "legacy-hpa", Namespace: ns, Deployment: "predictor", MinReplicas: ptr.To[int32](2), MaxReplicas: 5},
		func(h *autoscalingv2.HorizontalPodAutoscaler) {
			h.Spec.Metrics = []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   corev1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](80)},
				},
			}}
		})
	create(t, foreign)
	foreignGen := foreign.Generation

	s := scalerFor(ns, "qwen", "predictor", 1, 3)
	create(t, s)
	s = waitReady(t, ns, s.Name, metav1.ConditionFalse, v1alpha1.ReasonForeignHPA)
	ready := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady)
	if !strings.Contains(ready.Message, "legacy-hpa") || !strings.Contains(ready.Message, "predictor") {
		t.Errorf("Ready message %q names neither the foreign HPA legacy-hpa nor the Deployment predictor", ready.Message)
	}
	note := waitEvent(t, ns, s.Name, corev1.EventTypeWarning, v1alpha1.ReasonForeignHPA)
	if !strings.Contains(note, "legacy-hpa") {
		t.Errorf("ForeignHPA event note %q does not name legacy-hpa", note)
	}

	// Nothing of ours was created and the foreign HPA was not touched.
	var hpas autoscalingv2.HorizontalPodAutoscalerList
	if err := kc.List(ctx, &hpas, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(hpas.Items) != 1 || hpas.Items[0].Name != "legacy-hpa" {
		t.Fatalf("HPAs in the namespace = %v, want only legacy-hpa", hpaNames(hpas.Items))
	}
	got := hpas.Items[0]
	if got.Generation != foreignGen || ptr.Deref(got.Spec.MinReplicas, 0) != 2 || got.Spec.MaxReplicas != 5 || len(got.OwnerReferences) != 0 {
		t.Errorf("the foreign HPA was modified: generation %d (was %d), min %d, max %d, owners %v",
			got.Generation, foreignGen, ptr.Deref(got.Spec.MinReplicas, 0), got.Spec.MaxReplicas, got.OwnerReferences)
	}
	for _, mf := range got.ManagedFields {
		if mf.Manager == inferencescaler.FieldManager {
			t.Errorf("spillway-controller wrote to the foreign HPA: %+v", mf)
		}
	}

	// The foreign HPA goes away: the scaler takes over without a spec change.
	if err := kc.Delete(ctx, &got); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)
	h, err := getHPA(ctx, ns, s.Name)
	if err != nil {
		t.Fatalf("the scaler's HPA after the foreign one was deleted: %v", err)
	}
	if !metav1.IsControlledBy(h, s) || h.Spec.ScaleTargetRef.Name != "predictor" {
		t.Errorf("HPA %s: owners %v, target %v", h.Name, h.OwnerReferences, h.Spec.ScaleTargetRef)
	}
}

// TestInferenceServiceNeedsExternalAutoscalerClass: unless KServe is told
// that an external autoscaler scales the predictor, KServe creates its own
// HPA; the scaler refuses until the annotation says "external", and the
// annotation change alone wakes it.
func TestInferenceServiceNeedsExternalAutoscalerClass(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := framework.Namespace(t, cluster)
	inferenceService(t, ns, "qwen-chat", nil)
	s := scalerFor(ns, "qwen-chat", "", 1, 3)
	s.Spec.ScaleTargetRef = v1alpha1.ScaleTargetRef{APIVersion: v1alpha1.InferenceServiceAPIVersion, Kind: v1alpha1.InferenceServiceKind, Name: "qwen-chat"}
	create(t, s)
	s = waitReady(t, ns, s.Name, metav1.ConditionFalse, v1alpha1.ReasonKServeAutoscalerClassNotExternal)
	if msg := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady).Message; !strings.Contains(msg, autoscaling.KServeAutoscalerClassAnnotation) {
		t.Errorf("Ready message %q does not name the annotation %s", msg, autoscaling.KServeAutoscalerClassAnnotation)
	}
	if _, err := getHPA(ctx, ns, s.Name); !apierrors.IsNotFound(err) {
		t.Fatalf("HPA while refused: err = %v, want NotFound", err)
	}

	isvc := &unstructured.Unstructured{}
	isvc.SetAPIVersion(v1alpha1.InferenceServiceAPIVersion)
	isvc.SetKind(v1alpha1.InferenceServiceKind)
	isvc.SetNamespace(ns)
	isvc.SetName("qwen-chat")
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, autoscaling.KServeAutoscalerClassAnnotation, autoscaling.KServeAutoscalerClassExternal)
	if err := kc.Patch(ctx, isvc, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)
	framework.Eventually(t, 10*time.Second, 300*time.Millisecond, "the HPA on the predictor Deployment", func(ctx context.Context) (bool, string) {
		h, err := getHPA(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		return h.Spec.ScaleTargetRef.Name == "qwen-chat-predictor", fmt.Sprintf("target %v", h.Spec.ScaleTargetRef)
	})
}

func hpaNames(hs []autoscalingv2.HorizontalPodAutoscaler) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Name
	}
	return out
}
