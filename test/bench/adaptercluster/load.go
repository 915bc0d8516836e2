package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// API families a target belongs to; ratios compare targets of one family.
const (
	familyExternal = "External"
	familyPods     = "Pods"
)

// target is one server and request shape to load.
type target struct {
	name   string // adapterload's target name
	server string
	api    string
	family string
	// url is absolute for a server's own port, a path for the aggregator.
	url string
	// items is how many items a correct answer lists (-1: one per pod of
	// the app; a by-name answer is a list of one in v1beta2).
	items int
	// reference targets add context; their failure does not fail the run.
	reference bool
}

func (t target) viaAggregator() bool { return strings.HasPrefix(t.url, "/") }

const (
	serverFloor    = "test-adapter (floor)"
	serverCache    = "spillway cache"
	serverLive     = "live query (test/bench/liveadapter)"
	serverCacheAgg = "spillway cache via aggregator"
	serverFixed    = "fixed answer (test/bench/fixedadapter)"
)

// buildTargets lists what is measured, in order. Every spillway target asks
// for one app's 50 pods; the test-adapter answers only the closest shapes
// it has (see the notes in the report).
func buildTargets(s *servers, app, onePod string) []target {
	sel := "?labelSelector=app%3D" + app
	ext := "/apis/external.metrics.k8s.io/v1beta1/namespaces/" + benchNamespace + "/" + metricnames.ProcessSMUtil + sel
	podsSel := "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + benchNamespace + "/pods/*/" + metricnames.ProcessSMUtil + sel
	podByName := "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + benchNamespace + "/pods/" + onePod + "/" + metricnames.ProcessSMUtil
	extAgg := ext + "%2Cspillway.dev%2Faggregate%3Davg"
	floorExt := "/apis/external.metrics.k8s.io/v1beta1/namespaces/" + benchNamespace + "/my-external-metric?labelSelector=foo%3Dbar"
	direct := func(port int, path string) string { return fmt.Sprintf("https://127.0.0.1:%d%s", port, path) }

	ts := []target{
		{name: "floor-external", server: serverFloor, api: "External (its fixed my-external-metric, 1 item)", family: familyExternal,
			url: direct(s.floorPort, floorExt), items: 1},
		// The floor with spillway's answer: as many items, from memory.
		{name: "fixed-external", server: serverFixed, api: "External, a fixed item per pod of the app", family: familyExternal,
			url: direct(s.fixedPort, ext), items: -1},
		{name: "cache-external", server: serverCache, api: "External, app's pods", family: familyExternal,
			url: direct(s.cachePort, ext), items: -1},
		{name: "live-external", server: serverLive, api: "External, app's pods", family: familyExternal,
			url: direct(s.livePort, ext), items: -1},
		// The floor's shape: one item (the average over the app's pods, what
		// an HPA `Value` target reads), so the ratio leaves the answer's size out.
		{name: "cache-external-aggregate", server: serverCache, api: "External, one item: avg over the app's pods (spillway.dev/aggregate=avg)", family: familyExternal,
			url: direct(s.cachePort, extAgg), items: 1},
	}
	if s.aggregator {
		ts = append(ts, target{name: "cache-external-aggregator", server: serverCacheAgg, api: "External, app's pods", family: familyExternal,
			url: ext, items: -1})
	}
	ts = append(ts,
		target{name: "floor-pods-by-name", server: serverFloor, api: "Pods, one pod by name", family: familyPods,
			url: direct(s.floorPort, podByName), items: 1},
		target{name: "cache-pods-by-name", server: serverCache, api: "Pods, one pod by name", family: familyPods,
			url: direct(s.cachePort, podByName), items: 1},
		target{name: "floor-pods-selector", server: serverFloor, api: "Pods by selector (reference: a pod LIST to kube-apiserver per request)", family: familyPods,
			url: direct(s.floorPort, podsSel), items: -1, reference: true},
		target{name: "fixed-pods-selector", server: serverFixed, api: "Pods by selector, a fixed item per pod of the app", family: familyPods,
			url: direct(s.fixedPort, podsSel), items: -1},
		target{name: "cache-pods-selector", server: serverCache, api: "Pods by selector", family: familyPods,
			url: direct(s.cachePort, podsSel), items: -1},
		target{name: "live-pods-selector", server: serverLive, api: "Pods by selector", family: familyPods,
			url: direct(s.livePort, podsSel), items: -1},
	)
	if s.aggregator {
		ts = append(ts, target{name: "cache-pods-selector-aggregator", server: serverCacheAgg, api: "Pods by selector", family: familyPods,
			url: podsSel, items: -1})
	}
	return ts
}

// waitTargets waits until every target answers 200 with the expected number
// of items (-1: the app's pod count), so no measurement starts against a
// server still syncing its informer or its first snapshot.
func waitTargets(ctx context.Context, c *localcluster.Cluster, ts []target, podsPerApp int, log io.Writer) error {
	hc, err := insecureClient(c)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	for i := range ts {
		t := &ts[i]
		if t.items < 0 {
			t.items = podsPerApp
		}
		u := t.url
		if t.viaAggregator() {
			u = c.Host() + u
		}
		if err := localcluster.Poll(wctx, time.Second, fmt.Sprintf("%s (%s) to answer", t.name, u), func(ctx context.Context) (bool, error) {
			n, err := fetchItems(ctx, hc, u)
			if err != nil {
				return false, err
			}
			if n != t.items {
				return false, fmt.Errorf("got %d items, want %d", n, t.items)
			}
			fmt.Fprintf(log, "[adaptercluster] %s answers with %d item(s)\n", t.name, max(n, 1))
			return true, nil
		}); err != nil {
			return err
		}
	}
	return nil
}

func insecureClient(c *localcluster.Cluster) (*http.Client, error) {
	cfg := c.RESTConfig()
	cfg.Insecure, cfg.CAData, cfg.CAFile = true, nil, ""
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: rt, Timeout: 10 * time.Second}, nil
}

// getJSON GETs u with hc and decodes a 200 answer's JSON body into v; any
// other status is an error carrying the start of the body.
func getJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, body)
	}
	return json.Unmarshal(body, v)
}

// fetchItems GETs u and counts the items of a list; a single object is 0.
func fetchItems(ctx context.Context, hc *http.Client, u string) (int, error) {
	var obj struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := getJSON(ctx, hc, u, &obj); err != nil {
		return 0, err
	}
	if !strings.HasSuffix(obj.Kind, "List") {
		return 0, nil
	}
	return len(obj.Items), nil
}

// buildLoadGenerator compiles test/bench/adapterload once; it then runs as a
// process of its own, as hey would.
// buildCommand builds one of the benchmark's own commands (pkg, e.g.
// "adapterload") from the checkout into dir.
func buildCommand(ctx context.Context, repoRoot, dir, pkg string) (string, error) {
	bin := filepath.Join(dir, pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./test/bench/"+pkg)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building %s (go build ./test/bench/%s in %s): %w\n%s", pkg, pkg, repoRoot, err, out)
	}
	return bin, nil
}

// loadSummary mirrors adapterload's --json output.
type loadSummary struct {
	Name         string        `json:"name"`
	URL          string        `json:"url"`
	Requests     int           `json:"requests"`
	Errors       int           `json:"errors"`
	AchievedRPS  float64       `json:"achievedRps"`
	P50          time.Duration `json:"p50Ns"`
	P90          time.Duration `json:"p90Ns"`
	P99          time.Duration `json:"p99Ns"`
	Max          time.Duration `json:"maxNs"`
	P99Scheduled time.Duration `json:"p99ScheduledNs"`
	FirstErrors  []string      `json:"firstErrors"`
}

// loadRequestTimeout bounds one request; a timed-out request is an error.
const loadRequestTimeout = 10 * time.Second

// runLoad runs adapterload once over targets, in o.rounds rounds, with the
// admin kubeconfig's token (TLS unverified: the adapters' certificates are
// self-signed). Results come back in targets' order; a target with failed
// requests, or every target when adapterload itself fails, carries the
// error.
func runLoad(ctx context.Context, bin, kubeconfig string, targets []target, o options) []result {
	args := []string{
		"--json",
		"--kubeconfig=" + kubeconfig,
		"--insecure-skip-tls-verify",
		fmt.Sprintf("--rps=%g", o.rps),
		"--duration=" + o.duration.String(),
		fmt.Sprintf("--rounds=%d", o.rounds),
		"--warmup=" + o.warmup.String(),
		fmt.Sprintf("--concurrency=%d", o.concurrency),
		"--timeout=" + loadRequestTimeout.String(),
	}
	for _, t := range targets {
		args = append(args, "--target="+t.name+"="+t.url)
	}
	// adapterload waits for every request it sent; a server far behind the
	// rate would hold the cluster lock for many minutes, so it gets a
	// deadline instead: each slice may run a request timeout over.
	slices := time.Duration(len(targets) * o.rounds)
	limit := time.Duration(len(targets))*(o.warmup+o.duration) + slices*loadRequestTimeout + 30*time.Second
	lctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(lctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = os.Environ()
	runErr := cmd.Run()
	var sums []loadSummary
	if jerr := json.Unmarshal(stdout.Bytes(), &sums); jerr != nil || len(sums) != len(targets) {
		err := runErr
		switch {
		case lctx.Err() == context.DeadlineExceeded && ctx.Err() == nil:
			err = fmt.Errorf("not done %s after the load began: a server fell far behind %g req/s", limit, o.rps)
		case err != nil:
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		case jerr != nil:
			err = fmt.Errorf("reading adapterload's output: %w", jerr)
		default:
			err = fmt.Errorf("adapterload returned %d summaries for %d targets", len(sums), len(targets))
		}
		out := make([]result, len(targets))
		for i, t := range targets {
			out[i] = result{target: t, err: err}
		}
		return out
	}
	out := make([]result, len(targets))
	for i, t := range targets {
		s := sums[i]
		out[i] = result{target: t, summary: s}
		if s.Errors > 0 {
			out[i].err = fmt.Errorf("%d of %d requests failed, e.g. %v", s.Errors, s.Requests, s.FirstErrors)
		}
	}
	return out
}
