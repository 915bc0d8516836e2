// Package podindex resolves pod UIDs and container IDs (what podmap reads
// from /proc) to namespace, pod and container names, through a pod informer.
// On a node the informer is limited to spec.nodeName=<node>, so the exporter
// holds only its own node's pods. The simulator also uses it, cluster-wide,
// to list GPU pods and (with a ReplicaSet source) to find the Deployment above a
// pod's ReplicaSet.
package podindex

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/spillway-dev/spillway/pkg/gpu"
)

// MirrorAnnotation carries, on a static pod's mirror, the UID the kubelet
// uses for the static pod itself, which is the UID in its cgroup path.
const MirrorAnnotation = "kubernetes.io/config.mirror"

const (
	byUID         = "uid"
	byContainerID = "containerID"
)

// Options tunes the informers.
type Options struct {
	// Resync is the informers' resync period (0: none).
	Resync time.Duration
}

// Index is a pod cache indexed by UID and container ID.
type Index struct {
	pods cache.SharedIndexInformer
	rs   cache.SharedIndexInformer
}

// New builds the informers over pods (see PodListWatch) and, when rs is not
// nil, ReplicaSet metadata (see ReplicaSetListWatch). Call Start, then
// WaitForSync.
func New(pods, rs cache.ListerWatcher, opts Options) (*Index, error) {
	if pods == nil {
		return nil, errors.New("podindex: no pod source")
	}
	x := &Index{pods: cache.NewSharedIndexInformer(pods, &corev1.Pod{}, opts.Resync, cache.Indexers{
		byUID:         indexUID,
		byContainerID: indexContainerIDs,
	})}
	if err := x.pods.SetTransform(trimPod); err != nil {
		return nil, fmt.Errorf("podindex: %w", err)
	}
	if rs != nil {
		x.rs = cache.NewSharedIndexInformer(rs, &metav1.PartialObjectMetadata{}, opts.Resync, cache.Indexers{})
		if err := x.rs.SetTransform(trimMeta); err != nil {
			return nil, fmt.Errorf("podindex: %w", err)
		}
	}
	return x, nil
}

// PodListWatch lists and watches pods through a core/v1 REST client, on one
// node (spec.nodeName field selector) or, with node empty, on all. It uses
// its own scheme holding only core/v1: client-go's full clientset would
// link every API group into the exporter and cost it several MiB of memory.
func PodListWatch(cfg *rest.Config, node string) (cache.ListerWatcher, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("podindex: %w", err)
	}
	c := rest.CopyConfig(cfg)
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	// Protobuf keeps list decoding cheap on large clusters (the simulator
	// lists every pod).
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("podindex: pods client: %w", err)
	}
	return cache.NewFilteredListWatchFromClient(rc, "pods", metav1.NamespaceAll, func(o *metav1.ListOptions) {
		if node != "" {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}
	}), nil
}

// ReplicaSetListWatch lists and watches ReplicaSet metadata (owner
// references are all DeploymentOf needs).
func ReplicaSetListWatch(meta metadata.Interface) cache.ListerWatcher {
	rs := meta.Resource(appsv1.SchemeGroupVersion.WithResource("replicasets")).Namespace(metav1.NamespaceAll)
	// The wrapper passes on whether the client can stream the initial list
	// (fake clients cannot), so the reflector picks list+watch when needed.
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return rs.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return rs.Watch(ctx, o)
		},
	}, meta)
}

// Start runs the informers until ctx ends.
func (x *Index) Start(ctx context.Context) {
	go x.pods.RunWithContext(ctx)
	if x.rs != nil {
		go x.rs.RunWithContext(ctx)
	}
}

// WaitForSync blocks until the caches are filled or ctx ends.
func (x *Index) WaitForSync(ctx context.Context) error {
	synced := []cache.InformerSynced{x.pods.HasSynced}
	if x.rs != nil {
		synced = append(synced, x.rs.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return errors.New("podindex: caches did not sync")
	}
	return nil
}

// Resolve names the pod with podUID and the container with containerID
// (runtime prefix stripped). A pod found without a matching container (the
// sandbox, or a container whose status is not written yet) resolves with an
// empty container name; an unknown pod does not resolve.
func (x *Index) Resolve(podUID, containerID string) (gpu.PodRef, bool) {
	objs, _ := x.pods.GetIndexer().ByIndex(byUID, podUID)
	for _, o := range objs {
		pod, ok := o.(*corev1.Pod)
		if !ok {
			continue
		}
		return gpu.PodRef{
			UID:       podUID,
			Namespace: pod.Namespace,
			Name:      pod.Name,
			Container: containerName(pod, containerID),
		}, true
	}
	return gpu.PodRef{}, false
}

// Pods lists the cached pods. They are shared with the cache: read only.
func (x *Index) Pods() []*corev1.Pod {
	objs := x.pods.GetStore().List()
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// DeploymentOf names the Deployment controlling a ReplicaSet.
func (x *Index) DeploymentOf(namespace, replicaSet string) (string, bool) {
	if x.rs == nil {
		return "", false
	}
	o, ok, err := x.rs.GetStore().GetByKey(namespace + "/" + replicaSet)
	if err != nil || !ok {
		return "", false
	}
	m, ok := o.(metav1.Object)
	if !ok {
		return "", false
	}
	if ref := metav1.GetControllerOfNoCopy(m); ref != nil && ref.Kind == "Deployment" {
		return ref.Name, true
	}
	return "", false
}

func containerName(pod *corev1.Pod, containerID string) string {
	if containerID == "" {
		return ""
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if StripRuntime(cs.ContainerID) == containerID {
				return cs.Name
			}
		}
	}
	return ""
}

// StripRuntime drops the "<runtime>://" prefix of a status containerID.
func StripRuntime(id string) string {
	if _, rest, ok := strings.Cut(id, "://"); ok {
		return rest
	}
	return id
}

func indexUID(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	keys := []string{string(pod.UID)}
	if m := pod.Annotations[MirrorAnnotation]; m != "" && m != string(pod.UID) {
		keys = append(keys, m)
	}
	return keys, nil
}

func indexContainerIDs(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	var keys []string
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if id := StripRuntime(cs.ContainerID); id != "" {
				keys = append(keys, id)
			}
		}
	}
	return keys, nil
}

// trimPod keeps only what the exporter and the simulator read, so a node's
// (or, for the simulator, a cluster's) pods cost little memory.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			Labels:            pod.Labels,
			OwnerReferences:   pod.OwnerReferences,
			DeletionTimestamp: pod.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName},
		Status: corev1.PodStatus{
			Phase:                      pod.Status.Phase,
			ContainerStatuses:          trimStatuses(pod.Status.ContainerStatuses),
			InitContainerStatuses:      trimStatuses(pod.Status.InitContainerStatuses),
			EphemeralContainerStatuses: trimStatuses(pod.Status.EphemeralContainerStatuses),
		},
	}
	if m, ok := pod.Annotations[MirrorAnnotation]; ok {
		out.Annotations = map[string]string{MirrorAnnotation: m}
	}
	for _, c := range pod.Spec.Containers {
		out.Spec.Containers = append(out.Spec.Containers, corev1.Container{
			Name: c.Name,
			Resources: corev1.ResourceRequirements{
				Limits:   c.Resources.Limits,
				Requests: c.Resources.Requests,
			},
		})
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}

func trimStatuses(in []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(in) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(in))
	for i, cs := range in {
		out[i] = corev1.ContainerStatus{Name: cs.Name, ContainerID: cs.ContainerID}
	}
	return out
}

func trimMeta(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{
		TypeMeta: m.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: m.Name, Namespace: m.Namespace, UID: m.UID,
			ResourceVersion: m.ResourceVersion,
			OwnerReferences: m.OwnerReferences,
		},
	}, nil
}
