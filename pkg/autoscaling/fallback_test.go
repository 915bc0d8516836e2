package autoscaling

import (
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

func scalingActive(status corev1.ConditionStatus, reason, since string) []autoscalingv2.HorizontalPodAutoscalerCondition {
	return []autoscalingv2.HorizontalPodAutoscalerCondition{
		{Type: autoscalingv2.AbleToScale, Status: corev1.ConditionTrue, Reason: "ReadyForNewScale", LastTransitionTime: metav1.NewTime(utc("2026-03-02T09:00:00Z"))},
		{Type: autoscalingv2.ScalingActive, Status: status, Reason: reason, LastTransitionTime: metav1.NewTime(utc(since))},
	}
}

func TestEvaluateFallback(t *testing.T) {
	fb := &v1alpha1.Fallback{FailureThreshold: 3, Replicas: 2}
	const since = "2026-03-02T10:00:00Z"
	period := 15 * time.Second
	tests := []struct {
		name     string
		fb       *v1alpha1.Fallback
		conds    []autoscalingv2.HorizontalPodAutoscalerCondition
		now      string
		failing  bool
		failures int32
		active   bool
		next     string
	}{
		{"metric healthy", fb, scalingActive(corev1.ConditionTrue, "ValidMetricFound", since), "2026-03-02T10:05:00Z", false, 0, false, ""},
		{"no conditions yet", fb, nil, "2026-03-02T10:05:00Z", false, 0, false, ""},
		{"first failure", fb, scalingActive(corev1.ConditionFalse, "FailedGetPodsMetric", since), since, true, 1, false, "2026-03-02T10:00:15Z"},
		{"second failure", fb, scalingActive(corev1.ConditionFalse, "FailedGetPodsMetric", since), "2026-03-02T10:00:15Z", true, 2, false, "2026-03-02T10:00:30Z"},
		{"just before the third", fb, scalingActive(corev1.ConditionFalse, "FailedGetPodsMetric", since), "2026-03-02T10:00:29.999Z", true, 2, false, "2026-03-02T10:00:30Z"},
		{"third failure reaches the threshold", fb, scalingActive(corev1.ConditionFalse, "FailedGetExternalMetric", since), "2026-03-02T10:00:30Z", true, 3, true, ""},
		{"long outage", fb, scalingActive(corev1.ConditionFalse, "FailedGetResourceMetric", since), "2026-03-02T11:00:00Z", true, 241, true, ""},
		{"threshold one acts at once", &v1alpha1.Fallback{FailureThreshold: 1, Replicas: 2}, scalingActive(corev1.ConditionFalse, "FailedGetObjectMetric", since), since, true, 1, true, ""},
		{"threshold defaults to 3", &v1alpha1.Fallback{Replicas: 2}, scalingActive(corev1.ConditionFalse, "FailedGetPodsMetric", since), "2026-03-02T10:00:29Z", true, 2, false, "2026-03-02T10:00:30Z"},
		{"no fallback configured: counted, never active, no requeue", nil, scalingActive(corev1.ConditionFalse, "FailedGetPodsMetric", since), "2026-03-02T11:00:00Z", true, 241, false, ""},
		{"scaling disabled is not a metric failure", fb, scalingActive(corev1.ConditionFalse, "ScalingDisabled", since), "2026-03-02T11:00:00Z", false, 0, false, ""},
		{"ambiguous selector is not a metric failure", fb, scalingActive(corev1.ConditionFalse, "AmbiguousSelector", since), "2026-03-02T11:00:00Z", false, 0, false, ""},
		{"kcm clock ahead of ours", fb, scalingActive(corev1.ConditionFalse, "FailedGetPodsMetric", since), "2026-03-02T09:59:50Z", true, 1, false, "2026-03-02T10:00:15Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := EvaluateFallback(tt.fb, tt.conds, utc(tt.now), period)
			if st.Failing != tt.failing || st.ConsecutiveFailures != tt.failures || st.Active != tt.active {
				t.Errorf("got failing=%v failures=%d active=%v, want %v %d %v", st.Failing, st.ConsecutiveFailures, st.Active, tt.failing, tt.failures, tt.active)
			}
			var next time.Time
			if tt.next != "" {
				next = utc(tt.next)
			}
			if !st.NextCheck.Equal(next) {
				t.Errorf("next check = %v, want %v", st.NextCheck, next)
			}
		})
	}
}

func TestMetricFailureReason(t *testing.T) {
	for reason, want := range map[string]bool{
		"FailedGetPodsMetric":              true,
		"FailedGetExternalMetric":          true,
		"FailedGetResourceMetric":          true,
		"FailedGetObjectMetric":            true,
		"FailedGetContainerResourceMetric": true,
		"FailedGetScale":                   false,
		"ValidMetricFound":                 false,
		"ScalingDisabled":                  false,
		"InvalidSelector":                  false,
		"":                                 false,
	} {
		if got := MetricFailureReason(reason); got != want {
			t.Errorf("MetricFailureReason(%q) = %v, want %v", reason, got, want)
		}
	}
}
