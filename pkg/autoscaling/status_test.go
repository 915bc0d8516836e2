package autoscaling

import (
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

func TestCurrentMetrics(t *testing.T) {
	q := func(s string) *resource.Quantity { v := resource.MustParse(s); return &v }
	const name = "DCGM_CUSTOM_PROCESS_SM_UTIL"
	tests := []struct {
		name    string
		metrics []autoscalingv2.MetricStatus
		typ     v1alpha1.MetricType
		want    string // "" means nil
	}{
		{"no status yet", nil, v1alpha1.PodsMetric, ""},
		{"pods average", []autoscalingv2.MetricStatus{{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricStatus{Metric: autoscalingv2.MetricIdentifier{Name: name}, Current: autoscalingv2.MetricValueStatus{AverageValue: q("62500m")}},
		}}, v1alpha1.PodsMetric, "62500m"},
		{"pods zero is a real zero", []autoscalingv2.MetricStatus{{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricStatus{Metric: autoscalingv2.MetricIdentifier{Name: name}, Current: autoscalingv2.MetricValueStatus{AverageValue: q("0")}},
		}}, v1alpha1.PodsMetric, "0"},
		{"external value", []autoscalingv2.MetricStatus{{
			Type:     autoscalingv2.ExternalMetricSourceType,
			External: &autoscalingv2.ExternalMetricStatus{Metric: autoscalingv2.MetricIdentifier{Name: name}, Current: autoscalingv2.MetricValueStatus{Value: q("40")}},
		}}, v1alpha1.ExternalMetric, "40"},
		// The HPA leaves an empty entry when a read fails: that is no
		// reading, not zero.
		{"failed read", []autoscalingv2.MetricStatus{{}}, v1alpha1.PodsMetric, ""},
		{"pods entry without values", []autoscalingv2.MetricStatus{{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricStatus{Metric: autoscalingv2.MetricIdentifier{Name: name}},
		}}, v1alpha1.PodsMetric, ""},
		{"another metric", []autoscalingv2.MetricStatus{{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricStatus{Metric: autoscalingv2.MetricIdentifier{Name: "other"}, Current: autoscalingv2.MetricValueStatus{AverageValue: q("7")}},
		}}, v1alpha1.PodsMetric, ""},
		// The same name read through the other API is another metric.
		{"pods reading of an external metric", []autoscalingv2.MetricStatus{{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricStatus{Metric: autoscalingv2.MetricIdentifier{Name: name}, Current: autoscalingv2.MetricValueStatus{AverageValue: q("7")}},
		}}, v1alpha1.ExternalMetric, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			readings := CurrentMetrics(autoscalingv2.HorizontalPodAutoscalerStatus{CurrentMetrics: tt.metrics}, []v1alpha1.ScalerMetric{{Name: name, Type: tt.typ}})
			if len(readings) != 1 || readings[0].Name != name || readings[0].Type != tt.typ {
				t.Fatalf("readings = %+v", readings)
			}
			got := readings[0].Value
			switch {
			case tt.want == "" && got != nil:
				t.Errorf("got %s, want none", got)
			case tt.want != "" && (got == nil || got.String() != tt.want):
				t.Errorf("got %v, want %s", got, tt.want)
			}
		})
	}
}

func TestMirrorConditions(t *testing.T) {
	now := metav1.NewTime(utc("2026-03-02T10:00:00Z"))
	then := metav1.NewTime(utc("2026-03-02T09:00:00Z"))
	got := MirrorConditions([]autoscalingv2.HorizontalPodAutoscalerCondition{
		{Type: autoscalingv2.ScalingActive, Status: corev1.ConditionFalse, Reason: "FailedGetPodsMetric", Message: "unable to get metric", LastTransitionTime: then},
		{Type: autoscalingv2.AbleToScale, Status: corev1.ConditionTrue, Reason: "", Message: "ok"},
	}, 7, now)
	want := []metav1.Condition{
		{Type: v1alpha1.ConditionHPAAbleToScale, Status: metav1.ConditionTrue, ObservedGeneration: 7, LastTransitionTime: now, Reason: v1alpha1.ReasonHPANoReason, Message: "ok"},
		{Type: v1alpha1.ConditionHPAScalingActive, Status: metav1.ConditionFalse, ObservedGeneration: 7, LastTransitionTime: then, Reason: "FailedGetPodsMetric", Message: "unable to get metric"},
		{Type: v1alpha1.ConditionHPAScalingLimited, Status: metav1.ConditionUnknown, ObservedGeneration: 7, LastTransitionTime: now, Reason: v1alpha1.ReasonHPAStatusUnknown, Message: "the HPA has not reported this condition yet"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d conditions, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("condition %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}
