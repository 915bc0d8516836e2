package promquery

import (
	"fmt"
	"math"
	"time"

	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Sample is one validated observation: a process's, for the exporter's
// series, or a pod's own gauge.
type Sample struct {
	Metric    string
	Namespace string
	Pod       string
	// GPU is the device UUID: the key processes are summed under. Empty
	// for series that are not per GPU.
	GPU string
	// PID and Container only tell processes apart; either may be empty.
	PID       string
	Container string
	// Hostname is the node the exporter that published the series runs
	// on; the adapter checks it against the pod's node, so it is kept
	// even when empty.
	Hostname string
	// Instance is the address Prometheus scraped (host:port); for a pod's
	// own series the adapter checks its host against the pod's IP.
	Instance string
	Value    float64
	// Timestamp is the time Prometheus attached to the sample (for an
	// instant query: its evaluation time).
	Timestamp time.Time
}

// Skipped counts series that were read but not used, by reason.
type Skipped struct {
	// MissingLabels: no namespace or pod, or no GPU UUID on a per-GPU
	// series (e.g. a host process).
	MissingLabels int
	// InvalidValue: NaN, ±Inf, negative, a histogram, or no timestamp.
	InvalidValue int
	// UnexpectedMetric: a metric name the query did not ask for.
	UnexpectedMetric int
	// Duplicate: the same process on the same host seen twice (e.g.
	// scraped by two jobs); the newer sample is kept.
	Duplicate int
}

// Total is the number of skipped series.
func (s Skipped) Total() int {
	return s.MissingLabels + s.InvalidValue + s.UnexpectedMetric + s.Duplicate
}

// Add returns the counts of s and o together.
func (s Skipped) Add(o Skipped) Skipped {
	return Skipped{
		MissingLabels:    s.MissingLabels + o.MissingLabels,
		InvalidValue:     s.InvalidValue + o.InvalidValue,
		UnexpectedMetric: s.UnexpectedMetric + o.UnexpectedMetric,
		Duplicate:        s.Duplicate + o.Duplicate,
	}
}

// Result is what one query yielded.
type Result struct {
	Samples []Sample
	Skipped Skipped
}

// processKey tells series apart. Hostname is part of it so that a series
// claiming another host never replaces the real one here, before the
// adapter has checked provenance: it stays a separate series, and is
// rejected. For series that are not per GPU, rest fingerprints every label
// but job (instance included, to the same end), so that one target scraped
// by two jobs counts once, while a server's series per model (a model_name
// label, say) stay apart. The key stays within 128 bytes: a bigger map key
// is stored out of line, one allocation per series.
type processKey struct {
	metric, namespace, pod, gpu, pid, container, hostname string
	rest                                                  model.Fingerprint
}

// Decode validates an instant-query result for q. Anything but a vector is
// an error; bad series are skipped and counted, never turned into values.
func Decode(v model.Value, q Query) (Result, error) {
	vec, ok := v.(model.Vector)
	if !ok {
		typ := "nil"
		if v != nil {
			typ = v.Type().String()
		}
		return Result{}, fmt.Errorf("prometheus returned a %s, want a vector", typ)
	}
	wanted := make(map[string]bool, len(q.Metrics))
	for _, m := range q.Metrics {
		wanted[m] = true
	}

	res := Result{Samples: make([]Sample, 0, len(vec))}
	index := make(map[processKey]int, len(vec))
	for _, s := range vec {
		if s == nil {
			res.Skipped.InvalidValue++
			continue
		}
		name := string(s.Metric[model.MetricNameLabel])
		if !wanted[name] {
			res.Skipped.UnexpectedMetric++
			continue
		}
		r := q.reading(name)
		ns := firstLabel(s.Metric, r.NamespaceLabels...)
		pod := firstLabel(s.Metric, r.PodLabels...)
		gpu := string(s.Metric[metricnames.LabelUUID])
		if ns == "" || pod == "" || (r.PerGPU && gpu == "") {
			res.Skipped.MissingLabels++
			continue
		}
		if !r.PerGPU {
			gpu = ""
		}
		val := float64(s.Value)
		if s.Histogram != nil || math.IsNaN(val) || math.IsInf(val, 0) || val < 0 || s.Timestamp == 0 {
			res.Skipped.InvalidValue++
			continue
		}
		sample := Sample{
			Metric:    name,
			Namespace: ns,
			Pod:       pod,
			GPU:       gpu,
			PID:       string(s.Metric[metricnames.LabelPID]),
			Container: firstLabel(s.Metric, metricnames.LabelACKContainer, metricnames.LabelContainer),
			Hostname:  string(s.Metric[metricnames.LabelHostname]),
			Instance:  string(s.Metric[metricnames.LabelInstance]),
			Value:     val,
			Timestamp: s.Timestamp.Time(),
		}
		key := processKey{metric: name, namespace: ns, pod: pod, gpu: gpu, pid: sample.PID, container: sample.Container,
			hostname: sample.Hostname}
		if !r.PerGPU {
			key.rest = withoutJob(s.Metric)
		}
		if i, seen := index[key]; seen {
			res.Skipped.Duplicate++
			if sample.Timestamp.After(res.Samples[i].Timestamp) {
				res.Samples[i] = sample
			}
			continue
		}
		index[key] = len(res.Samples)
		res.Samples = append(res.Samples, sample)
	}
	return res, nil
}

// withoutJob fingerprints a series' labels but job.
func withoutJob(m model.Metric) model.Fingerprint {
	if _, ok := m[metricnames.LabelJob]; !ok {
		return m.Fingerprint()
	}
	c := m.Clone()
	delete(c, metricnames.LabelJob)
	return c.Fingerprint()
}

// firstLabel returns the first non-empty value among names. For the
// exporter's series the ACK spellings come first because relabeling never
// renames them.
func firstLabel(m model.Metric, names ...string) string {
	for _, n := range names {
		if v := m[model.LabelName(n)]; v != "" {
			return string(v)
		}
	}
	return ""
}
