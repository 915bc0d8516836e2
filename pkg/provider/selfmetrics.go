package provider

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Values of the requests' api label. The metric names themselves live in
// metricnames, with every other name dashboards and alerts read.
const (
	apiCustom   = "custom"
	apiExternal = "external"
)

type selfMetrics struct {
	refreshDuration prometheus.Histogram
	refreshErrors   *prometheus.CounterVec
	series          prometheus.Gauge
	pods            prometheus.Gauge
	skipped         *prometheus.GaugeVec
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	seriesRejected  *prometheus.CounterVec
	partialRefusals prometheus.Counter
}

func newSelfMetrics(reg prometheus.Registerer, snapshotAge func() float64) (*selfMetrics, error) {
	m := &selfMetrics{
		refreshDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricnames.AdapterRefreshDuration,
			Help:    "Time to query Prometheus for all spillway series and build a snapshot, failed refreshes included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		refreshErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.AdapterRefreshErrors,
			Help: "Refreshes that failed, by reason (" + strings.Join(metricnames.RefreshFailureReasons, ", ") +
				"); the previous snapshot stays until it is stale. partial_response: Prometheus (Thanos) warned that the answer may lack series.",
		}, []string{metricnames.LabelAdapterReason}),
		series: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricnames.AdapterSnapshotSeries,
			Help: "Per-process series used to build the current snapshot.",
		}),
		pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricnames.AdapterSnapshotPods,
			Help: "Pods with at least one value in the current snapshot.",
		}),
		skipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricnames.AdapterSnapshotSkippedSeries,
			Help: "Series read in the last successful refresh but not used, by reason.",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.AdapterRequests,
			Help: "Metric requests served, by API (custom or external) and outcome (OK or the Kubernetes status reason).",
		}, []string{"api", "outcome"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricnames.AdapterRequestDuration,
			Help:    "Time spent in the provider per metric request, by API.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
		}, []string{"api"}),
		partialRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricnames.AdapterPartialDataRefusals,
			Help: "Requests refused with 503 because fewer than --min-pod-data-share of the selected pods that should report had a fresh value.",
		}),
	}
	m.seriesRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricnames.AdapterSeriesRejected,
		Help: "Series that matched --series-selector but were dropped, never served, because their Hostname is not the node their pod is bound to, " +
			"by reason (" + strings.Join(metricnames.RejectedReasons, ", ") + "); counted on every refresh that read them.",
	}, []string{metricnames.LabelAdapterReason})
	for _, api := range []string{apiCustom, apiExternal} {
		// Successful requests of each API at 0 from the start, so an API
		// nobody calls shows 0 rather than nothing.
		m.requests.WithLabelValues(api, "OK")
	}
	for _, r := range metricnames.RefreshFailureReasons {
		m.refreshErrors.WithLabelValues(r)
	}
	for _, r := range metricnames.RejectedReasons {
		// Present at 0 from the start, so increases are visible to rate().
		m.seriesRejected.WithLabelValues(r)
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricnames.AdapterSnapshotAge,
		Help: "Age of the served snapshot (time since start while none was loaded). Past --max-staleness every request fails with 503; readiness does not change.",
	}, snapshotAge)
	for _, c := range []prometheus.Collector{m.refreshDuration, m.refreshErrors, m.series, m.pods, m.skipped, m.requests, m.requestDuration, m.seriesRejected, m.partialRefusals, age} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *selfMetrics) recordSnapshot(s *snapshot) {
	m.series.Set(float64(s.series))
	m.pods.Set(float64(len(s.pods)))
	m.skipped.WithLabelValues("missing_labels").Set(float64(s.skipped.MissingLabels))
	m.skipped.WithLabelValues("invalid_value").Set(float64(s.skipped.InvalidValue))
	m.skipped.WithLabelValues("unexpected_metric").Set(float64(s.skipped.UnexpectedMetric))
	m.skipped.WithLabelValues("duplicate").Set(float64(s.skipped.Duplicate))
	m.skipped.WithLabelValues("oversized_labels").Set(float64(s.skipped.Oversized))
}

func (m *selfMetrics) observeRequest(api string, start time.Time, err error) {
	outcome := "OK"
	if err != nil {
		outcome = string(apierrors.ReasonForError(err))
		if outcome == "" {
			outcome = "Unknown"
		}
	}
	m.requests.WithLabelValues(api, outcome).Inc()
	m.requestDuration.WithLabelValues(api).Observe(time.Since(start).Seconds())
}
