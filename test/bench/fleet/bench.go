package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/fleetsim"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/metrictable"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/test/framework"
)

const (
	shards       = 2
	seriesPerPod = fleetsim.SeriesPerPod
	namespace    = "fleet"
	node         = "fleet-gpu-node"
	// exporterJob is the exporter's default scrape identity, which the
	// adapter selects by default.
	exporterJob = "spillway-gpu-exporter"
	// directQueryRuns is how often the adapter's query is timed directly
	// against Thanos Query and one shard per size (the median is reported).
	directQueryRuns = 3
)

type bench struct {
	o      options
	stdout io.Writer
	log    io.Writer
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[fleet] "+format+"\n", args...)
}

func (b *bench) run(ctx context.Context) (err error) {
	started := time.Now()
	binDir, err := filepath.Abs(b.o.binDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(binDir, "spillway-metrics-adapter")); err != nil {
		return fmt.Errorf("spillway-metrics-adapter not found in %s: run 'make build' first", binDir)
	}
	// Builds first, so no cold build runs while a control plane waits.
	if _, err := localcluster.EnsureThanos(ctx, b.log); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "spillway-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	loadBin := filepath.Join(tmp, "adapterload")
	build := exec.CommandContext(ctx, "go", "build", "-o", loadBin, "./test/bench/adapterload")
	build.Dir = b.o.repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building test/bench/adapterload in %s: %w\n%s", b.o.repoRoot, err, out)
	}

	servers := make([]*fleetsim.Server, shards)
	targets := make([][]localcluster.ScrapeTarget, shards)
	for i := range servers {
		if servers[i], err = fleetsim.Serve(fleetsim.Render(nil)); err != nil {
			return err
		}
		defer servers[i].Close()
		targets[i] = []localcluster.ScrapeTarget{{Job: exporterJob, Address: servers[i].Addr}}
	}

	c, err := localcluster.Start(ctx, localcluster.Options{NoKarpenter: true, Log: b.log, KeepDir: b.o.keepDir})
	if err != nil {
		return fmt.Errorf("starting the local cluster: %w", err)
	}
	defer func() { c.StopAfter(ctx, err, b.log) }()
	th, err := c.StartThanos(ctx, "thanos", localcluster.ThanosOptions{Shards: targets, ScrapeInterval: b.o.scrapeInterval})
	if err != nil {
		return err
	}
	adapters, closeProxy, err := b.startAdapters(ctx, c, binDir, th.QueryURL)
	if err != nil {
		return err
	}
	defer closeProxy()

	var rows []row
	prevApps := 0
	for _, size := range b.o.sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		fleet := fleetsim.Fleet{Namespace: namespace, Node: node, Apps: size / (b.o.podsPerApp * seriesPerPod), PodsPerApp: b.o.podsPerApp}
		b.logf("size %d series: %d pods (%d apps) in %d shards", size, fleet.Pods(), fleet.Apps, shards)
		if _, err := fleet.CreatePodsFrom(ctx, c.RESTConfig(), prevApps, b.log); err != nil {
			return err
		}
		prevApps = fleet.Apps
		all := fleet.Series()
		for i, s := range servers {
			s.Set(fleetsim.Render(fleetsim.Shard(all, i, shards)))
		}
		if err := fleetsim.WaitSeries(ctx, th.QueryURL, size, 10*time.Minute, b.log); err != nil {
			return err
		}
		for _, a := range adapters {
			if err := b.waitSnapshot(ctx, a, size); err != nil {
				return err
			}
		}
		r, err := b.measure(ctx, c, th, adapters, loadBin, size, fleet.Pods())
		if err != nil {
			return err
		}
		b.logf("size %d: %s", size, r.summary())
		rows = append(rows, r)
	}

	text := report{when: started, o: b.o, rows: rows, duration: time.Since(started)}.markdown()
	fmt.Fprint(b.stdout, text)
	if err := os.MkdirAll(b.o.outDir, 0o755); err != nil {
		return err
	}
	out := filepath.Join(b.o.outDir, "fleet.md")
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		return err
	}
	b.logf("wrote %s", out)
	return nil
}

// startAdapters starts the replicas, each refreshing from the query
// endpoint on its own as the chart's replicas do, and (for more than one)
// puts them behind a TCP proxy that stands in for their Service: the
// aggregator's connections are spread over the replicas round robin.
func (b *bench) startAdapters(ctx context.Context, c *localcluster.Cluster, binDir, queryURL string) (_ []*framework.Adapter, closeProxy func(), err error) {
	closeProxy = func() {}
	var adapters []*framework.Adapter
	var addrs []string
	if b.o.memoryLimitMiB > 0 {
		// The adapters inherit the environment; nothing else starts while
		// it is set.
		limit := fmt.Sprintf("%dMiB", b.o.memoryLimitMiB*9/10)
		if err := os.Setenv("GOMEMLIMIT", limit); err != nil {
			return nil, closeProxy, err
		}
		defer os.Unsetenv("GOMEMLIMIT")
		b.logf("adapters run with GOMEMLIMIT=%s (90 %% of a %d MiB container limit)", limit, b.o.memoryLimitMiB)
	}
	for i := range b.o.replicas {
		a, err := framework.StartAdapter(ctx, c, binDir, queryURL, b.o.refresh, []string{"--max-staleness=" + b.o.staleness.String()})
		if err != nil {
			return nil, closeProxy, fmt.Errorf("adapter replica %d: %w", i, err)
		}
		adapters = append(adapters, a)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", a.Port))
	}
	if len(adapters) == 1 {
		return adapters, closeProxy, nil
	}
	proxy, err := localcluster.StartTCPProxy(addrs...)
	if err != nil {
		return nil, closeProxy, err
	}
	closeProxy = func() { _ = proxy.Close() }
	if err := framework.ApplyAPIServices(ctx, c, proxy.Port()); err != nil {
		return nil, closeProxy, err
	}
	if err := framework.WaitAPIServices(ctx, c); err != nil {
		return nil, closeProxy, err
	}
	b.logf("%d adapter replicas behind %s", len(adapters), proxy.Addr())
	return adapters, closeProxy, nil
}

// waitSnapshot waits until the adapter's snapshot holds size series.
func (b *bench) waitSnapshot(ctx context.Context, a *framework.Adapter, size int) error {
	return framework.Poll(ctx, 5*time.Minute, time.Second, func(ctx context.Context) (bool, string) {
		m, err := scrape(ctx, "http://"+a.SelfMetricsAddr+"/metrics")
		if err != nil {
			return false, err.Error()
		}
		n := m[metricnames.AdapterSnapshotSeries]
		return int(n) == size, fmt.Sprintf("the adapter's snapshot holds %v of %d series", n, size)
	})
}

// row is one size's figures.
type row struct {
	series, pods int
	// refreshes counted in the idle window, their mean wall time and the
	// adapter's CPU per refresh there.
	refreshes       float64
	refreshWall     time.Duration
	refreshCPU      time.Duration
	thanosInRefresh time.Duration // Thanos Query's own mean time for the adapter's queries
	directThanos    time.Duration // median, client side, body read
	directShard     time.Duration
	rssBytes        float64
	heapBytes       float64
	loads           []loadSummary
	loadErr         []error
}

func (r row) summary() string {
	return fmt.Sprintf("refresh %s wall, %s CPU; Thanos %s of it; RSS %.0f MiB, heap %.0f MiB",
		r.refreshWall.Round(time.Millisecond), r.refreshCPU.Round(time.Millisecond), r.thanosInRefresh.Round(time.Millisecond),
		r.rssBytes/(1<<20), r.heapBytes/(1<<20))
}

func (b *bench) measure(ctx context.Context, c *localcluster.Cluster, th *localcluster.Thanos, adapters []*framework.Adapter, loadBin string, size, pods int) (row, error) {
	r := row{series: size, pods: pods}
	selfURL := func(a *framework.Adapter) string { return "http://" + a.SelfMetricsAddr + "/metrics" }
	queryMetrics := th.QueryURL + "/metrics"
	before := make([]map[string]float64, len(adapters))
	for i, a := range adapters {
		var err error
		if before[i], err = scrape(ctx, selfURL(a)); err != nil {
			return r, err
		}
	}
	tBefore, err := scrape(ctx, queryMetrics)
	if err != nil {
		return r, err
	}
	b.logf("  idle window %s: refresh time and CPU", b.o.idle)
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(b.o.idle):
	}
	after := make([]map[string]float64, len(adapters))
	for i, a := range adapters {
		if after[i], err = scrape(ctx, selfURL(a)); err != nil {
			return r, err
		}
	}
	tAfter, err := scrape(ctx, queryMetrics)
	if err != nil {
		return r, err
	}
	// Every replica refreshes on its own; the row keeps the costliest.
	dur := metricnames.AdapterRefreshDuration
	for i := range adapters {
		n := after[i][dur+"_count"] - before[i][dur+"_count"]
		if n <= 0 {
			return r, fmt.Errorf("no refresh of adapter replica %d in the %s idle window", i, b.o.idle)
		}
		r.refreshes = max(r.refreshes, n)
		r.refreshWall = max(r.refreshWall, seconds((after[i][dur+"_sum"]-before[i][dur+"_sum"])/n))
		r.refreshCPU = max(r.refreshCPU, seconds((after[i]["process_cpu_seconds_total"]-before[i]["process_cpu_seconds_total"])/n))
	}
	// Only the adapters query Thanos in the idle window.
	if n := sumOf(tAfter, thanosQueryHist+"_count") - sumOf(tBefore, thanosQueryHist+"_count"); n > 0 {
		r.thanosInRefresh = seconds((sumOf(tAfter, thanosQueryHist+"_sum") - sumOf(tBefore, thanosQueryHist+"_sum")) / n)
	}

	q, err := adapterQuery(b.o.staleness)
	if err != nil {
		return r, err
	}
	if r.directThanos, err = timeQuery(ctx, th.QueryURL, q, b.o.staleness); err != nil {
		return r, fmt.Errorf("timing the query against Thanos Query: %w", err)
	}
	if r.directShard, err = timeQuery(ctx, th.Shards[0].Prometheus.URL, q, b.o.staleness); err != nil {
		return r, fmt.Errorf("timing the query against shard 0: %w", err)
	}

	app := fleetsim.AppName(b.o.benchApp)
	path := "/apis/external.metrics.k8s.io/v1beta1/namespaces/" + namespace + "/" + metricnames.ProcessSMUtil + "?labelSelector=app%3D" + app
	for _, t := range []struct{ name, url string }{
		{"direct", fmt.Sprintf("https://127.0.0.1:%d%s", adapters[0].Port, path)},
		{"aggregator", path},
	} {
		b.logf("  loading %s: %.0f req/s for %s", t.name, b.o.rps, b.o.duration)
		s, err := runLoad(ctx, loadBin, c.KubeconfigPath(), t.name, t.url, b.o)
		r.loads = append(r.loads, s)
		r.loadErr = append(r.loadErr, err)
		if err != nil {
			b.logf("  %s: %v", t.name, err)
		}
	}
	for i, a := range adapters {
		end, err := scrape(ctx, selfURL(a))
		if err != nil {
			return r, err
		}
		r.rssBytes = max(r.rssBytes, after[i]["process_resident_memory_bytes"], end["process_resident_memory_bytes"])
		r.heapBytes = max(r.heapBytes, after[i]["go_memstats_heap_inuse_bytes"], end["go_memstats_heap_inuse_bytes"])
	}
	return r, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// thanosQueryHist is Thanos Query's HTTP request duration histogram; its
// series for the instant query API carry handler="query".
const thanosQueryHist = "http_request_duration_seconds"

// sumOf adds the values of every series of metric (a histogram's _sum or
// _count) whose labels include handler="query".
func sumOf(m map[string]float64, metric string) float64 {
	var v float64
	for series, x := range m {
		if strings.HasPrefix(series, metric+"{") && strings.Contains(series, `handler="query"`) {
			v += x
		}
	}
	return v
}

// adapterQuery is the refresh's query for the default metric table's
// exporter rows, as the adapter renders it with its default series
// selector.
func adapterQuery(lookback time.Duration) (string, error) {
	var names []string
	for _, r := range metrictable.Defaults() {
		if r.Origin != metrictable.Exporter {
			continue
		}
		name := r.Series
		if name == "" {
			name = r.Name
		}
		names = append(names, name)
	}
	sel, err := promquery.ParseSeriesSelector(`job="` + exporterJob + `"`)
	if err != nil {
		return "", err
	}
	return promquery.Query{Metrics: names, LookbackDelta: lookback}.Render(sel), nil
}

// timeQuery runs q as an instant query against base directQueryRuns times,
// reading the whole answer, and returns the median.
func timeQuery(ctx context.Context, base, q string, lookback time.Duration) (time.Duration, error) {
	form := url.Values{"query": {q}, "lookback_delta": {lookback.String()}, "partial_response": {"false"}}
	var ds []time.Duration
	for range directQueryRuns {
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/query", strings.NewReader(form.Encode()))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, body)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], nil
}

// scrape reads a Prometheus text exposition into series → value.
func scrape(ctx context.Context, u string) (map[string]float64, error) {
	addr := strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/metrics")
	m := map[string]float64{}
	err := framework.ScrapeMetrics(ctx, addr, func(series string, v float64) { m[series] = v })
	return m, err
}

// loadSummary mirrors adapterload's --json output.
type loadSummary struct {
	Requests    int           `json:"requests"`
	Errors      int           `json:"errors"`
	AchievedRPS float64       `json:"achievedRps"`
	P50         time.Duration `json:"p50Ns"`
	P99         time.Duration `json:"p99Ns"`
	FirstErrors []string      `json:"firstErrors"`
}

// runLoad runs adapterload against one target with the admin kubeconfig's
// token (TLS unverified: the adapter's certificate is self-signed).
func runLoad(ctx context.Context, bin, kubeconfig, name, target string, o options) (loadSummary, error) {
	const timeout = 10 * time.Second
	args := []string{
		"--json",
		"--kubeconfig=" + kubeconfig,
		"--insecure-skip-tls-verify",
		fmt.Sprintf("--rps=%g", o.rps),
		"--duration=" + o.duration.String(),
		"--warmup=" + o.warmup.String(),
		fmt.Sprintf("--concurrency=%d", o.concurrency),
		"--timeout=" + timeout.String(),
		"--target=" + name + "=" + target,
	}
	lctx, cancel := context.WithTimeout(ctx, o.warmup+o.duration+2*timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(lctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return loadSummary{}, fmt.Errorf("adapterload: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var res []loadSummary
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return loadSummary{}, fmt.Errorf("reading adapterload's output: %w", err)
	}
	if len(res) != 1 {
		return loadSummary{}, errors.New("adapterload returned no summary")
	}
	s := res[0]
	if s.Errors > 0 {
		return s, fmt.Errorf("%d of %d requests failed, e.g. %v", s.Errors, s.Requests, s.FirstErrors)
	}
	return s, nil
}
