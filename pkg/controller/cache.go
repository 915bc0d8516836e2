package controller

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spillway-dev/spillway/pkg/intern"
	"github.com/spillway-dev/spillway/pkg/placement"
)

// CacheOptions is the manager cache the controllers above need. Every pod
// and node of the cluster is cached (policies select pods by arbitrary
// labels, units select nodes by arbitrary labels, and the fleet metrics
// count finished pods too, so no label or field selector can narrow the
// watches), which at fleet size makes pods most of the process's memory. So
// pods, nodes and Deployments are cached as the slim copies a PodSlimmer,
// SlimNode and SlimDeployment make, holding only what the controllers and
// the webhook read; every other kind loses its managed fields only.
//
// A slim object is for reading: nothing here Updates a pod, node or
// Deployment read from the cache (an Update would wipe what was dropped).
// Pods are written with merge patches of their metadata (deletioncost) and
// deleted with a UID precondition (spillover), neither of which sends the
// cached object's other fields. The webhook places the pod decoded from
// the admission review, which is complete; only the pods already in the
// cluster, read to count and to find room, are slim.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:        {Transform: NewPodSlimmer(maxSharedSets).Slim},
			&corev1.Node{}:       {Transform: SlimNode},
			&appsv1.Deployment{}: {Transform: SlimDeployment},
		},
	}
}

// maxSharedSets bounds each of a PodSlimmer's tables of shared label sets
// and request lists: far more than the distinct pod templates of a large
// cluster, and at most a few MiB.
const maxSharedSets = 4096

// PodSlimmer makes the slim pods of one cache (see Slim). Pods made from
// one template carry the same labels and ask for the same resources, so
// identical label sets and request lists are shared between its slim pods
// (pkg/intern) rather than held once per pod.
type PodSlimmer struct {
	labels   *intern.Table[map[string]string]
	requests *intern.Table[corev1.ResourceList]
}

// NewPodSlimmer returns a PodSlimmer sharing up to max label sets and max
// request lists (0: none).
func NewPodSlimmer(maxShared int) *PodSlimmer {
	return &PodSlimmer{labels: intern.NewTable[map[string]string](maxShared), requests: intern.NewTable[corev1.ResourceList](maxShared)}
}

// Slim is a cache transform keeping of a pod what pkg/placement and the
// controllers read (a copy built field by field, so fields the API adds
// later are dropped too):
//
//   - metadata: identity, resourceVersion (adoption's merge patch carries
//     it), creation and deletion timestamps, labels and annotations (policy
//     selectors, unit podLabels and podAnnotations, placement records,
//     deletion cost) and owner references (only a ReplicaSet's pod is
//     re-placed);
//   - spec: nodeName; what the pod asks a node for, as one container
//     holding placement.EffectiveRequests (the sum the scheduler makes of
//     containers, init containers, sidecars, pod-level requests and
//     overhead: placement.PodRequests of the slim pod is that of the full
//     one); priority and preemptionPolicy (placement.Preempts);
//   - status: phase, nominatedNodeName and the PodScheduled condition's
//     status and reason (spillover's unschedulable check).
//
// Everything else goes: images, commands, args, env, volumes, probes,
// mounts, affinity, tolerations, limits, container statuses, IPs. At fleet
// size the pods are most of the process's memory, and most of a pod's
// strings (label and annotation keys, the values a ReplicaSet's pods
// share, namespaces, node and owner names) repeat from pod to pod: they are
// interned, so the cache holds one copy of each. Objects other than pods
// pass through unchanged.
//
// A slim pod's label map and request list may be another's too: like the
// rest of a cached object, they are only read.
func (s *PodSlimmer) Slim(in any) (any, error) {
	p, ok := in.(*corev1.Pod)
	if !ok {
		return in, nil
	}
	meta := slimMeta(&p.ObjectMeta, intern.ShareLabels(s.labels, p.Labels))
	req := effectiveRequests(p)
	req = s.requests.Share(intern.Key(req, func(q resource.Quantity) string { return q.String() }), func() corev1.ResourceList { return req })
	out := &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: meta,
		Spec: corev1.PodSpec{
			NodeName:         intern.String(p.Spec.NodeName),
			Containers:       []corev1.Container{{Name: slimContainerName, Resources: corev1.ResourceRequirements{Requests: req}}},
			Priority:         p.Spec.Priority,
			PreemptionPolicy: p.Spec.PreemptionPolicy,
		},
		Status: corev1.PodStatus{
			Phase:             p.Status.Phase,
			NominatedNodeName: intern.String(p.Status.NominatedNodeName),
		},
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status, Reason: intern.String(c.Reason)}}
			break
		}
	}
	return out, nil
}

// slimContainerName names the one container of a slim pod.
const slimContainerName = "requests"

// effectiveRequests is what the pod asks a node for, nil when nothing.
// A slim pod is slimmed again on a relist: its one container's requests
// are then the answer already.
func effectiveRequests(p *corev1.Pod) corev1.ResourceList {
	req := placement.EffectiveRequests(p)
	if len(req) == 0 {
		return nil
	}
	return req
}

// SlimNode is a cache transform keeping of a node its identity and labels
// (unit node selectors, the pod's required node affinity), whether it is
// cordoned, its taints, and its allocatable resources (room for a pod):
// what placement.Usable, placement.RoomNode and the unit lookups read. The
// status's images, conditions, addresses and volumes, which make most of a
// node's size, go. Objects other than nodes pass through unchanged.
func SlimNode(in any) (any, error) {
	n, ok := in.(*corev1.Node)
	if !ok {
		return in, nil
	}
	meta := slimMeta(&n.ObjectMeta, intern.Map(n.Labels, nil))
	// Nothing reads a node's annotations, and autoscalers and CNIs put
	// long ones there.
	meta.Annotations = nil
	return &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: meta,
		Spec:       corev1.NodeSpec{Unschedulable: n.Spec.Unschedulable, Taints: n.Spec.Taints},
		Status:     corev1.NodeStatus{Allocatable: n.Status.Allocatable},
	}, nil
}

// SlimDeployment is a cache transform keeping of a Deployment its identity
// and pod selector: the InferenceScaler controller watches Deployments for
// their existence and reads only the selector (the pod template, most of
// the object, goes). Objects other than Deployments pass through unchanged.
func SlimDeployment(in any) (any, error) {
	d, ok := in.(*appsv1.Deployment)
	if !ok {
		return in, nil
	}
	return &appsv1.Deployment{
		TypeMeta:   d.TypeMeta,
		ObjectMeta: slimMeta(&d.ObjectMeta, intern.Map(d.Labels, nil)),
		Spec:       appsv1.DeploymentSpec{Selector: d.Spec.Selector},
	}, nil
}

// slimMeta is the object metadata without managed fields and finalizers,
// its shared strings interned, with the given labels (the caller's
// interned or shared copy of m's). The placement ID and signature
// annotations are unique to each pod, so interning them would only add a
// table entry.
func slimMeta(m *metav1.ObjectMeta, labels map[string]string) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         intern.String(m.Namespace),
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		Generation:        m.Generation,
		CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp,
		Labels:            labels,
		Annotations:       intern.Map(m.Annotations, uniqueAnnotation),
	}
	if len(m.OwnerReferences) > 0 {
		out.OwnerReferences = make([]metav1.OwnerReference, len(m.OwnerReferences))
		for i, r := range m.OwnerReferences {
			out.OwnerReferences[i] = metav1.OwnerReference{
				APIVersion: intern.String(r.APIVersion), Kind: intern.String(r.Kind), Name: intern.String(r.Name), UID: types.UID(intern.String(string(r.UID))),
				Controller: r.Controller, BlockOwnerDeletion: r.BlockOwnerDeletion,
			}
		}
	}
	return out
}

// uniqueAnnotation reports whether the annotation's value differs from pod
// to pod.
func uniqueAnnotation(key string) bool {
	return key == placement.AnnotationPlacementID || key == placement.AnnotationSignature
}
