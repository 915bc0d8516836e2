// Package keda runs KEDA v2.21.0 (its operator and metrics API server, built
// from the pinned module like the control plane) on a real local cluster: a
// ScaledObject with a Prometheus trigger scales a Deployment through the
// real HPA, and KEDA shares the cluster with spillway's adapter as the chart
// renders it when KEDA owns external.metrics.k8s.io (the custom metrics API,
// HPA type: Pods, only).
package keda

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/test/framework"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, localcluster.Options{NoKarpenter: true}, func(c *localcluster.Cluster) { cluster = c }))
}

// demandSeries is the gauge the ScaledObjects scale on: one series per
// test namespace, set by the test and scraped by Prometheus.
const demandSeries = "spillway_test_demand"

// scrapeInterval paces Prometheus, the exporter and KEDA's polling.
const scrapeInterval = 2 * time.Second

type env struct {
	prom     *localcluster.Prometheus
	keda     *localcluster.KEDA
	exporter *framework.Exporter
	spillway *podsOnlyAdapter
	demand   *demand
}

var (
	setupOnce sync.Once
	theEnv    *env
	setupErr  error
)

// setup starts, once for the package: six 1-GPU nodes, the sim exporter, a
// Prometheus scraping it and the demand gauges, KEDA, and spillway's
// adapter as the chart renders it with KEDA in the cluster.
func setup(t *testing.T) *env {
	t.Helper()
	setupOnce.Do(func() {
		ctx := context.Background()
		e := &env{}
		if _, setupErr = cluster.AddStaticGPUNodes(ctx, "gpu", 6, localcluster.DefaultGPUNode); setupErr != nil {
			return
		}
		if e.demand, setupErr = startDemand(); setupErr != nil {
			return
		}
		if e.exporter, setupErr = framework.StartExporter(ctx, cluster, "../../bin", scrapeInterval); setupErr != nil {
			return
		}
		if e.prom, setupErr = cluster.StartPrometheus(ctx, "prometheus", scrapeInterval, []localcluster.ScrapeTarget{
			{Job: "spillway-gpu-exporter", Address: e.exporter.MetricsAddr},
			{Job: "demand", Address: e.demand.addr},
		}); setupErr != nil {
			return
		}
		if e.keda, setupErr = cluster.StartKEDA(ctx); setupErr != nil {
			return
		}
		if e.spillway, setupErr = startPodsOnlyAdapter(ctx, e.prom.URL); setupErr != nil {
			return
		}
		theEnv = e
	})
	if setupErr != nil {
		t.Fatalf("starting KEDA and spillway: %v", setupErr)
	}
	return theEnv
}

// demand serves the demand gauges over plain HTTP for Prometheus.
type demand struct {
	addr string
	mu   sync.Mutex
	// values by namespace; a missing key is a series that is gone.
	values map[string]float64
}

func startDemand() (*demand, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &demand{addr: l.Addr().String(), values: map[string]float64{}}
	srv := &http.Server{Handler: d, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return d, nil
}

func (d *demand) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := make([]string, 0, len(d.values))
	for k := range d.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE %s gauge\n", demandSeries)
	for _, ns := range keys {
		fmt.Fprintf(&b, "%s{test_namespace=%q} %g\n", demandSeries, ns, d.values[ns])
	}
	_, _ = w.Write([]byte(b.String()))
}

// set publishes the namespace's demand.
func (d *demand) set(ns string, v float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.values[ns] = v
}

// remove takes the namespace's series away, as if its exporter were gone.
func (d *demand) remove(ns string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.values, ns)
}

// demandQuery is the trigger's query: the namespace's demand.
func demandQuery(ns string) string {
	return fmt.Sprintf("sum(%s{test_namespace=%q})", demandSeries, ns)
}

// demandThreshold is the trigger's threshold: 10 of demand per replica, so
// 30 asks for 3 replicas and 5 for 1.
const demandThreshold = "10"

// scaledObject is a ScaledObject on the namespace's demand for deployment,
// 1 to 3 replicas, whose HPA scales by up to 100 % every 5 s with no
// stabilization, polled every scrape interval.
func scaledObject(e *env, ns, name, deployment string, edit ...func(*unstructured.Unstructured)) *unstructured.Unstructured {
	return testobjects.ScaledObject(testobjects.ScaledObjectOptions{
		Name: name, Namespace: ns, Deployment: deployment,
		MinReplicas: ptr.To(int32(1)), MaxReplicas: ptr.To(int32(3)),
		PollingInterval: scrapeInterval,
		ServerAddress:   e.prom.URL, Query: demandQuery(ns), Threshold: demandThreshold,
		ScaleWindow: 5 * time.Second,
	}, edit...)
}

// apply creates or updates obj by server-side apply.
func apply(t *testing.T, obj *unstructured.Unstructured) {
	t.Helper()
	b, err := json.Marshal(obj.Object)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.Apply(context.Background(), b); err != nil {
		t.Fatalf("applying %s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
}

// createDeployment creates a 1-replica GPU Deployment labelled app=<name>.
func createDeployment(t *testing.T, ns, name string) {
	t.Helper()
	d := framework.GPUDeployment(ns, name, name, 1, "2", "4Gi")
	if _, err := cluster.Client().AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitReplicas waits until the Deployment asks for want replicas and has
// them ready; status describes the scaler on failure.
func waitReplicas(t *testing.T, ns, deployment string, want int32, status func(context.Context) string) {
	t.Helper()
	framework.Eventually(t, 3*time.Minute, time.Second, fmt.Sprintf("%s at %d replicas", deployment, want), func(ctx context.Context) (bool, string) {
		d, err := cluster.Client().AppsV1().Deployments(ns).Get(ctx, deployment, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return *d.Spec.Replicas == want && d.Status.ReadyReplicas == want,
			fmt.Sprintf("spec %d ready %d; %s", *d.Spec.Replicas, d.Status.ReadyReplicas, status(ctx))
	})
}

// hpaStatus describes an HPA: desired replicas, conditions, current metrics.
func hpaStatus(ns, name string) func(context.Context) string {
	return func(ctx context.Context) string {
		h, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "hpa " + name + ": " + err.Error()
		}
		var parts []string
		for _, c := range h.Status.Conditions {
			parts = append(parts, fmt.Sprintf("%s=%s(%s: %s)", c.Type, c.Status, c.Reason, c.Message))
		}
		cur, _ := json.Marshal(h.Status.CurrentMetrics)
		return fmt.Sprintf("hpa %s desired %d, %s, current %s", name, h.Status.DesiredReplicas, strings.Join(parts, " "), cur)
	}
}
