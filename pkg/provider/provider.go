// Package provider serves spillway's per-process GPU metrics to the HPA
// through custom.metrics.k8s.io (Pods) and external.metrics.k8s.io.
//
// A background refresher runs one Prometheus instant query for every
// spillway series and swaps in a new in-memory snapshot; requests read only
// that snapshot. Values older than MaxStaleness are never served, and a
// request for which no selected pod has a fresh value, or fewer than
// MinPodDataShare of the pods that should have one, is an error: the HPA
// then holds its scale instead of acting on a false zero or on the part of
// the load that still reports.
//
// A series only counts if it comes from the exporter on the pod's node: the
// query is scoped to the exporter's scrape identity (promquery), and each
// series' Hostname must be the node the pod is bound to in the pod
// informer. Other series are dropped and counted, never served.
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
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
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
	// PodNode returns the node a pod is bound to ("" while unscheduled)
	// and whether the pod is known at all.
	PodNode(namespace, name string) (node string, known bool)
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
	// RefreshInterval is how often the snapshot is rebuilt (cache mode).
	RefreshInterval time.Duration
	// MaxStaleness is the oldest a served value may be.
	MaxStaleness time.Duration
	// MinPodDataShare is the smallest share, in [0, 1], of a request's
	// selected pods that must have a fresh value for the request to be
	// answered. Only pods that have run longer than MaxStaleness are
	// expected to have one. 0 answers whenever any selected pod has data.
	MinPodDataShare float64
	// LiveQuery queries Prometheus on every request instead of serving the
	// snapshot. It exists only to compare against in benchmarks.
	LiveQuery bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// aggregation says how a pod's per-GPU values become one pod value.
type aggregation int

const (
	// meanOfCappedGPUs: per GPU, the sum over processes capped at 100; then
	// the mean over GPUs. For utilization percentages.
	meanOfCappedGPUs aggregation = iota
	// sumOfGPUs: the sum over processes and GPUs. For memory in use.
	sumOfGPUs
)

type metricSpec struct {
	name string
	agg  aggregation
}

// ruleFor is the aggregation rule of each served metric; a metric added to
// metricnames.ProcessMetrics without a rule makes New fail loudly.
func ruleFor(name string) (aggregation, bool) {
	switch name {
	case metricnames.ProcessSMUtil, metricnames.ProcessEncUtil, metricnames.ProcessDecUtil, metricnames.ProcessMemCopyUtil:
		return meanOfCappedGPUs, true
	case metricnames.ProcessMemUsed:
		return sumOfGPUs, true
	}
	return 0, false
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
	refreshInterval time.Duration
	maxStaleness    time.Duration
	minShare        float64
	live            bool
	now             func() time.Time
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
	if !(cfg.MinPodDataShare >= 0 && cfg.MinPodDataShare <= 1) {
		errs = append(errs, fmt.Errorf("minimum share of pods with data must be within [0, 1], got %v", cfg.MinPodDataShare))
	}
	p := &Provider{
		source:          cfg.Source,
		pods:            cfg.Pods,
		podsSynced:      cfg.PodsSynced,
		index:           make(map[string]int, len(metricnames.ProcessMetrics)),
		refreshInterval: cfg.RefreshInterval,
		maxStaleness:    cfg.MaxStaleness,
		minShare:        cfg.MinPodDataShare,
		live:            cfg.LiveQuery,
		now:             cfg.Now,
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.podsSynced == nil {
		p.podsSynced = func() bool { return true }
	}
	for _, name := range metricnames.ProcessMetrics {
		agg, ok := ruleFor(name)
		if !ok {
			errs = append(errs, fmt.Errorf("no aggregation rule for metric %q", name))
			continue
		}
		p.index[name] = len(p.specs)
		p.specs = append(p.specs, metricSpec{name: name, agg: agg})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p.startedAt = p.now()
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
