// Package adapter tests the metrics pipeline end to end on a real control
// plane: the sim exporter watches real pods, a real Prometheus scrapes it,
// spillway-metrics-adapter serves the aggregated APIs through kube-apiserver,
// and the real HPA in kube-controller-manager scales on them.
package adapter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, localcluster.Options{NoKarpenter: true}, func(c *localcluster.Cluster) { cluster = c }))
}

const (
	app        = "isvc.qwen-chat-predictor"
	deployment = "qwen-chat-predictor"
	// The sim exporter: one replica serves 10 req/s at 100 % SM utilization,
	// and a workload's load is shared by its Ready replicas.
	capacityRPS = 10
	staleness   = 12 * time.Second
)

type pipeline struct {
	exporter *framework.Exporter
	prom     *localcluster.Prometheus
	adapter  *framework.Adapter
	// forger is a scrape target (honor_labels: true, like a tenant's pod
	// a careless job scrapes) that publishes whatever the test sets.
	forger *forger
}

// configuredRow is the metric table row the adapter loads from a file: the
// simulated servers' own time-in-queue gauge, served under another name.
const (
	configuredRow   = "sim_queue_seconds"
	metricsConfig   = "metrics:\n- name: " + configuredRow + "\n  series: spillway_sim_queue_time_seconds\n  combine: Max\n"
	modelServersJob = "model-servers"
)

var (
	setupOnce sync.Once
	pipe      *pipeline
	setupErr  error
)

// setup starts the pipeline once for the package, on a pool with room for
// three GPU replicas.
func setup(t *testing.T) *pipeline {
	t.Helper()
	setupOnce.Do(func() {
		ctx := context.Background()
		if _, setupErr = cluster.AddStaticGPUNodes(ctx, "gpu", 3, localcluster.DefaultGPUNode); setupErr != nil {
			return
		}
		p := &pipeline{}
		if p.exporter, setupErr = framework.StartExporter(ctx, cluster, "../../bin", 2*time.Second); setupErr != nil {
			return
		}
		if p.forger, setupErr = startForger(); setupErr != nil {
			return
		}
		if p.prom, setupErr = cluster.StartPrometheus(ctx, "prometheus", 2*time.Second, []localcluster.ScrapeTarget{
			{Job: "spillway-gpu-exporter", Address: p.exporter.MetricsAddr},
			p.exporter.ModelServers(modelServersJob, app),
			{Job: "tenant", Address: p.forger.addr, HonorLabels: true},
		}); setupErr != nil {
			return
		}
		cfg := filepath.Join(cluster.Dir(), "metrics.yaml")
		if setupErr = os.WriteFile(cfg, []byte(metricsConfig), 0o644); setupErr != nil {
			return
		}
		if p.adapter, setupErr = framework.StartAdapter(ctx, cluster, "../../bin", p.prom.URL, 2*time.Second,
			[]string{"--max-staleness=" + staleness.String(), "--metrics-config=" + cfg}); setupErr != nil {
			return
		}
		pipe = p
	})
	if setupErr != nil {
		t.Fatalf("starting the metrics pipeline: %v", setupErr)
	}
	return pipe
}

func createPredictor(t *testing.T, ns string) {
	t.Helper()
	d := framework.GPUDeployment(ns, deployment, app, 1, "4", "12Gi")
	if _, err := cluster.Client().AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func setLoad(t *testing.T, ns string, rps float64) {
	t.Helper()
	env := &demo.Env{Cluster: cluster, LoadURL: pipe.exporter.LoadURL}
	if err := env.SetLoad(context.Background(), ns, deployment, rps); err != nil {
		t.Fatal(err)
	}
}

type metricList struct {
	Items []struct {
		DescribedObject struct {
			Name string `json:"name"`
		} `json:"describedObject"`
		MetricName   string            `json:"metricName"`
		MetricLabels map[string]string `json:"metricLabels"`
		Value        string            `json:"value"`
	} `json:"items"`
}

func quantity(t *testing.T, s string) float64 {
	t.Helper()
	q, err := resource.ParseQuantity(s)
	if err != nil {
		t.Fatalf("value %q: %v", s, err)
	}
	return q.AsApproximateFloat64()
}

func TestAggregatedAPIsServeTheExporterValues(t *testing.T) {
	setup(t)
	ns := framework.Namespace(t, cluster)
	createPredictor(t, ns)
	setLoad(t, ns, 8) // one replica: 80 %
	sel := url.QueryEscape("app=" + app)
	paths := map[string]string{
		"custom v1beta2": "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + ns + "/pods/%2A/" + metricnames.ProcessSMUtil + "?labelSelector=" + sel,
		"custom v1beta1": "/apis/custom.metrics.k8s.io/v1beta1/namespaces/" + ns + "/pods/%2A/" + metricnames.ProcessSMUtil + "?labelSelector=" + sel,
		"external":       "/apis/external.metrics.k8s.io/v1beta1/namespaces/" + ns + "/" + metricnames.ProcessSMUtil + "?labelSelector=" + sel,
		"external avg":   "/apis/external.metrics.k8s.io/v1beta1/namespaces/" + ns + "/" + metricnames.ProcessSMUtil + "?labelSelector=" + url.QueryEscape("app="+app+",spillway.dev/aggregate=avg"),
	}
	for name, p := range paths {
		t.Run(strings.ReplaceAll(name, " ", "-"), func(t *testing.T) {
			u, err := url.Parse(p)
			if err != nil {
				t.Fatal(err)
			}
			framework.Eventually(t, 90*time.Second, time.Second, name+" serves 80", func(ctx context.Context) (bool, string) {
				l, err := getRawQuery(ctx, u)
				if err != nil {
					return false, err.Error()
				}
				if len(l.Items) != 1 {
					return false, fmt.Sprintf("%d items", len(l.Items))
				}
				v := quantity(t, l.Items[0].Value)
				return v > 79 && v < 81, "value " + l.Items[0].Value
			})
		})
	}
	// Discovery lists the fixed metric set.
	raw, err := cluster.Client().Discovery().RESTClient().Get().AbsPath("/apis/custom.metrics.k8s.io/v1beta2").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range metricnames.ProcessMetrics {
		if !strings.Contains(string(raw), m) {
			t.Errorf("discovery does not list %s: %s", m, raw)
		}
	}
}

func getRawQuery(ctx context.Context, u *url.URL) (*metricList, error) {
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

func hpa(ns string, external bool) *autoscalingv2.HorizontalPodAutoscaler {
	metric := autoscalingv2.MetricSpec{
		Type: autoscalingv2.PodsMetricSourceType,
		Pods: &autoscalingv2.PodsMetricSource{
			Metric: autoscalingv2.MetricIdentifier{Name: metricnames.ProcessSMUtil},
			Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(resource.MustParse("50"))},
		},
	}
	if external {
		metric = autoscalingv2.MetricSpec{
			Type: autoscalingv2.ExternalMetricSourceType,
			External: &autoscalingv2.ExternalMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: metricnames.ProcessSMUtil, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(resource.MustParse("50"))},
			},
		}
	}
	fast := &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr.To(int32(0)),
		Policies:                   []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 5}},
	}
	return testobjects.HPA(testobjects.HPAOptions{Name: "qwen-chat", Namespace: ns, Deployment: deployment, MinReplicas: ptr.To(int32(1)), MaxReplicas: 3},
		func(h *autoscalingv2.HorizontalPodAutoscaler) {
			h.Spec.Metrics = []autoscalingv2.MetricSpec{metric}
			h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: fast, ScaleDown: fast}
		})
}

func replicas(ctx context.Context, ns string) (int32, error) {
	d, err := cluster.Client().AppsV1().Deployments(ns).Get(ctx, deployment, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	return *d.Spec.Replicas, nil
}

func waitReplicas(t *testing.T, ns string, want int32) {
	t.Helper()
	framework.Eventually(t, 3*time.Minute, 2*time.Second, "deployment at "+strconv.Itoa(int(want))+" replicas", func(ctx context.Context) (bool, string) {
		n, err := replicas(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		d, _ := cluster.Client().AppsV1().Deployments(ns).Get(ctx, deployment, metav1.GetOptions{})
		return n == want && d.Status.ReadyReplicas == want, fmt.Sprintf("spec %d ready %d; %s", n, d.Status.ReadyReplicas, hpaState(ctx, ns))
	})
}

func hpaState(ctx context.Context, ns string) string {
	h, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "qwen-chat", metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, c := range h.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Reason))
	}
	return fmt.Sprintf("hpa desired %d, %s", h.Status.DesiredReplicas, strings.Join(parts, " "))
}

// TestHPAScalesOnTheMetric: the arena shape (type Pods, averageValue 50,
// 1..3) and the External shape with a pod-label selector both scale 1 → 3
// at ~80 % per pod and back to 1 at ~10 %.
func TestHPAScalesOnTheMetric(t *testing.T) {
	// 24 req/s: 80 % per pod once three replicas share it; 3 req/s over
	// three replicas: 10 %.
	scalesUpAndDown(t, hpa)
}

// scalesUpAndDown runs, for the Pods and the External shape of an HPA that
// build makes, a predictor at 24 req/s until it has 3 replicas, then at
// 3 req/s until it is back to 1.
func scalesUpAndDown(t *testing.T, build func(ns string, external bool) *autoscalingv2.HorizontalPodAutoscaler) {
	setup(t)
	for _, external := range []bool{false, true} {
		name := "pods"
		if external {
			name = "external"
		}
		t.Run(name, func(t *testing.T) {
			ns := framework.Namespace(t, cluster)
			createPredictor(t, ns)
			if _, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Create(context.Background(), build(ns, external), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			setLoad(t, ns, 24)
			waitReplicas(t, ns, 3)
			setLoad(t, ns, 3)
			waitReplicas(t, ns, 1)
		})
	}
}

// TestArenaHPAShape: the HPA arena's kserve chart creates for
// --scale-metric/--scale-target (its charts/kserve template): named
// <release>-hpa, type Pods, target type Utilization with an averageValue,
// no behavior. The API server accepts it and the HPA reads averageValue
// (the target type is not checked for Pods metrics), so it scales the
// predictor on spillway's metric like the AverageValue shape.
func TestArenaHPAShape(t *testing.T) {
	setup(t)
	ns := framework.Namespace(t, cluster)
	createPredictor(t, ns)
	arena := testobjects.HPA(testobjects.HPAOptions{Name: "qwen-chat-hpa", Namespace: ns, Deployment: deployment, MinReplicas: ptr.To(int32(1)), MaxReplicas: 3},
		func(h *autoscalingv2.HorizontalPodAutoscaler) {
			h.Spec.Metrics = []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: metricnames.ProcessSMUtil},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageValue: ptr.To(resource.MustParse("50"))},
				},
			}}
		})
	if _, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Create(context.Background(), arena, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the API server refused arena's HPA shape: %v", err)
	}
	// 24 req/s: 80 % per pod once three replicas share it. (Scale-in is
	// left out: without behavior it waits the default 5 minutes.)
	setLoad(t, ns, 24)
	framework.Eventually(t, 3*time.Minute, 2*time.Second, "arena's HPA at 3 replicas", func(ctx context.Context) (bool, string) {
		n, err := replicas(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		h, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "qwen-chat-hpa", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return n == 3, fmt.Sprintf("replicas %d, HPA desired %d, conditions %v", n, h.Status.DesiredReplicas, h.Status.Conditions)
	})
}

// TestPrometheusOutageHoldsScale: with Prometheus stopped the values go
// stale, the adapter refuses to serve them, the HPA reports a failed metric
// and keeps its replicas even though the (unseen) load dropped.
func TestPrometheusOutageHoldsScale(t *testing.T) {
	p := setup(t)
	ns := framework.Namespace(t, cluster)
	createPredictor(t, ns)
	ctx := context.Background()
	if _, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa(ns, false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setLoad(t, ns, 24)
	waitReplicas(t, ns, 3)

	if err := p.prom.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			if err := p.prom.Start(context.Background()); err != nil {
				t.Errorf("restarting Prometheus: %v", err)
			}
		}
	}()
	setLoad(t, ns, 3)
	framework.Eventually(t, 2*time.Minute, 2*time.Second, "the HPA reports the metric as failing", func(ctx context.Context) (bool, string) {
		h, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "qwen-chat", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range h.Status.Conditions {
			if c.Type == autoscalingv2.ScalingActive && c.Status == corev1.ConditionFalse && c.Reason == "FailedGetPodsMetric" {
				return true, ""
			}
		}
		return false, hpaState(ctx, ns)
	})
	// Hold: over several HPA sync periods (5 s) the replicas stay at 3.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		n, err := replicas(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		if n != 3 {
			t.Fatalf("replicas dropped to %d during the outage: a missing metric was acted on (%s)", n, hpaState(ctx, ns))
		}
		time.Sleep(2 * time.Second)
	}
	// The API errors rather than serving 0.
	u, _ := url.Parse("/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + ns + "/pods/%2A/" + metricnames.ProcessSMUtil + "?labelSelector=" + url.QueryEscape("app="+app))
	if l, err := getRawQuery(ctx, u); err == nil {
		t.Fatalf("stale values were served during the outage: %+v", l.Items)
	}

	restarted = true
	if err := p.prom.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitReplicas(t, ns, 1)
}
