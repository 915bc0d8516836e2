package placementwebhook

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	rules "github.com/spillway-dev/spillway/pkg/placement"
)

// The webhook answers with a JSON patch (RFC 6902) of only the fields
// spillway sets, computed against the pod as it arrived: removals of the
// reserved keys the creator wrote, spillway's labels and annotations, and
// the unit's node-affinity requirements appended where they belong. A diff
// of the whole object re-encoded by this binary would instead remove every
// field its client library does not know, such as those a newer API server
// added to pods.

// patchOp is one JSON patch operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// podPatch collects what the webhook changes on one pod.
type podPatch struct {
	// hadLabels and hadAnnotations say whether the pod arrived with the
	// map (an empty one included), so keys can be added to it one by one.
	hadLabels, hadAnnotations bool
	// hadMetadata and hadSpec say whether the pod's JSON has those objects
	// at all (the API server always sends both; a hand-written review may
	// not), so the patch can create them before adding below them.
	hadMetadata, hadSpec bool
	// strippedLabels and strippedAnnotations are the reserved keys the pod
	// arrived with.
	strippedLabels, strippedAnnotations []string
	// labels and annotations are what spillway sets.
	labels, annotations map[string]string
	// affinity appends the unit's node-affinity requirements.
	affinity []patchOp
}

// stripReserved removes the reserved keys (rules.Reserved) from the pod's
// labels and annotations, so the placement rules see the pod as it will be
// stored, and returns a patch that removes them.
func stripReserved(pod *corev1.Pod) *podPatch {
	p := &podPatch{hadLabels: pod.Labels != nil, hadAnnotations: pod.Annotations != nil}
	p.strippedLabels = strip(pod.Labels)
	p.strippedAnnotations = strip(pod.Annotations)
	return p
}

func strip(m map[string]string) []string {
	var keys []string
	for k := range m {
		if rules.Reserved(k) {
			keys = append(keys, k)
			delete(m, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// set replaces what spillway sets (a decision made again replaces the
// previous one).
func (p *podPatch) set(labels, annotations map[string]string) {
	p.labels, p.annotations = labels, annotations
}

// ops renders the operations: removals first, then additions ("add" on an
// existing member replaces its value), then the affinity.
func (p *podPatch) ops() []patchOp {
	var meta []patchOp
	meta = append(meta, mapOps("/metadata/labels", p.hadLabels, p.strippedLabels, p.labels)...)
	meta = append(meta, mapOps("/metadata/annotations", p.hadAnnotations, p.strippedAnnotations, p.annotations)...)
	var ops []patchOp
	if len(meta) > 0 && !p.hadMetadata {
		ops = append(ops, patchOp{Op: "add", Path: "/metadata", Value: map[string]any{}})
	}
	ops = append(ops, meta...)
	if len(p.affinity) > 0 && !p.hadSpec {
		ops = append(ops, patchOp{Op: "add", Path: "/spec", Value: map[string]any{}})
	}
	return append(ops, p.affinity...)
}

// hasObjects reports whether the JSON object raw has a non-null object
// under each key.
func hasObjects(raw []byte, keys ...string) []bool {
	var top map[string]json.RawMessage
	_ = json.Unmarshal(raw, &top)
	out := make([]bool, len(keys))
	for i, k := range keys {
		v := strings.TrimSpace(string(top[k]))
		out[i] = strings.HasPrefix(v, "{")
	}
	return out
}

func mapOps(path string, had bool, stripped []string, set map[string]string) []patchOp {
	var ops []patchOp
	for _, k := range stripped {
		if _, ok := set[k]; !ok {
			ops = append(ops, patchOp{Op: "remove", Path: path + "/" + escape(k)})
		}
	}
	if len(set) == 0 {
		return ops
	}
	if !had {
		return append(ops, patchOp{Op: "add", Path: path, Value: set})
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		ops = append(ops, patchOp{Op: "add", Path: path + "/" + escape(k), Value: set[k]})
	}
	return ops
}

// escape encodes a map key as a JSON pointer token (RFC 6901).
func escape(token string) string {
	return strings.ReplaceAll(strings.ReplaceAll(token, "~", "~0"), "/", "~1")
}

// response admits the pod with the patch (none when there is nothing to
// change).
func (p *podPatch) response(msg string) (admission.Response, error) {
	resp := admission.Allowed(msg)
	ops := p.ops()
	if len(ops) == 0 {
		return resp, nil
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		return admission.Response{}, err
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = raw, &pt
	return resp, nil
}

// affinityOps adds the unit's requirements to the pod's required node
// affinity, the way rules.PinToUnit does on the typed pod: into every
// existing term (terms are ORed, expressions inside a term ANDed), or as
// the one term of a pod without terms. Each operation creates the missing
// level or appends to the existing list, so nothing the pod already has is
// rewritten.
func affinityOps(spec *corev1.PodSpec, nodeSelector map[string]string) []patchOp {
	reqs := rules.UnitRequirements(nodeSelector)
	terms := []corev1.NodeSelectorTerm{{MatchExpressions: reqs}}
	const (
		affinity = "/spec/affinity"
		node     = affinity + "/nodeAffinity"
		required = node + "/requiredDuringSchedulingIgnoredDuringExecution"
		list     = required + "/nodeSelectorTerms"
	)
	switch {
	case spec.Affinity == nil:
		return []patchOp{{Op: "add", Path: affinity, Value: corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}}}}
	case spec.Affinity.NodeAffinity == nil:
		return []patchOp{{Op: "add", Path: node, Value: corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}}}
	case spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil:
		return []patchOp{{Op: "add", Path: required, Value: corev1.NodeSelector{NodeSelectorTerms: terms}}}
	}
	existing := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(existing) == 0 {
		return []patchOp{{Op: "add", Path: list, Value: terms}}
	}
	var ops []patchOp
	for i, t := range existing {
		path := list + "/" + strconv.Itoa(i) + "/matchExpressions"
		if len(t.MatchExpressions) == 0 {
			ops = append(ops, patchOp{Op: "add", Path: path, Value: reqs})
			continue
		}
		for _, r := range reqs {
			ops = append(ops, patchOp{Op: "add", Path: path + "/-", Value: r})
		}
	}
	return ops
}

// tolerationOps adds tol to the pod's tolerations unless one with its key
// and operator Exists (or a blanket one) is already there.
func tolerationOps(spec *corev1.PodSpec, tol corev1.Toleration) []patchOp {
	for _, t := range spec.Tolerations {
		if t.Operator == corev1.TolerationOpExists && (t.Key == "" || t.Key == tol.Key) && (t.Effect == "" || t.Effect == tol.Effect) {
			return nil
		}
	}
	if len(spec.Tolerations) == 0 {
		return []patchOp{{Op: "add", Path: "/spec/tolerations", Value: []corev1.Toleration{tol}}}
	}
	return []patchOp{{Op: "add", Path: "/spec/tolerations/-", Value: tol}}
}
