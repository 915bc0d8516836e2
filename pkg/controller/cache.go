package controller

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions is the manager cache the controllers above need. Every pod
// and node of the cluster is cached (policies select pods by arbitrary
// labels, units select nodes by arbitrary labels, and the fleet metrics
// count finished pods too, so no label or field selector can narrow the
// watches), which at fleet size makes pods most of the process's memory. So
// pods, nodes and Deployments are cached as the slim copies SlimPod,
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
			&corev1.Pod{}:        {Transform: SlimPod},
			&corev1.Node{}:       {Transform: SlimNode},
			&appsv1.Deployment{}: {Transform: SlimDeployment},
		},
	}
}

// SlimPod is a cache transform keeping of a pod what pkg/placement and the
// controllers read (a copy built field by field, so fields the API adds
// later are dropped too):
//
//   - metadata: identity, resourceVersion (adoption's merge patch carries
//     it), creation and deletion timestamps, labels and annotations (policy
//     selectors, unit podLabels and podAnnotations, placement records,
//     deletion cost) and owner references (only a ReplicaSet's pod is
//     re-placed);
//   - spec: nodeName; each container's and init container's name, resource
//     requests and restartPolicy (sidecars), pod-level requests and
//     overhead (placement.PodRequests); priority and preemptionPolicy
//     (placement.Preempts);
//   - status: phase, nominatedNodeName and the PodScheduled condition
//     (spillover's unschedulable check).
//
// Everything else goes: images, commands, args, env, volumes, probes,
// mounts, affinity, tolerations, limits, container statuses, IPs. Objects
// other than pods pass through unchanged.
func SlimPod(in any) (any, error) {
	p, ok := in.(*corev1.Pod)
	if !ok {
		return in, nil
	}
	out := &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: slimMeta(&p.ObjectMeta),
		Spec: corev1.PodSpec{
			NodeName:         p.Spec.NodeName,
			Containers:       slimContainers(p.Spec.Containers),
			InitContainers:   slimContainers(p.Spec.InitContainers),
			Overhead:         p.Spec.Overhead,
			Priority:         p.Spec.Priority,
			PreemptionPolicy: p.Spec.PreemptionPolicy,
		},
		Status: corev1.PodStatus{
			Phase:             p.Status.Phase,
			NominatedNodeName: p.Status.NominatedNodeName,
		},
	}
	if p.Spec.Resources != nil {
		out.Spec.Resources = &corev1.ResourceRequirements{Requests: p.Spec.Resources.Requests}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			out.Status.Conditions = []corev1.PodCondition{c}
			break
		}
	}
	return out, nil
}

func slimContainers(in []corev1.Container) []corev1.Container {
	if len(in) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(in))
	for i := range in {
		out[i] = corev1.Container{
			Name:          in[i].Name,
			Resources:     corev1.ResourceRequirements{Requests: in[i].Resources.Requests},
			RestartPolicy: in[i].RestartPolicy,
		}
	}
	return out
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
	meta := slimMeta(&n.ObjectMeta)
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
		ObjectMeta: slimMeta(&d.ObjectMeta),
		Spec:       appsv1.DeploymentSpec{Selector: d.Spec.Selector},
	}, nil
}

// slimMeta is the object metadata without managed fields and finalizers.
func slimMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		Generation:        m.Generation,
		CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp,
		Labels:            m.Labels,
		Annotations:       m.Annotations,
		OwnerReferences:   m.OwnerReferences,
	}
}
