package v1alpha1

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Target kinds an InferenceScaler accepts. The CRD's CEL rule and the
// autoscaling package both read these, so a new kind is added in one place
// per layer.
const (
	DeploymentAPIVersion       = "apps/v1"
	DeploymentKind             = "Deployment"
	InferenceServiceAPIVersion = "serving.kserve.io/v1beta1"
	InferenceServiceKind       = "InferenceService"
)

// MetricType says which metrics API the HPA reads the metric from.
// +kubebuilder:validation:Enum=Pods;External
type MetricType string

const (
	// PodsMetric reads custom.metrics.k8s.io per pod of the target: the
	// shape arena's kserve chart writes.
	PodsMetric MetricType = "Pods"
	// ExternalMetric reads external.metrics.k8s.io with a pod-label selector.
	ExternalMetric MetricType = "External"
)

// Defaults of the metric block; they reproduce
// `arena serve kserve --scale-metric=DCGM_CUSTOM_PROCESS_SM_UTIL --scale-target=50`.
const (
	DefaultMetricName                     = "DCGM_CUSTOM_PROCESS_SM_UTIL"
	DefaultMetricTarget                   = "50"
	DefaultFallbackFailureThreshold int32 = 3
)

// Condition types an InferenceScaler reports. The HPA's own conditions are
// mirrored with an "HPA" prefix so a reader can tell whose verdict it is.
const (
	// ConditionReady is True when the HPA exists and matches the spec.
	ConditionReady = "Ready"
	// ConditionFallbackActive is True while the floor is held at
	// spec.fallback.replicas because the HPA cannot read its metric.
	ConditionFallbackActive = "FallbackActive"
	// ConditionScheduleActive is True while at least one schedule window is open.
	ConditionScheduleActive = "ScheduleActive"

	ConditionHPAAbleToScale    = "HPAAbleToScale"
	ConditionHPAScalingActive  = "HPAScalingActive"
	ConditionHPAScalingLimited = "HPAScalingLimited"
)

// Reasons of the Ready condition.
const (
	ReasonHPAApplied                       = "HPAApplied"
	ReasonPaused                           = "Paused"
	ReasonForeignHPA                       = "ForeignHPA"
	ReasonHPANameConflict                  = "HPANameConflict"
	ReasonInvalidSpec                      = "InvalidSpec"
	ReasonTargetNotFound                   = "TargetNotFound"
	ReasonKServeAutoscalerClassNotExternal = "KServeAutoscalerClassNotExternal"
	ReasonPodSelectorUnknown               = "PodSelectorUnknown"
	ReasonApplyFailed                      = "ApplyFailed"
)

// Reasons of the ScheduleActive and FallbackActive conditions (Paused also
// applies to both).
const (
	ReasonWindowOpen            = "WindowOpen"
	ReasonNoWindowOpen          = "NoWindowOpen"
	ReasonMetricFailing         = "MetricFailing"
	ReasonBelowFailureThreshold = "BelowFailureThreshold"
	ReasonMetricHealthy         = "MetricHealthy"
)

// Reasons of the mirrored HPA conditions when the HPA gives none.
const (
	ReasonHPAStatusUnknown = "HPAStatusUnknown"
	ReasonHPANoReason      = "NoReasonGiven"
)

// ScaleTargetRef names the workload to scale.
// +kubebuilder:validation:XValidation:rule="(self.apiVersion == 'apps/v1' && self.kind == 'Deployment') || (self.apiVersion == 'serving.kserve.io/v1beta1' && self.kind == 'InferenceService')",message="scaleTargetRef must be an apps/v1 Deployment or a serving.kserve.io/v1beta1 InferenceService"
type ScaleTargetRef struct {
	// APIVersion of the target: apps/v1 or serving.kserve.io/v1beta1.
	// +kubebuilder:validation:MaxLength=64
	APIVersion string `json:"apiVersion"`
	// Kind of the target: Deployment or InferenceService.
	// +kubebuilder:validation:MaxLength=64
	Kind string `json:"kind"`
	// Name of the target in the InferenceScaler's namespace. For an
	// InferenceService the HPA scales its raw-mode predictor Deployment
	// "<name>-predictor".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=243
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// ScalerMetric is the one metric the HPA scales on.
// +kubebuilder:validation:XValidation:rule="!has(self.selector) || self.type == 'External'",message="metric.selector is only allowed with type External"
// +kubebuilder:validation:XValidation:rule="!has(self.target) || quantity(string(self.target)).isGreaterThan(quantity('0'))",message="metric.target must be greater than zero"
type ScalerMetric struct {
	// Name of the metric as the metrics API serves it.
	// +kubebuilder:default=DCGM_CUSTOM_PROCESS_SM_UTIL
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Name string `json:"name,omitempty"`
	// Type is Pods (custom.metrics.k8s.io, the arena shape) or External
	// (external.metrics.k8s.io with a pod-label selector).
	// +kubebuilder:default=Pods
	// +optional
	Type MetricType `json:"type,omitempty"`
	// Target is the per-pod average the HPA steers to (an AverageValue
	// target for both types; 50 means 50 % SM utilization per pod).
	// +kubebuilder:default="50"
	// +optional
	Target *resource.Quantity `json:"target,omitempty"`
	// Selector selects the series of an External metric by pod labels.
	// Empty: the target Deployment's pod selector.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// MetricReading is the HPA's last reading of one metric.
type MetricReading struct {
	// Name and Type identify the metric as in spec.
	Name string     `json:"name"`
	Type MetricType `json:"type"`
	// Value is the per-pod average the HPA read; absent while it has none.
	// +optional
	Value *resource.Quantity `json:"value,omitempty"`
}

// Schedule is a recurring window that raises the replica floor: the tidal
// pre-warm before a known daily peak.
type Schedule struct {
	// Name identifies the window in status and events.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Cron is a standard 5-field expression (minute hour day-of-month month
	// day-of-week) giving each window's start. Descriptors (@daily) and
	// CRON_TZ= prefixes are rejected: use timeZone.
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[^\s=@]+( +[^\s=@]+){4}$`
	Cron string `json:"cron"`
	// Duration of each window, 1m to 168h (Go duration syntax, e.g. 2h30m).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('168h')",message="duration must be between 1m and 168h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	Duration metav1.Duration `json:"duration"`
	// TimeZone is the IANA zone the cron expression is read in (e.g.
	// Asia/Shanghai). Empty: UTC.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$`
	// +kubebuilder:validation:XValidation:rule="self != 'Local'",message="timeZone must be an IANA zone name; Local depends on the controller's host"
	// +optional
	TimeZone string `json:"timeZone,omitempty"`
	// MinReplicas is the floor while the window is open.
	// +kubebuilder:validation:Minimum=1
	MinReplicas int32 `json:"minReplicas"`
}

// Fallback holds a safe replica count while the HPA cannot read its metric.
type Fallback struct {
	// FailureThreshold is how many consecutive HPA syncs must fail to read
	// the metric before the fallback floor applies.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	FailureThreshold int32 `json:"failureThreshold,omitempty"`
	// Replicas is the floor while the metric is failing.
	// +kubebuilder:validation:Minimum=1
	Replicas int32 `json:"replicas"`
}

// BehaviorPreset names a ready-made HPA behavior.
type BehaviorPreset string

// BehaviorLLMServing: fast up, slow down (see spec.behaviorPreset).
const BehaviorLLMServing BehaviorPreset = "LLMServing"

// InferenceScalerSpec is the desired scaling of one predictor.
// +kubebuilder:validation:XValidation:rule="!has(self.metric) || !has(self.metrics)",message="set metric or metrics, not both"
// +kubebuilder:validation:XValidation:rule="!has(self.behavior) || !has(self.behaviorPreset)",message="set behavior or behaviorPreset, not both"
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",message="minReplicas must be less than or equal to maxReplicas"
// +kubebuilder:validation:XValidation:rule="!has(self.schedules) || self.schedules.all(s, s.minReplicas <= self.maxReplicas)",message="every schedule's minReplicas must be less than or equal to maxReplicas"
// +kubebuilder:validation:XValidation:rule="!has(self.fallback) || self.fallback.replicas <= self.maxReplicas",message="fallback.replicas must be less than or equal to maxReplicas"
type InferenceScalerSpec struct {
	// ScaleTargetRef is the Deployment or InferenceService to scale.
	ScaleTargetRef ScaleTargetRef `json:"scaleTargetRef"`
	// MinReplicas is the floor outside schedule windows and fallback.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +optional
	MinReplicas *int32 `json:"minReplicas,omitempty"`
	// MaxReplicas caps every floor and the HPA.
	// +kubebuilder:validation:Minimum=1
	MaxReplicas int32 `json:"maxReplicas"`
	// Metric is the one metric the HPA scales on (arena's shape). Without
	// metric and metrics: DCGM_CUSTOM_PROCESS_SM_UTIL, type Pods, target 50.
	// +optional
	Metric *ScalerMetric `json:"metric,omitempty"`
	// Metrics are several metrics for one HPA, e.g. vLLM's waiting requests
	// with SM utilization as a second signal: the HPA computes a replica
	// count for each and takes the largest. Set metric or metrics, not both.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:XValidation:rule="self.all(m, self.exists_one(n, n.name == m.name && n.type == m.type))",message="metrics must not name the same metric and type twice"
	// +listType=atomic
	// +optional
	Metrics []ScalerMetric `json:"metrics,omitempty"`
	// BehaviorPreset fills the HPA's behavior when spec.behavior is unset:
	// LLMServing scales up at once (the HPA's default: doubling or 4 pods
	// every 15 s) and down slowly (after 5 minutes of lower
	// recommendations, one pod a minute rather than all surplus at once),
	// because a model server's replica takes minutes to start and a queue
	// refills as soon as capacity goes. Empty: the HPA's defaults.
	// +kubebuilder:validation:Enum=LLMServing
	// +optional
	BehaviorPreset BehaviorPreset `json:"behaviorPreset,omitempty"`
	// Behavior is copied unchanged into the HPA (stabilization windows,
	// policies, tolerance). It excludes behaviorPreset.
	// +optional
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
	// Schedules raise the floor during recurring windows; overlapping windows
	// take the highest floor.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Schedules []Schedule `json:"schedules,omitempty"`
	// Fallback keeps a safe floor while the metric pipeline fails.
	// +optional
	Fallback *Fallback `json:"fallback,omitempty"`
	// Paused pins the HPA at the replica count it had when pausing
	// (minReplicas = maxReplicas = that count); schedules and fallback are
	// not evaluated until it is cleared.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// InferenceScalerStatus is what the controller last observed and applied.
type InferenceScalerStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, ScheduleActive, FallbackActive, and the HPA's own
	// conditions as HPAAbleToScale, HPAScalingActive, HPAScalingLimited.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// HPAName is the HPA this scaler owns.
	// +optional
	HPAName string `json:"hpaName,omitempty"`
	// CurrentReplicas and DesiredReplicas are mirrored from the HPA.
	// +optional
	CurrentReplicas int32 `json:"currentReplicas,omitempty"`
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas,omitempty"`
	// CurrentMetricValue is the HPA's last reading of the (first) metric;
	// absent (never zero) while the HPA has none.
	// +optional
	CurrentMetricValue *resource.Quantity `json:"currentMetricValue,omitempty"`
	// CurrentMetrics is the HPA's last reading of each metric, in spec
	// order; a metric the HPA could not read has no value.
	// +listType=atomic
	// +optional
	CurrentMetrics []MetricReading `json:"currentMetrics,omitempty"`
	// EffectiveMinReplicas is the floor last written to the HPA.
	// +optional
	EffectiveMinReplicas int32 `json:"effectiveMinReplicas,omitempty"`
	// ActiveSchedule lists the open windows, comma-separated, in spec order.
	// +optional
	ActiveSchedule string `json:"activeSchedule,omitempty"`
	// NextScheduleBoundary is when a window next opens or closes.
	// +optional
	NextScheduleBoundary *metav1.Time `json:"nextScheduleBoundary,omitempty"`
	// FallbackActive is true while the fallback floor is applied.
	// +optional
	FallbackActive bool `json:"fallbackActive,omitempty"`
	// ConsecutiveMetricFailures is how many HPA syncs in a row have failed
	// to read the metric, derived from how long the HPA's ScalingActive
	// condition has been False and the HPA sync period.
	// +optional
	ConsecutiveMetricFailures int32 `json:"consecutiveMetricFailures,omitempty"`
	// PausedReplicas is the count the HPA is pinned at while paused.
	// +optional
	PausedReplicas *int32 `json:"pausedReplicas,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=isc,categories=spillway
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.scaleTargetRef.name`
// +kubebuilder:printcolumn:name="Min",type=integer,JSONPath=`.spec.minReplicas`
// +kubebuilder:printcolumn:name="Max",type=integer,JSONPath=`.spec.maxReplicas`
// +kubebuilder:printcolumn:name="Floor",type=integer,JSONPath=`.status.effectiveMinReplicas`,priority=1
// +kubebuilder:printcolumn:name="Current",type=integer,JSONPath=`.status.currentReplicas`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desiredReplicas`
// +kubebuilder:printcolumn:name="Metric",type=string,JSONPath=`.status.currentMetricValue`
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.status.activeSchedule`
// +kubebuilder:printcolumn:name="Fallback",type=boolean,JSONPath=`.status.fallbackActive`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// InferenceScaler scales a predictor through an HPA it owns.
type InferenceScaler struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   InferenceScalerSpec   `json:"spec"`
	Status InferenceScalerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// InferenceScalerList is a list of InferenceScaler.
type InferenceScalerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []InferenceScaler `json:"items"`
}
