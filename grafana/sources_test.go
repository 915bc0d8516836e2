package grafana

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	mn "github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/pkg/provider"
)

// The adapter registers its self-metrics under its own names; this checks
// that the families it really registers are the ones the dashboards and
// alerts read (from metricnames), so a rename on either side fails here.
func TestAdapterSelfMetricsAreTheOnesListed(t *testing.T) {
	const prefix = "spillway_metrics_adapter_"
	reg := prometheus.NewRegistry()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		cache.NamespaceIndex:   cache.MetaNamespaceIndexFunc,
		provider.PodLabelIndex: provider.PodLabelIndexFunc,
	})
	pods, err := provider.NewInformerPods(idx)
	if err != nil {
		t.Fatal(err)
	}
	p, err := provider.New(provider.Config{
		Source: &promquery.Fake{}, Pods: pods, Registry: reg,
		RefreshInterval: time.Second, MaxStaleness: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// One refresh and one request, so the labelled families have series.
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetExternalMetric(ctx, "team", labels.SelectorFromSet(labels.Set{"app": "x"}),
		cmprovider.ExternalMetricInfo{Metric: mn.ProcessSMUtil}); err == nil {
		t.Fatal("a request for pods that do not exist succeeded")
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var registered []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), prefix) {
			registered = append(registered, f.GetName())
		}
	}
	var listed []string
	for _, m := range SpillwayMetrics() {
		if strings.HasPrefix(m.Name, prefix) {
			listed = append(listed, m.Name)
		}
	}
	slices.Sort(registered)
	slices.Sort(listed)
	if !slices.Equal(registered, listed) {
		t.Errorf("the adapter registers\n  %s\nbut metricnames/SpillwayMetrics list\n  %s", strings.Join(registered, "\n  "), strings.Join(listed, "\n  "))
	}
}
