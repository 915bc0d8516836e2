// Package exporter renders GPU process samples as Prometheus metrics. A
// background loop (Run) samples the backend every interval and swaps in an
// immutable snapshot of ready-made metrics; a scrape (Collect) only copies
// that snapshot out. Scrapes therefore never call NVML, cost the same however
// often Prometheus comes, and cannot pile up behind a slow driver call.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spillway-dev/spillway/pkg/gpu"
	"github.com/spillway-dev/spillway/pkg/metricnames"
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

// Exporter is a prometheus.Collector over the last good snapshot.
type Exporter struct {
	cfg      Config
	sampler  gpu.Sampler
	mapper   PIDMapper
	resolver PodResolver
	started  time.Time

	snap atomic.Pointer[snapshot]

	duration    *prometheus.HistogramVec
	collections *prometheus.CounterVec
	nvmlErrors  *prometheus.CounterVec

	processDescs [numProcessMetrics]*prometheus.Desc
	// labelOrder lists indexes of metricnames.ProcessLabels sorted by
	// label name, the order exposition requires.
	labelOrder   []int
	ageDesc      *prometheus.Desc
	devicesDesc  *prometheus.Desc
	memOnlyDesc  *prometheus.Desc
	seenDesc     *prometheus.Desc
	mappedDesc   *prometheus.Desc
	unmappedDesc *prometheus.Desc
}

// snapshot is one successful collection, rendered. It is never modified
// after it is stored, so scrapes read it without locks.
type snapshot struct {
	at       time.Time
	metrics  []prometheus.Metric
	devices  int
	memOnly  map[string]int
	seen     int
	mapped   int
	unmapped map[string]int
}

const (
	smUtil = iota
	memUsed
	encUtil
	decUtil
	memCopyUtil
	numProcessMetrics
)

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
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Exporter{cfg: cfg, sampler: sampler, mapper: mapper, resolver: resolver, started: cfg.Now()}

	helps := [numProcessMetrics]struct{ name, help string }{
		smUtil:      {metricnames.ProcessSMUtil, "SM utilization of the process on the GPU over the last collection interval, in percent (0-100)."},
		memUsed:     {metricnames.ProcessMemUsed, "GPU memory used by the process, in MiB."},
		encUtil:     {metricnames.ProcessEncUtil, "Video encoder utilization of the process, in percent (0-100)."},
		decUtil:     {metricnames.ProcessDecUtil, "Video decoder utilization of the process, in percent (0-100)."},
		memCopyUtil: {metricnames.ProcessMemCopyUtil, "Memory copy (frame buffer) utilization of the process, in percent (0-100)."},
	}
	for i, h := range helps {
		e.processDescs[i] = prometheus.NewDesc(h.name, h.help, metricnames.ProcessLabels, nil)
	}
	e.labelOrder = make([]int, len(metricnames.ProcessLabels))
	for i := range e.labelOrder {
		e.labelOrder[i] = i
	}
	slices.SortFunc(e.labelOrder, func(a, b int) int {
		return strings.Compare(metricnames.ProcessLabels[a], metricnames.ProcessLabels[b])
	})
	backend := prometheus.Labels{metricnames.LabelExporterBackend: cfg.Backend}
	e.ageDesc = prometheus.NewDesc(metricnames.ExporterLastSuccessAge, "Seconds since the last successful collection; absent before the first.", nil, backend)
	e.devicesDesc = prometheus.NewDesc(metricnames.ExporterDevices, "GPUs in the last successful collection.", nil, backend)
	e.memOnlyDesc = prometheus.NewDesc(metricnames.ExporterMemoryOnlyDevices, "GPUs whose processes report memory but no utilization, by reason.", []string{metricnames.LabelExporterReason}, backend)
	e.seenDesc = prometheus.NewDesc(metricnames.ExporterProcessesSeen, "Process entries (process x GPU) in the last successful collection.", nil, backend)
	e.mappedDesc = prometheus.NewDesc(metricnames.ExporterProcessesMapped, "Process entries of the last successful collection mapped to a pod.", nil, backend)
	e.unmappedDesc = prometheus.NewDesc(metricnames.ExporterProcessesUnmapped, "Process entries of the last successful collection not mapped to a pod, by reason.", []string{metricnames.LabelExporterReason}, backend)
	e.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        metricnames.ExporterCollectionDuration,
		Help:        "Time one background collection took (sample, map PIDs, render).",
		Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		ConstLabels: backend,
	}, []string{metricnames.LabelExporterResult})
	e.collections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        metricnames.ExporterCollections,
		Help:        "Background collections, by result (success, failure).",
		ConstLabels: backend,
	}, []string{metricnames.LabelExporterResult})
	e.nvmlErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricnames.ExporterNVMLErrors,
		Help: "Failed NVML calls, by operation and return code. Expected outcomes (no new samples, MIG unsupported) are not counted.",
	}, []string{metricnames.LabelExporterOperation, metricnames.LabelExporterReturnCode})
	for _, r := range []string{"success", "failure"} {
		e.collections.WithLabelValues(r)
	}
	return e, nil
}

// Run collects now and then every interval until ctx ends. Failures are
// logged and counted; the previous snapshot keeps being served until it is
// StaleAfter intervals old.
func (e *Exporter) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		if err := e.CollectOnce(ctx); err != nil && ctx.Err() == nil {
			e.cfg.Logger.Error("collection failed", "backend", e.cfg.Backend, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CollectOnce samples the backend and, on success, replaces the snapshot.
func (e *Exporter) CollectOnce(ctx context.Context) error {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Interval)
	defer cancel()
	s, err := e.sampler.Sample(ctx)
	for _, se := range s.Errors {
		e.nvmlErrors.WithLabelValues(se.Op, se.Code).Inc()
	}
	result := "success"
	if err == nil {
		e.snap.Store(e.render(s, e.cfg.Now()))
	} else {
		result = "failure"
	}
	e.duration.WithLabelValues(result).Observe(time.Since(begin).Seconds())
	e.collections.WithLabelValues(result).Inc()
	return err
}

// owner is the result of mapping one PID, memoized per collection: a
// process on several GPUs is looked up once.
type owner struct {
	ref    gpu.PodRef
	reason string // "" when mapped
}

func (e *Exporter) ownerOf(p gpu.Process, memo map[uint32]owner) owner {
	if p.Pod != nil {
		return owner{ref: *p.Pod}
	}
	if o, ok := memo[p.PID]; ok {
		return o
	}
	o := e.lookup(p.PID)
	memo[p.PID] = o
	return o
}

func (e *Exporter) lookup(pid uint32) owner {
	if e.mapper == nil {
		return owner{reason: ReasonProcUnreadable}
	}
	id, err := e.mapper.Lookup(int(pid))
	if err != nil {
		e.cfg.Logger.Debug("cannot map PID", "pid", pid, "err", err)
		return owner{reason: ReasonProcUnreadable}
	}
	if !id.InPod() {
		return owner{reason: ReasonHost}
	}
	ref, ok := e.resolver.Resolve(id.PodUID, id.ContainerID)
	if !ok {
		return owner{reason: ReasonUnknownPod}
	}
	return owner{ref: ref}
}

func (e *Exporter) render(s gpu.Sample, at time.Time) *snapshot {
	snap := &snapshot{
		at:       at,
		metrics:  make([]prometheus.Metric, 0, len(s.Processes)*numProcessMetrics),
		devices:  len(s.Devices),
		memOnly:  map[string]int{MemoryOnlyMIG: 0, MemoryOnlyNotSupported: 0},
		unmapped: map[string]int{ReasonHost: 0, ReasonUnknownPod: 0, ReasonProcUnreadable: 0},
	}
	for _, d := range s.Devices {
		switch {
		case d.MIG:
			snap.memOnly[MemoryOnlyMIG]++
		case d.UtilUnsupported:
			snap.memOnly[MemoryOnlyNotSupported]++
		}
	}
	memo := make(map[uint32]owner, len(s.Processes))
	// One series per (device, PID): a backend listing a PID twice on one
	// GPU would otherwise make the whole scrape fail as a duplicate.
	emitted := make(map[uint64]bool, len(s.Processes))
	labels := make([]string, len(metricnames.ProcessLabels))
	for _, p := range s.Processes {
		if p.Device < 0 || p.Device >= len(s.Devices) {
			continue
		}
		key := uint64(p.Device)<<32 | uint64(p.PID)
		if emitted[key] {
			continue
		}
		emitted[key] = true
		snap.seen++
		o := e.ownerOf(p, memo)
		if o.reason != "" {
			snap.unmapped[o.reason]++
			if o.reason != ReasonHost || !e.cfg.ExportHostProcesses {
				continue
			}
		} else {
			snap.mapped++
		}
		d := s.Devices[p.Device]
		host := d.Host
		if host == "" {
			host = e.cfg.Hostname
		}
		// Order: metricnames.ProcessLabels.
		labels[0], labels[1], labels[2], labels[3] = host, strconv.Itoa(d.Index), d.UUID, d.Model
		labels[4], labels[5], labels[6] = o.ref.Namespace, o.ref.Name, o.ref.Container
		labels[7] = strconv.FormatUint(uint64(p.PID), 10)
		labels[8], labels[9], labels[10] = o.ref.Namespace, o.ref.Name, o.ref.Container
		pairs, err := e.labelPairs(labels)
		if err != nil {
			// Only invalid UTF-8 (a corrupt model name) gets here; dropping
			// one process beats failing the whole scrape.
			e.cfg.Logger.Warn("dropping process series", "pid", p.PID, "err", err)
			continue
		}
		if p.UtilValid {
			snap.add(e.processDescs[smUtil], p.SMUtil, pairs)
			snap.add(e.processDescs[encUtil], p.EncUtil, pairs)
			snap.add(e.processDescs[decUtil], p.DecUtil, pairs)
			snap.add(e.processDescs[memCopyUtil], p.MemCopyUtil, pairs)
		}
		if p.MemValid {
			snap.add(e.processDescs[memUsed], p.MemUsedMiB, pairs)
		}
	}
	if e.mapper != nil {
		e.mapper.Sweep()
	}
	return snap
}

func (s *snapshot) add(d *prometheus.Desc, v float64, pairs []*dto.LabelPair) {
	s.metrics = append(s.metrics, &processMetric{desc: d, value: v, labels: pairs})
}

// labelPairs builds the label pairs of one process once, in the name order
// the exposition needs, to be shared by its five series. Building them per
// series (prometheus.NewConstMetric) was a third of a collection's CPU.
func (e *Exporter) labelPairs(values []string) ([]*dto.LabelPair, error) {
	pairs := make([]*dto.LabelPair, len(values))
	backing := make([]dto.LabelPair, len(values))
	for i, j := range e.labelOrder {
		if !utf8.ValidString(values[j]) {
			return nil, fmt.Errorf("label %s: invalid UTF-8 %q", metricnames.ProcessLabels[j], values[j])
		}
		backing[i].Name = &metricnames.ProcessLabels[j]
		v := values[j]
		backing[i].Value = &v
		pairs[i] = &backing[i]
	}
	return pairs, nil
}

// processMetric is one per-process gauge. Unlike a const metric it shares
// its label pairs with the other series of the same process; like one, it
// is immutable, and the registry only reads what Write hands out.
type processMetric struct {
	desc   *prometheus.Desc
	value  float64
	labels []*dto.LabelPair
}

func (m *processMetric) Desc() *prometheus.Desc { return m.desc }

func (m *processMetric) Write(out *dto.Metric) error {
	v := m.value
	out.Label = m.labels
	out.Gauge = &dto.Gauge{Value: &v}
	return nil
}

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range e.processDescs {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{e.ageDesc, e.devicesDesc, e.memOnlyDesc, e.seenDesc, e.mappedDesc, e.unmappedDesc} {
		ch <- d
	}
	e.duration.Describe(ch)
	e.collections.Describe(ch)
	e.nvmlErrors.Describe(ch)
}

// Collect implements prometheus.Collector. It only reads the snapshot.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	if snap := e.snap.Load(); snap != nil {
		age := e.cfg.Now().Sub(snap.at)
		if !e.stale(age) {
			for _, m := range snap.metrics {
				ch <- m
			}
		}
		gauge(ch, e.ageDesc, max(0, age.Seconds()))
		gauge(ch, e.devicesDesc, float64(snap.devices))
		for _, r := range []string{MemoryOnlyMIG, MemoryOnlyNotSupported} {
			gauge(ch, e.memOnlyDesc, float64(snap.memOnly[r]), r)
		}
		gauge(ch, e.seenDesc, float64(snap.seen))
		gauge(ch, e.mappedDesc, float64(snap.mapped))
		for _, r := range []string{ReasonHost, ReasonUnknownPod, ReasonProcUnreadable} {
			gauge(ch, e.unmappedDesc, float64(snap.unmapped[r]), r)
		}
	}
	e.duration.Collect(ch)
	e.collections.Collect(ch)
	e.nvmlErrors.Collect(ch)
}

// gauge sends one self-metric. Its labels are this package's constants, so
// NewConstMetric cannot fail here; the check only keeps Collect panic-free.
func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	if m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...); err == nil {
		ch <- m
	}
}

func (e *Exporter) stale(age time.Duration) bool {
	return age > StaleAfter*e.cfg.Interval
}

// Healthz fails once the last successful collection (or, before the first,
// the exporter's start) is more than StaleAfter intervals old: the backend
// is wedged and a restart may help.
func (e *Exporter) Healthz(w http.ResponseWriter, _ *http.Request) {
	ref, what := e.started, "started"
	if snap := e.snap.Load(); snap != nil {
		ref, what = snap.at, "last successful collection"
	}
	age := e.cfg.Now().Sub(ref)
	if e.stale(age) {
		http.Error(w, fmt.Sprintf("unhealthy: %s %s ago, more than %d collection intervals of %s", what, age.Round(time.Millisecond), StaleAfter, e.cfg.Interval), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// Readyz succeeds once one collection has succeeded, so Prometheus is not
// pointed at an exporter with nothing to say.
func (e *Exporter) Readyz(w http.ResponseWriter, _ *http.Request) {
	if e.snap.Load() == nil {
		http.Error(w, "not ready: no successful collection yet", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}
