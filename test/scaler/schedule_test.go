package scaler

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/test/framework"
)

// TestScheduleWindowRaisesAndRestoresFloor runs a one-minute window on the
// real clock: the window opens at the next whole minute (UTC, the default
// zone). The controller must raise the HPA's floor when the window opens,
// never before, and restore it when it closes, never before; the real HPA
// then scales the Deployment up to the raised floor.
func TestScheduleWindowRaisesAndRestoresFloor(t *testing.T) {
	requireEnv(t)
	ns := framework.Namespace(t, cluster)
	const window = "pre-warm"
	deployment(t, ns, "predictor", "sched-predictor", 1)

	s := scalerFor(ns, "predictor", "predictor", 1, 3)
	create(t, s)
	waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)

	// The window is added once the scaler is in place, leaving enough time
	// before it opens to see the quiet state first.
	now := time.Now().UTC()
	start := now.Truncate(time.Minute).Add(time.Minute)
	if start.Sub(now) < 25*time.Second {
		start = start.Add(time.Minute)
	}
	end := start.Add(time.Minute)
	schedules := []v1alpha1.Schedule{{
		Name:        window,
		Cron:        fmt.Sprintf("%d %d * * *", start.Minute(), start.Hour()),
		Duration:    metav1.Duration{Duration: time.Minute},
		MinReplicas: 3,
	}}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"schedules": schedules}})
	if err != nil {
		t.Fatal(err)
	}
	if err := kc.Patch(context.Background(), s, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	t.Logf("window %s: cron %q, open [%s, %s)", window, schedules[0].Cron, start.Format(time.RFC3339), end.Format(time.RFC3339))

	// Before the window: floor 1, the next boundary is the window's start.
	waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)
	framework.Eventually(t, 20*time.Second, 300*time.Millisecond, "the quiet state before the window", func(ctx context.Context) (bool, string) {
		sc, err := getScaler(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		h, err := getHPA(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		st := sc.Status
		ok := ptr.Deref(h.Spec.MinReplicas, 0) == 1 && st.EffectiveMinReplicas == 1 && st.ActiveSchedule == "" &&
			st.NextScheduleBoundary != nil && st.NextScheduleBoundary.Time.Equal(start)
		return ok, fmt.Sprintf("HPA minReplicas %d, status %+v", ptr.Deref(h.Spec.MinReplicas, 0), brief(sc))
	})
	if !time.Now().Before(start) {
		t.Fatalf("setting up took past the window's start %s; the quiet state was not observed in time", start)
	}

	// The window opens: floor 3 at or after start, and the real HPA scales
	// the Deployment to it.
	framework.Eventually(t, time.Until(start)+time.Minute, 300*time.Millisecond, "the window to raise the HPA floor to 3", func(ctx context.Context) (bool, string) {
		h, err := getHPA(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		min := ptr.Deref(h.Spec.MinReplicas, 0)
		if min != 1 && time.Now().Before(start) {
			t.Errorf("HPA minReplicas is %d before the window opens at %s", min, start)
		}
		return min == 3, fmt.Sprintf("HPA minReplicas %d", min)
	})
	framework.Eventually(t, 30*time.Second, 300*time.Millisecond, "status to show the open window", func(ctx context.Context) (bool, string) {
		sc, err := getScaler(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		st := sc.Status
		ok := st.ActiveSchedule == window && st.EffectiveMinReplicas == 3 &&
			st.NextScheduleBoundary != nil && st.NextScheduleBoundary.Time.Equal(end) &&
			hasCondition(sc, v1alpha1.ConditionScheduleActive, metav1.ConditionTrue, v1alpha1.ReasonWindowOpen)
		return ok, fmt.Sprintf("status %+v", brief(sc))
	})
	waitEvent(t, ns, s.Name, corev1.EventTypeNormal, "ScheduleWindowOpened")
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "the HPA to scale the Deployment to the raised floor", func(ctx context.Context) (bool, string) {
		n, err := deploymentReplicas(ctx, ns, "predictor")
		if err != nil {
			return false, err.Error()
		}
		return n == 3, fmt.Sprintf("Deployment spec.replicas %d", n)
	})

	// The window closes: floor back to 1 at or after end.
	framework.Eventually(t, time.Until(end)+time.Minute, 300*time.Millisecond, "the window's close to restore the HPA floor to 1", func(ctx context.Context) (bool, string) {
		h, err := getHPA(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		min := ptr.Deref(h.Spec.MinReplicas, 0)
		if min != 3 && time.Now().Before(end) {
			t.Errorf("HPA minReplicas is %d before the window closes at %s", min, end)
		}
		return min == 1, fmt.Sprintf("HPA minReplicas %d", min)
	})
	framework.Eventually(t, 30*time.Second, 300*time.Millisecond, "status to show no open window", func(ctx context.Context) (bool, string) {
		sc, err := getScaler(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		st := sc.Status
		ok := st.ActiveSchedule == "" && st.EffectiveMinReplicas == 1 &&
			st.NextScheduleBoundary != nil && st.NextScheduleBoundary.Time.Equal(start.Add(24*time.Hour)) &&
			hasCondition(sc, v1alpha1.ConditionScheduleActive, metav1.ConditionFalse, v1alpha1.ReasonNoWindowOpen)
		return ok, fmt.Sprintf("status %+v", brief(sc))
	})
	waitEvent(t, ns, s.Name, corev1.EventTypeNormal, "ScheduleWindowClosed")
}

func hasCondition(s *v1alpha1.InferenceScaler, typ string, status metav1.ConditionStatus, reason string) bool {
	for _, c := range s.Status.Conditions {
		if c.Type == typ {
			return c.Status == status && c.Reason == reason
		}
	}
	return false
}

// brief is the part of the status the tests assert on, for messages.
func brief(s *v1alpha1.InferenceScaler) string {
	st := s.Status
	next := "<nil>"
	if st.NextScheduleBoundary != nil {
		next = st.NextScheduleBoundary.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("{floor %d, active %q, next %s, fallback %t, failures %d, current %d, desired %d, %s, %s, %s}",
		st.EffectiveMinReplicas, st.ActiveSchedule, next, st.FallbackActive, st.ConsecutiveMetricFailures,
		st.CurrentReplicas, st.DesiredReplicas,
		condition(st.Conditions, v1alpha1.ConditionReady),
		condition(st.Conditions, v1alpha1.ConditionScheduleActive),
		condition(st.Conditions, v1alpha1.ConditionFallbackActive))
}
