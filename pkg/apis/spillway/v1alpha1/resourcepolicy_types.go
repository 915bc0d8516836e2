package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Strategy says whether selected pods may land outside the policy's units.
//
// +kubebuilder:validation:Enum=prefer;required
type Strategy string

const (
	// StrategyPrefer places pods on the units in order; when every unit is at
	// its max the pod is admitted without a unit constraint.
	StrategyPrefer Strategy = "prefer"
	// StrategyRequired lets pods land only on the units; when every unit is at
	// its max, pod creation is refused (like a quota) so the pod's controller
	// retries later.
	StrategyRequired Strategy = "required"
)

// NextUnitPolicy says when a pod moves on from a unit to the next one.
//
// +kubebuilder:validation:Enum=LackResourceOrExceedMax;ExceedMax;TimeoutOrExceedMax;LackResourceAndNoTerminating
type NextUnitPolicy string

const (
	// LackResourceOrExceedMax skips a unit that is at its max or has no node
	// with room for the pod; a placed pod that stays unschedulable past the
	// grace is re-placed.
	LackResourceOrExceedMax NextUnitPolicy = "LackResourceOrExceedMax"
	// ExceedMax skips a unit only when it is at its max; pods wait in their
	// unit for room, however long it takes.
	ExceedMax NextUnitPolicy = "ExceedMax"
	// TimeoutOrExceedMax skips a unit that is at its max, and re-places a pod
	// that stays unschedulable in its unit past the timeout (useful when the
	// unit itself autoscales, so its momentary room says little).
	TimeoutOrExceedMax NextUnitPolicy = "TimeoutOrExceedMax"
	// LackResourceAndNoTerminating is LackResourceOrExceedMax, except that
	// a unit that still has terminating selected pods is not skipped: new
	// pods wait for the room those pods free. During a rollout, the new
	// ReplicaSet's pods then take the on-prem slots the old ones release
	// instead of spilling to a later unit.
	LackResourceAndNoTerminating NextUnitPolicy = "LackResourceAndNoTerminating"
)

// PreemptPolicy says when a pod may preempt lower-priority pods rather than
// move on to the next unit.
//
// +kubebuilder:validation:Enum=AfterAllUnits;BeforeNextUnit
type PreemptPolicy string

const (
	// AfterAllUnits: units are tried on their free room only; a pod
	// preempts, if anywhere, on the unit it ends up on (the last one, when
	// every other is full).
	AfterAllUnits PreemptPolicy = "AfterAllUnits"
	// BeforeNextUnit: a unit whose room would suffice once lower-priority
	// pods there were preempted is not skipped; the pod is placed there and
	// the scheduler preempts them.
	BeforeNextUnit PreemptPolicy = "BeforeNextUnit"
)

// LabelValue is an alias of string, so selectors stay map[string]string in
// Go; it exists to give the CRD schema's map values their length and pattern
// (a CEL rule over values of unbounded length exceeds the API server's cost
// budget). Keys cannot carry a schema: CEL rules on the maps check them.

// LabelValue is a label value: empty, or at most 63 alphanumerics, dashes,
// underscores or dots that start and end with an alphanumeric.
//
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
type LabelValue = string

// NodeSelectorValue is a unit's node-selector value. It is bounded like a
// label value but not held to the label-value pattern, because ACK accepts
// any string there and its documentation's examples mask node-pool IDs as
// "np…****". A value no node label can hold makes the unit unmatchable:
// spillway never places a pod there and the policy's UnitsMatchNodes
// condition names the value (placement.Unmatchable).
//
// +kubebuilder:validation:MaxLength=63
type NodeSelectorValue = string

// AnnotationValue is an alias of string, like LabelValue, that bounds the
// annotation values a policy writes onto pods.
//
// +kubebuilder:validation:MaxLength=4096
type AnnotationValue = string

// ResourcePolicySpec is compatible with the spec of Alibaba ACK's
// scheduling.alibabacloud.com/v1alpha1 ResourcePolicy for the fields below,
// so an ACK manifest applies with only its apiVersion changed.
//
// +kubebuilder:validation:XValidation:rule="!has(self.units) || size(self.units) > 0",message="spec.units needs at least one unit"
// +kubebuilder:validation:XValidation:rule="!has(self.units) || self.units.all(u, !has(u.name) || self.units.exists_one(v, has(v.name) && v.name == u.name))",message="spec.units[].name must be unique within the policy"
type ResourcePolicySpec struct {
	// Selector picks the pods, in the policy's namespace, whose labels
	// include every key/value pair listed here. Keys and values must be
	// valid label keys and values: the pairs become label
	// selectors.
	//
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="spec.selector must list at least one label; an empty selector would capture every pod in the namespace"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",message="spec.selector keys must be label keys: an optional DNS subdomain prefix and a slash, then a name of at most 63 alphanumerics, dashes, underscores or dots that starts and ends with an alphanumeric"
	Selector map[string]LabelValue `json:"selector"`

	// Strategy is prefer (default: pods may run outside the units when every
	// unit is at its max) or required (pods run only on the units).
	//
	// +kubebuilder:default=prefer
	// +optional
	Strategy Strategy `json:"strategy,omitempty"`

	// Units are tried in order on pod creation; on scale-in pods leave in the
	// reverse order. The last unit is normally an autoscaled pool.
	//
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Units []Unit `json:"units"`

	// WhenTryNextUnits says when a pod moves on to the next unit.
	//
	// +kubebuilder:default={policy: LackResourceOrExceedMax}
	// +optional
	WhenTryNextUnits *WhenTryNextUnits `json:"whenTryNextUnits,omitempty"`

	// IgnorePreviousPod leaves pods created before the policy out of the
	// per-unit counts that max is checked against.
	//
	// +kubebuilder:default=false
	// +optional
	IgnorePreviousPod bool `json:"ignorePreviousPod"`

	// IgnoreTerminatingPod leaves terminating pods out of the per-unit
	// counts that max is checked against.
	//
	// +kubebuilder:default=true
	// +optional
	IgnoreTerminatingPod *bool `json:"ignoreTerminatingPod,omitempty"`

	// PreemptPolicy is AfterAllUnits (default: a unit is judged on its free
	// room) or BeforeNextUnit (room that lower-priority pods hold counts as
	// free for a pod allowed to preempt them, so it preempts there rather
	// than spill to the next unit). Preemption itself is kube-scheduler's,
	// under the pod's priority class.
	//
	// +kubebuilder:default=AfterAllUnits
	// +optional
	PreemptPolicy PreemptPolicy `json:"preemptPolicy,omitempty"`

	// MatchLabelKeys splits the selected pods into groups by the values of
	// these pod label keys, and each unit's max applies to each group on
	// its own: with pod-template-hash, a rollout's new ReplicaSet gets its
	// own count. A selected pod that lacks one of the keys is refused at
	// creation with a message naming the key.
	//
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=317
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",message="spec.matchLabelKeys must be label keys"
	// +listType=set
	// +optional
	MatchLabelKeys []string `json:"matchLabelKeys,omitempty"`
}

// Resource values spillway interprets (ACK's names).
const (
	// ResourceElastic is a node pool a node autoscaler grows.
	ResourceElastic = "elastic"
	// ResourceECI and ResourceACS are virtual nodes.
	ResourceECI = "eci"
	ResourceACS = "acs"
)

// Unit is one group of nodes, picked by labels.
//
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || size(self.nodeSelector) > 0",message="units[].nodeSelector must not be empty when given"
// +kubebuilder:validation:XValidation:rule="has(self.nodeSelector) || (has(self.resource) && self.resource in ['eci', 'acs'])",message="units[].nodeSelector is required, except on virtual-node units (resource eci or acs), which select the cluster's virtual nodes (spillway-controller --virtual-node-labels)"
// +kubebuilder:validation:XValidation:rule="!has(self.max) || self.max >= 0",message="units[].max must be >= 0"
type Unit struct {
	// Name identifies the unit in pod labels, status and events; without it
	// the unit's index is used. It must be a DNS label starting with a
	// letter, and not "none".
	//
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="units[].name must be a lower-case DNS label that starts with a letter"
	// +kubebuilder:validation:XValidation:rule="self != 'none'",message="units[].name \"none\" is reserved for pods placed outside every unit"
	// +optional
	Name string `json:"name,omitempty"`

	// Resource names the kind of capacity, in ACK's words: ecs (a fixed
	// node pool), elastic (a pool a node autoscaler grows), eci or acs
	// (virtual nodes); any other value is a fixed pool. See Autoscaled.
	//
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Resource string `json:"resource,omitempty"`

	// Autoscaled says whether a node autoscaler grows this unit's nodes:
	// then the unit is eligible up to its max whether or not its nodes have
	// room now (room appears after the pod is pending). Default: true for
	// resource elastic, false otherwise; virtual units are always eligible.
	//
	// +optional
	Autoscaled *bool `json:"autoscaled,omitempty"`

	// NodeSelector picks the unit's nodes: a node belongs to the unit when
	// its labels include every pair listed here. Required, except on a
	// virtual unit (resource eci or acs), which without it selects the
	// cluster's virtual nodes. Keys must be label keys. A value that is not
	// a valid label value (such as ACK's masked "np…****" IDs) is accepted
	// as ACK accepts it, but no node can match it: the unit is skipped and
	// the UnitsMatchNodes condition says why. The pairs become the node
	// affinity of every pod placed in the unit.
	//
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",message="units[].nodeSelector keys must be label keys: an optional DNS subdomain prefix and a slash, then a name of at most 63 alphanumerics, dashes, underscores or dots that starts and ends with an alphanumeric"
	// +optional
	NodeSelector map[string]NodeSelectorValue `json:"nodeSelector,omitempty"`

	// Max caps how many selected pods the unit holds; unset means no cap.
	//
	// +optional
	Max *int32 `json:"max,omitempty"`

	// MaxResources caps the summed resource requests of the selected pods
	// counted toward the unit (e.g. nvidia.com/gpu: 4): a pod whose
	// requests would take the unit past any resource listed here skips the
	// unit as one at its max does. Resources not listed are not capped.
	//
	// A negative quantity is a cap of zero. (A CEL rule over quantities
	// here exceeds the API server's cost budget.)
	//
	// +kubebuilder:validation:MaxProperties=16
	// +optional
	MaxResources corev1.ResourceList `json:"maxResources,omitempty"`

	// PodLabels are written onto every pod placed in the unit, and then
	// only selected pods that carry all of them count toward the unit's
	// max (a pod created before the policy or by hand counts only if it
	// has them). Keys in the spillway.dev domain are spillway's own and
	// not allowed here.
	//
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",message="units[].podLabels keys must be label keys"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('spillway.dev/') && !k.matches('^[^/]*[.]spillway[.]dev/'))",message="units[].podLabels keys in the spillway.dev domain are reserved for spillway"
	// +kubebuilder:validation:XValidation:rule="!('k8s.aliyun.com/resource-policy-wait-for-ecs-scaling' in self)",message="units[].podLabels: k8s.aliyun.com/resource-policy-wait-for-ecs-scaling is an instruction to ACK's scheduler that spillway does not follow; to keep pods waiting in a unit while its node pool grows, use whenTryNextUnits.policy ExceedMax or TimeoutOrExceedMax"
	// +optional
	PodLabels map[string]LabelValue `json:"podLabels,omitempty"`

	// PodAnnotations are written onto every pod placed in the unit, and
	// then only selected pods that carry all of them count toward the
	// unit's max, like PodLabels.
	//
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",message="units[].podAnnotations keys must be annotation keys"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('spillway.dev/') && !k.matches('^[^/]*[.]spillway[.]dev/'))",message="units[].podAnnotations keys in the spillway.dev domain are reserved for spillway"
	// +optional
	PodAnnotations map[string]AnnotationValue `json:"podAnnotations,omitempty"`
}

// WhenTryNextUnits is the rule for moving on to the next unit.
//
// +kubebuilder:validation:XValidation:rule="!has(self.timeout) || self.policy == 'TimeoutOrExceedMax'",message="whenTryNextUnits.timeout is only allowed with policy TimeoutOrExceedMax"
type WhenTryNextUnits struct {
	// Policy is LackResourceOrExceedMax (default), ExceedMax,
	// TimeoutOrExceedMax or LackResourceAndNoTerminating.
	//
	// +kubebuilder:default=LackResourceOrExceedMax
	// +optional
	Policy NextUnitPolicy `json:"policy,omitempty"`

	// Timeout is how long a pod may stay unschedulable in its unit before it
	// is re-placed, for TimeoutOrExceedMax only (a Go duration such as 30s
	// or 5m; default 15m, as in ACK: long enough for a node pool to add a
	// node).
	//
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="whenTryNextUnits.timeout must be a positive duration such as 30s or 5m"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// UnitStatus counts the selected pods in one unit.
type UnitStatus struct {
	// Name is the unit's name, or its index when it has none.
	Name string `json:"name"`
	// Resource repeats the unit's resource for display.
	// +optional
	Resource string `json:"resource,omitempty"`
	// Placed counts the selected pods in the unit (by placement label, or by
	// node for pods placed before the policy).
	Placed int32 `json:"placed"`
	// Running counts the placed pods that are running on a node.
	Running int32 `json:"running"`
	// Pending counts the placed pods not yet running.
	Pending int32 `json:"pending"`
	// CooldownUntil is set when a pod was re-placed away from the unit
	// because it could not schedule there: until then new pods skip the
	// unit. It lives in the status so that every webhook replica sees it.
	// +optional
	CooldownUntil *metav1.Time `json:"cooldownUntil,omitempty"`
}

// ResourcePolicyStatus is written by spillway-controller.
type ResourcePolicyStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Units has one entry per spec unit, in order.
	// +optional
	// +listType=atomic
	Units []UnitStatus `json:"units,omitempty"`
	// Outside counts selected pods that are in no unit: admitted while the
	// webhook was unavailable, or placed outside every unit by prefer.
	// +optional
	Outside int32 `json:"outside,omitempty"`
	// UnitCount is the number of units, for kubectl's table.
	// +optional
	UnitCount int32 `json:"unitCount,omitempty"`
	// Summary is "unit=pods" for each unit, for kubectl's table.
	// +optional
	Summary string `json:"summary,omitempty"`
	// Conditions: Conflict (another, older policy selects the same pods),
	// AllPodsPlaced and UnitsMatchNodes.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Reservations are the placements the webhook made into units with a
	// max whose pods may not be visible yet. Every controller replica runs
	// the webhook; each writes its reservations here (with the
	// resourceVersion it read) and counts everyone's, so that a burst split
	// across replicas cannot exceed a unit's max. Entries expire after a
	// few seconds (--reservation-ttl); until then each replica skips those
	// whose pod its own cache already counts.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=1000
	Reservations []PlacementReservation `json:"reservations,omitempty"`
}

// PlacementReservation is one in-flight placement into a unit with a max
// or maxResources.
type PlacementReservation struct {
	// ID is the pod's spillway.dev/placement-id (the admission UID).
	// +kubebuilder:validation:MaxLength=64
	ID string `json:"id"`
	// Unit is the unit label the pod got.
	// +kubebuilder:validation:MaxLength=63
	Unit string `json:"unit"`
	// Node is the node whose room was reserved, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`
	// Group is the pod's values of spec.matchLabelKeys ("key=value,..."):
	// the reservation counts only toward that group's max.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Group string `json:"group,omitempty"`
	// Requests are the pod's resource requests, counted against the
	// unit's maxResources.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	Requests corev1.ResourceList `json:"requests,omitempty"`
	// Expires is when the reservation stops counting even if its pod never
	// appears.
	Expires metav1.Time `json:"expires"`
}

// Condition types and reasons on a ResourcePolicy.
const (
	// ConditionConflict is True when an older policy selects some of this
	// policy's pods; the older one places them.
	ConditionConflict = "Conflict"
	// ConditionAllPodsPlaced is False when selected pods skipped placement.
	ConditionAllPodsPlaced = "AllPodsPlaced"
	// ConditionUnitsMatchNodes is False when a unit's nodeSelector holds a
	// value no node label can hold: spillway never places pods there.
	ConditionUnitsMatchNodes = "UnitsMatchNodes"
)

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rp;rps,categories=spillway
// +kubebuilder:printcolumn:name="Strategy",type=string,JSONPath=`.spec.strategy`
// +kubebuilder:printcolumn:name="Units",type=integer,JSONPath=`.status.unitCount`
// +kubebuilder:printcolumn:name="Pods per unit",type=string,JSONPath=`.status.summary`
// +kubebuilder:printcolumn:name="Outside",type=integer,JSONPath=`.status.outside`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ResourcePolicy places selected pods on ordered node units: the first unit
// with room (usually on-prem) first, spilling to later units (usually an
// autoscaled cloud pool), and ranks pods so scale-in removes them in
// reverse unit order.
type ResourcePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ResourcePolicySpec `json:"spec"`
	// +optional
	Status ResourcePolicyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ResourcePolicyList is a list of ResourcePolicy.
type ResourcePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ResourcePolicy `json:"items"`
}
