package placement

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// AdoptState is what Adopt decided for a pod.
type AdoptState int

const (
	// AdoptNone: nothing to adopt (not selected, already placed, finished
	// or leaving, or created before the policy).
	AdoptNone AdoptState = iota
	// AdoptWait: an unplaced pod that is not bound yet (or whose node is
	// unknown); decide again once the scheduler has bound it.
	AdoptWait
	// AdoptNow: write the Adoption.
	AdoptNow
)

// String names the state for logs and tests.
func (s AdoptState) String() string {
	switch s {
	case AdoptWait:
		return "wait"
	case AdoptNow:
		return "adopt"
	default:
		return "none"
	}
}

// Adoption is what spillway writes on an adopted pod: the placement labels
// the webhook would have written had the pod gone to the unit it landed in,
// and that unit's deletion cost.
type Adoption struct {
	// Labels are LabelPolicy and LabelUnit.
	Labels map[string]string
	// Unit is the unit's index, or Outside.
	Unit int
	// Cost is the pod-deletion-cost of that unit (DeletionCost).
	Cost int32
}

// Adopt decides whether a pod that the policy rp selects but that was
// admitted without placement should be adopted, and with what.
//
// The webhook's failurePolicy is Ignore, so that spillway being down never
// blocks pod creation: while no replica answers, the HPA's new pods are
// created without placement labels or node affinity and the scheduler puts
// them wherever they fit. Once such a pod is bound its unit is a fact (the
// unit whose node selector matches its node, UnitOfNode); adopting it
// records that fact as if the webhook had placed it there, so that status,
// metrics and the deletion-cost ranking treat it like every other pod and
// reverse-order scale-in still holds.
//
// rp must be the policy that wins the pod (Winner); node is the pod's node,
// nil when it is unbound or the node is unknown. A pod is adopted only when
// it carries neither placement label (a label, even another policy's, is a
// placement record that stays as written), is neither finished nor being
// deleted, and was created no earlier than the policy: pods that predate
// the policy were never the webhook's to place, and are ranked by their
// node without labels (UnitOf), as before.
func Adopt(rp *v1alpha1.ResourcePolicy, pod *corev1.Pod, node *corev1.Node) (Adoption, AdoptState) {
	if rp == nil || !Selects(rp, pod) || Terminal(pod) || pod.DeletionTimestamp != nil {
		return Adoption{}, AdoptNone
	}
	if _, ok := pod.Labels[LabelPolicy]; ok {
		return Adoption{}, AdoptNone
	}
	if _, ok := pod.Labels[LabelUnit]; ok {
		return Adoption{}, AdoptNone
	}
	if pod.CreationTimestamp.Before(&rp.CreationTimestamp) {
		return Adoption{}, AdoptNone
	}
	if pod.Spec.NodeName == "" || node == nil || node.Name != pod.Spec.NodeName {
		return Adoption{}, AdoptWait
	}
	unit := UnitOfNode(rp, node)
	return Adoption{
		Labels: map[string]string{LabelPolicy: rp.Name, LabelUnit: UnitLabel(rp, unit)},
		Unit:   unit,
		Cost:   DeletionCost(len(rp.Spec.Units), unit),
	}, AdoptNow
}
