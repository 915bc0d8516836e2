package provider

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/spillway-dev/spillway/pkg/intern"
)

func TestInformerPods(t *testing.T) {
	pods := []pod{
		{ns: "a", name: "web-1", labels: map[string]string{"app": "web", "tier": "gpu"}},
		{ns: "a", name: "web-2", labels: map[string]string{"app": "web", "tier": "cpu"}},
		{ns: "a", name: "web-3", labels: map[string]string{"app": "web", "tier": "gpu"}, phase: corev1.PodFailed},
		{ns: "a", name: "web-4", labels: map[string]string{"app": "web", "tier": "gpu"}, phase: corev1.PodPending},
		{ns: "a", name: "db-1", labels: map[string]string{"app": "db", "tier": "gpu"}},
		{ns: "a", name: "bare"},
		{ns: "b", name: "web-1", labels: map[string]string{"app": "web", "tier": "gpu"}},
		{ns: "a", name: "odd", labels: map[string]string{"example.com/role": "a=b"}},
	}
	l := podLister(t, pods)
	tests := []struct {
		ns, selector string
		want         []string
	}{
		{"a", "app=web", []string{"web-1", "web-2", "web-4"}},
		{"a", "app==web,tier=gpu", []string{"web-1", "web-4"}},
		{"a", "tier in (gpu),app!=db", []string{"web-1", "web-4"}},
		{"a", "app in (web,db),tier=cpu", []string{"web-2"}},
		{"a", "app in (web,db)", []string{"db-1", "web-1", "web-2", "web-4"}},
		{"a", "app in (db,nothing),tier in (gpu,cpu)", []string{"db-1"}},
		{"a", "app in (nothing,none)", nil},
		{"a", "app notin (web)", []string{"bare", "db-1", "odd"}},
		{"a", "!app", []string{"bare", "odd"}},
		{"a", "tier", []string{"db-1", "web-1", "web-2", "web-4"}},
		{"a", "", []string{"bare", "db-1", "odd", "web-1", "web-2", "web-4"}},
		{"b", "app=web", []string{"web-1"}},
		{"c", "app=web", nil},
		{"a", "app=nothing", nil},
		{"a", "example.com/role", []string{"odd"}},
	}
	for _, tt := range tests {
		t.Run(tt.ns+"/"+tt.selector, func(t *testing.T) {
			pods, err := l.SelectPods(tt.ns, sel(t, tt.selector))
			if err != nil {
				t.Fatalf("SelectPods: %v", err)
			}
			var got []string
			for _, p := range pods {
				got = append(got, p.Name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("SelectPods = %v, want %v", got, tt.want)
			}
		})
	}
}

// A requirement built in code may list a value twice; its pods are still
// selected once.
func TestSelectPodsRepeatedValue(t *testing.T) {
	l := podLister(t, []pod{
		{ns: "a", name: "web-1", labels: map[string]string{"app": "web"}},
		{ns: "a", name: "db-1", labels: map[string]string{"app": "db"}},
	})
	r, err := labels.NewRequirement("app", selection.In, []string{"web", "db", "web"})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := l.SelectPods("a", labels.NewSelector().Add(*r))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pods {
		got = append(got, p.Name)
	}
	slices.Sort(got)
	if want := []string{"db-1", "web-1"}; !slices.Equal(got, want) {
		t.Errorf("SelectPods = %v, want %v", got, want)
	}
}

func TestNewInformerPodsNeedsIndexes(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	_, err := NewInformerPods(idx)
	if err == nil || !strings.Contains(err.Error(), PodLabelIndex) {
		t.Errorf("NewInformerPods without the label index = %v", err)
	}
	if _, err := PodLabelIndexFunc("not a pod"); err == nil {
		t.Error("index func accepted a string")
	}
}

// TestSelectPodsRunningSince: only running pods that are not being deleted
// are expected to report, from their start time on.
func TestSelectPodsRunningSince(t *testing.T) {
	started := t0.Add(-time.Minute)
	l := podLister(t, []pod{
		{ns: "a", name: "running", labels: map[string]string{"app": "web"}, started: started},
		{ns: "a", name: "no-start-time", labels: map[string]string{"app": "web"}},
		{ns: "a", name: "pending", labels: map[string]string{"app": "web"}, phase: corev1.PodPending, started: started},
		{ns: "a", name: "deleting", labels: map[string]string{"app": "web"}, started: started, deleting: true},
	})
	pods, err := l.SelectPods("a", sel(t, "app=web"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]time.Time{}
	for _, p := range pods {
		got[p.Name] = p.RunningSince
	}
	want := map[string]time.Time{"running": started, "no-start-time": longRunning, "pending": {}, "deleting": {}}
	if len(got) != len(want) {
		t.Fatalf("SelectPods = %v, want %v", got, want)
	}
	for name, w := range want {
		if !got[name].Equal(w) {
			t.Errorf("%s: RunningSince %v, want %v", name, got[name], w)
		}
	}
}

// TestSlimPods: the cache keeps what selection and the provenance checks
// read, drops the rest, and leaves tombstones alone.
func TestSlimPods(t *testing.T) {
	started, deleted := metav1.NewTime(time.Unix(1000, 0)), metav1.NewTime(time.Unix(2000, 0))
	in := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", DeletionTimestamp: &deleted,
			Labels: map[string]string{"app": "x"}, Annotations: map[string]string{"big": strings.Repeat("x", 1000)}},
		Spec:   corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{Name: "c", Image: "i"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", StartTime: &started},
	}
	slim := SlimPods(intern.NewTable[map[string]string](16))
	out, err := slim(in)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := out.(*CachedPod)
	if !ok {
		t.Fatalf("transform returned %T", out)
	}
	if p.Name != "p" || p.Namespace != "ns" || p.UID != "u" || p.ResourceVersion != "7" || p.Labels["app"] != "x" ||
		p.Phase != corev1.PodRunning || p.NodeName != "n" || !p.StartTime.Equal(&started) || !p.DeletionTimestamp.Equal(&deleted) ||
		p.PodIP != "10.0.0.1" {
		t.Errorf("kept fields lost: %+v", p)
	}
	if p.Annotations != nil {
		t.Errorf("dropped fields kept: %+v", p)
	}
	// The informer keys and indexes what it stores: the key and index
	// functions must read a CachedPod as they read a pod.
	if key, err := cache.MetaNamespaceKeyFunc(p); err != nil || key != "ns/p" {
		t.Errorf("key = %q, %v; want ns/p", key, err)
	}
	if keys, err := PodLabelIndexFunc(p); err != nil || !slices.Equal(keys, []string{"ns/app=x"}) {
		t.Errorf("label index keys = %v, %v", keys, err)
	}
	if _, err := PodLabelIndexFunc(in); err == nil {
		t.Error("the label index read a pod the transform did not slim")
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "ns/p", Obj: in}
	if got, _ := slim(tomb); got != tomb {
		t.Errorf("tombstone changed: %v", got)
	}
}

// BenchmarkPodCache is what the adapter's pod cache holds per pod (live
// heap, B/pod): pods as the API server sends them, through the informer's
// transform, in an indexer with the app's indexes. "pod" is the same
// fields kept in a *corev1.Pod, as the cache held them before CachedPod.
func BenchmarkPodCache(b *testing.B) {
	const n = 20000
	pods := make([]*corev1.Pod, n)
	started := metav1.NewTime(t0)
	for i := range pods {
		app := fmt.Sprintf("app-%03d", i/50)
		pods[i] = &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: fmt.Sprintf("%s-%d", app, i%50), UID: types.UID(fmt.Sprintf("8d9c6a1e-0000-4000-8000-%012d", i)),
				ResourceVersion: strconv.Itoa(1000 + i), Labels: map[string]string{"app": app, "pod-template-hash": "7d9f8c6b5"}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i/8), Containers: []corev1.Container{{Name: "server", Image: "registry.example/llm:1"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), StartTime: &started,
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		}
	}
	slim := SlimPods(intern.NewTable[map[string]string](4096))
	asPod := func(obj any) (any, error) {
		c, err := slim(obj)
		if err != nil {
			return nil, err
		}
		p := c.(*CachedPod)
		return &corev1.Pod{ObjectMeta: p.ObjectMeta, Spec: corev1.PodSpec{NodeName: p.NodeName},
			Status: corev1.PodStatus{Phase: p.Phase, PodIP: p.PodIP, StartTime: p.StartTime}}, nil
	}
	podLabelIndex := func(obj any) ([]string, error) {
		p := obj.(*corev1.Pod)
		keys := make([]string, 0, len(p.Labels))
		for k, v := range p.Labels {
			keys = append(keys, labelIndexKey(p.Namespace, k, v))
		}
		return keys, nil
	}
	for _, tt := range []struct {
		name      string
		transform cache.TransformFunc
		index     cache.IndexFunc
	}{
		{"cachedpod", slim, PodLabelIndexFunc},
		{"pod", asPod, podLabelIndex},
	} {
		b.Run(tt.name, func(b *testing.B) {
			var perPod float64
			for b.Loop() {
				runtime.GC()
				before := heapNow()
				idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
					cache.NamespaceIndex: cache.MetaNamespaceIndexFunc,
					PodLabelIndex:        tt.index,
				})
				for _, p := range pods {
					obj, err := tt.transform(p)
					if err != nil {
						b.Fatal(err)
					}
					if err := idx.Add(obj); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				perPod = float64(int64(heapNow())-int64(before)) / n
				runtime.KeepAlive(idx)
			}
			b.ReportMetric(perPod, "B/pod")
		})
	}
}
