package grafana

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	mn "github.com/spillway-dev/spillway/pkg/metricnames"
)

// MetricType is what a metric is, as far as query names go: a histogram is
// queried through its _bucket, _sum and _count series, never its bare name.
type MetricType int

// Metric types.
const (
	Counter MetricType = iota
	Gauge
	Histogram
)

// Metric is one exported metric family.
type Metric struct {
	Name string
	Type MetricType
}

// SpillwayMetrics are the families spillway's three binaries export that
// dashboards and alerts may read.
func SpillwayMetrics() []Metric {
	ms := []Metric{
		// spillway-gpu-exporter: per-process GPU series and self-metrics.
		{mn.ExporterCollectionDuration, Histogram},
		{mn.ExporterCollections, Counter},
		{mn.ExporterLastSuccessAge, Gauge},
		{mn.ExporterDevices, Gauge},
		{mn.ExporterMemoryOnlyDevices, Gauge},
		{mn.ExporterProcessesSeen, Gauge},
		{mn.ExporterProcessesMapped, Gauge},
		{mn.ExporterProcessesUnmapped, Gauge},
		{mn.ExporterNVMLErrors, Counter},
		// spillway-controller.
		{mn.InferenceScalerReconciles, Counter},
		{mn.InferenceScalerScheduleActivations, Counter},
		{mn.InferenceScalerFallbackActivations, Counter},
		{mn.PlacementPods, Counter},
		{mn.PlacementDenied, Counter},
		{mn.PlacementWebhookDuration, Histogram},
		{mn.PlacementWebhookErrors, Counter},
		{mn.PlacementReplacements, Counter},
		{mn.PlacementUnplacedPods, Gauge},
		{mn.DeletionCostPatches, Counter},
		{mn.PlacementAdoptedPods, Counter},
		{mn.ResourcePolicyUnitPods, Gauge},
		{mn.InferenceScalerHPADesiredReplicas, Gauge},
		{mn.InferenceScalerHPACurrentReplicas, Gauge},
		{mn.InferenceScalerHPAMinReplicas, Gauge},
		{mn.InferenceScalerHPAMaxReplicas, Gauge},
		{mn.InferenceScalerHPAMetricValue, Gauge},
		{mn.InferenceScalerHPAMetricTarget, Gauge},
		// spillway-metrics-adapter self-metrics.
		{mn.AdapterRefreshDuration, Histogram},
		{mn.AdapterRefreshErrors, Counter},
		{mn.AdapterPartialDataRefusals, Counter},
		{mn.AdapterSnapshotSeries, Gauge},
		{mn.AdapterSnapshotPods, Gauge},
		{mn.AdapterSnapshotSkippedSeries, Gauge},
		{mn.AdapterSnapshotAge, Gauge},
		{mn.AdapterRequests, Counter},
		{mn.AdapterRequestDuration, Histogram},
		{mn.AdapterSeriesRejected, Counter},
	}
	for _, name := range mn.ProcessMetrics {
		ms = append(ms, Metric{name, Gauge})
	}
	return ms
}

// ThirdPartyMetrics are the families from outside spillway that dashboards
// and alerts may read: Prometheus's own per-target series and vLLM's
// gauges (scraped from the model servers' pods).
var ThirdPartyMetrics = []Metric{
	{"up", Gauge},
	{mn.VLLMRequestsWaiting, Gauge},
	{mn.VLLMRequestsRunning, Gauge},
	{mn.VLLMKVCacheUsage, Gauge},
}

// KubeStateMetrics are the kube-state-metrics families the chart's alert
// rules may read. Dashboards may not: they must work on a cluster with only
// Prometheus and spillway, whose controller exports the fleet state they
// show (pkg/controller/fleetmetrics).
var KubeStateMetrics = []Metric{
	{"kube_horizontalpodautoscaler_status_desired_replicas", Gauge},
	{"kube_horizontalpodautoscaler_status_current_replicas", Gauge},
	{"kube_horizontalpodautoscaler_spec_max_replicas", Gauge},
	{"kube_horizontalpodautoscaler_spec_min_replicas", Gauge},
	{"kube_horizontalpodautoscaler_spec_target_metric", Gauge},
	{"kube_horizontalpodautoscaler_status_target_metric", Gauge},
	{"kube_horizontalpodautoscaler_status_condition", Gauge},
	{"kube_pod_labels", Gauge},
	{"kube_pod_status_phase", Gauge},
	{"kube_pod_info", Gauge},
	{"kube_daemonset_status_desired_number_scheduled", Gauge},
	{"kube_daemonset_status_number_ready", Gauge},
}

// SeriesNames expands families into the series names a query may select:
// histograms give _bucket, _sum and _count.
func SeriesNames(ms ...[]Metric) map[string]bool {
	out := map[string]bool{}
	for _, list := range ms {
		for _, m := range list {
			if m.Type == Histogram {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					out[m.Name+suffix] = true
				}
				continue
			}
			out[m.Name] = true
		}
	}
	return out
}

// grafanaMacros are the interval variables Grafana substitutes before the
// query reaches Prometheus; each stands in for a duration.
var grafanaMacros = regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`)

// grafanaVar is any other $var or ${var}: dashboard variables, which belong
// inside label-matcher strings, where any text parses.
var grafanaVar = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?`)

// labelValues is Grafana's label_values([selector,] label) variable query.
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// QueryMetrics parses a panel or alert query as PromQL, after Grafana
// variable substitution, and returns the metric names it selects, sorted
// and deduplicated. Grafana's label_values(selector, label) is accepted and
// its selector checked. A selector without a metric name is an error: it
// could read anything.
func QueryMetrics(query string) ([]string, error) {
	expr := query
	if m := labelValues.FindStringSubmatch(query); m != nil {
		expr = m[1]
	}
	expr = grafanaMacros.ReplaceAllString(expr, "5m")
	expr = grafanaVar.ReplaceAllString(expr, "x")
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", query, err)
	}
	var names []string
	var errs []error
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, lm := range vs.LabelMatchers {
				if lm.Name == model.MetricNameLabel && lm.Type == labels.MatchEqual {
					name = lm.Value
				}
			}
		}
		if name == "" {
			errs = append(errs, fmt.Errorf("query %q: selector %s has no metric name", query, vs))
			return nil
		}
		names = append(names, name)
		return nil
	})
	if len(names) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("query %q selects no metric", query))
	}
	slices.Sort(names)
	return slices.Compact(names), errors.Join(errs...)
}

// CheckQuery reports an error when query does not parse or selects a
// series not in known.
func CheckQuery(query string, known map[string]bool) error {
	names, err := QueryMetrics(query)
	if err != nil {
		return err
	}
	var unknown []string
	for _, n := range names {
		if !known[n] {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("query %q reads %s, which is not among the metrics this query may read", query, strings.Join(unknown, ", "))
	}
	return nil
}
