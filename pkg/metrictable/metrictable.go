// Package metrictable describes the metrics the adapter serves: one Row per
// metric, saying which Prometheus series it reads, which labels name the
// series' namespace and pod, who publishes the series (which decides how
// the adapter checks the series really is about that pod), and how one
// pod's series combine into the pod's value.
//
// The default table serves the exporter's five per-process GPU metrics and
// the queue and cache gauges of vLLM, SGLang and TGI; users add rows from a
// file (Load). The package is pure: no client, no I/O beyond the reader it
// is given.
package metrictable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Combine says how one pod's series become the pod's value.
type Combine string

const (
	// MeanOfCappedGPUs: per GPU (the series' UUID label) the sum over
	// processes, capped at 100 (one GPU cannot be more than fully busy),
	// then the mean over the pod's GPUs. For per-process utilization.
	MeanOfCappedGPUs Combine = "MeanOfCappedGPUs"
	// SumOfGPUs: the sum over processes and GPUs. For per-process memory.
	SumOfGPUs Combine = "SumOfGPUs"
	// Sum: the sum of the pod's series (one per container or model, say).
	// For queue lengths: requests waiting anywhere in the pod.
	Sum Combine = "Sum"
	// Max: the largest of the pod's series. For pressure gauges such as
	// KV-cache usage, where the fullest cache is the one that stalls.
	Max Combine = "Max"
)

// PerGPU reports whether c groups series by GPU, so they need a UUID label.
func (c Combine) PerGPU() bool { return c == MeanOfCappedGPUs || c == SumOfGPUs }

// Origin is who publishes a row's series; it decides the provenance check.
type Origin string

const (
	// Exporter: spillway-gpu-exporter, on the pod's node. The query is
	// scoped to the exporter's scrape identity (--series-selector), and a
	// series counts only when its Hostname label is the node the pod is
	// bound to.
	Exporter Origin = "Exporter"
	// Pod: the pod's own metrics endpoint (a model server), scraped by
	// Prometheus through pod service discovery. A series counts only when
	// the host of its instance label is the pod's IP: the address
	// Prometheus scraped, which a target in another pod cannot have.
	Pod Origin = "Pod"
)

// Row is one served metric.
type Row struct {
	// Name is the metric name served on custom.metrics.k8s.io and
	// external.metrics.k8s.io, and written in an HPA's metric.name.
	Name string `json:"name"`
	// Series is the Prometheus metric name read. Default: Name.
	Series string `json:"series,omitempty"`
	// NamespaceLabels and PodLabels name the labels that carry the pod's
	// namespace and name, tried in order; the first non-empty one counts.
	// Default: ACK's NamespaceName/PodName, then namespace/pod.
	NamespaceLabels []string `json:"namespaceLabels,omitempty"`
	PodLabels       []string `json:"podLabels,omitempty"`
	// Combine is how one pod's series combine (see the constants).
	Combine Combine `json:"combine"`
	// Origin is who publishes the series. Default: Pod.
	Origin Origin `json:"origin,omitempty"`
}

// Labels that name a pod's namespace and name, ACK's spellings first:
// relabeling never renames them, where a scrape config without
// honor_labels renames the exporter's own namespace/pod labels.
var (
	DefaultNamespaceLabels = []string{metricnames.LabelACKNamespace, metricnames.LabelNamespace}
	DefaultPodLabels       = []string{metricnames.LabelACKPod, metricnames.LabelPod}
)

// Defaults is the built-in table: the exporter's per-process GPU metrics,
// then model-server gauges read from the pods themselves. vLLM's
// gpu_cache_usage_perc is the name its older releases gave kv_cache_usage_perc.
func Defaults() []Row {
	rows := []Row{
		{Name: metricnames.ProcessSMUtil, Combine: MeanOfCappedGPUs, Origin: Exporter},
		{Name: metricnames.ProcessMemUsed, Combine: SumOfGPUs, Origin: Exporter},
		{Name: metricnames.ProcessEncUtil, Combine: MeanOfCappedGPUs, Origin: Exporter},
		{Name: metricnames.ProcessDecUtil, Combine: MeanOfCappedGPUs, Origin: Exporter},
		{Name: metricnames.ProcessMemCopyUtil, Combine: MeanOfCappedGPUs, Origin: Exporter},
		{Name: metricnames.VLLMRequestsWaiting, Combine: Sum},
		{Name: metricnames.VLLMRequestsRunning, Combine: Sum},
		{Name: metricnames.VLLMKVCacheUsage, Combine: Max},
		{Name: metricnames.VLLMGPUCacheUsage, Combine: Max},
		{Name: metricnames.SGLangQueueRequests, Combine: Sum},
		{Name: metricnames.SGLangRunningRequests, Combine: Sum},
		{Name: metricnames.TGIQueueSize, Combine: Sum},
		{Name: metricnames.TGIBatchCurrentSize, Combine: Sum},
	}
	for i := range rows {
		rows[i] = rows[i].withDefaults()
	}
	return rows
}

func (r Row) withDefaults() Row {
	if r.Series == "" {
		r.Series = r.Name
	}
	if len(r.NamespaceLabels) == 0 {
		r.NamespaceLabels = slices.Clone(DefaultNamespaceLabels)
	}
	if len(r.PodLabels) == 0 {
		r.PodLabels = slices.Clone(DefaultPodLabels)
	}
	if r.Origin == "" {
		r.Origin = Pod
	}
	return r
}

// validate reports every problem of one defaulted row, prefixed by where.
func (r Row) validate(where string) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{where}, args...)...))
	}
	// The served name is a path segment of the metrics APIs and an HPA's
	// metric.name: the HPA refuses "/" and "%" there, "." and ".." are path
	// tricks; a Prometheus name rules out all of them.
	if !model.LegacyValidation.IsValidMetricName(r.Name) {
		bad("name %q is not a Prometheus metric name (letters, digits, '_' and ':', not starting with a digit)", r.Name)
	}
	if !model.LegacyValidation.IsValidMetricName(r.Series) {
		bad("series %q is not a Prometheus metric name", r.Series)
	}
	for _, l := range append(slices.Clone(r.NamespaceLabels), r.PodLabels...) {
		if !model.LegacyValidation.IsValidLabelName(l) || strings.HasPrefix(l, "__") {
			bad("label %q is not a Prometheus label name (or is reserved: it starts with \"__\")", l)
		}
	}
	switch r.Combine {
	case MeanOfCappedGPUs, SumOfGPUs, Sum, Max:
	case "":
		bad("combine is required: one of %s, %s, %s, %s", MeanOfCappedGPUs, SumOfGPUs, Sum, Max)
	default:
		bad("unknown combine %q: want one of %s, %s, %s, %s", r.Combine, MeanOfCappedGPUs, SumOfGPUs, Sum, Max)
	}
	switch r.Origin {
	case Exporter, Pod:
	default:
		bad("unknown origin %q: want %s (spillway-gpu-exporter's series) or %s (the pod's own metrics endpoint)", r.Origin, Exporter, Pod)
	}
	if r.Combine.PerGPU() && r.Origin != Exporter {
		bad("combine %s needs per-process GPU series, which only origin %s publishes", r.Combine, Exporter)
	}
	return errs
}

// Validate reports every problem of a defaulted table at once: bad rows,
// two rows serving one name (names are matched ignoring case, as requests
// may lower-case them), and two rows reading one series from one origin.
func Validate(rows []Row) error {
	var errs []error
	if len(rows) == 0 {
		errs = append(errs, errors.New("the metric table has no rows"))
	}
	names := map[string]int{}
	series := map[string]int{}
	for i, r := range rows {
		where := fmt.Sprintf("metrics[%d] (%s)", i, r.Name)
		errs = append(errs, r.validate(where)...)
		if j, dup := names[strings.ToLower(r.Name)]; dup {
			errs = append(errs, fmt.Errorf("%s: name %q is already served by metrics[%d]", where, r.Name, j))
		} else {
			names[strings.ToLower(r.Name)] = i
		}
		k := string(r.Origin) + "/" + r.Series
		if j, dup := series[k]; dup {
			errs = append(errs, fmt.Errorf("%s: series %q from origin %s is already read by metrics[%d]", where, r.Series, r.Origin, j))
		} else {
			series[k] = i
		}
	}
	return errors.Join(errs...)
}

// File is the format of a metric table file.
type File struct {
	// Metrics are added to the defaults, or replace them when
	// ReplaceDefaults is true.
	Metrics []Row `json:"metrics"`
	// ReplaceDefaults serves only Metrics.
	ReplaceDefaults bool `json:"replaceDefaults,omitempty"`
}

// Load reads a table file (YAML or JSON, unknown fields refused) and
// returns the table it describes, validated; name is used in errors.
func Load(name string, r io.Reader) ([]Row, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading metric table %s: %w", name, err)
	}
	var f File
	if err := yaml.UnmarshalStrict(bytes.TrimSpace(data), &f); err != nil {
		return nil, fmt.Errorf("metric table %s: %w", name, err)
	}
	var rows []Row
	if !f.ReplaceDefaults {
		rows = Defaults()
	}
	for _, r := range f.Metrics {
		rows = append(rows, r.withDefaults())
	}
	if err := Validate(rows); err != nil {
		return nil, fmt.Errorf("metric table %s: %w", name, err)
	}
	return rows, nil
}
