package provider

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/promquery"
)

// TestMinPodDataShare: with part of the selected pods silent, both APIs
// answer only when enough of the pods that should report do. Pods younger
// than the maximum staleness, pending or being deleted are not expected to
// report and count only when they do.
func TestMinPodDataShare(t *testing.T) {
	old, young := t0.Add(-time.Hour), t0.Add(-testMaxStale/2)
	web := func(name string, p pod) pod {
		p.ns, p.name, p.labels = "ns", name, map[string]string{"app": "web"}
		return p
	}
	tests := []struct {
		name     string
		share    float64
		pods     []pod
		withData []string
		// want is 200, or the status code of the refusal.
		want int
		// wantCount is the number of items served when answered.
		wantCount int
	}{
		{
			name:     "all report",
			share:    0.5,
			pods:     []pod{web("a", pod{started: old}), web("b", pod{started: old}), web("c", pod{started: old})},
			withData: []string{"a", "b", "c"}, want: http.StatusOK, wantCount: 3,
		},
		{
			name:     "one node's exporter gone: one of three reports",
			share:    0.5,
			pods:     []pod{web("a", pod{started: old}), web("b", pod{started: old}), web("c", pod{started: old})},
			withData: []string{"a"}, want: http.StatusServiceUnavailable,
		},
		{
			name:     "exactly the share",
			share:    0.5,
			pods:     []pod{web("a", pod{started: old}), web("b", pod{started: old})},
			withData: []string{"a"}, want: http.StatusOK, wantCount: 1,
		},
		{
			name:     "share 0 serves what there is",
			share:    0,
			pods:     []pod{web("a", pod{started: old}), web("b", pod{started: old}), web("c", pod{started: old})},
			withData: []string{"a"}, want: http.StatusOK, wantCount: 1,
		},
		{
			name:     "share 1 needs every expected pod",
			share:    1,
			pods:     []pod{web("a", pod{started: old}), web("b", pod{started: old}), web("c", pod{started: old})},
			withData: []string{"a", "b"}, want: http.StatusServiceUnavailable,
		},
		{
			name:  "a scale-out's young pods do not block it",
			share: 1,
			pods: []pod{web("a", pod{started: old}), web("b", pod{started: young}), web("c", pod{started: young}),
				web("d", pod{phase: corev1.PodPending})},
			withData: []string{"a"}, want: http.StatusOK, wantCount: 1,
		},
		{
			name:     "young pods that report count",
			share:    1,
			pods:     []pod{web("a", pod{started: old}), web("b", pod{started: young})},
			withData: []string{"a", "b"}, want: http.StatusOK, wantCount: 2,
		},
		{
			name:     "terminating pods are not expected",
			share:    1,
			pods:     []pod{web("a", pod{started: old}), web("b", pod{started: old, deleting: true})},
			withData: []string{"a"}, want: http.StatusOK, wantCount: 1,
		},
		{
			name:     "a running pod without a start time is expected",
			share:    1,
			pods:     []pod{web("a", pod{started: old}), web("b", pod{})},
			withData: []string{"a"}, want: http.StatusServiceUnavailable,
		},
		{
			name:  "no data at all stays 404",
			share: 0.5,
			pods:  []pod{web("a", pod{started: young}), web("b", pod{started: old})},
			want:  http.StatusNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var vec model.Vector
			for _, n := range tt.withData {
				vec = append(vec, series(sm, "ns", n, "GPU-a", "1", 10, t0))
			}
			e := newEnvConfig(t, tt.pods, vec, nil, tt.share)
			e.refresh(t)
			ctx := context.Background()
			list, err := e.p.GetMetricBySelector(ctx, "ns", sel(t, "app=web"), podInfo(sm), nil)
			ext, extErr := e.p.GetExternalMetric(ctx, "ns", sel(t, "app=web"), cmprovider.ExternalMetricInfo{Metric: sm})
			agg, aggErr := e.p.GetExternalMetric(ctx, "ns", sel(t, "app=web,"+AggregateKey+"=avg"), cmprovider.ExternalMetricInfo{Metric: sm})
			if tt.want != http.StatusOK {
				for _, err := range []error{err, extErr, aggErr} {
					wantStatus(t, err, int32(tt.want), `"app=web"`, "namespace ns")
				}
				if tt.want == http.StatusServiceUnavailable {
					wantStatus(t, err, int32(tt.want), "only "+strconv.Itoa(len(tt.withData))+" of the", "--min-pod-data-share")
					if got := testutil.ToFloat64(e.p.metrics.partialRefusals); got != 3 {
						t.Errorf("partial-data refusals = %v, want 3", got)
					}
				}
				return
			}
			for _, err := range []error{err, extErr, aggErr} {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
			}
			if len(list.Items) != tt.wantCount || len(ext.Items) != tt.wantCount {
				t.Errorf("served %d custom and %d external items, want %d", len(list.Items), len(ext.Items), tt.wantCount)
			}
			if got := agg.Items[0].MetricLabels[itemLabelPodsUsed]; got != strconv.Itoa(tt.wantCount) {
				t.Errorf("aggregate over %s pods, want %d", got, tt.wantCount)
			}
		})
	}
}

func TestMinPodDataShareValidated(t *testing.T) {
	for _, share := range []float64{-0.1, 1.01, math.NaN()} {
		_, err := New(Config{Source: &promquery.Fake{}, Pods: podLister(t, nil), MinPodDataShare: share, RefreshInterval: time.Second, MaxStaleness: time.Minute})
		if err == nil || !strings.Contains(err.Error(), "minimum share of pods with data must be within [0, 1]") {
			t.Errorf("share %v: error %v", share, err)
		}
	}
}
