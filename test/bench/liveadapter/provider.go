package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/metrics/pkg/apis/external_metrics"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metrictable"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/pkg/provider"
)

// liveProvider answers every request with a Prometheus query for just the
// pods it selects, the way prometheus-adapter works. Each request builds a
// spillway provider.Provider whose one refresh is that query, then answers
// through it: the same provenance checks, combining, staleness and
// coverage rules and errors as the cache adapter, so the benchmark compares
// only where the PromQL runs. Building a Provider costs ~40 µs
// (BenchmarkPerRequestProvider, 2 shared cores); the query costs tens of
// milliseconds.
//
// Only the exporter's rows are queried live: the pod filter is rendered on
// the exporter's pod labels. Other metrics, unknown ones and malformed
// requests are answered by base, a Provider that never loads a snapshot
// (so a valid request for a non-exporter metric gets its 503).
type liveProvider struct {
	source          provider.SampleSource
	pods            provider.PodLister
	podsSynced      func() bool
	maxStaleness    time.Duration
	minPodDataShare float64
	rows            []metrictable.Row
	base            *provider.Provider
}

var (
	_ cmprovider.CustomMetricsProvider   = (*liveProvider)(nil)
	_ cmprovider.ExternalMetricsProvider = (*liveProvider)(nil)
)

type liveConfig struct {
	Source          provider.SampleSource
	Pods            provider.PodLister
	PodsSynced      func() bool
	MaxStaleness    time.Duration
	MinPodDataShare float64
}

func newLiveProvider(cfg liveConfig) (*liveProvider, error) {
	l := &liveProvider{
		source:          cfg.Source,
		pods:            cfg.Pods,
		podsSynced:      cfg.PodsSynced,
		maxStaleness:    cfg.MaxStaleness,
		minPodDataShare: cfg.MinPodDataShare,
	}
	for _, r := range metrictable.Defaults() {
		if r.Origin == metrictable.Exporter {
			l.rows = append(l.rows, r)
		}
	}
	base, err := l.provider(nil, "", nil)
	if err != nil {
		return nil, err
	}
	l.base = base
	return l, nil
}

// provider builds a Provider serving rows (nil: the whole default table)
// whose queries keep only namespace's pods (none: unfiltered).
func (l *liveProvider) provider(rows []metrictable.Row, namespace string, pods []string) (*provider.Provider, error) {
	src := l.source
	if pods != nil {
		src = podScoped{source: l.source, namespace: namespace, pods: pods}
	}
	return provider.New(provider.Config{
		Source:     src,
		Pods:       l.pods,
		PodsSynced: l.podsSynced,
		// Never ticks: the one refresh is run by the request.
		RefreshInterval: l.maxStaleness / 2,
		MaxStaleness:    l.maxStaleness,
		MinPodDataShare: l.minPodDataShare,
		Metrics:         rows,
	})
}

// podScoped narrows every query to one namespace's pods.
type podScoped struct {
	source    provider.SampleSource
	namespace string
	pods      []string
}

func (s podScoped) Samples(ctx context.Context, q promquery.Query) (promquery.Result, error) {
	q.Namespace, q.Pods = s.namespace, s.pods
	return s.source.Samples(ctx, q)
}

// forRequest returns the Provider that answers one request: base when the
// metric is not served live or no pod name is known (base then gives the
// request's 400 or 404), else a fresh Provider loaded with a query for
// exactly these pods.
func (l *liveProvider) forRequest(ctx context.Context, metric, namespace string, pods []string) (*provider.Provider, error) {
	row, ok := l.row(metric)
	if !ok || namespace == "" || len(pods) == 0 {
		return l.base, nil
	}
	// Defense in depth: the query escapes everything anyway, but nothing
	// that is not a valid Kubernetes name has a reason to reach Prometheus.
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid namespace %q: %v", namespace, errs))
	}
	for _, pod := range pods {
		if errs := validation.IsDNS1123Subdomain(pod); len(errs) > 0 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid pod name %q: %v", pod, errs))
		}
	}
	p, err := l.provider([]metrictable.Row{row}, namespace, pods)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if err := p.Refresh(ctx); err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("querying Prometheus: %v", err))
	}
	return p, nil
}

// row finds a live-served row; like the adapter, ignoring case.
func (l *liveProvider) row(metric string) (metrictable.Row, bool) {
	for _, r := range l.rows {
		if strings.EqualFold(r.Name, metric) {
			return r, true
		}
	}
	return metrictable.Row{}, false
}

// podNames resolves a selector from the informer, as the adapter does;
// nil when it selects nothing or fails (base then answers).
func (l *liveProvider) podNames(namespace string, selector labels.Selector) []string {
	if namespace == "" || selector == nil {
		return nil
	}
	pods, err := l.pods.SelectPods(namespace, selector)
	if err != nil {
		return nil
	}
	names := make([]string, len(pods))
	for i, p := range pods {
		names[i] = p.Name
	}
	slices.Sort(names)
	return names
}

// withoutAggregate drops the reserved aggregate key, leaving the pod
// selector; nil when the selector cannot select.
func withoutAggregate(sel labels.Selector) labels.Selector {
	if sel == nil {
		return nil
	}
	reqs, ok := sel.Requirements()
	if !ok {
		return nil
	}
	rest := make([]labels.Requirement, 0, len(reqs))
	for _, r := range reqs {
		if r.Key() != provider.AggregateKey {
			rest = append(rest, r)
		}
	}
	if len(rest) == 0 {
		return nil // the adapter refuses to select every pod
	}
	return labels.NewSelector().Add(rest...)
}

func (l *liveProvider) GetMetricByName(ctx context.Context, name types.NamespacedName, info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	p, err := l.forRequest(ctx, info.Metric, name.Namespace, []string{name.Name})
	if err != nil {
		return nil, err
	}
	return p.GetMetricByName(ctx, name, info, metricSelector)
}

func (l *liveProvider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValueList, error) {
	if selector == nil {
		selector = labels.Everything()
	}
	p, err := l.forRequest(ctx, info.Metric, namespace, l.podNames(namespace, selector))
	if err != nil {
		return nil, err
	}
	return p.GetMetricBySelector(ctx, namespace, selector, info, metricSelector)
}

func (l *liveProvider) GetExternalMetric(ctx context.Context, namespace string, metricSelector labels.Selector, info cmprovider.ExternalMetricInfo) (*external_metrics.ExternalMetricValueList, error) {
	p, err := l.forRequest(ctx, info.Metric, namespace, l.podNames(namespace, withoutAggregate(metricSelector)))
	if err != nil {
		return nil, err
	}
	return p.GetExternalMetric(ctx, namespace, metricSelector, info)
}

func (l *liveProvider) ListAllMetrics() []cmprovider.CustomMetricInfo {
	return l.base.ListAllMetrics()
}

func (l *liveProvider) ListAllExternalMetrics() []cmprovider.ExternalMetricInfo {
	return l.base.ListAllExternalMetrics()
}
