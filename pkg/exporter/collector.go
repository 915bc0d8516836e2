package exporter

import "github.com/prometheus/client_golang/prometheus"

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
	snap, now := e.snap.Load(), e.cfg.Clock.Now()
	if snap != nil && !e.stale(now.Sub(snap.at)) {
		e.proc.collect(ch, snap)
	}
	e.self.collectSnapshot(ch, snap, now)
	e.self.collectCounters(ch)
}
