package inferencescaler

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Values of the result label of the reconcile counter.
const (
	resultApplied = "applied" // the HPA matches the spec
	resultPaused  = "paused"  // the HPA is pinned, or none exists to pin
	resultRefused = "refused" // a conflict or a missing dependency keeps the HPA untouched
	resultInvalid = "invalid" // the spec fails a check CEL cannot do
	resultError   = "error"   // an API call failed; retried with backoff
)

type metrics struct {
	reconciles          *prometheus.CounterVec
	scheduleActivations *prometheus.CounterVec
	fallbackActivations *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.InferenceScalerReconciles,
			Help: "InferenceScaler reconciles by result: applied, paused, refused, invalid, error.",
		}, []string{metricnames.LabelResult}),
		scheduleActivations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.InferenceScalerScheduleActivations,
			Help: "Schedule windows that opened and raised an InferenceScaler's floor.",
		}, []string{metricnames.LabelNamespace, metricnames.LabelInferenceScaler, metricnames.LabelSchedule}),
		fallbackActivations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.InferenceScalerFallbackActivations,
			Help: "Times an InferenceScaler raised its floor to fallback.replicas because the HPA could not read its metric.",
		}, []string{metricnames.LabelNamespace, metricnames.LabelInferenceScaler}),
	}
	if reg == nil {
		return nil, errors.New("inferencescaler: nil metrics registerer")
	}
	for _, c := range []prometheus.Collector{m.reconciles, m.scheduleActivations, m.fallbackActivations} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every result is exported from the start so rate() sees the first one.
	for _, r := range []string{resultApplied, resultPaused, resultRefused, resultInvalid, resultError} {
		m.reconciles.WithLabelValues(r)
	}
	return m, nil
}
