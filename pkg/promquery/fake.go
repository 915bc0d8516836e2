package promquery

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Fake stands in for Client in unit tests. It holds a raw Prometheus vector,
// applies a Query's matchers (and Selector's, when set) to it the way
// Prometheus would, and runs the same Decode, so validation is exercised
// exactly as in production.
type Fake struct {
	// Selector plays the Client's SeriesSelector, PodSelector its
	// PodSeriesSelector; nil selects every series. Set them before the
	// first query.
	Selector    SeriesSelector
	PodSelector SeriesSelector

	mu      sync.Mutex
	vector  model.Vector
	err     error
	queries []Query
}

// Set replaces what the next queries return: err, when non-nil, wins.
func (f *Fake) Set(v model.Vector, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vector, f.err = v, err
}

// Queries returns every query received so far.
func (f *Fake) Queries() []Query {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queries)
}

// Samples implements the same method as Client.
func (f *Fake) Samples(_ context.Context, q Query) (Result, error) {
	f.mu.Lock()
	f.queries = append(f.queries, q)
	vec, err := f.vector, f.err
	f.mu.Unlock()
	if err := q.Validate(); err != nil {
		return Result{}, err
	}
	if err != nil {
		return Result{}, err
	}
	identity := f.Selector
	if q.Scope == ScopePods {
		identity = f.PodSelector
	}
	selected := make(model.Vector, 0, len(vec))
	for _, s := range vec {
		if s == nil || (matches(s.Metric, q) && identity.Matches(s.Metric)) {
			selected = append(selected, s)
		}
	}
	return Decode(selected, q)
}

func matches(m model.Metric, q Query) bool {
	if !slices.Contains(q.Metrics, string(m[model.MetricNameLabel])) {
		return false
	}
	if q.Namespace != "" && string(m[filterNamespaceLabel]) != q.Namespace {
		return false
	}
	if q.Pods != nil && !slices.Contains(q.Pods, string(m[filterPodLabel])) {
		return false
	}
	return true
}

// Series builds one per-process sample labelled the way the spillway
// exporter labels it (plain and ACK spellings both set) on node "node-1",
// as scraped in job ExporterJob.
func Series(metric, namespace, pod, gpuUUID, pid string, value float64, ts time.Time) *model.Sample {
	return &model.Sample{
		Metric: model.Metric{
			model.MetricNameLabel:         model.LabelValue(metric),
			metricnames.LabelNamespace:    model.LabelValue(namespace),
			metricnames.LabelPod:          model.LabelValue(pod),
			metricnames.LabelACKNamespace: model.LabelValue(namespace),
			metricnames.LabelACKPod:       model.LabelValue(pod),
			metricnames.LabelUUID:         model.LabelValue(gpuUUID),
			metricnames.LabelPID:          model.LabelValue(pid),
			metricnames.LabelContainer:    "main",
			metricnames.LabelACKContainer: "main",
			metricnames.LabelHostname:     "node-1",
			metricnames.LabelModelName:    "NVIDIA H100 80GB HBM3",
			metricnames.LabelGPU:          "0",
			metricnames.LabelJob:          metricnames.ExporterJob,
		},
		Value:     model.SampleValue(value),
		Timestamp: model.TimeFromUnixNano(ts.UnixNano()),
	}
}
