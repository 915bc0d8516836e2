// Package promquery reads the series spillway serves (the exporter's
// per-process GPU series, and model-server gauges the pods publish) from the
// Prometheus HTTP API and turns them into validated samples.
//
// Callers describe what they want with a structured Query; the PromQL text is
// rendered here, with every value quoted and regex-escaped, so nothing a
// caller received from a request is ever pasted into a query. Every query a
// Client sends for the exporter's series also carries its SeriesSelector
// (the exporter's scrape identity), so series that other scrape targets
// publish under the same metric names are never read; queries for the pods'
// own series carry its PodSeriesSelector instead.
package promquery

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Query selects per-process series. Its zero value is invalid: at least one
// metric name is required.
type Query struct {
	// Metrics are exact metric names (e.g. metricnames.ProcessSMUtil).
	Metrics []string
	// Namespace, when set, keeps only series of pods in this namespace.
	Namespace string
	// Pods, when non-nil, keeps only series of these pods; it needs Namespace.
	// A non-nil empty list is an error rather than "match nothing" so a
	// caller's bug cannot silently turn into an empty result.
	Pods []string
	// LookbackDelta, when positive, asks Prometheus to ignore samples older
	// than this at evaluation time (servers that predate the parameter
	// ignore it and use their --query.lookback-delta).
	LookbackDelta time.Duration
	// Scope says whose series these are, which decides the scrape identity
	// a Client adds: ScopeExporter (the zero value) or ScopePods.
	Scope Scope
	// Readings says, per metric, which labels name its pod and whether it
	// is a per-GPU series; a metric without one is read as the exporter
	// publishes it (ACK's then the usual labels, a GPU UUID required).
	Readings map[string]Reading
}

// Scope is whose series a query reads.
type Scope int

const (
	// ScopeExporter: spillway-gpu-exporter's series; a Client adds its
	// SeriesSelector.
	ScopeExporter Scope = iota
	// ScopePods: series the pods publish themselves (model servers); a
	// Client adds its PodSeriesSelector, which may be empty.
	ScopePods
)

// Reading is how one metric's series name their pod.
type Reading struct {
	// NamespaceLabels and PodLabels are tried in order; the first
	// non-empty value counts.
	NamespaceLabels []string
	PodLabels       []string
	// PerGPU series must carry a GPU UUID (metricnames.LabelUUID).
	PerGPU bool
}

// exporterReading is how the exporter's series name their pod.
var exporterReading = Reading{
	NamespaceLabels: []string{metricnames.LabelACKNamespace, metricnames.LabelNamespace},
	PodLabels:       []string{metricnames.LabelACKPod, metricnames.LabelPod},
	PerGPU:          true,
}

// reading returns the Reading of metric m.
func (q Query) reading(m string) Reading {
	if r, ok := q.Readings[m]; ok {
		return r
	}
	return exporterReading
}

// Pod and namespace filters match the ACK label spellings: they carry the
// workload's namespace and pod even when a scrape config without
// honor_labels renames the exporter's own `namespace`/`pod` labels to
// `exported_namespace`/`exported_pod`.
const (
	filterNamespaceLabel = metricnames.LabelACKNamespace
	filterPodLabel       = metricnames.LabelACKPod
)

// Validate reports every problem with q at once.
func (q Query) Validate() error {
	var errs []error
	if len(q.Metrics) == 0 {
		errs = append(errs, errors.New("query needs at least one metric name"))
	}
	for _, m := range q.Metrics {
		if !model.LegacyValidation.IsValidMetricName(m) {
			errs = append(errs, fmt.Errorf("invalid metric name %q", m))
		}
	}
	if q.Pods != nil {
		if len(q.Pods) == 0 {
			errs = append(errs, errors.New("query has an empty pod list"))
		}
		if q.Namespace == "" {
			errs = append(errs, errors.New("a pod filter needs a namespace"))
		}
		for _, p := range q.Pods {
			if p == "" {
				errs = append(errs, errors.New("query has an empty pod name"))
				break
			}
		}
	}
	for m, r := range q.Readings {
		if len(r.NamespaceLabels) == 0 || len(r.PodLabels) == 0 {
			errs = append(errs, fmt.Errorf("metric %q: a reading needs namespace and pod labels", m))
		}
	}
	if q.Scope != ScopeExporter && q.Scope != ScopePods {
		errs = append(errs, fmt.Errorf("unknown query scope %d", q.Scope))
	}
	if q.LookbackDelta < 0 {
		errs = append(errs, fmt.Errorf("negative lookback delta %s", q.LookbackDelta))
	}
	return errors.Join(errs...)
}

// Render renders q as a PromQL series selector scoped to identity (the
// exporter's series; Client passes its SeriesSelector). Every value is a
// quoted Go string literal (PromQL string literals use Go's escaping), and
// values inside q's regex matchers are additionally regexp.QuoteMeta-escaped,
// so any input — quotes, braces, `=~`, newlines — stays a literal. The
// identity's own regex matchers are the operator's patterns, validated when
// the selector was parsed, and are quoted but not escaped.
func (q Query) Render(identity SeriesSelector) string {
	var b strings.Builder
	b.WriteByte('{')
	writeMatcher(&b, "__name__", q.Metrics)
	for _, m := range identity {
		b.WriteByte(',')
		m.write(&b)
	}
	if q.Namespace != "" {
		b.WriteByte(',')
		writeMatcher(&b, filterNamespaceLabel, []string{q.Namespace})
	}
	if q.Pods != nil {
		b.WriteByte(',')
		writeMatcher(&b, filterPodLabel, q.Pods)
	}
	b.WriteByte('}')
	return b.String()
}

// writeMatcher writes an equality matcher for one value and an anchored
// (Prometheus anchors every regex matcher) alternation for several.
func writeMatcher(b *strings.Builder, label string, values []string) {
	b.WriteString(label)
	if len(values) == 1 {
		b.WriteByte('=')
		b.WriteString(strconv.QuoteToASCII(values[0]))
		return
	}
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = regexp.QuoteMeta(v)
	}
	b.WriteString("=~")
	b.WriteString(strconv.QuoteToASCII(strings.Join(quoted, "|")))
}
