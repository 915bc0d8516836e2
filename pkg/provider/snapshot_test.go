package provider

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/model"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Answers copy parts the snapshot built once (quantities with their string
// cached, the {pod} labels maps). An answer must not change when a later
// refresh replaces the snapshot, a new value must be served in full, and a
// pod's labels map is carried over rather than rebuilt.
func TestAnswersShareSnapshotParts(t *testing.T) {
	pods := []pod{
		{ns: "ml", name: "a", labels: map[string]string{"app": "web"}},
		{ns: "ml", name: "b", labels: map[string]string{"app": "web"}},
	}
	e := newEnv(t, pods, model.Vector{
		series(sm, "ml", "a", "GPU-a", "1", 40, t0),
		series(sm, "ml", "b", "GPU-b", "1", 70.125, t0),
	})
	e.refresh(t)
	ctx := context.Background()
	ext := cmprovider.ExternalMetricInfo{Metric: sm}
	first, err := e.p.GetExternalMetric(ctx, "ml", sel(t, "app=web"), ext)
	if err != nil {
		t.Fatal(err)
	}
	firstJSON, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"metricLabels":{"pod":"a"}`, `"value":"40"`, `"metricLabels":{"pod":"b"}`, `"value":"70125m"`} {
		if !strings.Contains(string(firstJSON), want) {
			t.Errorf("first answer %s lacks %s", firstJSON, want)
		}
	}

	e.clock.advance(testRefresh)
	e.prom.Set(model.Vector{
		series(sm, "ml", "a", "GPU-a", "1", 55.5, e.clock.t),
		series(sm, "ml", "b", "GPU-b", "1", 70.125, e.clock.t),
	}, nil)
	e.refresh(t)
	second, err := e.p.GetExternalMetric(ctx, "ml", sel(t, "app=web"), ext)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(first); string(again) != string(firstJSON) {
		t.Errorf("the first answer changed after a refresh:\n%s\nnow\n%s", firstJSON, again)
	}
	if got := second.Items[0].Value.String(); got != "55500m" {
		t.Errorf("pod a's new value = %s, want 55500m", got)
	}
	for i := range second.Items {
		if reflect.ValueOf(second.Items[i].MetricLabels).UnsafePointer() != reflect.ValueOf(first.Items[i].MetricLabels).UnsafePointer() {
			t.Errorf("item %d: the {pod} labels map was rebuilt, not carried over", i)
		}
	}
	if second.Items[1].Value.String() != "70125m" || second.Items[1].MetricLabels[metricnames.LabelPod] != "b" {
		t.Errorf("pod b's item = %+v", second.Items[1])
	}
}

// Concurrent answers, their JSON encoding and refreshes share the
// snapshots' parts; under -race this fails if anything writes them.
func TestConcurrentAnswersAndRefreshes(t *testing.T) {
	pods := []pod{
		{ns: "ml", name: "a", labels: map[string]string{"app": "web"}},
		{ns: "ml", name: "b", labels: map[string]string{"app": "web"}},
	}
	e := newEnv(t, pods, model.Vector{
		series(sm, "ml", "a", "GPU-a", "1", 40, t0),
		series(sm, "ml", "b", "GPU-b", "1", 70, t0),
	})
	e.refresh(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				ext, err := e.p.GetExternalMetric(ctx, "ml", sel(t, "app=web"), cmprovider.ExternalMetricInfo{Metric: sm})
				if err != nil {
					t.Error(err)
					return
				}
				custom, err := e.p.GetMetricBySelector(ctx, "ml", sel(t, "app=web"), podInfo(sm), nil)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := json.Marshal(ext); err != nil {
					t.Error(err)
				}
				if _, err := json.Marshal(custom); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if err := e.p.Refresh(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
}
