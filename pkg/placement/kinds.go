package placement

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// UnitKind says how a unit gets room for a new pod, which decides whether
// "no node has room now" is a reason to skip it.
type UnitKind int

const (
	// FixedUnit is a pool of existing nodes (on-prem, a reserved pool):
	// its room is what its nodes have free now.
	FixedUnit UnitKind = iota
	// AutoscaledUnit is a pool a node autoscaler grows (Karpenter,
	// cluster-autoscaler): room appears after the pod is pending, so the
	// unit is eligible up to its max whatever its nodes have free.
	AutoscaledUnit
	// VirtualUnit is virtual nodes (virtual-kubelet: ACK's eci and acs,
	// other serverless pools): eligible up to its max.
	VirtualUnit
)

// Kind is the unit's kind as it states it: resource eci or acs is virtual;
// autoscaled says whether a node autoscaler grows it, and defaults to true
// for resource elastic only. Nothing depends on the unit's position.
func Kind(u *v1alpha1.Unit) UnitKind {
	switch {
	case u.Resource == v1alpha1.ResourceECI || u.Resource == v1alpha1.ResourceACS:
		return VirtualUnit
	case u.Autoscaled != nil:
		if *u.Autoscaled {
			return AutoscaledUnit
		}
		return FixedUnit
	case u.Resource == v1alpha1.ResourceElastic:
		return AutoscaledUnit
	}
	return FixedUnit
}

// VirtualNodes describes the cluster's virtual nodes, for virtual units
// that do not select nodes themselves.
type VirtualNodes struct {
	// Labels are carried by every virtual node: a virtual unit without
	// nodeSelector selects them.
	Labels map[string]string
	// TaintKey is the key of the taint virtual nodes carry; pods placed on
	// a virtual unit tolerate it (operator Exists). Empty adds nothing.
	TaintKey string
}

// DefaultVirtualNodes are virtual-kubelet's conventions, which ACK's
// virtual nodes follow: label type=virtual-kubelet, taint
// virtual-kubelet.io/provider.
func DefaultVirtualNodes() VirtualNodes {
	return VirtualNodes{Labels: map[string]string{"type": "virtual-kubelet"}, TaintKey: "virtual-kubelet.io/provider"}
}

// OrDefault returns v, or DefaultVirtualNodes when v names no label (a
// virtual unit without a nodeSelector must select something).
func (v VirtualNodes) OrDefault() VirtualNodes {
	if len(v.Labels) == 0 {
		return DefaultVirtualNodes()
	}
	return v
}

// Resolve returns rp itself, or, when it has virtual units without a
// nodeSelector, a copy in which they select the virtual nodes. Every
// reader of a policy resolves it before using its units.
func (v VirtualNodes) Resolve(rp *v1alpha1.ResourcePolicy) *v1alpha1.ResourcePolicy {
	var out *v1alpha1.ResourcePolicy
	for i := range rp.Spec.Units {
		u := &rp.Spec.Units[i]
		if len(u.NodeSelector) > 0 || Kind(u) != VirtualUnit || len(v.Labels) == 0 {
			continue
		}
		if out == nil {
			out = rp.DeepCopy()
		}
		out.Spec.Units[i].NodeSelector = maps.Clone(v.Labels)
	}
	if out == nil {
		return rp
	}
	return out
}

// Toleration is what a pod placed on a virtual unit gets; ok is false when
// no taint is configured.
func (v VirtualNodes) Toleration() (corev1.Toleration, bool) {
	if v.TaintKey == "" {
		return corev1.Toleration{}, false
	}
	return corev1.Toleration{Key: v.TaintKey, Operator: corev1.TolerationOpExists}, true
}

// Unmatchable returns the first key of the unit's node selector whose value
// no node label can hold (ACK accepts any string there, and its examples
// mask IDs as "np…****"), or "" when every value is a valid label value.
// Such a unit is never chosen: pinning a pod to it would make the API
// server refuse the pod's node affinity.
func Unmatchable(u *v1alpha1.Unit) string {
	for _, k := range slices.Sorted(maps.Keys(u.NodeSelector)) {
		if len(validation.IsValidLabelValue(u.NodeSelector[k])) > 0 {
			return k
		}
	}
	return ""
}
