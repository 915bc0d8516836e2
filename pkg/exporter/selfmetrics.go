package exporter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

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

// selfMetrics are the exporter's own metrics: gauges describing the last
// snapshot, built at each scrape from the snapshot that scrape reads, and
// counters and a histogram of collections, updated by the loop.
type selfMetrics struct {
	backend string
	gauges  []snapshotGauge

	duration    *prometheus.HistogramVec
	collections *prometheus.CounterVec
	nvmlErrors  *prometheus.CounterVec
	// succeeded and failed are the two values of the result label, set
	// by name and resolved once, so a collection neither allocates nor
	// looks them up. Only CollectOnce uses them, under its lock.
	succeeded, failed *collectionResult
}

// collectionResult is the duration and count of collections with one
// result. Both counters are exported from the start (0 until one
// happens); the histogram only once a collection had that result.
type collectionResult struct {
	labels   prometheus.Labels
	count    prometheus.Counter
	vec      *prometheus.HistogramVec
	duration prometheus.Observer // nil until the first such collection
}

func (r *collectionResult) observe(d time.Duration) {
	if r.duration == nil {
		r.duration = r.vec.With(r.labels)
	}
	r.duration.Observe(d.Seconds())
	r.count.Inc()
}

// nvmlError counts one failed NVML call; labels are set by name, so the
// operation and the return code cannot trade places.
func (m *selfMetrics) nvmlError(op, code string) {
	m.nvmlErrors.With(prometheus.Labels{
		metricnames.LabelExporterOperation:  op,
		metricnames.LabelExporterReturnCode: code,
	}).Inc()
}

// snapshotGauge is one gauge family computed from a snapshot.
type snapshotGauge struct {
	name, help string
	desc       *prometheus.Desc
	// reasons are the values of its reason label, sorted as exposition
	// sorts them; nil when it has no reason label.
	reasons []string
	// value computes it; reason is "" when reasons is nil. age is the
	// snapshot's age at the scrape.
	value func(snap *snapshot, age time.Duration, reason string) float64
}

func newSelfMetrics(backend string) selfMetrics {
	m := selfMetrics{backend: backend, gauges: []snapshotGauge{
		{
			name: metricnames.ExporterLastSuccessAge, help: "Seconds since the last successful collection; absent before the first.",
			value: func(_ *snapshot, age time.Duration, _ string) float64 { return max(0, age.Seconds()) },
		},
		{
			name: metricnames.ExporterDevices, help: "GPUs in the last successful collection.",
			value: func(s *snapshot, _ time.Duration, _ string) float64 { return float64(s.devices) },
		},
		{
			name: metricnames.ExporterMemoryOnlyDevices, help: "GPUs whose processes report memory but no utilization, by reason.",
			reasons: []string{MemoryOnlyMIG, MemoryOnlyNotSupported},
			value:   func(s *snapshot, _ time.Duration, r string) float64 { return float64(s.memOnly[r]) },
		},
		{
			name: metricnames.ExporterProcessesSeen, help: "Process entries (process x GPU) in the last successful collection.",
			value: func(s *snapshot, _ time.Duration, _ string) float64 { return float64(s.seen) },
		},
		{
			name: metricnames.ExporterProcessesMapped, help: "Process entries of the last successful collection mapped to a pod.",
			value: func(s *snapshot, _ time.Duration, _ string) float64 { return float64(s.mapped) },
		},
		{
			name: metricnames.ExporterProcessesUnmapped, help: "Process entries of the last successful collection not mapped to a pod, by reason.",
			reasons: []string{ReasonHost, ReasonProcUnreadable, ReasonUnknownPod},
			value:   func(s *snapshot, _ time.Duration, r string) float64 { return float64(s.unmapped[r]) },
		},
	}}
	backendLabel := prometheus.Labels{metricnames.LabelExporterBackend: backend}
	for i := range m.gauges {
		g := &m.gauges[i]
		var variable []string
		if g.reasons != nil {
			variable = []string{metricnames.LabelExporterReason}
		}
		g.desc = prometheus.NewDesc(g.name, g.help, variable, backendLabel)
	}
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        metricnames.ExporterCollectionDuration,
		Help:        "Time one background collection took (sample, map PIDs, render).",
		Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		ConstLabels: backendLabel,
	}, []string{metricnames.LabelExporterResult})
	m.collections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        metricnames.ExporterCollections,
		Help:        "Background collections, by result (success, failure).",
		ConstLabels: backendLabel,
	}, []string{metricnames.LabelExporterResult})
	m.nvmlErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricnames.ExporterNVMLErrors,
		Help: "Failed NVML calls, by operation and return code. Expected outcomes (no new samples, MIG unsupported) are not counted.",
	}, []string{metricnames.LabelExporterOperation, metricnames.LabelExporterReturnCode})
	result := func(r string) *collectionResult {
		l := prometheus.Labels{metricnames.LabelExporterResult: r}
		return &collectionResult{labels: l, count: m.collections.With(l), vec: m.duration}
	}
	m.succeeded, m.failed = result("success"), result("failure")
	return m
}

func (m *selfMetrics) describe(ch chan<- *prometheus.Desc) {
	for _, g := range m.gauges {
		ch <- g.desc
	}
	m.counters().Describe(ch)
}

// counters are the metrics the collection loop updates. They are
// gathered through a registry on both paths.
func (m *selfMetrics) counters() prometheus.Collector {
	return collectors{m.duration, m.collections, m.nvmlErrors}
}

func (m *selfMetrics) collectCounters(ch chan<- prometheus.Metric) { m.counters().Collect(ch) }

// eachGauge calls fn with every snapshot gauge sample of snap as seen at
// now, in exposition order; none before the first snapshot.
func (m *selfMetrics) eachGauge(snap *snapshot, now time.Time, fn func(g *snapshotGauge, reason string, v float64)) {
	if snap == nil {
		return
	}
	age := now.Sub(snap.at)
	for i := range m.gauges {
		g := &m.gauges[i]
		if g.reasons == nil {
			fn(g, "", g.value(snap, age, ""))
			continue
		}
		for _, r := range g.reasons {
			fn(g, r, g.value(snap, age, r))
		}
	}
}

// collectSnapshot sends the snapshot gauges as const metrics.
func (m *selfMetrics) collectSnapshot(ch chan<- prometheus.Metric, snap *snapshot, now time.Time) {
	m.eachGauge(snap, now, func(g *snapshotGauge, reason string, v float64) {
		var labels []string
		if g.reasons != nil {
			labels = []string{reason}
		}
		// The labels are this package's constants, so NewConstMetric
		// cannot fail here; the check only keeps Collect panic-free.
		if cm, err := prometheus.NewConstMetric(g.desc, prometheus.GaugeValue, v, labels...); err == nil {
			ch <- cm
		}
	})
}

// snapshotFamilies returns the snapshot gauges as metric families, as the
// registry would gather them from collectSnapshot.
func (m *selfMetrics) snapshotFamilies(snap *snapshot, now time.Time) []*dto.MetricFamily {
	var out []*dto.MetricFamily
	gauge := dto.MetricType_GAUGE
	backendName := metricnames.LabelExporterBackend
	reasonName := metricnames.LabelExporterReason
	m.eachGauge(snap, now, func(g *snapshotGauge, reason string, v float64) {
		if len(out) == 0 || out[len(out)-1].GetName() != g.name {
			out = append(out, &dto.MetricFamily{Name: &g.name, Help: &g.help, Type: &gauge})
		}
		mf := out[len(out)-1]
		// Label pairs sorted by name: backend, then reason.
		labels := []*dto.LabelPair{{Name: &backendName, Value: &m.backend}}
		if g.reasons != nil {
			labels = append(labels, &dto.LabelPair{Name: &reasonName, Value: &reason})
		}
		mf.Metric = append(mf.Metric, &dto.Metric{Label: labels, Gauge: &dto.Gauge{Value: &v}})
	})
	return out
}

// collectors is several collectors as one.
type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}
