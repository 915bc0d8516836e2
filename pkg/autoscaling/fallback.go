package autoscaling

import (
	"strings"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// MetricFailureReason reports whether a ScalingActive=False reason means the
// HPA could not read a metric (FailedGetPodsMetric, FailedGetExternalMetric,
// FailedGetResourceMetric, FailedGetObjectMetric,
// FailedGetContainerResourceMetric). Other False reasons (ScalingDisabled
// with zero replicas, AmbiguousSelector, InvalidSelector) are configuration
// states that a higher floor would not fix, so they never trigger fallback.
func MetricFailureReason(reason string) bool {
	return strings.HasPrefix(reason, "FailedGet") && strings.HasSuffix(reason, "Metric")
}

// FallbackState is the fallback verdict at one instant.
type FallbackState struct {
	// Failing: the HPA's ScalingActive condition is False for a metric
	// failure. Since is that condition's lastTransitionTime.
	Failing bool
	Since   time.Time
	// ConsecutiveFailures estimates how many HPA syncs in a row have failed.
	ConsecutiveFailures int32
	// Active: fallback is configured and the count reached its threshold.
	Active bool
	// NextCheck is when the count next grows (the next HPA sync) while it
	// still matters: zero unless fallback is configured, the metric is
	// failing and the threshold is not reached yet.
	NextCheck time.Time
}

// EvaluateFallback counts consecutive failed HPA checks without keeping any
// state of its own. The HPA controller re-evaluates its metrics once per
// sync period and, while they keep failing, leaves ScalingActive=False with
// an unchanged lastTransitionTime. The failure that flipped the condition was
// check 1, and one more check has failed every syncPeriod since:
//
//	failures = floor((now - lastTransitionTime) / syncPeriod) + 1
//
// Because the count is derived from the HPA's own status it survives
// controller restarts and leader changes, and it is not inflated by
// reconciles that other events trigger. syncPeriod must match
// kube-controller-manager's --horizontal-pod-autoscaler-sync-period.
// Recovery is immediate: the first sync that reads the metric again sets
// ScalingActive=True and the fallback floor is released.
func EvaluateFallback(fb *v1alpha1.Fallback, conds []autoscalingv2.HorizontalPodAutoscalerCondition, now time.Time, syncPeriod time.Duration) FallbackState {
	var st FallbackState
	for _, c := range conds {
		if c.Type == autoscalingv2.ScalingActive && c.Status == corev1.ConditionFalse && MetricFailureReason(c.Reason) {
			st.Failing = true
			st.Since = c.LastTransitionTime.Time
		}
	}
	if !st.Failing || syncPeriod <= 0 {
		return st
	}
	elapsed := now.Sub(st.Since)
	if elapsed < 0 {
		// Clock skew between this controller and kcm: count the one
		// failure the condition proves.
		elapsed = 0
	}
	n := int64(elapsed/syncPeriod) + 1
	st.ConsecutiveFailures = int32(min(n, int64(1<<31-1)))
	threshold := v1alpha1.DefaultFallbackFailureThreshold
	if fb != nil && fb.FailureThreshold > 0 {
		threshold = fb.FailureThreshold
	}
	st.Active = fb != nil && st.ConsecutiveFailures >= threshold
	if fb != nil && !st.Active {
		st.NextCheck = st.Since.Add(time.Duration(n) * syncPeriod)
	}
	return st
}
