package provider

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// onHost is a series as the exporter on node host would publish it; "" is
// a series without the Hostname label.
func onHost(s *model.Sample, host string) *model.Sample {
	m := s.Metric.Clone()
	if host == "" {
		delete(m, metricnames.LabelHostname)
	} else {
		m[metricnames.LabelHostname] = model.LabelValue(host)
	}
	s.Metric = m
	return s
}

// TestProvenance: a series counts only where its Hostname is the node its
// pod is bound to. Forged series — any value, any GPU UUID — for a pod on
// another node change nothing that is served, and each is counted under its
// reason.
func TestProvenance(t *testing.T) {
	victim := pod{ns: "victim", name: "pred-1", labels: map[string]string{"app": "pred"}, node: "gpu-a"}
	honest := onHost(series(sm, "victim", "pred-1", "GPU-real", "1", 20, t0), "gpu-a")
	tests := []struct {
		name   string
		pods   []pod
		vec    model.Vector
		want   float64 // served value of victim/pred-1; <0: none served (404)
		reject map[string]float64
	}{
		{
			name: "the exporter on the pod's node is served",
			pods: []pod{victim},
			vec:  model.Vector{honest},
			want: 20,
		},
		{
			name: "a forged 100 under a made-up GPU from another host does not raise the value",
			pods: []pod{victim},
			vec:  model.Vector{honest, onHost(series(sm, "victim", "pred-1", "GPU-forged", "1", 100, t0), "mallory-node")},
			want: 20, reject: map[string]float64{metricnames.RejectedHostnameMismatch: 1},
		},
		{
			name: "a forged 0 under a made-up GPU does not pull the value down",
			pods: []pod{victim},
			vec:  model.Vector{honest, onHost(series(sm, "victim", "pred-1", "GPU-forged", "1", 0, t0), "gpu-b")},
			want: 20, reject: map[string]float64{metricnames.RejectedHostnameMismatch: 1},
		},
		{
			name: "a forged copy of the real process on another host does not replace it",
			pods: []pod{victim},
			vec:  model.Vector{honest, onHost(series(sm, "victim", "pred-1", "GPU-real", "1", 100, t0.Add(time.Second)), "gpu-b")},
			want: 20, reject: map[string]float64{metricnames.RejectedHostnameMismatch: 1},
		},
		{
			name: "a series without Hostname is dropped",
			pods: []pod{victim},
			vec:  model.Vector{honest, onHost(series(sm, "victim", "pred-1", "GPU-forged", "1", 100, t0), "")},
			want: 20, reject: map[string]float64{metricnames.RejectedMissingHostname: 1},
		},
		{
			name: "only a forged series: nothing is served rather than the forgery",
			pods: []pod{victim},
			vec:  model.Vector{onHost(series(sm, "victim", "pred-1", "GPU-forged", "1", 100, t0), "gpu-b")},
			want: -1, reject: map[string]float64{metricnames.RejectedHostnameMismatch: 1},
		},
		{
			name: "a pod recreated on another node: the old node's series no longer count",
			pods: []pod{{ns: "victim", name: "pred-1", labels: victim.labels, node: "gpu-b"}},
			vec:  model.Vector{honest},
			want: -1, reject: map[string]float64{metricnames.RejectedHostnameMismatch: 1},
		},
		{
			name: "an unscheduled pod has no exporter",
			pods: []pod{{ns: "victim", name: "pred-1", labels: victim.labels, unscheduled: true}},
			vec:  model.Vector{honest},
			want: -1, reject: map[string]float64{metricnames.RejectedUnscheduledPod: 1},
		},
		{
			name: "series of pods the informer does not know are dropped",
			pods: []pod{victim},
			vec: model.Vector{
				honest,
				onHost(series(sm, "victim", "ghost", "GPU-1", "1", 50, t0), "gpu-a"),
				onHost(series(sm, "elsewhere", "pred-1", "GPU-1", "1", 50, t0), "gpu-a"),
			},
			want: 20, reject: map[string]float64{metricnames.RejectedUnknownPod: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.pods, tt.vec)
			e.refresh(t)
			got, err := e.p.GetMetricBySelector(context.Background(), "victim", labels.SelectorFromSet(labels.Set{"app": "pred"}), podInfo(sm), labels.Everything())
			switch {
			case tt.want < 0:
				wantStatus(t, err, http.StatusNotFound, "has a value")
			case err != nil:
				t.Fatalf("GetMetricBySelector: %v", err)
			case len(got.Items) != 1 || got.Items[0].Value.MilliValue() != int64(tt.want*1000):
				t.Errorf("served %+v, want one item of %v", got.Items, tt.want)
			}
			ext, err := e.p.GetExternalMetric(context.Background(), "victim", labels.SelectorFromSet(labels.Set{"app": "pred", AggregateKey: AggregateMax}), cmprovider.ExternalMetricInfo{Metric: sm})
			switch {
			case tt.want < 0:
				wantStatus(t, err, http.StatusNotFound)
			case err != nil:
				t.Fatalf("GetExternalMetric: %v", err)
			case ext.Items[0].Value.MilliValue() != int64(tt.want*1000):
				t.Errorf("external max = %s, want %v", ext.Items[0].Value.String(), tt.want)
			}
			for _, reason := range metricnames.RejectedReasons {
				got, ok := gatherValue(t, e.reg, metricnames.AdapterSeriesRejected, map[string]string{metricnames.LabelAdapterReason: reason})
				if !ok {
					t.Errorf("%s{reason=%q} is not exported", metricnames.AdapterSeriesRejected, reason)
				}
				if want := tt.reject[reason]; got != want {
					t.Errorf("%s{reason=%q} = %v, want %v", metricnames.AdapterSeriesRejected, reason, got, want)
				}
			}
		})
	}
}

// TestRejectionsAreCountedPerRefresh: a forged series present for several
// refreshes is counted on each, so rate() shows an attack that goes on.
func TestRejectionsAreCountedPerRefresh(t *testing.T) {
	e := newEnv(t, []pod{{ns: "victim", name: "pred-1"}}, model.Vector{
		onHost(series(sm, "victim", "pred-1", "GPU-forged", "1", 100, t0), "mallory-node"),
	})
	for range 3 {
		e.refresh(t)
	}
	got, _ := gatherValue(t, e.reg, metricnames.AdapterSeriesRejected, map[string]string{metricnames.LabelAdapterReason: metricnames.RejectedHostnameMismatch})
	if got != 3 {
		t.Errorf("rejections after 3 refreshes = %v, want 3", got)
	}
}

// TestReadiness: ready once the first snapshot (which waits for the pod
// informer) has loaded, and from then on whatever happens to Prometheus or
// the snapshot's age.
func TestReadiness(t *testing.T) {
	tests := []struct {
		name string
		// steps run in order; ready is the expected Ready() after each.
		steps []func(e *env, synced *bool)
		ready []bool
		msg   string // in the last not-ready error
	}{
		{
			name:  "not ready before the first snapshot",
			steps: []func(*env, *bool){func(*env, *bool) {}},
			ready: []bool{false},
			msg:   "no GPU metrics loaded",
		},
		{
			name: "no snapshot while the pod informer has not synced",
			steps: []func(*env, *bool){
				func(e *env, synced *bool) { *synced = false; _ = e.p.Refresh(context.Background()) },
				func(e *env, synced *bool) { *synced = true; _ = e.p.Refresh(context.Background()) },
			},
			ready: []bool{false, true},
		},
		{
			name: "a failing first refresh keeps it unready and says why",
			steps: []func(*env, *bool){
				func(e *env, _ *bool) {
					e.prom.Set(nil, errors.New("connection refused"))
					_ = e.p.Refresh(context.Background())
				},
			},
			ready: []bool{false},
			msg:   "connection refused",
		},
		{
			name: "stale and failing later: still ready",
			steps: []func(*env, *bool){
				func(e *env, _ *bool) { _ = e.p.Refresh(context.Background()) },
				func(e *env, _ *bool) {
					e.prom.Set(nil, errors.New("connection refused"))
					_ = e.p.Refresh(context.Background())
					e.clock.advance(10 * testMaxStale)
				},
				func(e *env, _ *bool) { e.clock.advance(time.Hour) },
			},
			ready: []bool{true, true, true},
		},
		{
			name: "an empty result is a snapshot",
			steps: []func(*env, *bool){
				func(e *env, _ *bool) { e.prom.Set(model.Vector{}, nil); _ = e.p.Refresh(context.Background()) },
			},
			ready: []bool{true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synced := true
			e := newEnvSynced(t, qwenPods, qwenSeries, func() bool { return synced })
			var last error
			for i, step := range tt.steps {
				step(e, &synced)
				last = e.p.Ready()
				if (last == nil) != tt.ready[i] {
					t.Errorf("after step %d: Ready() = %v, want ready=%v", i, last, tt.ready[i])
				}
			}
			if tt.msg != "" && (last == nil || !strings.Contains(last.Error(), tt.msg)) {
				t.Errorf("Ready() = %v, want it to mention %q", last, tt.msg)
			}
		})
	}
}

// TestStaleRequestsNameTheAge: with readiness left on, a request is where
// staleness shows — a 503 with the snapshot's age — and the age gauge.
func TestStaleRequestsNameTheAge(t *testing.T) {
	e := newEnv(t, qwenPods, qwenSeries)
	e.refresh(t)
	e.clock.advance(95 * time.Second)
	_, err := e.p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "qwen-1"}, podInfo(sm), labels.Everything())
	wantStatus(t, err, http.StatusServiceUnavailable, "snapshot is 1m35s old", "maximum staleness 30s")
	if age, _ := gatherValue(t, e.reg, metricnames.AdapterSnapshotAge, nil); age != 95 {
		t.Errorf("%s = %v, want 95", metricnames.AdapterSnapshotAge, age)
	}
	if err := e.p.Ready(); err != nil {
		t.Errorf("Ready() = %v", err)
	}
}

// TestRunWaitsForThePodInformer: no query reaches Prometheus before the pod
// informer has synced, so the first snapshot never rejects every series.
func TestRunWaitsForThePodInformer(t *testing.T) {
	e := newEnvSynced(t, qwenPods, qwenSeries, func() bool { return false })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.p.Run(ctx)
	if n := len(e.prom.Queries()); n != 0 {
		t.Errorf("Run sent %d queries before the pod informer synced", n)
	}
}
