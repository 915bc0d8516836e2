package provider

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
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
			got, err := l.PodNames(tt.ns, sel(t, tt.selector))
			if err != nil {
				t.Fatalf("PodNames: %v", err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("PodNames = %v, want %v", got, tt.want)
			}
		})
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
