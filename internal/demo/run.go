package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/scenario"
	"github.com/spillway-dev/spillway/pkg/gpu/sim"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

// The seed scenario's names and sizes.
const (
	OnPremPool      = "onprem"
	ElasticPool     = "elastic"
	Predictor       = "qwen-chat-predictor"
	PredictorApp    = "isvc.qwen-chat-predictor"
	SeedCapacityRPS = framework.SimReplicaCapacityRPS // req/s one replica serves at 100 % SM utilization
)

// Run configures one play of a trace.
type Run struct {
	Namespace string
	Trace     *scenario.Trace
	// DayDuration is the real time the 1440 minutes of the day take.
	DayDuration time.Duration
	SampleEvery time.Duration
	// WithPolicy applies the ResourcePolicy; without it the same HPA runs
	// on the stock scheduler alone (the baseline).
	WithPolicy bool
	// ScaleDownWindow is the HPA's scale-down stabilization window; by
	// default the HPA's own 5 minutes, compressed like the day.
	ScaleDownWindow time.Duration
	// OnQueue scales on the model servers' queue (QueueScaling) instead
	// of SM utilization alone.
	OnQueue bool
	// KEDA scales the predictor with a KEDA ScaledObject instead of the
	// InferenceScaler: a Prometheus trigger on the same series, target,
	// replicas and behavior, whose HPA (named as the InferenceScaler's)
	// KEDA's metrics API server feeds. The Env must run KEDA
	// (Options.KEDA). Not with OnQueue.
	KEDA  bool
	Table io.Writer // live table; nil for none
}

// QueueScaling is the InferenceScaler's metrics when a run scales on the
// queue: vLLM's waiting requests (QueueTarget per pod) with SM utilization
// kept as a second metric at QueueRunUtilTarget. A queue only forms past a
// replica's capacity, so with the second metric at the SM-only run's 50 %
// the queue would never act; the point of scaling on it is to let
// utilization run hotter and count on the queue when load outruns it.
const (
	QueueTarget        = 2
	QueueRunUtilTarget = 80
	// QueueSLO is the time in queue above which a minute is over the SLO.
	QueueSLO = 2 * time.Second
)

// Result is what a run recorded.
type Result struct {
	Timeline *scenario.Timeline
	Figures  scenario.Figures
	// MaxPendingAge is the longest a predictor pod stayed Pending.
	MaxPendingAge time.Duration
	PeakReplicas  int
	PeakElastic   int
	// ScaleDownWindow is the HPA scale-down window the run used.
	ScaleDownWindow time.Duration
}

// SeedObjects are the seed's predictor Deployment, ResourcePolicy and
// InferenceScaler for a namespace.
func SeedObjects(ns string, withPolicy bool, scaleDownWindow time.Duration) string {
	return seedObjects(ns, withPolicy, false, scaleDownWindow)
}

func seedObjects(ns string, withPolicy, onQueue bool, scaleDownWindow time.Duration) string {
	metric := fmt.Sprintf("metric: {name: %s, type: Pods, target: 50}", metricnames.ProcessSMUtil)
	if onQueue {
		metric = fmt.Sprintf("metrics:\n  - {name: %q, type: Pods, target: %d}\n  - {name: %s, type: Pods, target: %d}",
			metricnames.VLLMRequestsWaiting, QueueTarget, metricnames.ProcessSMUtil, QueueRunUtilTarget)
	}
	scaler := fmt.Sprintf(`---
apiVersion: spillway.dev/v1alpha1
kind: InferenceScaler
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: %[3]s}
  minReplicas: 1
  maxReplicas: 3
  %[4]s
  behavior:
%[5]s`, ScalerName, ns, Predictor, metric, seedBehavior(scaleDownWindow, "    "))
	return workloadObjects(ns) + scaler + policyObjects(ns, withPolicy)
}

// ScalerName names the seed's InferenceScaler, the KEDA ScaledObject that
// stands in for it, and the HPA either one makes.
const ScalerName = "qwen-chat"

// seedBehavior is the seed's HPA behavior, each line indented by indent.
func seedBehavior(scaleDownWindow time.Duration, indent string) string {
	var b strings.Builder
	for _, line := range []string{
		"scaleUp:",
		"  stabilizationWindowSeconds: 0",
		"  policies: [{type: Pods, value: 2, periodSeconds: 5}]",
		"scaleDown:",
		fmt.Sprintf("  stabilizationWindowSeconds: %d", int(scaleDownWindow.Seconds())),
		"  policies: [{type: Pods, value: 1, periodSeconds: 5}]",
	} {
		b.WriteString(indent + line + "\n")
	}
	return b.String()
}

// kedaSeedObjects are the seed's objects with a KEDA ScaledObject in place
// of the InferenceScaler: its Prometheus trigger sums the predictor pods'
// SM utilization with threshold 50 (KEDA's AverageValue target: ceil(sum /
// 50) replicas, what the InferenceScaler's Pods target of 50 asks for),
// polled every pollEvery; its HPA has the InferenceScaler's name, replicas
// and behavior.
func kedaSeedObjects(ns string, withPolicy bool, scaleDownWindow time.Duration, promURL string, pollEvery time.Duration) string {
	query := fmt.Sprintf(`sum(%s{job=%q,%s=%q,%s=~"%s-[a-z0-9]+-[a-z0-9]+"})`, metricnames.ProcessSMUtil, ExporterJob,
		metricnames.LabelNamespace, ns, metricnames.LabelPod, Predictor)
	scaler := fmt.Sprintf(`---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: %[3]s}
  minReplicaCount: 1
  maxReplicaCount: 3
  pollingInterval: %[4]d
  advanced:
    horizontalPodAutoscalerConfig:
      name: %[1]s
      behavior:
%[5]s  triggers:
  - type: prometheus
    metadata:
      serverAddress: %[6]s
      query: %[7]q
      threshold: "50"
`, ScalerName, ns, Predictor, max(1, int(pollEvery.Seconds())), seedBehavior(scaleDownWindow, "        "), promURL, query)
	return workloadObjects(ns) + scaler + policyObjects(ns, withPolicy)
}

// ExporterJob is the scrape job of the sim exporter in an Env.
const ExporterJob = "spillway-gpu-exporter"

// workloadObjects are the seed's namespace and predictor Deployment.
func workloadObjects(ns string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[2]s
  namespace: %[1]s
  labels: {app: %[3]s}
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[3]s}
  template:
    metadata:
      labels: {app: %[3]s}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: kserve-container
        image: vllm/vllm-openai:latest
        resources:
          requests: {cpu: "4", memory: 12Gi, nvidia.com/gpu: "1"}
          limits: {nvidia.com/gpu: "1"}
`, ns, Predictor, PredictorApp)
}

// policyObjects is the seed's ResourcePolicy when withPolicy.
func policyObjects(ns string, withPolicy bool) string {
	if !withPolicy {
		return ""
	}
	return fmt.Sprintf(`---
apiVersion: spillway.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: qwen-chat
  namespace: %[1]s
spec:
  selector: {app: %[2]s}
  strategy: prefer
  units:
  - resource: onprem
    name: onprem
    nodeSelector: {%[3]s: %[4]s}
  - resource: elastic
    name: elastic
    nodeSelector: {%[3]s: %[5]s}
`, ns, PredictorApp, localcluster.PoolLabel, OnPremPool, ElasticPool)
}

// CompressedWindow maps a window of a real 24-hour day onto a day compressed
// into dayDuration, in whole seconds (the HPA's unit), at least 1 s. An
// uncompressed window would hold an idle cloud GPU for hours of the day.
func CompressedWindow(w, dayDuration time.Duration) time.Duration {
	secs := math.Ceil(w.Seconds() * dayDuration.Seconds() / (24 * time.Hour).Seconds())
	return time.Duration(max(1, secs)) * time.Second
}

// Play applies the seed objects and plays the trace, sampling as it goes.
func (e *Env) Play(ctx context.Context, r Run) (*Result, error) {
	if r.SampleEvery == 0 {
		r.SampleEvery = 2 * time.Second
	}
	if r.ScaleDownWindow == 0 {
		r.ScaleDownWindow = CompressedWindow(5*time.Minute, r.DayDuration)
	}
	objs := seedObjects(r.Namespace, r.WithPolicy, r.OnQueue, r.ScaleDownWindow)
	if r.KEDA {
		if r.OnQueue {
			return nil, fmt.Errorf("a KEDA run scales on SM utilization only, not on the queue")
		}
		if !e.KEDA {
			return nil, fmt.Errorf("a KEDA run needs an Env started with Options.KEDA")
		}
		objs = kedaSeedObjects(r.Namespace, r.WithPolicy, r.ScaleDownWindow, e.Prometheus.URL, e.collectInterval)
	}
	if err := e.Cluster.Apply(ctx, []byte(objs)); err != nil {
		return nil, err
	}
	first, last := r.Trace.Span()
	perMinute := r.DayDuration / 1440
	span := time.Duration(last-first+1) * perMinute
	tl := &scenario.Timeline{}
	res := &Result{Timeline: tl, ScaleDownWindow: r.ScaleDownWindow}
	seen := map[string]podSeen{}
	pendingSince := map[string]time.Time{}
	nextEvent := 0
	var restarted string
	if r.Table != nil {
		fmt.Fprintf(r.Table, "%-6s %-6s %6s  %-30s %5s %5s  %-11s %-11s\n", "real", "day", "demand", "per-pod SM util (served)", "want", "ready", "pods op/el/pend", "nodes op/el")
	}
	start := time.Now()
	tick := time.NewTicker(r.SampleEvery)
	defer tick.Stop()
	for {
		elapsed := time.Since(start)
		if elapsed > span {
			break
		}
		dayMinute := float64(first) + float64(elapsed)/float64(perMinute)
		rps := r.Trace.At(dayMinute)
		if err := e.SetLoad(ctx, r.Namespace, Predictor, rps); err != nil {
			return nil, err
		}
		for nextEvent < len(r.Trace.Events) && float64(r.Trace.Events[nextEvent].Minute) <= dayMinute {
			name, err := e.deleteOnPremPod(ctx, r.Namespace)
			if err != nil {
				return nil, err
			}
			restarted = name
			if r.Table != nil {
				fmt.Fprintf(r.Table, "  >> restarting the on-prem predictor pod %s\n", name)
			}
			nextEvent++
		}
		s, pods, live, err := e.sample(ctx, r.Namespace)
		if err != nil {
			return nil, err
		}
		s.Elapsed, s.DayMinute, s.DemandRPS = elapsed, dayMinute, rps
		tl.Samples = append(tl.Samples, s)
		res.PeakReplicas = max(res.PeakReplicas, s.PodsOnPrem+s.PodsElastic)
		res.PeakElastic = max(res.PeakElastic, s.PodsElastic)
		now := time.Now()
		current := map[string]bool{}
		for _, p := range pods {
			current[p.name] = true
			if p.pool == ElasticPool && p.running && tl.FirstElasticRunning == 0 {
				tl.FirstElasticRunning = elapsed
			}
			if p.running {
				seen[p.name] = p
				delete(pendingSince, p.name)
			} else if p.pending {
				if _, ok := pendingSince[p.name]; !ok {
					pendingSince[p.name] = now
				}
				res.MaxPendingAge = max(res.MaxPendingAge, now.Sub(pendingSince[p.name]))
			}
		}
		for name, p := range seen {
			if !current[name] {
				reason := scenario.ReasonScaleIn
				switch {
				case name == restarted:
					reason = scenario.ReasonRestart
				case !live[p.node]:
					reason = scenario.ReasonNodeRemoved
				}
				pool := "on-prem"
				if p.pool == ElasticPool {
					pool = "elastic"
				}
				tl.Removals = append(tl.Removals, scenario.Removal{Elapsed: elapsed, DayMinute: dayMinute, Pod: name, Pool: pool, Reason: reason})
				delete(seen, name)
			}
		}
		if r.Table != nil {
			fmt.Fprintf(r.Table, "%-6s %-6s %6.1f  %-30s %5d %5d  %-11s %-11s\n",
				elapsed.Round(time.Second), scenario.DayClock(dayMinute), rps, scenario.PodUtils(s.PodUtil),
				s.Desired, s.Ready, fmt.Sprintf("%d/%d/%d", s.PodsOnPrem, s.PodsElastic, s.PodsPending),
				fmt.Sprintf("%d/%d", s.NodesOnPrem, s.NodesElastic))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	res.Figures = tl.Compute(scenario.Seed.TargetUtil, scenario.Seed.OnPremSlots, QueueSLO)
	return res, nil
}

type podSeen struct {
	name, pool, node string
	running, pending bool
}

// karpenterDisruptedTaint marks a node Karpenter is draining to remove it.
const karpenterDisruptedTaint = "karpenter.sh/disrupted"

// sample observes the cluster once. live holds the nodes that exist and are
// not being removed.
func (e *Env) sample(ctx context.Context, ns string) (s scenario.Sample, seen []podSeen, live map[string]bool, err error) {
	cs := e.Cluster.Client()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, nil, nil, err
	}
	poolOf := map[string]string{}
	live = map[string]bool{}
	for _, n := range nodes.Items {
		pool := n.Labels[localcluster.PoolLabel]
		poolOf[n.Name] = pool
		live[n.Name] = n.DeletionTimestamp == nil && !hasTaint(n.Spec.Taints, karpenterDisruptedTaint)
		switch pool {
		case OnPremPool:
			s.NodesOnPrem++
		case ElasticPool:
			s.NodesElastic++
			gpus := n.Status.Capacity[localcluster.GPUResource]
			s.ElasticGPUs += int(gpus.Value())
		}
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + PredictorApp})
	if err != nil {
		return s, nil, nil, err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		ps := podSeen{name: p.Name, pool: poolOf[p.Spec.NodeName], node: p.Spec.NodeName}
		switch {
		case p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "":
			ps.running = true
			switch ps.pool {
			case ElasticPool:
				s.PodsElastic++
				s.ElasticPodGPUs += podGPUs(&p)
			case OnPremPool:
				s.PodsOnPrem++
			}
		case p.Status.Phase == corev1.PodPending:
			ps.pending = true
			s.PodsPending++
		}
		seen = append(seen, ps)
	}
	if hpa, err := cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, ScalerName, metav1.GetOptions{}); err == nil {
		s.Desired = int(hpa.Status.DesiredReplicas)
	} else if !apierrors.IsNotFound(err) {
		return s, nil, nil, err
	}
	if d, err := cs.AppsV1().Deployments(ns).Get(ctx, Predictor, metav1.GetOptions{}); err == nil {
		s.Ready = int(d.Status.ReadyReplicas)
	}
	s.PodUtil = e.podUtil(ctx, ns)
	s.QueueSeconds = e.queueSeconds(ctx, ns)
	return s, seen, live, nil
}

// queueSeconds is the mean time in queue of a request arriving now at the
// namespace's predictors: the simulated model servers' queue times weighted
// by their arrival rates (0 when nothing arrives). NaN when unknown.
func (e *Env) queueSeconds(ctx context.Context, ns string) float64 {
	if e.ModelServerURL == "" {
		return math.NaN()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.ModelServerURL+"/pods", nil)
	if err != nil {
		return math.NaN()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return math.NaN()
	}
	defer func() { _ = resp.Body.Close() }()
	var states []sim.ServerState
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&states) != nil {
		return math.NaN()
	}
	var weighted, rate float64
	seen := false
	for _, st := range states {
		if st.Namespace != ns {
			continue
		}
		seen = true
		weighted += st.ArrivalRPS * st.QueueTime
		rate += st.ArrivalRPS
	}
	switch {
	case !seen:
		return math.NaN()
	case rate == 0:
		return 0
	}
	return weighted / rate
}

func hasTaint(taints []corev1.Taint, key string) bool {
	for _, t := range taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

func podGPUs(p *corev1.Pod) int {
	n := 0
	for _, c := range p.Spec.Containers {
		q := c.Resources.Requests[localcluster.GPUResource]
		n += int(q.Value())
	}
	return n
}

// podUtil reads per-pod utilization through the aggregated custom metrics
// API, exactly what the HPA sees. An error means no values (never zeros).
func (e *Env) podUtil(ctx context.Context, ns string) map[string]float64 {
	// "*" is the custom metrics API's "all pods"; the REST client escapes it.
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s", ns, metricnames.ProcessSMUtil)
	raw, err := e.Cluster.Client().Discovery().RESTClient().Get().AbsPath(path).
		Param("labelSelector", "app="+PredictorApp).DoRaw(ctx)
	if err != nil {
		return nil
	}
	var list struct {
		Items []struct {
			DescribedObject struct {
				Name string `json:"name"`
			} `json:"describedObject"`
			Value string `json:"value"`
		} `json:"items"`
	}
	if json.Unmarshal(raw, &list) != nil {
		return nil
	}
	out := map[string]float64{}
	for _, it := range list.Items {
		if v, ok := parseQuantity(it.Value); ok {
			out[it.DescribedObject.Name] = v
		}
	}
	return out
}

func parseQuantity(s string) (float64, bool) {
	// Quantities arrive as "80", "80500m" or similar.
	if n := len(s); n > 1 && s[n-1] == 'm' {
		v, err := strconv.ParseFloat(s[:n-1], 64)
		return v / 1000, err == nil
	}
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil && !math.IsNaN(v)
}

// SetLoad sets the simulated demand of a workload on the sim exporter.
func (e *Env) SetLoad(ctx context.Context, ns, workload string, rps float64) error {
	q := url.Values{"workload": {ns + "/" + workload}, "rps": {strconv.FormatFloat(rps, 'f', -1, 64)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, e.LoadURL+"/load?"+q.Encode(), bytes.NewReader(nil))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("setting the sim load: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("setting the sim load: %s: %s", resp.Status, b)
	}
	return nil
}

func (e *Env) deleteOnPremPod(ctx context.Context, ns string) (string, error) {
	cs := e.Cluster.Client()
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + PredictorApp})
	if err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		n, err := cs.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
		if err != nil || n.Labels[localcluster.PoolLabel] != OnPremPool || p.DeletionTimestamp != nil {
			continue
		}
		return p.Name, cs.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{})
	}
	return "", nil
}

// Teardown deletes a run's namespace and waits until the elastic pool is
// empty again, so the next run starts from the same state.
func (e *Env) Teardown(ctx context.Context, ns string) error {
	cs := e.Cluster.Client()
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return localcluster.Poll(wctx, 2*time.Second, "namespace "+ns+" and the elastic nodes to go", func(ctx context.Context) (bool, error) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: localcluster.PoolLabel + "=" + ElasticPool})
		_, nsErr := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return err == nil && len(nodes.Items) == 0 && apierrors.IsNotFound(nsErr), err
	})
}
