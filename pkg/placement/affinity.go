package placement

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// UnitRequirements turns a unit's node selector into node-selector
// requirements, sorted by key so the patch is stable.
func UnitRequirements(nodeSelector map[string]string) []corev1.NodeSelectorRequirement {
	keys := slices.Sorted(maps.Keys(nodeSelector))
	reqs := make([]corev1.NodeSelectorRequirement, 0, len(keys))
	for _, k := range keys {
		reqs = append(reqs, corev1.NodeSelectorRequirement{
			Key: k, Operator: corev1.NodeSelectorOpIn, Values: []string{nodeSelector[k]},
		})
	}
	return reqs
}

// PinToUnit adds the unit's requirements to the pod's required node
// affinity. Terms of a required node affinity are ORed and the expressions
// inside a term ANDed, so the requirements go into every existing term: the
// pod keeps its own constraints and gains the unit's. A pod without terms
// gets one holding only the unit's requirements.
func PinToUnit(spec *corev1.PodSpec, nodeSelector map[string]string) {
	reqs := UnitRequirements(nodeSelector)
	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	}
	if spec.Affinity.NodeAffinity == nil {
		spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	na := spec.Affinity.NodeAffinity
	if na.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		na.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{}
	}
	terms := na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		terms = []corev1.NodeSelectorTerm{{}}
	}
	for i := range terms {
		terms[i].MatchExpressions = append(terms[i].MatchExpressions, reqs...)
	}
	na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms = terms
}
