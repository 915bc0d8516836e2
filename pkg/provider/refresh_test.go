package provider

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// request is the three ways the HPA can ask for a pod's value.
type request func(e *env) error

var requests = map[string]request{
	"pods by name": func(e *env) error {
		_, err := e.p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "qwen-1"}, podInfo(sm), labels.Everything())
		return err
	},
	"pods by selector": func(e *env) error {
		_, err := e.p.GetMetricBySelector(context.Background(), "llm", labels.SelectorFromSet(labels.Set{"app": "isvc.qwen-chat-predictor"}), podInfo(sm), labels.Everything())
		return err
	},
	"external": func(e *env) error {
		_, err := e.p.GetExternalMetric(context.Background(), "llm", labels.SelectorFromSet(labels.Set{"app": "isvc.qwen-chat-predictor"}), cmprovider.ExternalMetricInfo{Metric: sm})
		return err
	},
	"external aggregate": func(e *env) error {
		_, err := e.p.GetExternalMetric(context.Background(), "llm", labels.SelectorFromSet(labels.Set{"app": "isvc.qwen-chat-predictor", AggregateKey: "avg"}), cmprovider.ExternalMetricInfo{Metric: sm})
		return err
	},
}

// TestNeverAFalseZero walks the outage story: Prometheus fails, the last
// snapshot is served until it is MaxStaleness old, then every API errors
// (never 0, never an empty success) with the snapshot's age, until a
// refresh works again. Readiness stays on throughout (TestReadiness).
func TestNeverAFalseZero(t *testing.T) {
	for name, req := range requests {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, qwenPods, qwenSeries)

			if err := req(e); err == nil {
				t.Fatal("served a value before any snapshot was loaded")
			} else {
				wantStatus(t, err, http.StatusServiceUnavailable, "no GPU metrics loaded")
			}
			if err := e.p.Ready(); err == nil {
				t.Error("ready before any snapshot was loaded")
			}

			e.refresh(t)
			if err := req(e); err != nil {
				t.Fatalf("fresh snapshot: %v", err)
			}
			if err := e.p.Ready(); err != nil {
				t.Errorf("not ready with a fresh snapshot: %v", err)
			}

			e.prom.Set(nil, errors.New("connection refused"))
			e.clock.advance(testRefresh)
			if err := e.p.Refresh(context.Background()); err == nil {
				t.Fatal("refresh against a failing Prometheus succeeded")
			}
			e.clock.advance(testMaxStale - testRefresh) // exactly MaxStaleness old: still served
			if err := req(e); err != nil {
				t.Fatalf("value at exactly max staleness: %v", err)
			}

			e.clock.advance(time.Millisecond)
			err := req(e)
			wantStatus(t, err, http.StatusServiceUnavailable, "snapshot is 30s old", "older than the maximum staleness 30s", "connection refused")
			if err := e.p.Ready(); err != nil {
				t.Errorf("Ready() = %v with a stale snapshot: staleness must not turn readiness off", err)
			}

			e.prom.Set(qwenSeries, nil) // samples still carry t0: Prometheus returned old data
			e.refresh(t)
			if err := e.p.Ready(); err != nil {
				t.Errorf("snapshot itself is fresh, Ready() = %v", err)
			}
			wantStatus(t, req(e), http.StatusNotFound, "younger than 30s")

			e.prom.Set(restamp(qwenSeries, e.clock.Now()), nil)
			e.refresh(t)
			if err := req(e); err != nil {
				t.Errorf("after recovery: %v", err)
			}
		})
	}
}

// TestPrometheusClockAhead: a sample stamped in our future must not live
// longer than MaxStaleness from when we asked for it.
func TestPrometheusClockAhead(t *testing.T) {
	e := newEnv(t, qwenPods, restamp(qwenSeries, t0.Add(time.Hour)))
	e.refresh(t)
	e.prom.Set(nil, errors.New("down"))
	e.clock.advance(testMaxStale)
	if err := requests["pods by name"](e); err != nil {
		t.Fatalf("within staleness: %v", err)
	}
	e.clock.advance(time.Millisecond)
	if err := requests["pods by name"](e); err == nil {
		t.Fatal("a future-stamped sample outlived max staleness")
	}
}

// TestEmptyResultIsNotZero: Prometheus up but the exporter gone means no
// series at all; every request fails while readiness stays true (the adapter
// itself is healthy and current).
func TestEmptyResultIsNotZero(t *testing.T) {
	e := newEnv(t, qwenPods, qwenSeries)
	e.refresh(t)
	e.prom.Set(model.Vector{}, nil)
	e.refresh(t)
	for name, req := range requests {
		if err := req(e); err == nil {
			t.Errorf("%s: served a value with no series in Prometheus", name)
		}
	}
	if err := e.p.Ready(); err != nil {
		t.Errorf("Ready() = %v", err)
	}
}

// One refresh sends one query for the exporter's series (scoped to its
// identity, read as per-GPU series) and one for the pods' own (read by
// their namespace and pod labels), with every table row in one of them.
func TestRefreshQuery(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.refresh(t)
	qs := e.prom.Queries()
	if len(qs) != 2 {
		t.Fatalf("one refresh sent %d queries, want 2", len(qs))
	}
	for _, q := range qs {
		if q.Namespace != "" || q.Pods != nil || q.LookbackDelta != testMaxStale {
			t.Errorf("refresh query = %+v", q)
		}
	}
	exp, pods := qs[0], qs[1]
	if exp.Scope != promquery.ScopeExporter || pods.Scope != promquery.ScopePods {
		t.Fatalf("scopes = %v, %v", exp.Scope, pods.Scope)
	}
	if strings.Join(exp.Metrics, ",") != strings.Join(metricnames.ProcessMetrics, ",") || !exp.Readings[sm].PerGPU {
		t.Errorf("exporter query = %+v", exp)
	}
	if len(exp.Metrics)+len(pods.Metrics) != len(e.p.metricNames()) || !slices.Contains(pods.Metrics, metricnames.VLLMRequestsWaiting) ||
		pods.Readings[metricnames.VLLMRequestsWaiting].PerGPU {
		t.Errorf("pods query = %+v", pods)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.p.Run(ctx) // refreshes once, then sees the cancelled context
	if n := len(e.prom.Queries()); n != 2 {
		t.Errorf("Run sent %d queries, want one refresh's 2", n)
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{RefreshInterval: 10 * time.Second, MaxStaleness: 10 * time.Second})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, w := range []string{"sample source", "pod lister", "must be longer than the refresh interval"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	_, err = New(Config{Source: &promquery.Fake{}, Pods: failingLister{}, MaxStaleness: time.Second})
	if err == nil || !strings.Contains(err.Error(), "refresh interval must be positive") {
		t.Errorf("zero refresh interval: %v", err)
	}
	for _, nice := range []int{-1, MaxRefreshNice + 1} {
		_, err = New(Config{Source: &promquery.Fake{}, Pods: failingLister{}, RefreshInterval: time.Second, MaxStaleness: time.Minute, RefreshNice: nice})
		if err == nil || !strings.Contains(err.Error(), "refresh nice value must be within 0 (off) and 19") {
			t.Errorf("refresh nice %d: %v", nice, err)
		}
	}
}

func TestSelfMetrics(t *testing.T) {
	vec := append(model.Vector{series(sm, "llm", "qwen-9", "GPU-9", "1", -3, t0)}, qwenSeries...)
	e := newEnv(t, qwenPods, vec)
	e.refresh(t)
	_ = requests["pods by name"](e)
	_ = requests["external"](e)
	_, _ = e.p.GetExternalMetric(context.Background(), "llm", labels.SelectorFromSet(labels.Set{"app": "absent"}), cmprovider.ExternalMetricInfo{Metric: sm})
	e.prom.Set(nil, errors.New("down"))
	_ = e.p.Refresh(context.Background())
	e.clock.advance(12 * time.Second)

	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"spillway_metrics_adapter_snapshot_series", nil, 4},
		{"spillway_metrics_adapter_snapshot_pods", nil, 3},
		{"spillway_metrics_adapter_snapshot_skipped_series", map[string]string{"reason": "invalid_value"}, 1},
		{"spillway_metrics_adapter_refresh_errors_total", map[string]string{"reason": "query"}, 1},
		{"spillway_metrics_adapter_refresh_errors_total", map[string]string{"reason": "partial_response"}, 0},
		{"spillway_metrics_adapter_snapshot_age_seconds", nil, 12},
		{"spillway_metrics_adapter_requests_total", map[string]string{"api": "custom", "outcome": "OK"}, 1},
		{"spillway_metrics_adapter_requests_total", map[string]string{"api": "external", "outcome": "OK"}, 1},
		{"spillway_metrics_adapter_requests_total", map[string]string{"api": "external", "outcome": "NotFound"}, 1},
		{"spillway_metrics_adapter_request_duration_seconds", map[string]string{"api": "external"}, 2}, // sample count
		{"spillway_metrics_adapter_refresh_duration_seconds", nil, 2},                                  // sample count
	}
	for _, w := range want {
		got, ok := gatherValue(t, e.reg, w.name, w.labels)
		if !ok {
			t.Errorf("%s%v not found", w.name, w.labels)
			continue
		}
		if got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
}

// gatherValue reads a gauge/counter value, or a histogram's sample count.
func gatherValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelsMatch(m, want) {
				continue
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func restamp(vec model.Vector, ts time.Time) model.Vector {
	out := make(model.Vector, len(vec))
	for i, s := range vec {
		c := *s
		c.Timestamp = model.TimeFromUnixNano(ts.UnixNano())
		out[i] = &c
	}
	return out
}

// TestConcurrentRefreshAndRequests is for `go test -race`: requests read
// the snapshot while refreshes replace it.
func TestConcurrentRefreshAndRequests(t *testing.T) {
	e := newEnv(t, qwenPods, restamp(qwenSeries, t0))
	e.refresh(t)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				for name, req := range requests {
					if err := req(e); err != nil {
						t.Errorf("%s: %v", name, err)
						return
					}
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		if err := e.p.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}
