// Package exporter renders GPU process samples as Prometheus metrics. A
// background loop (Run) samples the backend every interval and swaps in an
// immutable snapshot; a scrape only reads that snapshot. Scrapes therefore
// never call NVML, cost the same however often Prometheus comes, and cannot
// pile up behind a slow driver call.
//
// The package is split by concern: this file holds the configuration and
// New; collect.go the collection loop, the snapshot and the PID-to-pod
// interfaces it consumes; series.go the per-process series and their label
// values (set by label name); selfmetrics.go the exporter's own metrics and
// their reason values; collector.go the prometheus.Collector; handler.go
// the /metrics handler with its text fast path; health.go /healthz,
// /readyz and the staleness rule.
//
// Staleness contract: a snapshot older than StaleAfter intervals is never
// served as current. Its process series are left out of every scrape (they
// disappear rather than freeze at old values) and /healthz fails; the
// self-metrics keep describing it, last_success_age_seconds included.
package exporter

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/spillway-dev/spillway/pkg/gpu"
)

// Config configures an Exporter.
type Config struct {
	// Hostname is the Hostname label of devices that carry no Host.
	Hostname string
	// Backend names the sampler in self-metrics ("nvml", "sim").
	Backend string
	// Interval is the collection period; it also bounds each collection.
	Interval time.Duration
	// ExportHostProcesses exports processes outside any pod, with empty
	// namespace, pod and container labels. Off in production (the HPA only
	// wants pods); the real-GPU check turns it on.
	ExportHostProcesses bool
	// Clock reads the time that decides staleness and ages; the real
	// clock when nil.
	Clock clock.PassiveClock
}

// Exporter is a prometheus.Collector over the last good snapshot. Its
// Handler serves the same exposition faster.
type Exporter struct {
	cfg      Config
	sampler  gpu.Sampler
	mapper   PIDMapper
	resolver PodResolver
	started  time.Time

	snap atomic.Pointer[snapshot]

	// collectMu serializes collections: they share the series cache and
	// the scratch space below.
	collectMu sync.Mutex
	cache     seriesCache
	// log is the collection's logger, from CollectOnce's context.
	log     klog.Logger
	memo    map[uint32]owner
	emitted map[uint64]bool
	samples []sample

	proc processFamilies
	self selfMetrics
}

// New returns an exporter. mapper and resolver may be nil when the sampler
// names every process's pod itself (the simulator); processes without a pod
// are then counted as unreadable.
func New(cfg Config, sampler gpu.Sampler, mapper PIDMapper, resolver PodResolver) (*Exporter, error) {
	var errs []error
	if sampler == nil {
		errs = append(errs, errors.New("exporter: no sampler"))
	}
	if cfg.Interval <= 0 {
		errs = append(errs, fmt.Errorf("exporter: interval %v must be > 0", cfg.Interval))
	}
	if cfg.Backend == "" {
		errs = append(errs, errors.New("exporter: backend name is empty"))
	}
	if (mapper == nil) != (resolver == nil) {
		errs = append(errs, errors.New("exporter: a PID mapper needs a pod resolver and vice versa"))
	}
	proc, err := newProcessFamilies()
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Exporter{
		cfg: cfg, sampler: sampler, mapper: mapper, resolver: resolver, started: cfg.Clock.Now(),
		cache:   seriesCache{byKey: map[seriesKey]*cacheEntry{}},
		memo:    map[uint32]owner{},
		emitted: map[uint64]bool{},
		proc:    proc,
		self:    newSelfMetrics(cfg.Backend),
	}, nil
}
