package main

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/fleetsim"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

type result struct {
	target  target
	summary loadSummary
	err     error
}

type report struct {
	when     time.Time
	setup    options
	pods     int
	series   int
	results  []result
	duration time.Duration
	hpaSync  time.Duration
	reaction []reactionResult
	outages  []outageResult
}

func ms(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func (r report) find(name string) *result {
	for i := range r.results {
		if r.results[i].target.name == name && r.results[i].summary.P99 > 0 {
			return &r.results[i]
		}
	}
	return nil
}

// ratio is "a / b at p99" as text, or "n/a" when either is missing.
func (r report) ratio(a, b string) string {
	x, y := r.find(a), r.find(b)
	if x == nil || y == nil {
		return "n/a"
	}
	v := float64(x.summary.P99) / float64(y.summary.P99)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", v)
}

func (r report) markdown() string {
	var b strings.Builder
	o := r.setup
	fmt.Fprintf(&b, "# Metrics adapter benchmark (%s)\n\n", r.when.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Local control plane (kube-apiserver %s, etcd, kcm, scheduler, kwok), %d Running pods in namespace `%s` "+
		"(%d apps × %d, label `app=app-NNN`), a real Prometheus scraping %d series of `%s` "+
		"(4 per pod: 2 GPUs × 2 processes, all exporter labels) every 5 s. "+
		"Every request selects `app=%s` (%d pods). Load: test/bench/adapterload, %.0f req/s open loop for %s per target "+
		"(+%s unmeasured warm-up), %s, at most %d in flight, HTTP/1.1, admin bearer token. "+
		"All servers ran side by side on this machine's %d CPUs, load generator included; run took %s.\n\n",
		localcluster.KubernetesVersion, r.pods, benchNamespace, o.apps, o.podsPerApp, r.series, metricnames.ProcessSMUtil,
		fleetsim.AppName(o.benchApp), o.podsPerApp, o.rps, o.duration, o.warmup, o.schedule(), o.concurrency, runtime.NumCPU(), r.duration.Round(time.Second))

	b.WriteString("| server | request | route | items | requests | errors | p50 | p99 | p99 from schedule |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range r.results {
		t, s := res.target, res.summary
		route := "direct to its secure port"
		if t.viaAggregator() {
			route = "via kube-apiserver aggregator"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %d | %s | %s | %s |\n",
			t.server, t.api, route, t.items, s.Requests, s.Errors, ms(s.P50), ms(s.P99), ms(s.P99Scheduled))
	}

	b.WriteString("\nRatios at p99 (lower is better for the first server named):\n\n")
	fmt.Fprintf(&b, "- External: cache / floor = %s; live / cache = %s",
		r.ratio("cache-external", "floor-external"), r.ratio("live-external", "cache-external"))
	if o.aggregator {
		fmt.Fprintf(&b, "; aggregator / direct (cache) = %s", r.ratio("cache-external-aggregator", "cache-external"))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- Pods by selector: cache / floor (by name, in memory) = %s; cache / floor (by selector) = %s; live / cache = %s",
		r.ratio("cache-pods-selector", "floor-pods-by-name"), r.ratio("cache-pods-selector", "floor-pods-selector"),
		r.ratio("live-pods-selector", "cache-pods-selector"))
	if o.aggregator {
		fmt.Fprintf(&b, "; aggregator / direct (cache) = %s", r.ratio("cache-pods-selector-aggregator", "cache-pods-selector"))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- Same shape as the floor (one item each, so the answer's size is left out): External avg over the app's pods / floor External = %s; "+
		"Pods by name / floor Pods by name = %s\n",
		r.ratio("cache-external-aggregate", "floor-external"), r.ratio("cache-pods-by-name", "floor-pods-by-name"))
	fmt.Fprintf(&b, "- Same answer as spillway's (one item per pod) from the fixed-answer floor: External cache / fixed = %s; "+
		"Pods by selector cache / fixed = %s; fixed External / floor External (what the answer's size costs) = %s\n",
		r.ratio("cache-external", "fixed-external"), r.ratio("cache-pods-selector", "fixed-pods-selector"),
		r.ratio("fixed-external", "floor-external"))

	var failed []string
	for _, res := range r.results {
		if res.err != nil {
			kind := ""
			if res.target.reference {
				kind = " (reference only; does not fail the run)"
			}
			failed = append(failed, fmt.Sprintf("- %s%s: %v", res.target.name, kind, res.err))
		}
	}
	if len(failed) > 0 {
		b.WriteString("\nFailed targets:\n\n" + strings.Join(failed, "\n") + "\n")
	}

	b.WriteString(`
Notes:
- The floor is sigs.k8s.io/custom-metrics-apiserver ` + localcluster.CustomMetricsAPIServerVersion + `'s test-adapter: the same serving
  stack (authn/authz delegated to kube-apiserver, cached) with values in memory. Its External API serves only its
  fixed metrics, so its External figure answers one item where spillway answers one per pod (spillway's
  "avg over the app's pods" row answers one item too: the same-shape comparison). Its Pods API by
  name reads memory only (the Pods floor); by selector it lists the pods from kube-apiserver on every request
  (its client throttle lifted to 1000 req/s), a reference for "LIST per request" rather than a floor.
- The fixed-answer floor (test/bench/fixedadapter) is the same serving stack answering a list built once, with as many
  items as spillway's answer (one per pod of the app, spillway's shape): next to it, spillway's figure shows what its
  own work adds; next to the test-adapter's one-item answer, what answering per pod costs the serving stack too.
- "p99 from schedule" counts from when a request was due, so a server that falls behind the rate shows it.
- The live-query server (test/bench/liveadapter) answers through the same provider and serving stack as the adapter but runs one
  PromQL query per request for the selected pods (the prometheus-adapter way); it exists only for this comparison.
`)
	return b.String()
}

// schedule says how the targets shared the run's time.
func (o options) schedule() string {
	if o.rounds <= 1 {
		return "one target after another"
	}
	return fmt.Sprintf("the targets taking turns in %d rounds of %s each (a disturbance on the machine falls on all alike)",
		o.rounds, o.slice())
}
