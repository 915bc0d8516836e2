package provider

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// shardedQuery stands in for Thanos Query over two Prometheus shards, each
// scraping half of the fleet. While shard B is down it does what Thanos
// does: with partial_response=false it fails the query naming the store;
// a server that ignores the parameter (warnOnly) answers with shard A's
// series and a warning.
type shardedQuery struct {
	warnOnly bool

	mu         sync.Mutex
	shardA     model.Vector
	shardB     model.Vector
	shardBDown bool
	params     []string // partial_response of each request
}

func (s *shardedQuery) set(a, b model.Vector, bDown bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shardA, s.shardB, s.shardBDown = a, b, bDown
}

func (s *shardedQuery) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.params = append(s.params, r.Form.Get(promquery.PartialResponseParam))
	w.Header().Set("Content-Type", "application/json")
	body := apiBody{Status: "success", Data: &apiData{ResultType: "vector", Result: append(model.Vector{}, s.shardA...)}}
	const storeDown = "receive series from Addr: shard-b-sidecar:10901 LabelSets: {shard=\"b\"}: rpc error: code = Unavailable desc = connection refused"
	switch {
	case !s.shardBDown:
		body.Data.Result = append(body.Data.Result, s.shardB...)
	case s.warnOnly || r.Form.Get(promquery.PartialResponseParam) != "false":
		body.Warnings = []string{storeDown}
	default:
		w.WriteHeader(http.StatusUnprocessableEntity)
		body = apiBody{Status: "error", ErrorType: "execution", Error: storeDown}
	}
	_ = json.NewEncoder(w).Encode(body)
}

// apiBody is the Prometheus HTTP API's envelope.
type apiBody struct {
	Status    string   `json:"status"`
	Data      *apiData `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

type apiData struct {
	ResultType string       `json:"resultType"`
	Result     model.Vector `json:"result"`
}

// TestShardDownIsNeverServedAsTheFleet: with one shard down the refresh
// fails (the reason counted), the previous snapshot (both shards) is served
// until it is stale, then requests fail with 503 naming the cause; nothing
// is ever answered from shard A alone.
func TestShardDownIsNeverServedAsTheFleet(t *testing.T) {
	for _, tt := range []struct {
		name       string
		warnOnly   bool
		wantReason string
		wantErr    string
	}{
		{"Thanos fails the query (partial_response=false)", false, metricnames.RefreshFailedQuery, "shard-b-sidecar:10901"},
		{"a server that only warns", true, metricnames.RefreshFailedPartialResponse, `the answer may be partial (a store or shard did not respond), so it is not used; 1 warning(s): "receive series from Addr: shard-b-sidecar:10901`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			thanos := &shardedQuery{warnOnly: tt.warnOnly}
			srv := httptest.NewServer(thanos)
			defer srv.Close()
			client, err := promquery.New(promquery.Config{URL: srv.URL, Timeout: 5 * time.Second, SeriesSelector: promquery.SeriesSelector{
				{Label: metricnames.LabelJob, Op: promquery.MatchEqual, Value: metricnames.ExporterJob},
			}})
			if err != nil {
				t.Fatal(err)
			}
			clk := &fakeClock{t: t0}
			reg := prometheus.NewRegistry()
			p, err := New(Config{
				Source: client, Pods: podLister(t, qwenPods), Registry: reg, Clock: clk,
				RefreshInterval: testRefresh, MaxStaleness: testMaxStale,
			})
			if err != nil {
				t.Fatal(err)
			}
			shards := func(at time.Time) (a, b model.Vector) {
				all := restamp(qwenSeries, at)
				return all[:1], all[1:3] // qwen-1 on shard A; qwen-2 (two GPUs) on shard B
			}
			values := func() map[string]int64 {
				t.Helper()
				list, err := p.GetMetricBySelector(context.Background(), "llm", labels.SelectorFromSet(labels.Set{"app": "isvc.qwen-chat-predictor"}), podInfo(sm), labels.Everything())
				if err != nil {
					t.Fatalf("request: %v", err)
				}
				out := map[string]int64{}
				for _, v := range list.Items {
					out[v.DescribedObject.Name] = v.Value.MilliValue()
				}
				return out
			}

			a, b := shards(clk.Now())
			thanos.set(a, b, false)
			if err := p.Refresh(context.Background()); err != nil {
				t.Fatalf("both shards up: %v", err)
			}
			want := map[string]int64{"qwen-1": 80000, "qwen-2": 30000}
			if got := values(); !equalValues(got, want) {
				t.Fatalf("both shards up: %v, want %v", got, want)
			}

			clk.advance(testRefresh)
			a, b = shards(clk.Now())
			thanos.set(a, b, true)
			err = p.Refresh(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("refresh with shard B down: %v, want an error containing %q", err, tt.wantErr)
			}
			var partial *promquery.PartialResponseError
			if errors.As(err, &partial) != tt.warnOnly {
				t.Errorf("error %v: *PartialResponseError = %t, want %t", err, !tt.warnOnly, tt.warnOnly)
			}
			if got, _ := gatherValue(t, reg, metricnames.AdapterRefreshErrors, map[string]string{metricnames.LabelAdapterReason: tt.wantReason}); got != 1 {
				t.Errorf("refresh errors{reason=%q} = %v, want 1", tt.wantReason, got)
			}
			// The snapshot of both shards stays, qwen-2 included.
			if got := values(); !equalValues(got, want) {
				t.Errorf("after the failed refresh: %v, want the previous snapshot %v", got, want)
			}

			clk.advance(testMaxStale)
			_, err = p.GetMetricBySelector(context.Background(), "llm", labels.SelectorFromSet(labels.Set{"app": "isvc.qwen-chat-predictor"}), podInfo(sm), labels.Everything())
			wantStatus(t, err, http.StatusServiceUnavailable, "older than the maximum staleness", tt.wantErr)

			a, b = shards(clk.Now())
			thanos.set(a, b, false)
			if err := p.Refresh(context.Background()); err != nil {
				t.Fatalf("shard B back: %v", err)
			}
			if got := values(); !equalValues(got, want) {
				t.Errorf("shard B back: %v, want %v", got, want)
			}
			thanos.mu.Lock()
			defer thanos.mu.Unlock()
			for i, v := range thanos.params {
				if v != "false" {
					t.Errorf("request %d sent partial_response=%q, want false", i, v)
				}
			}
		})
	}
}

func equalValues(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
