package autoscaling

import (
	"errors"
	"fmt"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// Labels on every HPA the controller materializes; the second one lets a
// reader find the scaler from the HPA.
const (
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	ManagedByValue      = "spillway-controller"
	LabelInferenceScale = "spillway.dev/inferencescaler"
)

// ErrPodSelectorUnknown: an External metric without a selector needs the
// target's pod selector, and none was supplied (the Deployment does not
// exist yet).
var ErrPodSelectorUnknown = errors.New("metric type External has no selector and the target's pod selector is unknown")

// Inputs are what the HPA depends on besides the InferenceScaler itself.
type Inputs struct {
	// ScheduleFloor is ScheduleState.Floor at the current instant.
	ScheduleFloor int32
	// FallbackActive raises the floor to spec.fallback.replicas.
	FallbackActive bool
	// PodSelector is the target Deployment's pod selector, the default
	// selector of an External metric.
	PodSelector *metav1.LabelSelector
	// PausedReplicas, when set, pins the HPA: minReplicas = maxReplicas =
	// this count (clamped to [1, spec.maxReplicas]).
	PausedReplicas *int32
}

// Floor is the HPA's minReplicas: the highest of spec.minReplicas, the open
// schedule windows and (while active) fallback.replicas, capped at
// spec.maxReplicas.
func Floor(spec *v1alpha1.InferenceScalerSpec, scheduleFloor int32, fallbackActive bool) int32 {
	floor := int32(1)
	if spec.MinReplicas != nil {
		floor = *spec.MinReplicas
	}
	floor = max(floor, scheduleFloor)
	if fallbackActive && spec.Fallback != nil {
		floor = max(floor, spec.Fallback.Replicas)
	}
	return max(1, min(floor, spec.MaxReplicas))
}

// DesiredHPA is the complete HPA that realizes the scaler: named after it,
// in its namespace, controlled by it. Every field the controller applies is
// set here, so server-side apply with this object converges to exactly it.
func DesiredHPA(s *v1alpha1.InferenceScaler, in Inputs) (*autoscalingv2.HorizontalPodAutoscaler, error) {
	spec := &s.Spec
	var errs []error
	target, err := TargetDeployment(spec.ScaleTargetRef)
	if err != nil {
		errs = append(errs, err)
	}
	if spec.MaxReplicas < 1 {
		errs = append(errs, fmt.Errorf("maxReplicas %d is below 1", spec.MaxReplicas))
	}
	if spec.MinReplicas != nil && *spec.MinReplicas > spec.MaxReplicas {
		errs = append(errs, fmt.Errorf("minReplicas %d is above maxReplicas %d", *spec.MinReplicas, spec.MaxReplicas))
	}
	if spec.Metric != nil && len(spec.Metrics) > 0 {
		errs = append(errs, errors.New("set metric or metrics, not both"))
	}
	if spec.Behavior != nil && spec.BehaviorPreset != "" {
		errs = append(errs, errors.New("set behavior or behaviorPreset, not both"))
	}
	behavior, err := Behavior(spec)
	if err != nil {
		errs = append(errs, err)
	}
	var metrics []autoscalingv2.MetricSpec
	for i, m := range Metrics(spec) {
		ms, err := metricSpec(m, in.PodSelector)
		if err != nil {
			if len(spec.Metrics) > 0 {
				err = fmt.Errorf("metrics[%d]: %w", i, err)
			}
			errs = append(errs, err)
			continue
		}
		metrics = append(metrics, ms)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	minReplicas := Floor(spec, in.ScheduleFloor, in.FallbackActive)
	maxReplicas := spec.MaxReplicas
	if in.PausedReplicas != nil {
		pinned := max(1, min(*in.PausedReplicas, spec.MaxReplicas))
		minReplicas, maxReplicas = pinned, pinned
	}

	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta: metav1.TypeMeta{APIVersion: autoscalingv2.SchemeGroupVersion.String(), Kind: "HorizontalPodAutoscaler"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.Name,
			Namespace: s.Namespace,
			Labels: map[string]string{
				LabelManagedBy:      ManagedByValue,
				LabelInferenceScale: s.Name,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion:         v1alpha1.GroupVersion.String(),
				Kind:               "InferenceScaler",
				Name:               s.Name,
				UID:                s.UID,
				Controller:         ptr.To(true),
				BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{
				APIVersion: v1alpha1.DeploymentAPIVersion,
				Kind:       v1alpha1.DeploymentKind,
				Name:       target,
			},
			MinReplicas: ptr.To(minReplicas),
			MaxReplicas: maxReplicas,
			Metrics:     metrics,
			Behavior:    behavior,
		},
	}
	return hpa, nil
}

// Metrics are the scaler's metrics with defaults filled in: spec.metrics,
// or the one spec.metric (arena's shape), or without either the default
// metric (SM utilization, type Pods, target 50).
func Metrics(spec *v1alpha1.InferenceScalerSpec) []v1alpha1.ScalerMetric {
	var in []v1alpha1.ScalerMetric
	switch {
	case len(spec.Metrics) > 0:
		in = spec.Metrics
	case spec.Metric != nil:
		in = []v1alpha1.ScalerMetric{*spec.Metric}
	default:
		in = []v1alpha1.ScalerMetric{{}}
	}
	out := make([]v1alpha1.ScalerMetric, len(in))
	for i, m := range in {
		m = *m.DeepCopy()
		if m.Name == "" {
			m.Name = v1alpha1.DefaultMetricName
		}
		if m.Type == "" {
			m.Type = v1alpha1.PodsMetric
		}
		if m.Target == nil {
			t := resource.MustParse(v1alpha1.DefaultMetricTarget)
			m.Target = &t
		}
		out[i] = m
	}
	return out
}

// Behavior is the HPA's behavior: spec.behavior as given, a preset's, or
// nil (the HPA's defaults).
func Behavior(spec *v1alpha1.InferenceScalerSpec) (*autoscalingv2.HorizontalPodAutoscalerBehavior, error) {
	switch spec.BehaviorPreset {
	case "":
		return spec.Behavior.DeepCopy(), nil
	case v1alpha1.BehaviorLLMServing:
		return LLMServingBehavior(), nil
	}
	return nil, fmt.Errorf("behaviorPreset %q is not %s", spec.BehaviorPreset, v1alpha1.BehaviorLLMServing)
}

// LLMServingBehavior scales up at once and down slowly. Up is the HPA's own
// default, spelled out so it cannot drift: no stabilization, doubling or 4
// pods per 15 s, whichever adds more (a saturated queue says capacity is
// short, not by how much). Down keeps the default 5-minute window of
// recommendations but removes one pod a minute instead of every surplus pod
// at once: a replica takes minutes to load a model, and an emptied queue
// refills as soon as capacity goes.
func LLMServingBehavior() *autoscalingv2.HorizontalPodAutoscalerBehavior {
	return &autoscalingv2.HorizontalPodAutoscalerBehavior{
		ScaleUp: &autoscalingv2.HPAScalingRules{
			StabilizationWindowSeconds: ptr.To(int32(0)),
			SelectPolicy:               ptr.To(autoscalingv2.MaxChangePolicySelect),
			Policies: []autoscalingv2.HPAScalingPolicy{
				{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15},
				{Type: autoscalingv2.PodsScalingPolicy, Value: 4, PeriodSeconds: 15},
			},
		},
		ScaleDown: &autoscalingv2.HPAScalingRules{
			StabilizationWindowSeconds: ptr.To(int32(300)),
			SelectPolicy:               ptr.To(autoscalingv2.MaxChangePolicySelect),
			Policies: []autoscalingv2.HPAScalingPolicy{
				{Type: autoscalingv2.PodsScalingPolicy, Value: 1, PeriodSeconds: 60},
			},
		},
	}
}

// metricSpec renders one metric, already defaulted by Metrics (name, type
// and target set). Both types use an AverageValue target:
// for Pods it is the per-pod value the arena chart sets; for External the
// adapter returns one item per selected pod and the HPA divides their sum by
// the replica count, so the same number means the same per-pod load.
func metricSpec(m v1alpha1.ScalerMetric, podSelector *metav1.LabelSelector) (autoscalingv2.MetricSpec, error) {
	name, target := m.Name, m.Target.DeepCopy()
	if target.Sign() <= 0 {
		return autoscalingv2.MetricSpec{}, fmt.Errorf("metric.target %s is not above zero", target.String())
	}
	mt := autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: &target}
	switch m.Type {
	case v1alpha1.PodsMetric:
		if m.Selector != nil {
			return autoscalingv2.MetricSpec{}, fmt.Errorf("metric.selector is only allowed with type External")
		}
		return autoscalingv2.MetricSpec{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: name},
				Target: mt,
			},
		}, nil
	case v1alpha1.ExternalMetric:
		sel := m.Selector
		if sel == nil {
			sel = podSelector
		}
		if sel == nil {
			return autoscalingv2.MetricSpec{}, ErrPodSelectorUnknown
		}
		return autoscalingv2.MetricSpec{
			Type: autoscalingv2.ExternalMetricSourceType,
			External: &autoscalingv2.ExternalMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: name, Selector: sel.DeepCopy()},
				Target: mt,
			},
		}, nil
	default:
		return autoscalingv2.MetricSpec{}, fmt.Errorf("metric.type %q is not Pods or External", m.Type)
	}
}
