package placementwebhook

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// metrics are the webhook's instruments. They are registered on the
// registry given to New (the manager's), never on a global one.
type metrics struct {
	// Placements counts pods placed, by namespace, policy and unit label
	// ("none" for pods placed outside every unit).
	Placements *prometheus.CounterVec
	// Denied counts pod creations refused because every unit was at its
	// max under the required strategy.
	Denied *prometheus.CounterVec
	// Duration is the time to answer one admission request.
	Duration prometheus.Histogram
	// Errors counts requests answered without a placement because
	// something failed, by reason (decode, read, encode, key, panic).
	Errors *prometheus.CounterVec
}

// newMetrics creates the instruments and registers them on reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		Placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.PlacementPods,
			Help: "Pods placed by the ResourcePolicy webhook, by unit.",
		}, []string{metricnames.LabelNamespace, metricnames.LabelPolicy, metricnames.LabelUnit}),
		Denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.PlacementDenied,
			Help: "Pod creations refused because every unit of a required-strategy ResourcePolicy was at its max.",
		}, []string{metricnames.LabelNamespace, metricnames.LabelPolicy}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricnames.PlacementWebhookDuration,
			Help:    "Time to answer one placement admission request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.PlacementWebhookErrors,
			Help: "Placement admission requests that admitted the pod unplaced because of an error, by reason.",
		}, []string{metricnames.LabelReason}),
	}
	// Every reason is exported at 0 from the start: dashboards show no
	// errors rather than no data, and rate() sees the first one.
	for _, r := range []string{reasonDecode, reasonRead, reasonEncode, reasonKey, reasonPanic, reasonShared} {
		m.Errors.WithLabelValues(r)
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.Placements, m.Denied, m.Duration, m.Errors} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
