package provider

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/tools/cache"

	"github.com/spillway-dev/spillway/pkg/intern"
)

// CachedPod is what the adapter's pod informer keeps of a pod (SlimPods):
// the metadata that keys, label selection and deletion read, and the
// node, IP, phase and start time the provenance checks and the data share
// read. A corev1.Pod with everything else left zero would still cost its
// 1.2 KB struct per pod; this costs a quarter of that, some 50 MB less at
// 50,000 pods. Its embedded ObjectMeta is what client-go's key and index
// functions read (meta.Accessor), and it is only ever read.
type CachedPod struct {
	metav1.ObjectMeta
	NodeName  string
	PodIP     string
	Phase     corev1.PodPhase
	StartTime *metav1.Time
}

// SlimPods returns the pod informer's transform: every *corev1.Pod becomes
// its CachedPod, with the strings that repeat from pod to pod interned and
// the label set shared with the pods of the same template through labels
// (pkg/intern); anything else (a cache.DeletedFinalStateUnknown) passes
// unchanged.
func SlimPods(labels *intern.Table[map[string]string]) cache.TransformFunc {
	return func(obj any) (any, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return obj, nil
		}
		c := NewCachedPod(pod)
		c.Namespace = intern.String(c.Namespace)
		c.Labels = intern.ShareLabels(labels, c.Labels)
		c.NodeName = intern.String(c.NodeName)
		return c, nil
	}
}

// NewCachedPod is what the cache keeps of pod. It shares pod's label map
// and timestamps.
func NewCachedPod(pod *corev1.Pod) *CachedPod {
	return &CachedPod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			Labels:            pod.Labels,
			DeletionTimestamp: pod.DeletionTimestamp,
		},
		NodeName:  pod.Spec.NodeName,
		PodIP:     pod.Status.PodIP,
		Phase:     pod.Status.Phase,
		StartTime: pod.Status.StartTime,
	}
}

// PodLabelIndex names the informer index InformerPods needs: one key per
// pod label, "<namespace>/<key>=<value>". Namespaces hold no "/" and label
// keys no "=", so keys cannot collide. With it an equality selector reads
// only the pods carrying that label instead of scanning the namespace —
// with 5,000 pods in a namespace, ~15 µs instead of ~450 µs per request.
const PodLabelIndex = "spillway.dev/namespace-label"

// PodLabelIndexFunc computes PodLabelIndex keys; register it on the pod
// informer with AddIndexers before the informer starts.
func PodLabelIndexFunc(obj any) ([]string, error) {
	pod, ok := obj.(*CachedPod)
	if !ok {
		return nil, fmt.Errorf("pod label index: got %T, want a *provider.CachedPod (the pod informer needs the SlimPods transform)", obj)
	}
	keys := make([]string, 0, len(pod.Labels))
	for k, v := range pod.Labels {
		keys = append(keys, labelIndexKey(pod.Namespace, k, v))
	}
	return keys, nil
}

func labelIndexKey(namespace, key, value string) string {
	return namespace + "/" + key + "=" + value
}

// InformerPods implements PodLister over the indexer of a pod informer
// whose transform is SlimPods.
type InformerPods struct {
	indexer cache.Indexer
}

// NewInformerPods checks that indexer has the namespace index and
// PodLabelIndex, so a missing registration fails at start, not per request.
func NewInformerPods(indexer cache.Indexer) (*InformerPods, error) {
	idx := indexer.GetIndexers()
	for _, name := range []string{cache.NamespaceIndex, PodLabelIndex} {
		if _, ok := idx[name]; !ok {
			return nil, fmt.Errorf("pod informer lacks the %q index", name)
		}
	}
	return &InformerPods{indexer: indexer}, nil
}

// SelectedPod is a pod that a request's selector matched.
type SelectedPod struct {
	Name string
	// RunningSince is when the pod started (status.startTime) while it
	// runs and is not being deleted, and zero otherwise: only a running pod
	// can be expected to have data, and only once it has run a while. A
	// running pod without a start time counts as long running.
	RunningSince time.Time
}

// longRunning stands for the start of a running pod whose start time is
// unknown: it is expected to report at once.
var longRunning = time.Unix(0, 0)

// SelectPods lists the pods of namespace matching selector, leaving out pods
// that have finished: they run no GPU work and the HPA ignores them too.
func (l *InformerPods) SelectPods(namespace string, selector labels.Selector) ([]SelectedPod, error) {
	candidates, err := l.candidates(namespace, selector)
	if err != nil {
		return nil, err
	}
	out := make([]SelectedPod, 0, min(len(candidates), 64))
	for _, obj := range candidates {
		pod, ok := obj.(*CachedPod)
		if !ok || pod.Namespace != namespace || !selector.Matches(labels.Set(pod.Labels)) {
			continue
		}
		if pod.Phase == corev1.PodSucceeded || pod.Phase == corev1.PodFailed {
			continue
		}
		sp := SelectedPod{Name: pod.Name}
		if pod.Phase == corev1.PodRunning && pod.DeletionTimestamp == nil {
			sp.RunningSince = longRunning
			if pod.StartTime != nil {
				sp.RunningSince = pod.StartTime.Time
			}
		}
		out = append(out, sp)
	}
	return out, nil
}

// maxIndexedValues bounds the index lookups one "key in (...)" requirement
// may cost; a longer list is only matched, like a requirement the index
// cannot serve.
const maxIndexedValues = 64

// candidates narrows the scan to the pods of one requirement of the form
// key=value or key in (v1, ..., vn): the one whose index buckets hold the
// fewest pods (a pod has one value per key, so the buckets of one key's
// values never overlap). A selector without such a requirement scans the
// namespace. SelectPods matches every candidate against the whole selector.
func (l *InformerPods) candidates(namespace string, selector labels.Selector) ([]any, error) {
	reqs, _ := selector.Requirements()
	var best []any
	found := false
	for _, r := range reqs {
		vals := r.ValuesUnsorted()
		op := r.Operator()
		if len(vals) == 0 || len(vals) > maxIndexedValues || (op != selection.Equals && op != selection.DoubleEquals && op != selection.In) {
			continue
		}
		var items []any
		for i, v := range vals {
			if slices.Contains(vals[:i], v) {
				continue // a bucket listed twice would list its pods twice
			}
			bucket, err := l.indexer.ByIndex(PodLabelIndex, labelIndexKey(namespace, r.Key(), v))
			if err != nil {
				return nil, err
			}
			if items == nil {
				items = bucket // a copy ByIndex made for this call
			} else {
				items = append(items, bucket...)
			}
			if found && len(items) >= len(best) {
				break // no narrower than the best so far
			}
		}
		if !found || len(items) < len(best) {
			best, found = items, true
		}
	}
	if found {
		return best, nil
	}
	return l.indexer.ByIndex(cache.NamespaceIndex, namespace)
}

// PodAddress returns the node the pod is bound to (spec.nodeName; "" while
// unscheduled), its IP (status.podIP; "" while it has none) and whether the
// informer knows the pod.
func (l *InformerPods) PodAddress(namespace, name string) (node, ip string, known bool) {
	obj, exists, err := l.indexer.GetByKey(namespace + "/" + name)
	if err != nil || !exists {
		return "", "", false
	}
	pod, ok := obj.(*CachedPod)
	if !ok {
		return "", "", false
	}
	return pod.NodeName, pod.PodIP, true
}
