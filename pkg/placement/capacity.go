package placement

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// PodRequests is what the pod asks a node for, the way the scheduler adds it
// up (init containers, sidecars, pod-level resources, overhead), plus one
// "pods" slot.
func PodRequests(pod *corev1.Pod) corev1.ResourceList {
	req := EffectiveRequests(pod)
	req[corev1.ResourcePods] = *resource.NewQuantity(1, resource.DecimalSI)
	return req
}

// EffectiveRequests is PodRequests without the "pods" slot: the resources
// the scheduler charges a node for the pod. The result is never nil.
func EffectiveRequests(pod *corev1.Pod) corev1.ResourceList {
	if !containersOnly(pod) {
		req := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
		if req == nil {
			req = corev1.ResourceList{}
		}
		return req
	}
	// Every placement adds up the requests of every pod on the unit's
	// nodes; the helper's general path allocates a map per container,
	// which at fleet size was a third of a review's CPU. Without init
	// containers, overhead or pod-level resources its answer is the sum of
	// the containers' requests.
	req := make(corev1.ResourceList, 4)
	for i := range pod.Spec.Containers {
		for name, q := range pod.Spec.Containers[i].Resources.Requests {
			if sum, ok := req[name]; ok {
				sum.Add(q)
				req[name] = sum
			} else {
				req[name] = q.DeepCopy()
			}
		}
	}
	return req
}

// containersOnly reports whether the pod's requests are the sum of its
// containers' (no init containers, overhead or pod-level resources).
func containersOnly(pod *corev1.Pod) bool {
	return len(pod.Spec.InitContainers) == 0 && pod.Spec.Overhead == nil && pod.Spec.Resources == nil
}

// chargePod adds (sign 1) or subtracts (sign -1) the pod's PodRequests
// (the "pods" slot included) to or from list. Placement charges every pod
// on its unit's nodes, so the usual pod's containers are read in place
// rather than summed into a list first.
func chargePod(list corev1.ResourceList, pod *corev1.Pod, sign int) {
	add := func(name corev1.ResourceName, q resource.Quantity) {
		sum := list[name]
		if sign > 0 {
			sum.Add(q)
		} else {
			sum.Sub(q)
		}
		list[name] = sum
	}
	if !containersOnly(pod) {
		for name, q := range PodRequests(pod) {
			add(name, q)
		}
		return
	}
	for i := range pod.Spec.Containers {
		for name, q := range pod.Spec.Containers[i].Resources.Requests {
			add(name, q)
		}
	}
	add(corev1.ResourcePods, *resource.NewQuantity(1, resource.DecimalSI))
}

// take subtracts req from left.
func take(left, req corev1.ResourceList) {
	for name, q := range req {
		l := left[name]
		l.Sub(q)
		left[name] = l
	}
}

// OccupiedNode is the node whose room the pod claims: the node it is bound
// to, else the node the scheduler nominated for it after preemption, else
// the node reserved for it at placement; "" when it takes none (finished,
// or unplaced and unbound). A reservation is only a claim until Charged
// has checked that spillway wrote it.
func OccupiedNode(pod *corev1.Pod) string {
	switch {
	case Terminal(pod):
		return ""
	case pod.Spec.NodeName != "":
		return pod.Spec.NodeName
	case pod.Status.NominatedNodeName != "":
		return pod.Status.NominatedNodeName
	default:
		return pod.Annotations[AnnotationReservedNode]
	}
}

// Charged keeps, of the pods that claim a node (see OccupiedNode), those
// the node's room is charged for: every bound or nominated pod, and a pod
// waiting on its reservation only when signed reports that spillway wrote
// the reservation (Keyring.Signed) and no pod listed before it carries the
// same placement ID. Anyone who can create a pod can write the annotation,
// so an unsigned or copied reservation is charged nothing beyond what the
// pod's binding says; otherwise a pod left pending on purpose could keep
// other tenants' pods off any node it names. The input is not modified.
func Charged(pods []*corev1.Pod, signed func(*corev1.Pod) bool) []*corev1.Pod {
	sorted := slices.Clone(pods)
	// Oldest first, so which of several copies is charged does not depend
	// on list order.
	slices.SortStableFunc(sorted, func(a, b *corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	out := make([]*corev1.Pod, 0, len(sorted))
	ids := map[string]bool{}
	for _, p := range sorted {
		if p.Spec.NodeName == "" && p.Status.NominatedNodeName == "" {
			id := p.Annotations[AnnotationPlacementID]
			if id == "" || ids[id] || !signed(p) {
				continue
			}
			ids[id] = true
		}
		out = append(out, p)
	}
	return out
}

// NodeUsage is a node with the pods charged to it (see Charged).
type NodeUsage struct {
	Node *corev1.Node
	Pods []*corev1.Pod
	// Taken, when set, is what pods not in Pods take on the node, summed
	// ahead (a Ledger's bound pods); Pods then holds the rest.
	Taken corev1.ResourceList
}

// free is what each node (in the given order) has left after the pods that
// occupy it and the in-flight reservations on it. It may go negative when a
// node is overcommitted.
//
// Terminating pods take nothing: their room is being released, and counting
// it would send the replacement of a deleted on-prem pod (the ReplicaSet
// creates it the moment the old one starts terminating) to the elastic unit
// while the on-prem slot frees up seconds later. If the old pod is slow to
// go, the new one is re-placed after the grace.
//
// Pods waiting for the scheduler (reserved at admission, not yet bound or
// nominated) are pinned to their unit, not to the node reserved for them:
// the scheduler spreads them over the unit as it likes, and a pod bound away
// from its reserved node takes room that the node's other waiting pods then
// lack. So bound and nominated pods are counted first, and each waiting pod
// then takes room on its reserved node if it still fits there, else on the
// first other node where it fits; otherwise a burst could admit more pods to
// a unit than it holds. A waiting pod or reservation that fits on no node of
// the unit takes nothing: the scheduler cannot put it there, so the room it
// would take is not real, and counting it would let an oversized claim make
// a unit look full to everyone else.
func free(nodes []NodeUsage, inflight []Reservation) []corev1.ResourceList {
	out := make([]corev1.ResourceList, len(nodes))
	index := make(map[string]int, len(nodes))
	for i, u := range nodes {
		out[i] = u.Node.Status.Allocatable.DeepCopy()
		if out[i] == nil {
			out[i] = corev1.ResourceList{}
		}
		take(out[i], u.Taken)
		index[u.Node.Name] = i
	}
	type waiting struct {
		node int
		req  corev1.ResourceList
	}
	var wait []waiting
	for i, u := range nodes {
		for _, p := range u.Pods {
			if OccupiedNode(p) != u.Node.Name || p.DeletionTimestamp != nil {
				continue
			}
			if p.Spec.NodeName == "" && p.Status.NominatedNodeName == "" {
				wait = append(wait, waiting{i, PodRequests(p)})
				continue
			}
			chargePod(out[i], p, -1)
		}
	}
	for _, r := range inflight {
		if i, ok := index[r.Node]; ok {
			wait = append(wait, waiting{i, r.Requests})
		}
	}
	for _, w := range wait {
		i := w.node
		if !Fits(w.req, out[i]) {
			i = slices.IndexFunc(out, func(left corev1.ResourceList) bool { return Fits(w.req, left) })
		}
		if i >= 0 {
			take(out[i], w.req)
		}
	}
	return out
}

// Fits reports whether every positive request is covered by free; a
// resource the node does not have (say nvidia.com/gpu on a CPU node) counts
// as zero.
func Fits(req, free corev1.ResourceList) bool {
	for name, q := range req {
		if q.Sign() <= 0 {
			continue
		}
		left, ok := free[name]
		if !ok || left.Cmp(q) < 0 {
			return false
		}
	}
	return true
}

// Usable reports whether the scheduler could put the pod on the node at
// all, room aside: not cordoned, every NoSchedule/NoExecute taint tolerated
// and the pod's own node selector and required node affinity satisfied.
func Usable(node *corev1.Node, pod *corev1.Pod) bool {
	if node.Spec.Unschedulable && !tolerates(pod.Spec.Tolerations, &corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}) {
		return false
	}
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		if !tolerates(pod.Spec.Tolerations, t) {
			return false
		}
	}
	ok, err := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)
	return err == nil && ok
}

// tolerates is the scheduler's toleration match for the Equal and Exists
// operators (the comparison operators are alpha and not handled).
func tolerates(tols []corev1.Toleration, t *corev1.Taint) bool {
	for _, tol := range tols {
		if tol.Effect != "" && tol.Effect != t.Effect {
			continue
		}
		if tol.Key != "" && tol.Key != t.Key {
			continue
		}
		switch tol.Operator {
		case corev1.TolerationOpExists:
			return true
		case "", corev1.TolerationOpEqual:
			if tol.Key != "" && tol.Value == t.Value {
				return true
			}
		}
	}
	return false
}

// RoomNode is the first node, by name, of the given ones (the nodes of one
// unit) that the pod can use and that has room for req after the pods there
// and the in-flight reservations (see free); ok is false when none has.
func RoomNode(pod *corev1.Pod, req corev1.ResourceList, nodes []NodeUsage, inflight []Reservation) (string, bool) {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b NodeUsage) int {
		switch {
		case a.Node.Name < b.Node.Name:
			return -1
		case a.Node.Name > b.Node.Name:
			return 1
		}
		return 0
	})
	left := free(sorted, inflight)
	for i, u := range sorted {
		if Usable(u.Node, pod) && Fits(req, left[i]) {
			return u.Node.Name, true
		}
	}
	return "", false
}

// Preempts reports whether kube-scheduler may preempt victim to make room
// for pod: the pod may preempt (its preemptionPolicy is not Never) and the
// victim's priority is lower.
func Preempts(pod, victim *corev1.Pod) bool {
	if pod.Spec.PreemptionPolicy != nil && *pod.Spec.PreemptionPolicy == corev1.PreemptNever {
		return false
	}
	return priority(victim) < priority(pod)
}

func priority(p *corev1.Pod) int32 {
	if p.Spec.Priority != nil {
		return *p.Spec.Priority
	}
	return 0
}

// WithoutPreemptible is nodes less the pods that pod could preempt there:
// the room it would have under preemptPolicy BeforeNextUnit. It needs every
// pod: a node's Taken is kept as it is.
func WithoutPreemptible(nodes []NodeUsage, pod *corev1.Pod) []NodeUsage {
	out := make([]NodeUsage, len(nodes))
	for i, u := range nodes {
		out[i] = NodeUsage{Node: u.Node, Taken: u.Taken}
		for _, p := range u.Pods {
			if !Preempts(pod, p) {
				out[i].Pods = append(out[i].Pods, p)
			}
		}
	}
	return out
}
