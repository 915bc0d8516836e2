// Package provider serves the metrics of a metric table (metrictable: the
// exporter's per-process GPU metrics, model servers' queue gauges) to the
// HPA through custom.metrics.k8s.io (Pods) and external.metrics.k8s.io.
//
// A background refresher runs one Prometheus instant query for the
// exporter's series and one for the pods' own, and swaps in a new in-memory
// snapshot; requests read only that snapshot. Values older than MaxStaleness are never served, and a
// request for which no selected pod has a fresh value, or fewer than
// MinPodDataShare of the pods that should have one, is an error: the HPA
// then holds its scale instead of acting on a false zero or on the part of
// the load that still reports.
//
// A series only counts if it comes from where its row says: an exporter
// series from the exporter on the pod's node (the query is scoped to the
// exporter's scrape identity, and its Hostname must be the node the pod is
// bound to in the pod informer); a pod's own series from that pod (the host
// of its instance label must be the pod's IP). Other series are dropped
// and counted, never served.
package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metrictable"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// SampleSource runs one structured Prometheus query (promquery.Client, or
// promquery.Fake in tests).
type SampleSource interface {
	Samples(ctx context.Context, q promquery.Query) (promquery.Result, error)
}

// PodLister reads pods from an informer's memory; it must not call the API
// server per request or per series.
type PodLister interface {
	// SelectPods resolves a label selector to the pods of a namespace.
	SelectPods(namespace string, selector labels.Selector) ([]SelectedPod, error)
	// PodAddress returns the node a pod is bound to ("" while
	// unscheduled), its IP ("" while it has none) and whether the pod is
	// known at all: what the provenance checks compare series with.
	PodAddress(namespace, name string) (node, ip string, known bool)
}

// Config configures a Provider.
type Config struct {
	Source SampleSource
	Pods   PodLister
	// PodsSynced reports whether Pods has loaded every pod (the informer's
	// HasSynced). Until it does no snapshot is built: every series would be
	// rejected as of an unknown pod. Nil means always synced.
	PodsSynced func() bool
	// Registry receives the self-metrics; nil keeps them unexported.
	Registry prometheus.Registerer
	// RefreshInterval is how often the snapshot is rebuilt.
	RefreshInterval time.Duration
	// MaxStaleness is the oldest a served value may be.
	MaxStaleness time.Duration
	// RefreshNice, from 1 to MaxRefreshNice, is the nice value of the OS
	// thread Run refreshes on (Linux; elsewhere ignored): while a refresh
	// decodes, the kernel then gives the threads serving requests the CPU
	// first, so a refresh on a busy node does not lengthen their latency.
	// 0 refreshes on a thread like any other.
	RefreshNice int
	// MinPodDataShare is the smallest share, in [0, 1], of a request's
	// selected pods that must have a fresh value for the request to be
	// answered. Only pods that have run longer than MaxStaleness are
	// expected to have one. 0 answers whenever any selected pod has data.
	MinPodDataShare float64
	// Metrics is the metric table (validated by New); nil serves
	// metrictable.Defaults().
	Metrics []metrictable.Row
	// Clock reads the time that decides staleness and ages; nil means the
	// real clock.
	Clock clock.PassiveClock
}

type metricSpec struct {
	name string
	row  metrictable.Row
}

// seriesKey names a row's source: who publishes the series, and its name.
type seriesKey struct {
	origin metrictable.Origin
	series string
}

var podsResource = schema.GroupResource{Resource: "pods"}

// Provider implements provider.CustomMetricsProvider and
// provider.ExternalMetricsProvider.
type Provider struct {
	source          SampleSource
	pods            PodLister
	podsSynced      func() bool
	specs           []metricSpec
	index           map[string]int
	bySeries        map[seriesKey]int
	refreshQueries  []promquery.Query
	refreshInterval time.Duration
	refreshNice     int
	maxStaleness    time.Duration
	minShare        float64
	clock           clock.PassiveClock
	startedAt       time.Time

	snap    atomic.Pointer[snapshot]
	lastErr atomic.Pointer[refreshFailure]
	metrics *selfMetrics
}

type refreshFailure struct {
	err error
	at  time.Time
}

var (
	_ provider.CustomMetricsProvider   = (*Provider)(nil)
	_ provider.ExternalMetricsProvider = (*Provider)(nil)
)

// New validates cfg and builds a Provider. Call Run to start refreshing.
func New(cfg Config) (*Provider, error) {
	var errs []error
	if cfg.Source == nil {
		errs = append(errs, errors.New("provider needs a Prometheus sample source"))
	}
	if cfg.Pods == nil {
		errs = append(errs, errors.New("provider needs a pod lister"))
	}
	if cfg.RefreshInterval <= 0 {
		errs = append(errs, fmt.Errorf("refresh interval must be positive, got %s", cfg.RefreshInterval))
	}
	if cfg.MaxStaleness <= cfg.RefreshInterval {
		errs = append(errs, fmt.Errorf("max staleness (%s) must be longer than the refresh interval (%s), or every value would expire before the next refresh", cfg.MaxStaleness, cfg.RefreshInterval))
	}
	if cfg.RefreshNice < 0 || cfg.RefreshNice > MaxRefreshNice {
		errs = append(errs, fmt.Errorf("refresh nice value must be within 0 (off) and %d, got %d", MaxRefreshNice, cfg.RefreshNice))
	}
	if !(cfg.MinPodDataShare >= 0 && cfg.MinPodDataShare <= 1) {
		errs = append(errs, fmt.Errorf("minimum share of pods with data must be within [0, 1], got %v", cfg.MinPodDataShare))
	}
	p := &Provider{
		source:          cfg.Source,
		pods:            cfg.Pods,
		podsSynced:      cfg.PodsSynced,
		index:           make(map[string]int),
		refreshInterval: cfg.RefreshInterval,
		refreshNice:     cfg.RefreshNice,
		maxStaleness:    cfg.MaxStaleness,
		minShare:        cfg.MinPodDataShare,
		clock:           cfg.Clock,
	}
	if p.clock == nil {
		p.clock = clock.RealClock{}
	}
	if p.podsSynced == nil {
		p.podsSynced = func() bool { return true }
	}
	rows := cfg.Metrics
	if rows == nil {
		rows = metrictable.Defaults()
	}
	if err := metrictable.Validate(rows); err != nil {
		errs = append(errs, err)
	}
	p.bySeries = make(map[seriesKey]int, len(rows))
	for _, r := range rows {
		p.index[r.Name] = len(p.specs)
		p.bySeries[seriesKey{r.Origin, r.Series}] = len(p.specs)
		p.specs = append(p.specs, metricSpec{name: r.Name, row: r})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p.refreshQueries = p.queries()
	p.startedAt = p.clock.Now()
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newSelfMetrics(reg, p.snapshotAge)
	if err != nil {
		return nil, err
	}
	p.metrics = m
	return p, nil
}

// metricIndex finds a served metric. The match ignores case because some
// clients lower-case resource-like path segments.
func (p *Provider) metricIndex(name string) (int, bool) {
	if i, ok := p.index[name]; ok {
		return i, true
	}
	for i, s := range p.specs {
		if strings.EqualFold(s.name, name) {
			return i, true
		}
	}
	return 0, false
}

// ListAllMetrics lists the fixed set of pod metrics; it never relists series.
func (p *Provider) ListAllMetrics() []provider.CustomMetricInfo {
	out := make([]provider.CustomMetricInfo, len(p.specs))
	for i, s := range p.specs {
		out[i] = provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: s.name}
	}
	return out
}

// ListAllExternalMetrics lists the same fixed set for the external API.
func (p *Provider) ListAllExternalMetrics() []provider.ExternalMetricInfo {
	out := make([]provider.ExternalMetricInfo, len(p.specs))
	for i, s := range p.specs {
		out[i] = provider.ExternalMetricInfo{Metric: s.name}
	}
	return out
}
