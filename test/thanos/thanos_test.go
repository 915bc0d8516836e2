// Package thanos tests the metrics adapter reading a sharded fleet through
// Thanos: two Prometheus shards, each scraping half of a synthetic fleet
// and each with a Thanos sidecar, and `thanos query` over both, all real
// binaries on a real control plane. The adapter's Prometheus URL is the
// query's. When a shard is down the adapter must not serve the other half
// of the fleet as if it were all of it (the partial-response rule).
package thanos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/spillway-dev/spillway/internal/fleetsim"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, localcluster.Options{NoKarpenter: true}, func(c *localcluster.Cluster) { cluster = c }))
}

const (
	shards = 2
	// The exporter's default scrape identity, which the adapter selects.
	exporterJob = "spillway-gpu-exporter"
	staleness   = 12 * time.Second
	refresh     = 2 * time.Second
)

// The fleet: 2 apps × 4 pods, 4 series each; pods alternate between the
// shards, so each app has two pods in each.
var fleet = fleetsim.Fleet{Namespace: "thanos-fleet", Node: "thanos-fleet-node", Apps: 2, PodsPerApp: 4}

// podValue is what the adapter serves for pod j of app a when every one of
// the pod's processes reports base+index: the SM utilization row sums a
// GPU's 2 processes and averages the pod's 2 GPUs, so 2×(base+index).
func podValue(base, a, j int) float64 { return float64(2 * (base + a*fleet.PodsPerApp + j)) }

// series returns the fleet's series with every process of pod index i at
// base+i (below 50, so no GPU's sum reaches the 100 cap).
func series(base int) []fleetsim.Series {
	ss := fleet.Series()
	for i := range ss {
		ss[i].Value = base + ss[i].PodIndex
	}
	return ss
}

// Bases of the values before and after the outage; their pod values never
// coincide (2×(10..17) against 2×(30..37)).
const (
	baseBefore = 10
	baseAfter  = 30
)

type setup struct {
	thanos  *localcluster.Thanos
	servers []*fleetsim.Server
	adapter *framework.Adapter
}

func start(t *testing.T) *setup {
	t.Helper()
	ctx := context.Background()
	if _, err := fleet.CreatePods(ctx, cluster.RESTConfig(), io.Discard); err != nil {
		t.Fatal(err)
	}
	s := &setup{}
	all := series(baseBefore)
	var targets [][]localcluster.ScrapeTarget
	for i := range shards {
		srv, err := fleetsim.Serve(fleetsim.Render(fleetsim.Shard(all, i, shards)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		s.servers = append(s.servers, srv)
		targets = append(targets, []localcluster.ScrapeTarget{{Job: exporterJob, Address: srv.Addr}})
	}
	var err error
	if s.thanos, err = cluster.StartThanos(ctx, "thanos", localcluster.ThanosOptions{Shards: targets, ScrapeInterval: time.Second}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.thanos.Stop(); err != nil {
			t.Errorf("stopping thanos: %v", err)
		}
	})
	if err := fleetsim.WaitSeries(ctx, s.thanos.QueryURL, len(all), 2*time.Minute, io.Discard); err != nil {
		t.Fatal(err)
	}
	if s.adapter, err = framework.StartAdapter(ctx, cluster, "../../bin", s.thanos.QueryURL, refresh,
		[]string{"--max-staleness=" + staleness.String()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.adapter.Proc.Stop(); err != nil {
			t.Errorf("stopping the adapter: %v", err)
		}
	})
	return s
}

// TestThanosShards: the adapter serves the whole fleet through Thanos
// Query, and with one shard down it refuses, rather than serving the other
// half as fresh; once the shard is back it serves the whole fleet again.
func TestThanosShards(t *testing.T) {
	s := start(t)
	waitServed(t, baseBefore, "the whole fleet through Thanos Query")

	down := s.thanos.Shards[1]
	if err := down.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = down.Start(context.Background())
		}
	})
	errorsBefore := refreshErrors(t, s.adapter)
	// The remaining shard's values change, so a refresh that used its
	// half of the fleet would show.
	s.servers[0].Set(fleetsim.Render(fleetsim.Shard(series(baseAfter), 0, shards)))
	waitShardHolds(t, s.thanos.Shards[0], baseAfter)

	t.Run("thanos reports the outage", func(t *testing.T) {
		// Without this the rest would prove nothing: a query layer that
		// drops a down shard silently leaves the adapter nothing to see.
		strict := instantQuery(t, s.thanos.QueryURL, "false")
		if strict.Status != "error" || !strings.Contains(strict.Error, down.GRPCAddr) {
			t.Errorf("partial_response=false with shard 1 down: HTTP %d %s %q; want an error naming %s", strict.HTTPStatus, strict.Status, strict.Error, down.GRPCAddr)
		}
		partial := instantQuery(t, s.thanos.QueryURL, "true")
		if partial.Status != "success" || len(partial.Warnings) == 0 || !strings.Contains(strings.Join(partial.Warnings, " "), down.GRPCAddr) {
			t.Errorf("partial_response=true with shard 1 down: HTTP %d %s, warnings %q; want success with a warning naming %s", partial.HTTPStatus, partial.Status, partial.Warnings, down.GRPCAddr)
		}
	})

	t.Run("the adapter serves nothing of the remaining half as fresh", func(t *testing.T) {
		// Until the last full snapshot is stale the adapter may serve it
		// (values from before the outage); never the remaining shard's
		// new values. Then it serves nothing, and never 0.
		deadline := time.Now().Add(staleness + 3*refresh)
		var lastErr error
		for time.Now().Before(deadline) {
			for a := range fleet.Apps {
				items, err := podValues(context.Background(), a)
				lastErr = err
				for pod, v := range items {
					if v == 0 {
						t.Fatalf("pod %s served as 0 during the outage", pod)
					}
					if isAfter(pod, v) {
						t.Fatalf("pod %s served at %v, the remaining shard's new value: half the fleet was served as fresh", pod, v)
					}
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		for a := range fleet.Apps {
			for _, path := range appPaths(a) {
				l, err := get(context.Background(), path)
				if err == nil {
					t.Errorf("%s served %d items %+v after the last full snapshot went stale", path, len(l.Items), l.Items)
					continue
				}
				lastErr = err
			}
		}
		if n := refreshErrors(t, s.adapter); n <= errorsBefore {
			t.Errorf("refresh errors stayed at %v during the outage", n)
		}
		// The refusal says why: the refresh's error names the store Thanos
		// could not reach.
		if lastErr == nil || !strings.Contains(lastErr.Error(), down.GRPCAddr) {
			t.Errorf("the refusal does not name the unreachable shard %s: %v", down.GRPCAddr, lastErr)
		}
		t.Logf("refusal during the outage: %v", lastErr)
	})

	restarted = true
	if err := down.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.thanos.WaitHealthy(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Shard 0 now serves baseAfter; shard 1 still baseBefore.
	waitServedMixed(t)
}

// appPaths are the requests for one app's pods: the custom Pods API by
// selector and the external API, per pod and averaged.
func appPaths(a int) []string {
	sel := url.QueryEscape("app=" + fleetsim.AppName(a))
	avg := url.QueryEscape("app=" + fleetsim.AppName(a) + ",spillway.dev/aggregate=avg")
	return []string{
		"/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + fleet.Namespace + "/pods/%2A/" + metricnames.ProcessSMUtil + "?labelSelector=" + sel,
		"/apis/external.metrics.k8s.io/v1beta1/namespaces/" + fleet.Namespace + "/" + metricnames.ProcessSMUtil + "?labelSelector=" + sel,
		"/apis/external.metrics.k8s.io/v1beta1/namespaces/" + fleet.Namespace + "/" + metricnames.ProcessSMUtil + "?labelSelector=" + avg,
	}
}

// expected is the value each pod should be served at when shard i's pods
// report from base[i].
func expected(base [shards]int) map[string]float64 {
	want := map[string]float64{}
	for a := range fleet.Apps {
		for j := range fleet.PodsPerApp {
			shard := fleetsim.ShardOfPod(a, j, fleet.PodsPerApp, shards)
			want[fleetsim.PodName(fleetsim.AppName(a), j)] = podValue(base[shard], a, j)
		}
	}
	return want
}

// isAfter reports whether v is the value pod reports after the outage
// began (its shard-0 value from baseAfter).
func isAfter(pod string, v float64) bool {
	for a := range fleet.Apps {
		for j := range fleet.PodsPerApp {
			if fleetsim.PodName(fleetsim.AppName(a), j) == pod {
				return v == podValue(baseAfter, a, j)
			}
		}
	}
	return false
}

func waitServed(t *testing.T, base int, what string) {
	t.Helper()
	waitValues(t, expected([shards]int{base, base}), what)
}

func waitServedMixed(t *testing.T) {
	t.Helper()
	waitValues(t, expected([shards]int{baseAfter, baseBefore}), "the whole fleet again after the shard came back")
}

// waitValues waits until every app's pods are served at want by the custom
// Pods API, the external API per pod, and its average.
func waitValues(t *testing.T, want map[string]float64, what string) {
	t.Helper()
	framework.Eventually(t, 2*time.Minute, time.Second, what, func(ctx context.Context) (bool, string) {
		for a := range fleet.Apps {
			paths := appPaths(a)
			var sum float64
			for j := range fleet.PodsPerApp {
				sum += want[fleetsim.PodName(fleetsim.AppName(a), j)]
			}
			for i, p := range paths {
				l, err := get(ctx, p)
				if err != nil {
					return false, err.Error()
				}
				if i == 2 { // the average: one item
					if len(l.Items) != 1 {
						return false, fmt.Sprintf("%s: %d items", p, len(l.Items))
					}
					if got, w := quantity(l.Items[0].Value), sum/float64(fleet.PodsPerApp); !near(got, w) {
						return false, fmt.Sprintf("%s: average %v, want %v", p, got, w)
					}
					continue
				}
				got := map[string]float64{}
				for _, it := range l.Items {
					got[it.pod()] = quantity(it.Value)
				}
				if len(got) != fleet.PodsPerApp {
					return false, fmt.Sprintf("%s: %d pods served (%v), want %d", p, len(got), got, fleet.PodsPerApp)
				}
				for pod, v := range got {
					if !near(v, want[pod]) {
						return false, fmt.Sprintf("%s: pod %s at %v, want %v", p, pod, v, want[pod])
					}
				}
			}
		}
		return true, ""
	})
}

func near(a, b float64) bool { return a > b-0.01 && a < b+0.01 }

// podValues returns the values the custom Pods API serves for app a's
// pods, or the error it answers with.
func podValues(ctx context.Context, a int) (map[string]float64, error) {
	l, err := get(ctx, appPaths(a)[0])
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, it := range l.Items {
		out[it.pod()] = quantity(it.Value)
	}
	return out, nil
}

type metricList struct {
	Items []item `json:"items"`
}

type item struct {
	DescribedObject struct {
		Name string `json:"name"`
	} `json:"describedObject"`
	MetricLabels map[string]string `json:"metricLabels"`
	Value        string            `json:"value"`
}

// pod is the pod an item is about: the described object of a custom
// metric, the pod label of an external one.
func (i item) pod() string {
	if i.DescribedObject.Name != "" {
		return i.DescribedObject.Name
	}
	return i.MetricLabels[metricnames.LabelPod]
}

func quantity(s string) float64 {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return -1
	}
	return q.AsApproximateFloat64()
}

// get asks kube-apiserver (so the aggregator) for a metrics path.
func get(ctx context.Context, path string) (*metricList, error) {
	u, err := url.Parse(path)
	if err != nil {
		return nil, err
	}
	req := cluster.Client().Discovery().RESTClient().Get().AbsPath(u.Path)
	for k, vs := range u.Query() {
		for _, v := range vs {
			req = req.Param(k, v)
		}
	}
	raw, err := req.DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, raw)
	}
	var l metricList
	return &l, json.Unmarshal(raw, &l)
}

// refreshErrors is the adapter's count of failed refreshes, summed over
// whatever labels the counter carries.
func refreshErrors(t *testing.T, a *framework.Adapter) float64 {
	t.Helper()
	var n float64
	err := framework.ScrapeMetrics(context.Background(), a.SelfMetricsAddr, func(series string, v float64) {
		if series == metricnames.AdapterRefreshErrors || strings.HasPrefix(series, metricnames.AdapterRefreshErrors+"{") {
			n += v
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitShardHolds waits until a shard's own Prometheus has scraped the
// values from base for all of its series.
func waitShardHolds(t *testing.T, s *localcluster.ThanosShard, base int) {
	t.Helper()
	q := fmt.Sprintf("count(%s >= %d)", metricnames.ProcessSMUtil, base)
	want := len(fleetsim.Shard(fleet.Series(), s.Index, shards))
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "shard's Prometheus to hold the new values", func(ctx context.Context) (bool, string) {
		n, err := count(ctx, s.Prometheus.URL, q)
		if err != nil {
			return false, err.Error()
		}
		return n == want, fmt.Sprintf("%d of %d series at the new values", n, want)
	})
}

func count(ctx context.Context, base, q string) (int, error) {
	r, err := query(ctx, base, url.Values{"query": {q}})
	if err != nil {
		return 0, err
	}
	if r.Status != "success" || len(r.Data.Result) == 0 {
		return 0, fmt.Errorf("%s: %s %s", q, r.Status, r.Error)
	}
	var n int
	_, err = fmt.Sscan(r.Data.Result[0].Value[1].(string), &n)
	return n, err
}

// queryResult is a Prometheus HTTP API answer.
type queryResult struct {
	HTTPStatus int
	Status     string   `json:"status"`
	ErrorType  string   `json:"errorType"`
	Error      string   `json:"error"`
	Warnings   []string `json:"warnings"`
	Data       struct {
		Result []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func query(ctx context.Context, base string, form url.Values) (*queryResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r queryResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	r.HTTPStatus = resp.StatusCode
	return &r, nil
}

// instantQuery asks Thanos Query for the fleet's series with
// partial_response set to partial.
func instantQuery(t *testing.T, base, partial string) *queryResult {
	t.Helper()
	r, err := query(context.Background(), base, url.Values{"query": {metricnames.ProcessSMUtil}, "partial_response": {partial}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("partial_response=%s: HTTP %d, status %s, errorType %q, error %q, warnings %q, %d series",
		partial, r.HTTPStatus, r.Status, r.ErrorType, r.Error, r.Warnings, len(r.Data.Result))
	return r
}
