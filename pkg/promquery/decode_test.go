package promquery

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

const sm = metricnames.ProcessSMUtil

func without(s *model.Sample, labels ...string) *model.Sample {
	m := s.Metric.Clone()
	for _, l := range labels {
		delete(m, model.LabelName(l))
	}
	s.Metric = m
	return s
}

func with(s *model.Sample, kv ...string) *model.Sample {
	m := s.Metric.Clone()
	for i := 0; i+1 < len(kv); i += 2 {
		m[model.LabelName(kv[i])] = model.LabelValue(kv[i+1])
	}
	s.Metric = m
	return s
}

func TestDecode(t *testing.T) {
	q := Query{Metrics: []string{sm, metricnames.ProcessMemUsed}}
	histogram := Series(sm, "ns", "h", "GPU-1", "1", 1, t0)
	histogram.Histogram = &model.SampleHistogram{Count: 1}
	tests := []struct {
		name        string
		vec         model.Vector
		wantSamples []Sample
		wantSkipped Skipped
	}{
		{
			name: "valid series keep value, labels and timestamp",
			vec: model.Vector{
				Series(sm, "ns", "p", "GPU-1", "10", 42.5, t0),
				Series(metricnames.ProcessMemUsed, "ns", "p", "GPU-1", "10", 1024, t0.Add(time.Second)),
			},
			wantSamples: []Sample{
				{Metric: sm, Namespace: "ns", Pod: "p", GPU: "GPU-1", PID: "10", Container: "main", Hostname: "node-1", Value: 42.5, Timestamp: t0},
				{Metric: metricnames.ProcessMemUsed, Namespace: "ns", Pod: "p", GPU: "GPU-1", PID: "10", Container: "main", Hostname: "node-1", Value: 1024, Timestamp: t0.Add(time.Second)},
			},
		},
		{
			name: "zero is a real value",
			vec:  model.Vector{Series(sm, "ns", "p", "GPU-1", "10", 0, t0)},
			wantSamples: []Sample{
				{Metric: sm, Namespace: "ns", Pod: "p", GPU: "GPU-1", PID: "10", Container: "main", Hostname: "node-1", Value: 0, Timestamp: t0},
			},
		},
		{
			name: "NaN, infinities, negatives, histograms and missing timestamps are invalid",
			vec: model.Vector{
				Series(sm, "ns", "a", "GPU-1", "1", math.NaN(), t0),
				Series(sm, "ns", "b", "GPU-1", "1", math.Inf(1), t0),
				Series(sm, "ns", "c", "GPU-1", "1", math.Inf(-1), t0),
				Series(sm, "ns", "d", "GPU-1", "1", -0.5, t0),
				histogram,
				{Metric: Series(sm, "ns", "e", "GPU-1", "1", 1, t0).Metric, Value: 1},
				nil,
			},
			wantSkipped: Skipped{InvalidValue: 7},
		},
		{
			name: "missing namespace, pod or UUID is skipped",
			vec: model.Vector{
				without(Series(sm, "ns", "a", "GPU-1", "1", 1, t0), metricnames.LabelNamespace, metricnames.LabelACKNamespace),
				without(Series(sm, "ns", "b", "GPU-1", "1", 1, t0), metricnames.LabelPod, metricnames.LabelACKPod),
				without(Series(sm, "ns", "c", "GPU-1", "1", 1, t0), metricnames.LabelUUID),
				with(Series(sm, "ns", "d", "GPU-1", "1", 1, t0), metricnames.LabelPod, "", metricnames.LabelACKPod, ""),
			},
			wantSkipped: Skipped{MissingLabels: 4},
		},
		{
			name: "ACK labels win over relabeled namespace/pod",
			vec: model.Vector{
				// A scrape without honor_labels: namespace/pod are the exporter's own.
				with(Series(sm, "team", "worker", "GPU-1", "1", 30, t0),
					metricnames.LabelNamespace, "gpu-system", metricnames.LabelPod, "exporter-xyz"),
			},
			wantSamples: []Sample{
				{Metric: sm, Namespace: "team", Pod: "worker", GPU: "GPU-1", PID: "1", Container: "main", Hostname: "node-1", Value: 30, Timestamp: t0},
			},
		},
		{
			name: "plain labels are used when ACK labels are absent",
			vec: model.Vector{
				without(Series(sm, "team", "worker", "GPU-1", "1", 30, t0),
					metricnames.LabelACKNamespace, metricnames.LabelACKPod, metricnames.LabelACKContainer),
			},
			wantSamples: []Sample{
				{Metric: sm, Namespace: "team", Pod: "worker", GPU: "GPU-1", PID: "1", Container: "main", Hostname: "node-1", Value: 30, Timestamp: t0},
			},
		},
		{
			name:        "metrics not asked for are skipped",
			vec:         model.Vector{Series(metricnames.ProcessEncUtil, "ns", "p", "GPU-1", "1", 5, t0)},
			wantSkipped: Skipped{UnexpectedMetric: 1},
		},
		{
			name: "the same process twice keeps the newer sample",
			vec: model.Vector{
				with(Series(sm, "ns", "p", "GPU-1", "7", 10, t0), "job", "a"),
				with(Series(sm, "ns", "p", "GPU-1", "7", 20, t0.Add(time.Second)), "job", "b"),
				with(Series(sm, "ns", "p", "GPU-1", "7", 30, t0.Add(-time.Second)), "job", "c"),
			},
			wantSamples: []Sample{
				{Metric: sm, Namespace: "ns", Pod: "p", GPU: "GPU-1", PID: "7", Container: "main", Hostname: "node-1", Value: 20, Timestamp: t0.Add(time.Second)},
			},
			wantSkipped: Skipped{Duplicate: 2},
		},
		{
			// The adapter checks hosts after decoding: a series claiming
			// another host must not replace the real one here.
			name: "the same process on another host is kept apart",
			vec: model.Vector{
				Series(sm, "ns", "p", "GPU-1", "7", 20, t0),
				with(Series(sm, "ns", "p", "GPU-1", "7", 100, t0.Add(time.Second)), metricnames.LabelHostname, "other-node"),
				without(Series(sm, "ns", "p", "GPU-1", "7", 0, t0.Add(time.Second)), metricnames.LabelHostname),
			},
			wantSamples: []Sample{
				{Metric: sm, Namespace: "ns", Pod: "p", GPU: "GPU-1", PID: "7", Container: "main", Hostname: "node-1", Value: 20, Timestamp: t0},
				{Metric: sm, Namespace: "ns", Pod: "p", GPU: "GPU-1", PID: "7", Container: "main", Hostname: "other-node", Value: 100, Timestamp: t0.Add(time.Second)},
				{Metric: sm, Namespace: "ns", Pod: "p", GPU: "GPU-1", PID: "7", Container: "main", Value: 0, Timestamp: t0.Add(time.Second)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Decode(tt.vec, q)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(res.Samples) != len(tt.wantSamples) {
				t.Fatalf("got %d samples %+v, want %+v", len(res.Samples), res.Samples, tt.wantSamples)
			}
			for i := range res.Samples {
				got, want := res.Samples[i], tt.wantSamples[i]
				if !got.Timestamp.Equal(want.Timestamp) {
					t.Errorf("sample %d timestamp = %s, want %s", i, got.Timestamp, want.Timestamp)
				}
				got.Timestamp, want.Timestamp = time.Time{}, time.Time{}
				if got != want {
					t.Errorf("sample %d = %+v, want %+v", i, got, want)
				}
			}
			if res.Skipped != tt.wantSkipped {
				t.Errorf("skipped = %+v, want %+v", res.Skipped, tt.wantSkipped)
			}
		})
	}
}

func TestDecodeRejectsNonVectors(t *testing.T) {
	for _, v := range []model.Value{nil, model.Matrix{}, &model.Scalar{}, &model.String{}} {
		_, err := Decode(v, Query{Metrics: []string{sm}})
		if err == nil || !strings.Contains(err.Error(), "want a vector") {
			t.Errorf("Decode(%T) error = %v, want a type error", v, err)
		}
	}
}
