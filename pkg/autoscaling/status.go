package autoscaling

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// CurrentMetrics is the HPA's last reading of each metric, in order; a
// metric the HPA has no reading of has no value (never zero).
func CurrentMetrics(st autoscalingv2.HorizontalPodAutoscalerStatus, metrics []v1alpha1.ScalerMetric) []v1alpha1.MetricReading {
	out := make([]v1alpha1.MetricReading, len(metrics))
	for i, m := range metrics {
		out[i] = v1alpha1.MetricReading{Name: m.Name, Type: m.Type, Value: currentValue(st, m)}
	}
	return out
}

// currentValue is the HPA's last reading of one metric, or nil when it has
// none. A failed read leaves an empty entry in the HPA's status; that is
// reported as nil, never as zero.
func currentValue(st autoscalingv2.HorizontalPodAutoscalerStatus, m v1alpha1.ScalerMetric) *resource.Quantity {
	for _, cm := range st.CurrentMetrics {
		var cur *autoscalingv2.MetricValueStatus
		switch {
		case m.Type == v1alpha1.PodsMetric && cm.Type == autoscalingv2.PodsMetricSourceType && cm.Pods != nil && cm.Pods.Metric.Name == m.Name:
			cur = &cm.Pods.Current
		case m.Type == v1alpha1.ExternalMetric && cm.Type == autoscalingv2.ExternalMetricSourceType && cm.External != nil && cm.External.Metric.Name == m.Name:
			cur = &cm.External.Current
		default:
			continue
		}
		switch {
		case cur.AverageValue != nil:
			q := cur.AverageValue.DeepCopy()
			return &q
		case cur.Value != nil:
			q := cur.Value.DeepCopy()
			return &q
		}
	}
	return nil
}

// hpaConditionTypes maps the HPA's condition types to the scaler's mirrors.
var hpaConditionTypes = []struct {
	from autoscalingv2.HorizontalPodAutoscalerConditionType
	to   string
}{
	{autoscalingv2.AbleToScale, v1alpha1.ConditionHPAAbleToScale},
	{autoscalingv2.ScalingActive, v1alpha1.ConditionHPAScalingActive},
	{autoscalingv2.ScalingLimited, v1alpha1.ConditionHPAScalingLimited},
}

// MirrorConditions copies the HPA's AbleToScale, ScalingActive and
// ScalingLimited conditions as HPAAbleToScale, HPAScalingActive and
// HPAScalingLimited, keeping their status, reason, message and transition
// time. A condition the HPA has not reported yet is Unknown.
func MirrorConditions(hpa []autoscalingv2.HorizontalPodAutoscalerCondition, generation int64, now metav1.Time) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(hpaConditionTypes))
	for _, t := range hpaConditionTypes {
		c := metav1.Condition{
			Type:               t.to,
			Status:             metav1.ConditionUnknown,
			ObservedGeneration: generation,
			LastTransitionTime: now,
			Reason:             v1alpha1.ReasonHPAStatusUnknown,
			Message:            "the HPA has not reported this condition yet",
		}
		for _, h := range hpa {
			if h.Type != t.from {
				continue
			}
			c.Status = metav1.ConditionStatus(h.Status)
			c.Reason = v1alpha1.ReasonHPANoReason
			if h.Reason != "" {
				c.Reason = h.Reason
			}
			c.Message = h.Message
			if !h.LastTransitionTime.IsZero() {
				c.LastTransitionTime = h.LastTransitionTime
			}
		}
		out = append(out, c)
	}
	return out
}
