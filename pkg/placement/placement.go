// Package placement holds the pure rules of a ResourcePolicy: which pods a
// policy selects, which policy wins a pod, which unit a pod is in, which unit
// a new pod goes to, the node affinity that pins it there, and the
// pod-deletion-cost tiers that make scale-in leave in reverse unit order.
//
// It imports API types only; the webhook and controllers under
// pkg/controller feed it what they read from the cluster.
package placement

import (
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// Names spillway writes on the pods it places.
const (
	// LabelPolicy names the ResourcePolicy that placed the pod.
	LabelPolicy = "spillway.dev/policy"
	// LabelUnit names the unit the pod was placed on: the unit's name, its
	// index when it has no name, or UnitNone.
	LabelUnit = "spillway.dev/unit"
	// AnnotationPlacementID ties a pod to the in-flight reservation made
	// when it was admitted (the admission request UID).
	AnnotationPlacementID = "spillway.dev/placement-id"
	// AnnotationReservedNode names the node whose room was counted for the
	// pod at admission, so the room stays taken until the pod is bound. It
	// counts only under a valid AnnotationSignature.
	AnnotationReservedNode = "spillway.dev/reserved-node"
	// AnnotationSignature is spillway's signature over the pod's Claim
	// (namespace, placement ID, reserved node, policy and unit), so that
	// capacity accounting can tell what spillway wrote from what anyone
	// else did.
	AnnotationSignature = "spillway.dev/placement-signature"
	// AnnotationDeletionCost is the ReplicaSet controller's scale-in ranking.
	AnnotationDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
	// UnitNone is the unit label of a pod placed outside every unit.
	UnitNone = "none"
)

// UserKeys are the spillway.dev/ keys that users set themselves on pods and
// that the webhook therefore keeps: the sim GPU backend's workload label
// (pkg/gpu/sim.WorkloadLabel, which groups pods sharing one load input).
var UserKeys = map[string]bool{"spillway.dev/workload": true}

// Reserved reports whether spillway owns a pod label or annotation key:
// one in the spillway.dev domain or a subdomain of it, other than the
// UserKeys. The webhook strips reserved keys that a pod arrives with on
// creation and sets its own.
func Reserved(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok || UserKeys[key] {
		return false
	}
	return prefix == "spillway.dev" || strings.HasSuffix(prefix, ".spillway.dev")
}

// Outside is the unit index of a pod that is in no unit.
const Outside = -1

// DefaultGrace is how long a placed pod may stay unschedulable before it is
// re-placed under the LackResource policies: the unit had room at
// admission, so a pod still unschedulable after this lost it.
const DefaultGrace = 30 * time.Second

// DefaultTimeout is TimeoutOrExceedMax's timeout when the policy gives
// none: ACK's 15 minutes, long enough for a node pool to add a node.
const DefaultTimeout = 15 * time.Minute

// UnitLabel is the value of LabelUnit for unit i.
func UnitLabel(rp *v1alpha1.ResourcePolicy, i int) string {
	if i < 0 || i >= len(rp.Spec.Units) {
		return UnitNone
	}
	if n := rp.Spec.Units[i].Name; n != "" {
		return n
	}
	return strconv.Itoa(i)
}

// UnitIndex is the inverse of UnitLabel; ok is false for labels that name
// no unit of the policy (the policy was edited since the pod was placed).
func UnitIndex(rp *v1alpha1.ResourcePolicy, label string) (int, bool) {
	if label == UnitNone {
		return Outside, true
	}
	for i := range rp.Spec.Units {
		if UnitLabel(rp, i) == label {
			return i, true
		}
	}
	return 0, false
}

// DisplayNames names each unit for status and kubectl: its name, else its
// resource, else its index; a name shared by several units gets "#index".
func DisplayNames(rp *v1alpha1.ResourcePolicy) []string {
	names := make([]string, len(rp.Spec.Units))
	seen := map[string]int{}
	for i, u := range rp.Spec.Units {
		switch {
		case u.Name != "":
			names[i] = u.Name
		case u.Resource != "":
			names[i] = u.Resource
		default:
			names[i] = strconv.Itoa(i)
		}
		seen[names[i]]++
	}
	for i := range names {
		if seen[names[i]] > 1 {
			names[i] += "#" + strconv.Itoa(i)
		}
	}
	return names
}

// Selects reports whether the policy selects the pod: same namespace and
// every selector pair present in the pod's labels. An empty selector selects
// nothing (the API rejects it; this guards policies stored before that).
func Selects(rp *v1alpha1.ResourcePolicy, pod *corev1.Pod) bool {
	if rp.Namespace != pod.Namespace || len(rp.Spec.Selector) == 0 || rp.DeletionTimestamp != nil {
		return false
	}
	return matchLabels(rp.Spec.Selector, pod.Labels)
}

func matchLabels(want, have map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Older orders policies oldest first, by name when created in the same
// second, so every replica picks the same winner.
func Older(a, b *v1alpha1.ResourcePolicy) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// Winner is the oldest policy selecting the pod, with every other policy
// that selects it too (sorted oldest first); nil when none does.
func Winner(policies []v1alpha1.ResourcePolicy, pod *corev1.Pod) (*v1alpha1.ResourcePolicy, []*v1alpha1.ResourcePolicy) {
	var sel []*v1alpha1.ResourcePolicy
	for i := range policies {
		if Selects(&policies[i], pod) {
			sel = append(sel, &policies[i])
		}
	}
	if len(sel) == 0 {
		return nil, nil
	}
	slices.SortFunc(sel, func(a, b *v1alpha1.ResourcePolicy) int {
		if Older(a, b) {
			return -1
		}
		if Older(b, a) {
			return 1
		}
		return 0
	})
	return sel[0], sel[1:]
}

// NodeInUnit reports whether the node carries every label of the unit's
// node selector.
func NodeInUnit(u *v1alpha1.Unit, node *corev1.Node) bool {
	return len(u.NodeSelector) > 0 && matchLabels(u.NodeSelector, node.Labels)
}

// UnitOfNode is the first unit whose node selector matches the node, or
// Outside.
func UnitOfNode(rp *v1alpha1.ResourcePolicy, node *corev1.Node) int {
	if node == nil {
		return Outside
	}
	for i := range rp.Spec.Units {
		if NodeInUnit(&rp.Spec.Units[i], node) {
			return i
		}
	}
	return Outside
}

// UnitOf is the unit a selected pod is in: the one its placement labels name
// when this policy placed it, otherwise the unit of the node it runs on
// (pods created before the policy, or admitted while the webhook was
// unavailable). node is the pod's node, nil when unbound or unknown.
func UnitOf(rp *v1alpha1.ResourcePolicy, pod *corev1.Pod, node *corev1.Node) int {
	if pod.Labels[LabelPolicy] == rp.Name {
		if i, ok := UnitIndex(rp, pod.Labels[LabelUnit]); ok {
			return i
		}
	}
	return UnitOfNode(rp, node)
}

// Placed reports whether this policy's webhook placed the pod.
func Placed(rp *v1alpha1.ResourcePolicy, pod *corev1.Pod) bool {
	_, ok := pod.Labels[LabelUnit]
	return ok && pod.Labels[LabelPolicy] == rp.Name
}

// Terminal reports whether the pod has finished and holds no resources.
func Terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// Counted reports whether the pod counts toward its unit's max under the
// policy's ignorePreviousPod and ignoreTerminatingPod.
func Counted(rp *v1alpha1.ResourcePolicy, pod *corev1.Pod) bool {
	if Terminal(pod) {
		return false
	}
	if pod.DeletionTimestamp != nil && IgnoreTerminating(&rp.Spec) {
		return false
	}
	if rp.Spec.IgnorePreviousPod && pod.CreationTimestamp.Before(&rp.CreationTimestamp) {
		return false
	}
	return true
}

// IgnoreTerminating is ignoreTerminatingPod with its default (true).
func IgnoreTerminating(spec *v1alpha1.ResourcePolicySpec) bool {
	return spec.IgnoreTerminatingPod == nil || *spec.IgnoreTerminatingPod
}

// NextUnitPolicy is whenTryNextUnits.policy with its default.
func NextUnitPolicy(spec *v1alpha1.ResourcePolicySpec) v1alpha1.NextUnitPolicy {
	if spec.WhenTryNextUnits == nil || spec.WhenTryNextUnits.Policy == "" {
		return v1alpha1.LackResourceOrExceedMax
	}
	return spec.WhenTryNextUnits.Policy
}

// Grace is how long a pod placed on a non-last unit may stay unschedulable
// before it is re-placed; ok is false under ExceedMax, which waits forever.
func Grace(spec *v1alpha1.ResourcePolicySpec) (time.Duration, bool) {
	switch NextUnitPolicy(spec) {
	case v1alpha1.ExceedMax:
		return 0, false
	case v1alpha1.TimeoutOrExceedMax:
		if t := spec.WhenTryNextUnits.Timeout; t != nil && t.Duration > 0 {
			return t.Duration, true
		}
		return DefaultTimeout, true
	}
	return DefaultGrace, true
}

// PreemptsBeforeNextUnit is whether preemptPolicy is BeforeNextUnit (the
// default is AfterAllUnits).
func PreemptsBeforeNextUnit(spec *v1alpha1.ResourcePolicySpec) bool {
	return spec.PreemptPolicy == v1alpha1.BeforeNextUnit
}

// NeedsRoom reports whether the policy skips a unit without room for the
// pod (the LackResource policies); the others wait in the unit for room.
func NeedsRoom(spec *v1alpha1.ResourcePolicySpec) bool {
	switch NextUnitPolicy(spec) {
	case v1alpha1.LackResourceOrExceedMax, v1alpha1.LackResourceAndNoTerminating:
		return true
	}
	return false
}

// WaitsForTerminating reports whether a unit with terminating selected pods
// keeps new pods waiting for the room they free (LackResourceAndNoTerminating)
// instead of being skipped for lack of room.
func WaitsForTerminating(spec *v1alpha1.ResourcePolicySpec) bool {
	return NextUnitPolicy(spec) == v1alpha1.LackResourceAndNoTerminating
}

// Strategy is spec.strategy with its default.
func Strategy(spec *v1alpha1.ResourcePolicySpec) v1alpha1.Strategy {
	if spec.Strategy == "" {
		return v1alpha1.StrategyPrefer
	}
	return spec.Strategy
}

// PolicyKey names a policy in maps and logs: "namespace/name".
func PolicyKey(rp *v1alpha1.ResourcePolicy) string {
	return rp.Namespace + "/" + rp.Name
}

// Counts is the number of pods counted toward each unit's max: those of the
// given pods (the policy's selected pods) that Counted accepts, by UnitOf,
// that carry the unit's podLabels and podAnnotations. nodeOf returns a
// pod's node by name, nil when unknown; it is called only for bound pods
// this policy did not place.
func Counts(rp *v1alpha1.ResourcePolicy, pods []*corev1.Pod, nodeOf func(name string) *corev1.Node) []int {
	counts, _ := Usage(rp, pods, nodeOf)
	return counts
}

// Usage is Counts with, for each unit that has maxResources, the summed
// requests (PodRequests) of the pods counted toward it; nil for the others.
func Usage(rp *v1alpha1.ResourcePolicy, pods []*corev1.Pod, nodeOf func(name string) *corev1.Node) ([]int, []corev1.ResourceList) {
	counts := make([]int, len(rp.Spec.Units))
	used := make([]corev1.ResourceList, len(rp.Spec.Units))
	for _, p := range pods {
		u := CountedUnit(rp, p, nodeOf)
		if u == Outside {
			continue
		}
		counts[u]++
		if len(rp.Spec.Units[u].MaxResources) > 0 {
			used[u] = AddRequests(used[u], PodRequests(p))
		}
	}
	return counts, used
}

// AddRequests returns sum plus req (sum may be nil).
func AddRequests(sum, req corev1.ResourceList) corev1.ResourceList {
	if sum == nil {
		sum = corev1.ResourceList{}
	}
	for name, q := range req {
		total := sum[name]
		total.Add(q)
		sum[name] = total
	}
	return sum
}

// Capped reports whether the unit has a max or maxResources: placements
// into it are shared among webhook replicas.
func Capped(u *v1alpha1.Unit) bool {
	return u.Max != nil || len(u.MaxResources) > 0
}

// ExceedsMaxResources reports whether a pod requesting req would take the
// unit, whose counted pods request used, past any resource its
// maxResources lists.
func ExceedsMaxResources(u *v1alpha1.Unit, used, req corev1.ResourceList) bool {
	for name, limit := range u.MaxResources {
		want, ok := req[name]
		if !ok || want.IsZero() {
			continue
		}
		total := used[name]
		total.Add(want)
		if total.Cmp(limit) > 0 {
			return true
		}
	}
	return false
}

// CountedUnit is the unit whose max the pod counts toward, or Outside.
func CountedUnit(rp *v1alpha1.ResourcePolicy, p *corev1.Pod, nodeOf func(name string) *corev1.Node) int {
	if !Counted(rp, p) {
		return Outside
	}
	u := unitOfPod(rp, p, nodeOf)
	if u == Outside || !CarriesUnitMarks(&rp.Spec.Units[u], p) {
		return Outside
	}
	return u
}

// unitOfPod is UnitOf, reading the pod's node (through nodeOf) only when
// the unit must come from it.
func unitOfPod(rp *v1alpha1.ResourcePolicy, p *corev1.Pod, nodeOf func(name string) *corev1.Node) int {
	var node *corev1.Node
	if !Placed(rp, p) && p.Spec.NodeName != "" {
		node = nodeOf(p.Spec.NodeName)
	}
	return UnitOf(rp, p, node)
}

// TerminatingUnits reports, per unit, whether some of the given selected
// pods in it are terminating (LackResourceAndNoTerminating waits for them).
func TerminatingUnits(rp *v1alpha1.ResourcePolicy, pods []*corev1.Pod, nodeOf func(name string) *corev1.Node) []bool {
	out := make([]bool, len(rp.Spec.Units))
	for _, p := range pods {
		if p.DeletionTimestamp == nil || Terminal(p) {
			continue
		}
		if u := unitOfPod(rp, p, nodeOf); u != Outside {
			out[u] = true
		}
	}
	return out
}

// InGroup is the pods of the given ones that share pod's group under the
// policy's matchLabelKeys (all of them without matchLabelKeys).
func InGroup(rp *v1alpha1.ResourcePolicy, pods []*corev1.Pod, pod *corev1.Pod) []*corev1.Pod {
	if len(rp.Spec.MatchLabelKeys) == 0 {
		return pods
	}
	out := make([]*corev1.Pod, 0, len(pods))
	for _, p := range pods {
		if SameGroup(rp, p, pod) {
			out = append(out, p)
		}
	}
	return out
}

// Pointers is the pods of a list as pointers into it, the form the rules
// above take (a cache's index hands out pointers; a copy per pod would be
// most of a placement's cost at fleet size).
func Pointers(pods []corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, len(pods))
	for i := range pods {
		out[i] = &pods[i]
	}
	return out
}

// CarriesUnitMarks reports whether the pod has every podLabel and
// podAnnotation of the unit: as in ACK, only such pods count toward it.
func CarriesUnitMarks(u *v1alpha1.Unit, p *corev1.Pod) bool {
	return matchLabels(u.PodLabels, p.Labels) && matchLabels(u.PodAnnotations, p.Annotations)
}

// MissingGroupKey is the first of the policy's matchLabelKeys that the pod
// lacks, or "" when it has them all (or the policy names none).
func MissingGroupKey(rp *v1alpha1.ResourcePolicy, p *corev1.Pod) string {
	for _, k := range rp.Spec.MatchLabelKeys {
		if _, ok := p.Labels[k]; !ok {
			return k
		}
	}
	return ""
}

// GroupKey renders the pod's values of the policy's matchLabelKeys ("" when
// the policy names none): pods with equal keys count toward the same max.
func GroupKey(rp *v1alpha1.ResourcePolicy, p *corev1.Pod) string {
	if len(rp.Spec.MatchLabelKeys) == 0 {
		return ""
	}
	var b strings.Builder
	for i, k := range rp.Spec.MatchLabelKeys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(p.Labels[k])
	}
	return b.String()
}

// SameGroup reports whether two pods share the values of every one of the
// policy's matchLabelKeys, so that they count toward the same max. Without
// matchLabelKeys every pod is in one group.
func SameGroup(rp *v1alpha1.ResourcePolicy, a, b *corev1.Pod) bool {
	for _, k := range rp.Spec.MatchLabelKeys {
		va, oka := a.Labels[k]
		vb, okb := b.Labels[k]
		if oka != okb || va != vb {
			return false
		}
	}
	return true
}

// StatusCoolingDown reports whether the policy's status marks unit i as
// cooling down at now. The status is where the re-placement controller,
// which runs on the leader, tells every webhook replica; a status written
// for a different list of units is ignored.
func StatusCoolingDown(rp *v1alpha1.ResourcePolicy, i int, now time.Time) bool {
	if len(rp.Status.Units) != len(rp.Spec.Units) || i < 0 || i >= len(rp.Status.Units) {
		return false
	}
	until := rp.Status.Units[i].CooldownUntil
	return until != nil && now.Before(until.Time)
}
