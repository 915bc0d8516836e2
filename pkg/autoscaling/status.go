package autoscaling

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// CurrentMetricValue is the HPA's last reading of the named metric, or nil
// when it has none. A failed read leaves an empty entry in the HPA's status;
// that is reported as nil, never as zero.
func CurrentMetricValue(st autoscalingv2.HorizontalPodAutoscalerStatus, name string) *resource.Quantity {
	for _, m := range st.CurrentMetrics {
		var cur *autoscalingv2.MetricValueStatus
		switch {
		case m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == name:
			cur = &m.Pods.Current
		case m.Type == autoscalingv2.ExternalMetricSourceType && m.External != nil && m.External.Metric.Name == name:
			cur = &m.External.Current
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
