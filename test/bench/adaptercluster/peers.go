package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

// The peer scaling scenarios: KEDA's generated HPA and an HPA on spillway's
// Pods metric scale real Deployments of simulated GPU pods, side by side,
// on the cluster, kube-controller-manager (one HPA sync period) and
// Prometheus of the latency run, from the same exporter's series.

// peerJob is the scrape job of the sim exporter whose series both scale on.
const peerJob = "peer-gpu-exporter"

// Scaling parameters shared by every scaler: a replica is asked for per 50
// points of SM utilization, 1 to 3 replicas, up and down by up to 100 %
// every 5 s with no stabilization.
const (
	peerTarget      = 50
	peerMaxReplicas = 3
	peerScaleWindow = 5 * time.Second
	// peerInterval paces KEDA's polling and spillway's refresh (as in the
	// latency run); Prometheus scrapes every 5 s too.
	peerInterval = 5 * time.Second
	// exporterInterval is how often the sim exporter recomputes its
	// series, well inside a scrape interval.
	exporterInterval = time.Second
)

// Simulated load (requests per second; one replica serves
// framework.SimReplicaCapacityRPS at 100 % SM utilization).
const (
	lowRPS  = 3  // 30 % on one replica: 1 replica
	stepRPS = 8  // 80 % on one: 2 replicas, 40 % each: stays at 2
	peakRPS = 24 // 100 % on 1 or 2, 80 % on 3: the maximum, 3
)

type scalerKind int

const (
	kindKEDA scalerKind = iota
	kindSpillway
)

// scaler is one Deployment and what scales it.
type scaler struct {
	name  string // Deployment, ScaledObject or HPA name
	label string // the report's row
	kind  scalerKind
	// edit changes a KEDA scaler's ScaledObject.
	edit func(*unstructured.Unstructured)
}

func (s scaler) hpaName() string {
	if s.kind == kindKEDA {
		return "keda-hpa-" + s.name
	}
	return s.name
}

// editTrigger edits the ScaledObject's only trigger.
func editTrigger(f func(trigger map[string]any)) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		triggers, _, _ := unstructured.NestedSlice(u.Object, "spec", "triggers")
		f(triggers[0].(map[string]any))
		_ = unstructured.SetNestedSlice(u.Object, triggers, "spec", "triggers")
	}
}

// fallbackReplicas is the fixed replica count of the KEDA scalers with a
// fallback: between the minimum and the peak, so that a reader sees when
// it applies.
const fallbackReplicas = 2

func withFallback(u *unstructured.Unstructured) {
	_ = unstructured.SetNestedMap(u.Object, map[string]any{
		"failureThreshold": int64(3),
		"replicas":         int64(fallbackReplicas),
	}, "spec", "fallback")
}

var (
	kedaDefault = scaler{name: "keda-default", label: "KEDA " + localcluster.KEDAVersion + ", defaults", kind: kindKEDA}
	kedaCached  = scaler{name: "keda-cached", label: "KEDA, useCachedMetrics", kind: kindKEDA,
		edit: editTrigger(func(t map[string]any) { t["useCachedMetrics"] = true })}
	kedaFallback = scaler{name: "keda-fallback", label: fmt.Sprintf("KEDA, fallback (failureThreshold 3, replicas %d)", fallbackReplicas),
		kind: kindKEDA, edit: withFallback}
	kedaStrict = scaler{name: "keda-strict", label: "KEDA, fallback + ignoreNullValues: false", kind: kindKEDA,
		edit: func(u *unstructured.Unstructured) {
			withFallback(u)
			editTrigger(func(t map[string]any) {
				t["metadata"].(map[string]any)["ignoreNullValues"] = "false"
			})(u)
		}}
	spillwayHPA = scaler{name: "spillway", label: "spillway (HPA type Pods on its cache)", kind: kindSpillway}
)

// peerEnv is what the scenarios share.
type peerEnv struct {
	c        *localcluster.Cluster
	prom     *localcluster.Prometheus
	exporter *framework.Exporter
	load     *demo.Env
	hc       *http.Client // the admin's, for aggregated APIs
	dyn      dynamic.Interface
	log      io.Writer
}

func (e *peerEnv) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "[adaptercluster] "+format+"\n", args...)
}

// startPeerEnv adds GPU nodes, the sim exporter (scraped by the run's
// Prometheus) and spillway's adapter serving the custom metrics API only,
// as the chart renders it when KEDA owns external.metrics.k8s.io.
func startPeerEnv(ctx context.Context, c *localcluster.Cluster, prom *localcluster.Prometheus, binDir string, log io.Writer) (*peerEnv, error) {
	e := &peerEnv{c: c, prom: prom, log: log}
	var err error
	if e.hc, err = insecureClient(c); err != nil {
		return nil, err
	}
	if e.dyn, err = dynamic.NewForConfig(c.RESTConfig()); err != nil {
		return nil, err
	}
	if _, err := c.AddStaticGPUNodes(ctx, "peer-gpu", 4, localcluster.NodeShape{CPU: "64", Memory: "256Gi", GPUs: 8}); err != nil {
		return nil, err
	}
	if e.exporter, err = framework.StartExporter(ctx, c, binDir, exporterInterval); err != nil {
		return nil, err
	}
	e.load = &demo.Env{Cluster: c, LoadURL: e.exporter.LoadURL}
	if err := prom.AddTargets(ctx, localcluster.ScrapeTarget{Job: peerJob, Address: e.exporter.MetricsAddr}); err != nil {
		return nil, err
	}
	if _, err := framework.StartPodsOnlyAdapter(ctx, c, binDir, prom.URL, peerInterval, []string{"--series-selector=job=\"" + peerJob + "\""}); err != nil {
		return nil, err
	}
	return e, nil
}

// createNamespace creates ns.
func (e *peerEnv) createNamespace(ctx context.Context, ns string) error {
	_, err := e.c.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	return err
}

// peerQuery is a KEDA trigger's query: the total SM utilization of the
// Deployment's pods (pod names <deployment>-<hash>-<suffix>), which with
// KEDA's default AverageValue target asks for ceil(total / 50) replicas:
// what the HPA computes from spillway's per-pod values with averageValue 50.
func peerQuery(ns, deployment string) string {
	return fmt.Sprintf(`sum(%s{job=%q,%s=%q,%s=~"%s-[a-z0-9]+-[a-z0-9]+"})`, metricnames.ProcessSMUtil, peerJob,
		metricnames.LabelNamespace, ns, metricnames.LabelPod, deployment)
}

// createScaler creates a 1-replica GPU Deployment and its ScaledObject or
// HPA.
func (e *peerEnv) createScaler(ctx context.Context, ns string, s scaler) error {
	d := framework.GPUDeployment(ns, s.name, s.name, 1, "1", "1Gi")
	if _, err := e.c.Client().AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Deployment %s: %w", s.name, err)
	}
	if err := e.load.SetLoad(ctx, ns, s.name, lowRPS); err != nil {
		return err
	}
	if s.kind == kindSpillway {
		return e.createSpillwayHPA(ctx, ns, s.name)
	}
	var edits []func(*unstructured.Unstructured)
	if s.edit != nil {
		edits = append(edits, s.edit)
	}
	so := testobjects.ScaledObject(testobjects.ScaledObjectOptions{
		Name: s.name, Namespace: ns, Deployment: s.name,
		MinReplicas: ptr.To(int32(1)), MaxReplicas: ptr.To(int32(peerMaxReplicas)),
		PollingInterval: peerInterval,
		ServerAddress:   e.prom.URL, Query: peerQuery(ns, s.name), Threshold: strconv.Itoa(peerTarget),
		ScaleWindow: peerScaleWindow,
	}, edits...)
	b, err := json.Marshal(so.Object)
	if err != nil {
		return err
	}
	if err := e.c.Apply(ctx, b); err != nil {
		return fmt.Errorf("creating ScaledObject %s: %w", s.name, err)
	}
	return nil
}

// createSpillwayHPA is the HPA a spillway user writes: type Pods on
// DCGM_CUSTOM_PROCESS_SM_UTIL, averageValue 50, with the behavior KEDA's
// ScaledObjects give theirs.
func (e *peerEnv) createSpillwayHPA(ctx context.Context, ns, name string) error {
	hpa := testobjects.HPA(testobjects.HPAOptions{
		Name: name, Namespace: ns, Deployment: name, MinReplicas: ptr.To(int32(1)), MaxReplicas: peerMaxReplicas,
	}, func(h *autoscalingv2.HorizontalPodAutoscaler) {
		h.Spec.Metrics = []autoscalingv2.MetricSpec{{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: metricnames.ProcessSMUtil},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resource.NewQuantity(peerTarget, resource.DecimalSI)},
			},
		}}
		rules := &autoscalingv2.HPAScalingRules{
			StabilizationWindowSeconds: ptr.To(int32(0)),
			Policies:                   []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: int32(peerScaleWindow / time.Second)}},
		}
		h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: rules, ScaleDown: rules}
	})
	if _, err := e.c.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating HPA %s: %w", name, err)
	}
	return nil
}

// setLoad sets every scaler's simulated load.
func (e *peerEnv) setLoad(ctx context.Context, ns string, ss []scaler, rps float64) error {
	for _, s := range ss {
		if err := e.load.SetLoad(ctx, ns, s.name, rps); err != nil {
			return err
		}
	}
	return nil
}

// waitReplicas waits until every scaler's Deployment asks for want
// replicas and has them Ready.
func (e *peerEnv) waitReplicas(ctx context.Context, ns string, ss []scaler, want int32, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return localcluster.Poll(wctx, time.Second, fmt.Sprintf("%d Deployments at %d Ready replicas", len(ss), want), func(ctx context.Context) (bool, error) {
		var off []string
		for _, s := range ss {
			d, err := e.c.Client().AppsV1().Deployments(ns).Get(ctx, s.name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if *d.Spec.Replicas != want || d.Status.ReadyReplicas != want {
				off = append(off, fmt.Sprintf("%s spec %d ready %d (%s)", s.name, *d.Spec.Replicas, d.Status.ReadyReplicas, e.hpaState(ctx, ns, s)))
			}
		}
		if len(off) > 0 {
			return false, fmt.Errorf("%s", strings.Join(off, "; "))
		}
		return true, nil
	})
}

// hpaState is an HPA's desired replicas, the metric it last read and the
// reason of its ScalingActive condition (why it could or could not compute
// a scale), and for KEDA the ScaledObject's Fallback condition and failure
// count.
func (e *peerEnv) hpaState(ctx context.Context, ns string, s scaler) string {
	h, err := e.c.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, s.hpaName(), metav1.GetOptions{})
	if err != nil {
		return "HPA: " + err.Error()
	}
	parts := []string{fmt.Sprintf("desired %d", h.Status.DesiredReplicas)}
	for _, m := range h.Status.CurrentMetrics {
		var cur *autoscalingv2.MetricValueStatus
		switch {
		case m.External != nil:
			cur = &m.External.Current
		case m.Pods != nil:
			cur = &m.Pods.Current
		}
		if cur != nil && cur.AverageValue != nil {
			parts = append(parts, "read "+cur.AverageValue.String())
		}
	}
	for _, c := range h.Status.Conditions {
		if c.Type == autoscalingv2.ScalingActive {
			parts = append(parts, fmt.Sprintf("ScalingActive=%s %s", c.Status, c.Reason))
		}
	}
	if s.kind == kindKEDA {
		parts = append(parts, e.fallbackState(ctx, ns, s.name))
	}
	return strings.Join(parts, ", ")
}

var scaledObjects = schema.GroupVersionResource{Group: "keda.sh", Version: "v1alpha1", Resource: "scaledobjects"}

// fallbackState is a ScaledObject's Fallback condition and the failure
// counts of its triggers' health.
func (e *peerEnv) fallbackState(ctx context.Context, ns, name string) string {
	u, err := e.dyn.Resource(scaledObjects).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "ScaledObject: " + err.Error()
	}
	state := "Fallback condition unset"
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Fallback" {
			state = fmt.Sprintf("Fallback=%v", m["status"])
		}
	}
	health, _, _ := unstructured.NestedMap(u.Object, "status", "health")
	for _, h := range health {
		m, _ := h.(map[string]any)
		state += fmt.Sprintf(" (%v, %v failures)", m["status"], m["numberOfFailures"])
	}
	return state
}

// servedValue reads, through the aggregator, what the scaler's HPA reads:
// KEDA's external metric for the ScaledObject, or the sum of spillway's
// per-pod values for the Deployment's pods.
func (e *peerEnv) servedValue(ctx context.Context, ns string, s scaler) (float64, error) {
	var path string
	if s.kind == kindKEDA {
		path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/" + ns + "/" + kedaMetric +
			"?labelSelector=" + url.QueryEscape("scaledobject.keda.sh/name="+s.name)
	} else {
		path = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + ns + "/pods/*/" + metricnames.ProcessSMUtil +
			"?labelSelector=" + url.QueryEscape("app="+s.name)
	}
	var l struct {
		Items []struct {
			Value string `json:"value"`
		} `json:"items"`
	}
	if err := getJSON(ctx, e.hc, e.c.Host()+path, &l); err != nil {
		return 0, err
	}
	if len(l.Items) == 0 {
		return 0, fmt.Errorf("no items")
	}
	var sum float64
	for _, it := range l.Items {
		q, err := resource.ParseQuantity(it.Value)
		if err != nil {
			return 0, err
		}
		sum += q.AsApproximateFloat64()
	}
	return sum, nil
}

// replicaSample is every scaler's Deployment's spec.replicas at one time.
type replicaSample struct {
	at       time.Time
	replicas map[string]int32
}

// sampleReplicas lists the namespace's Deployments every second until ctx
// ends, then returns the samples.
func (e *peerEnv) sampleReplicas(ctx context.Context, ns string) <-chan []replicaSample {
	out := make(chan []replicaSample, 1)
	go func() {
		var samples []replicaSample
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			l, err := e.c.Client().AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				s := replicaSample{at: time.Now(), replicas: map[string]int32{}}
				for _, d := range l.Items {
					s.replicas[d.Name] = ptr.Deref(d.Spec.Replicas, 0)
				}
				samples = append(samples, s)
			}
			select {
			case <-ctx.Done():
				out <- samples
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// deploymentReplicas is spec.replicas of one Deployment.
func deploymentReplicas(d *appsv1.Deployment) int32 { return ptr.Deref(d.Spec.Replicas, 0) }

// promSamples returns the (time, value) samples Prometheus holds for the
// Deployment's pods' series over the last window.
func (e *peerEnv) promSamples(ctx context.Context, ns, deployment string, window time.Duration) ([]promSample, error) {
	sel := fmt.Sprintf(`%s{job=%q,%s=%q,%s=~"%s-[a-z0-9]+-[a-z0-9]+"}[%ds]`, metricnames.ProcessSMUtil, peerJob,
		metricnames.LabelNamespace, ns, metricnames.LabelPod, deployment, int(window/time.Second))
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Values [][2]json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	// Prometheus answers a bad query with a non-200 status and its error
	// in the body, which getJSON's error carries.
	if err := getJSON(ctx, http.DefaultClient, e.prom.URL+"/api/v1/query?query="+url.QueryEscape(sel), &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s", r.Error)
	}
	var out []promSample
	for _, series := range r.Data.Result {
		for _, v := range series.Values {
			var ts float64
			var s string
			if err := json.Unmarshal(v[0], &ts); err != nil {
				return nil, err
			}
			if err := json.Unmarshal(v[1], &s); err != nil {
				return nil, err
			}
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, err
			}
			out = append(out, promSample{at: time.UnixMilli(int64(ts * 1000)), v: f})
		}
	}
	slices.SortFunc(out, func(a, b promSample) int { return a.at.Compare(b.at) })
	return out, nil
}

type promSample struct {
	at time.Time
	v  float64
}
