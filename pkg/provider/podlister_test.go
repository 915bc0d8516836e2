package provider

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/tools/cache"
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
