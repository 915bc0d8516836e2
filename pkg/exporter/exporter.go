// Package exporter renders GPU process samples as Prometheus metrics. A
// background loop (Run) samples the backend every interval and swaps in an
// immutable snapshot; a scrape only reads that snapshot. Scrapes therefore
// never call NVML, cost the same however often Prometheus comes, and cannot
// pile up behind a slow driver call.
//
// The package is split by concern: this file holds the types and the
// prometheus.Collector; collect.go the collection loop and the snapshot;
// series.go the per-process series and their label values; selfmetrics.go
// the exporter's own metrics; handler.go the /metrics handler with its
// text fast path; health.go /healthz, /readyz and the staleness rule.
//
// Staleness contract: a snapshot older than StaleAfter intervals is never
// served as current. Its process series are left out of every scrape (they
// disappear rather than freeze at old values) and /healthz fails; the
// self-metrics keep describing it, last_success_age_seconds included.
package exporter

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-dev/spillway/pkg/gpu"
	"github.com/spillway-dev/spillway/pkg/podmap"
)

// PIDMapper finds the pod identity of a host PID (podmap.Mapper).
type PIDMapper interface {
	Lookup(pid int) (podmap.Identity, error)
	// Sweep forgets PIDs not looked up since the previous Sweep.
	Sweep()
}

// PodResolver names the pod and container of a pod UID and container ID
// (an informer-backed index in production).
type PodResolver interface {
	Resolve(podUID, containerID string) (gpu.PodRef, bool)
}

// Reasons a process is not mapped to a pod, the values of the reason label
// of metricnames.ExporterProcessesUnmapped.
const (
	ReasonHost           = "host"            // outside any pod: host daemons, the MPS server
	ReasonUnknownPod     = "unknown_pod"     // in a pod the informer does not (yet) know
	ReasonProcUnreadable = "proc_unreadable" // /proc/<pid> unreadable: exited, or wrong --proc-root
)

// Memory-only device reasons, the reason label of
// metricnames.ExporterMemoryOnlyDevices.
const (
	MemoryOnlyMIG          = "mig"
	MemoryOnlyNotSupported = "not_supported"
)

// StaleAfter is how many collection intervals a snapshot stays servable.
// Past it, process series disappear (never frozen at an old value) and
// /healthz fails.
const StaleAfter = 3

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
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives collection failures; discarded when nil.
	Logger *slog.Logger
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
	memo      map[uint32]owner
	emitted   map[uint64]bool
	samples   []sample

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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Exporter{
		cfg: cfg, sampler: sampler, mapper: mapper, resolver: resolver, started: cfg.Now(),
		cache:   seriesCache{byKey: map[seriesKey]*cacheEntry{}},
		memo:    map[uint32]owner{},
		emitted: map[uint64]bool{},
		proc:    proc,
		self:    newSelfMetrics(cfg.Backend),
	}, nil
}

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range e.proc.descs {
		ch <- d
	}
	e.self.describe(ch)
}

// Collect implements prometheus.Collector. It only reads the snapshot; a
// stale one yields self-metrics but no process series.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	snap, now := e.snap.Load(), e.cfg.Now()
	if snap != nil && !e.stale(now.Sub(snap.at)) {
		e.proc.collect(ch, snap)
	}
	e.self.collectSnapshot(ch, snap, now)
	e.self.collectCounters(ch)
}
