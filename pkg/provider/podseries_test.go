package provider

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// podGauge is one gauge a model server publishes, as Prometheus's pod
// discovery labels it: namespace, pod, instance (the scraped address) and
// job, plus the server's own labels.
func podGauge(metric, ns, podName, instance string, v float64, extra ...string) *model.Sample {
	m := model.Metric{
		model.MetricNameLabel:      model.LabelValue(metric),
		metricnames.LabelNamespace: model.LabelValue(ns),
		metricnames.LabelPod:       model.LabelValue(podName),
		metricnames.LabelJob:       "kubernetes-pods",
	}
	if instance != "" {
		m[metricnames.LabelInstance] = model.LabelValue(instance)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[model.LabelName(extra[i])] = model.LabelValue(extra[i+1])
	}
	return &model.Sample{Metric: m, Value: model.SampleValue(v), Timestamp: model.TimeFromUnixNano(t0.UnixNano())}
}

// The pods' own series: kept only when the instance's host is the pod's
// IP, summed (queue) or maxed (cache) over the pod's series, counted once
// when two jobs scrape the same target, and never served when missing.
func TestPodSeries(t *testing.T) {
	const waiting, kv = metricnames.VLLMRequestsWaiting, metricnames.VLLMKVCacheUsage
	pods := []pod{
		{ns: "llm", name: "a", ip: "10.0.0.1"},
		{ns: "llm", name: "b", ip: "10.0.0.2"},
		{ns: "llm", name: "noip"},
		{ns: "llm", name: "pending", ip: "10.0.0.4", unscheduled: true},
		{ns: "llm", name: "silent", ip: "10.0.0.5"},
	}
	twice := podGauge(waiting, "llm", "a", "10.0.0.1:8000", 3, "model_name", "qwen")
	twice.Metric = twice.Metric.Clone()
	twice.Metric[metricnames.LabelJob] = "vllm-servicemonitor"
	vec := model.Vector{
		podGauge(waiting, "llm", "a", "10.0.0.1:8000", 3, "model_name", "qwen"),
		podGauge(waiting, "llm", "a", "10.0.0.1:8000", 2, "model_name", "qwen-lora"),
		twice, // the same target through a second job: counted once
		podGauge(kv, "llm", "a", "10.0.0.1:8000", 0.4, "model_name", "qwen"),
		podGauge(kv, "llm", "a", "10.0.0.1:8000", 0.7, "model_name", "qwen-lora"),
		// b's own value, and a forgery for b from a's address.
		podGauge(waiting, "llm", "b", "10.0.0.2:8000", 1),
		podGauge(waiting, "llm", "b", "10.0.0.1:8000", 50),
		podGauge(waiting, "llm", "noip", "10.0.0.3:8000", 9),
		podGauge(waiting, "llm", "pending", "10.0.0.4:8000", 9),
		podGauge(waiting, "llm", "ghost", "10.0.0.9:8000", 9),
		podGauge(waiting, "llm", "a", "", 9),
		// No pod label: skipped as missing labels, never served.
		{Metric: model.Metric{model.MetricNameLabel: waiting, metricnames.LabelNamespace: "llm", metricnames.LabelInstance: "10.0.0.5:8000"},
			Value: 7, Timestamp: model.TimeFromUnixNano(t0.UnixNano())},
		// A GPU series for the same pod still comes through the exporter.
		series(sm, "llm", "a", "GPU-1", "1", 80, t0),
	}
	e := newEnv(t, pods, vec)
	e.refresh(t)
	snap := e.p.snap.Load()
	get := func(name, metric string) (float64, bool) {
		_, v, ok := snap.lookup(types.NamespacedName{Namespace: "llm", Name: name}, e.p.index[metric], t0, testMaxStale)
		if !ok {
			return 0, false
		}
		return v.v, true
	}
	for _, c := range []struct {
		pod, metric string
		want        float64
		ok          bool
	}{
		{"a", waiting, 5, true},
		{"a", kv, 0.7, true},
		{"a", sm, 80, true},
		{"b", waiting, 1, true},
		{"noip", waiting, 0, false},
		{"pending", waiting, 0, false},
		{"silent", waiting, 0, false},
		{"b", kv, 0, false},
	} {
		got, ok := get(c.pod, c.metric)
		if ok != c.ok || got != c.want {
			t.Errorf("%s %s = %v, %v; want %v, %v", c.pod, c.metric, got, ok, c.want, c.ok)
		}
	}
	if snap.skipped.MissingLabels != 1 || snap.skipped.Duplicate != 1 {
		t.Errorf("skipped = %+v, want 1 missing labels and 1 duplicate", snap.skipped)
	}
	for reason, want := range map[string]float64{
		metricnames.RejectedInstanceMismatch: 1,
		metricnames.RejectedNoPodIP:          1,
		metricnames.RejectedUnscheduledPod:   1,
		metricnames.RejectedUnknownPod:       1,
		metricnames.RejectedMissingInstance:  1,
	} {
		if got, _ := gatherValue(t, e.reg, metricnames.AdapterSeriesRejected, map[string]string{metricnames.LabelAdapterReason: reason}); got != want {
			t.Errorf("rejected %s = %v, want %v", reason, got, want)
		}
	}

	// Served through the Pods API like the GPU metric.
	list, err := e.p.GetMetricBySelector(context.Background(), "llm", sel(t, ""), podInfo(waiting), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 || list.Items[0].DescribedObject.Name != "a" || list.Items[0].Value.MilliValue() != 5000 {
		t.Errorf("items = %+v", list.Items)
	}
}

// A pod-origin row reads only series that the pod-scope query returns: the
// Fake applies the pod series selector as the Client would.
func TestPodSeriesSelector(t *testing.T) {
	sel, err := promquery.ParseSeriesSelector(`job="vllm"`)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, []pod{{ns: "llm", name: "a", ip: "10.0.0.1"}},
		model.Vector{podGauge(metricnames.VLLMRequestsWaiting, "llm", "a", "10.0.0.1:8000", 4)})
	e.prom.PodSelector = sel
	e.refresh(t)
	if _, _, ok := e.p.snap.Load().lookup(types.NamespacedName{Namespace: "llm", Name: "a"}, e.p.index[metricnames.VLLMRequestsWaiting], t0, time.Minute); ok {
		t.Error("served a series outside the pod series selector")
	}
}
