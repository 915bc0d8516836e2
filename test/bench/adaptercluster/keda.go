package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/fleetsim"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// kedaMode is one way KEDA is configured to answer the metrics API.
type kedaMode struct {
	name   string // ScaledObject, Deployment and target name prefix
	server string
	cached bool // the trigger's useCachedMetrics
}

// kedaModes: KEDA's default, where each metrics request makes the operator
// run the trigger's PromQL, and useCachedMetrics, where it answers from its
// last poll (every 5 s here, spillway's refresh interval in this benchmark).
var kedaModes = []kedaMode{
	{name: "keda-query", server: "KEDA " + localcluster.KEDAVersion + " (default: PromQL per request)"},
	{name: "keda-cached", server: "KEDA " + localcluster.KEDAVersion + " (useCachedMetrics, 5 s poll)", cached: true},
}

// kedaMetric is the external metric KEDA names a ScaledObject's first
// Prometheus trigger.
const kedaMetric = "s0-prometheus"

// startKEDA hands external.metrics.k8s.io to KEDA and returns its targets.
// Spillway's aggregated cache adapter is stopped first: its self-managed
// certificate keeps its CA in every APIService it serves, external included,
// and would take KEDA's back (so spillway's targets must be measured
// before). For each mode it creates a Deployment (its pods stay Pending:
// the benchmark node takes no pods) and a ScaledObject on it whose trigger
// averages the benchmark app's series, the series spillway's targets serve:
// KEDA has no pod selector, so the app is a pod-name regex in the query.
func startKEDA(ctx context.Context, c *localcluster.Cluster, srv *servers, promURL, app string) ([]target, error) {
	if srv.cacheProc != nil && srv.aggregator {
		if err := srv.cacheProc.Stop(); err != nil {
			return nil, fmt.Errorf("stopping spillway's aggregated adapter: %w", err)
		}
	}
	k, err := c.StartKEDA(ctx)
	if err != nil {
		return nil, fmt.Errorf("starting KEDA: %w", err)
	}
	query := fmt.Sprintf(`avg(%s{job=%q,%s=%q,%s=~"%s-pod-.*"})`, metricnames.ProcessSMUtil, benchJob,
		metricnames.LabelNamespace, benchNamespace, metricnames.LabelPod, app)
	var ts []target
	for _, m := range kedaModes {
		if err := createScaleTarget(ctx, c, m.name); err != nil {
			return nil, err
		}
		so := testobjects.ScaledObject(testobjects.ScaledObjectOptions{
			Name: m.name, Namespace: benchNamespace, Deployment: m.name,
			MinReplicas: ptr.To(int32(1)), MaxReplicas: ptr.To(int32(1)),
			PollingInterval: kedaPollingInterval,
			ServerAddress:   promURL, Query: query, Threshold: "50",
		}, func(u *unstructured.Unstructured) {
			if m.cached {
				triggers, _, _ := unstructured.NestedSlice(u.Object, "spec", "triggers")
				triggers[0].(map[string]any)["useCachedMetrics"] = true
				_ = unstructured.SetNestedSlice(u.Object, triggers, "spec", "triggers")
			}
		})
		b, err := json.Marshal(so.Object)
		if err != nil {
			return nil, err
		}
		if err := c.Apply(ctx, b); err != nil {
			return nil, fmt.Errorf("creating ScaledObject %s: %w", m.name, err)
		}
		path := "/apis/external.metrics.k8s.io/v1beta1/namespaces/" + benchNamespace + "/" + kedaMetric +
			"?labelSelector=" + url.QueryEscape("scaledobject.keda.sh/name="+m.name)
		api := "External, the app's average (1 item)"
		ts = append(ts,
			// A peer failing under the load is a finding, not a failed run.
			target{name: m.name, server: m.server, api: api, family: familyExternal,
				url: fmt.Sprintf("https://127.0.0.1:%d%s", k.AdapterPort, path), items: 1, reference: true},
			target{name: m.name + "-aggregator", server: m.server + " via aggregator", api: api, family: familyExternal,
				url: path, items: 1, reference: true},
		)
	}
	return ts, nil
}

// kedaPollingInterval is the ScaledObjects' pollingInterval: spillway's
// refresh interval in this benchmark.
const kedaPollingInterval = 5 * time.Second

// createScaleTarget creates a 1-replica Deployment for a ScaledObject.
func createScaleTarget(ctx context.Context, c *localcluster.Cluster, name string) error {
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					Containers:                   []corev1.Container{{Name: fleetsim.Container, Image: "registry.invalid/bench:0"}},
				},
			},
		},
	}
	if _, err := c.Client().AppsV1().Deployments(benchNamespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Deployment %s: %w", name, err)
	}
	return nil
}

// peerRows are the targets of the peer table, in order, with the floor
// each is compared with (the test-adapter's closest shape, direct) and,
// for answers of one item per pod, the fixed-answer floor of that size.
var peerRows = []struct{ name, floor, sized string }{
	{"floor-external", "floor-external", ""},
	{"fixed-external", "floor-external", "fixed-external"},
	{"cache-external", "floor-external", "fixed-external"},
	{"cache-external-aggregator", "floor-external", "fixed-external"},
	{"keda-query", "floor-external", ""},
	{"keda-query-aggregator", "floor-external", ""},
	{"keda-cached", "floor-external", ""},
	{"keda-cached-aggregator", "floor-external", ""},
	{"floor-pods-by-name", "floor-pods-by-name", ""},
	{"fixed-pods-selector", "floor-pods-by-name", "fixed-pods-selector"},
	{"cache-pods-selector", "floor-pods-by-name", "fixed-pods-selector"},
	{"cache-pods-selector-aggregator", "floor-pods-by-name", "fixed-pods-selector"},
}

// versus is a peer table cell: name's p99 over floor's, "1 (floor)" on the
// floor's own row, empty where the row has no such floor.
func (r report) versus(name, floor string) string {
	switch floor {
	case "":
		return ""
	case name:
		return "1 (floor)"
	}
	return r.ratio(name, floor)
}

// peersMarkdown is the peer comparison's metrics-API latency section:
// spillway's cache and KEDA over the same series in the same run, each
// next to the floor measured in that run.
func (r report) peersMarkdown() string {
	var b strings.Builder
	o := r.setup
	fmt.Fprintf(&b, "# Peers: KEDA and spillway on one cluster (%s)\n\nMachine: %s.\n\n## Metrics API latency\n\n",
		r.when.UTC().Format("2006-01-02 15:04 UTC"), machine())
	fmt.Fprintf(&b, "One run of test/bench/adaptercluster on %d CPUs (%s/%s), everything on this machine, load generator included: "+
		"%.0f req/s open loop for %s per target (+%s warm-up), %s; the same Prometheus and the same %d series of `%s`; "+
		"each request asks for app `%s` (%d pods). KEDA %s answers one value per ScaledObject, the app's average computed "+
		"by its trigger's PromQL; spillway answers one item per pod (External) or per pod by selector (Pods), "+
		"from its cache refreshed every 5 s. The floor is custom-metrics-apiserver %s's test-adapter (values in memory), direct; "+
		"its External answer is one item, so the fixed-answer floor (test/bench/fixedadapter: the same serving stack, a list "+
		"built once with one item per pod of the app) is the floor for answers of that size.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, o.rps, o.duration, o.warmup, o.schedule(), r.series, metricnames.ProcessSMUtil,
		fleetsim.AppName(o.benchApp), o.podsPerApp, localcluster.KEDAVersion, localcluster.CustomMetricsAPIServerVersion)
	b.WriteString("| server | request | route | requests | errors | p50 | p99 | p99 / floor p99 | p99 / same-size floor p99 |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range peerRows {
		var res *result
		for i := range r.results {
			if r.results[i].target.name == row.name {
				res = &r.results[i]
			}
		}
		if res == nil {
			continue
		}
		t, s := res.target, res.summary
		route := "direct"
		if t.viaAggregator() {
			route = "via aggregator"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %s | %s | %s | %s |\n",
			t.server, t.api, route, s.Requests, s.Errors, ms(s.P50), ms(s.P99), r.versus(row.name, row.floor), r.versus(row.name, row.sized))
	}
	var failed []string
	for _, res := range r.results {
		if res.err != nil && strings.HasPrefix(res.target.name, "keda-") {
			failed = append(failed, fmt.Sprintf("- %s: %v", res.target.name, res.err))
		}
	}
	if len(failed) > 0 {
		b.WriteString("\nKEDA targets that failed under the load:\n\n" + strings.Join(failed, "\n") + "\n")
	}
	b.WriteString(`
Notes:
- KEDA serves external.metrics.k8s.io only once spillway's aggregated adapter is stopped (one owner per API group
  version), so its rows were measured after spillway's, against the same cluster, Prometheus and series.
- With its defaults KEDA's operator runs the trigger's query against Prometheus on every metrics request, so its
  figures include a PromQL evaluation over the app's series; useCachedMetrics answers from its last poll instead.
`)
	r.reactionMarkdown(&b)
	r.outageMarkdown(&b)
	return b.String()
}
