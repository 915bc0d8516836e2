package metricnames

// Fleet state metrics (spillway-controller, package
// pkg/controller/fleetmetrics): read from the controller's cache at scrape
// time, so the fleet dashboard needs no kube-state-metrics. Every replica
// exports them; dashboards take max by their labels.
const (
	// ResourcePolicyUnitPods is, per ResourcePolicy (LabelNamespace,
	// LabelPolicy), unit (LabelUnit: the unit's label on placed pods, or
	// "none" for pods placed outside every unit) and LabelPhase, the pods
	// carrying that policy and unit label. Every existing policy and unit
	// has a series for every phase, zero included.
	ResourcePolicyUnitPods = "spillway_resourcepolicy_unit_pods"

	// The HPA an InferenceScaler owns (it bears the scaler's name), by
	// LabelNamespace and LabelInferenceScaler: the replicas it computed,
	// the replicas it last saw, and its bounds.
	InferenceScalerHPADesiredReplicas = "spillway_inferencescaler_hpa_desired_replicas"
	InferenceScalerHPACurrentReplicas = "spillway_inferencescaler_hpa_current_replicas"
	InferenceScalerHPAMinReplicas     = "spillway_inferencescaler_hpa_min_replicas"
	InferenceScalerHPAMaxReplicas     = "spillway_inferencescaler_hpa_max_replicas"
	// InferenceScalerHPAMetricValue is the value the owned HPA last read for
	// each of its metrics, and InferenceScalerHPAMetricTarget that metric's
	// target, by LabelNamespace, LabelInferenceScaler, LabelMetricName and
	// LabelMetricTargetType.
	InferenceScalerHPAMetricValue  = "spillway_inferencescaler_hpa_metric_value"
	InferenceScalerHPAMetricTarget = "spillway_inferencescaler_hpa_metric_target"

	// LabelPhase is a pod's status.phase (Pending, Running, Succeeded,
	// Failed, Unknown).
	LabelPhase = "phase"
	// LabelMetricName is the name of an HPA metric.
	LabelMetricName = "metric_name"
	// LabelMetricTargetType is the kind of an HPA metric target: value,
	// average or utilization (as kube-state-metrics spells them).
	LabelMetricTargetType = "metric_target_type"
)
