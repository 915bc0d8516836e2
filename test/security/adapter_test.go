package security

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/test/framework"
)

// The metrics contract, written out rather than imported from the code
// under test: what the exporter publishes and what the adapter exports
// about itself.
const (
	adMetric          = "DCGM_CUSTOM_PROCESS_SM_UTIL"
	adExporterJob     = "spillway-gpu-exporter"
	adRejectedMetric  = "spillway_metrics_adapter_series_rejected_total"
	adRefreshesMetric = "spillway_metrics_adapter_refresh_duration_seconds" // a histogram: its count is the refreshes

	adVictimNS = "victim-adapter"
	// adMalloryNS is where the forged scrape target notionally runs; the
	// target itself is the package's tenant server.
	adMalloryNS = "mallory-adapter"
	adHPA       = "victim"
	// adLoadRPS is the victim's steady demand: 2 req/s on one replica that
	// serves 10 req/s at 100 % is 20 % SM utilization, well under the HPA's
	// target of 50. One forged GPU at 100 makes the mean 60 (the HPA wants
	// 2 replicas); a forged 0 makes it 10.
	adLoadRPS = 2
	// adHPASync is kube-controller-manager's HPA sync period in the local
	// cluster; adHoldSyncs of them is how long the victim must hold while
	// the forged series sit in Prometheus and the adapter refreshes over
	// them. The old adapter served the forged mean within one refresh and
	// the HPA acted on it at its next sync.
	adHPASync   = 5 * time.Second
	adHoldSyncs = 6
	adBound     = 3 * time.Minute
)

// TestTenantCannotForgeTheScalingSignal: a scrape target that a tenant
// controls publishes the exporter's metric for a pod in another namespace.
// The victim's HPA (one type Pods and one type External metric on the same
// signal) must neither see nor act on the forgery:
//
//   - (a) a made-up GPU at 100 under the victim's real node, in the
//     cluster-wide pod job: the adapter's series selector (the exporter's
//     job) keeps it out;
//   - (b) the same with a forged job="spillway-gpu-exporter" and a wrong
//     Hostname, which the honor_labels job passes through as written: it
//     passes the selector, and the Hostname rule must drop it, counted in
//     the adapter's rejection counter;
//   - (c) a forged 0 under made-up GPUs, in both forms, must not pull the
//     value down.
func TestTenantCannotForgeTheScalingSignal(t *testing.T) {
	env := spillway(t)
	ctx := context.Background()
	adNamespace(t, adVictimNS)
	adNamespace(t, adMalloryNS)
	t.Cleanup(func() { tenant.Set("") })

	// The victim: the seed's predictor at a steady, low load.
	d := framework.GPUDeployment(adVictimNS, demo.Predictor, demo.PredictorApp, 1, "1", "1Gi")
	if _, err := cluster.Client().AppsV1().Deployments(adVictimNS).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := env.SetLoad(ctx, adVictimNS, demo.Predictor, adLoadRPS); err != nil {
		t.Fatal(err)
	}
	victim := adWaitRunning(t)
	honest := adWaitHonestValue(t, victim.Name)
	t.Logf("victim %s/%s on node %s serves %s=%.1f", adVictimNS, victim.Name, victim.Spec.NodeName, adMetric, honest)

	if _, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(adVictimNS).Create(ctx, adVictimHPA(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, adBound, time.Second, "the HPA reading the honest value on both metrics", func(ctx context.Context) (bool, string) {
		pods, ext, state := adHPAView(ctx)
		return adNear(pods, honest) && adNear(ext, honest), state
	})

	// The wrong Hostname of (b): another node of the cluster, as a tenant
	// on that node would claim it.
	otherNode := adOtherNode(t, victim.Spec.NodeName)
	rejectedBefore := adSelfMetric(t, env, adRejectedMetric, "hostname_mismatch")

	cases := []struct {
		name   string
		series []adForged
		// jobs the forged series reach Prometheus under: proof that the
		// attack is in place before the victim is watched.
		jobs []string
		// rejected: the adapter must count the forgery as a Hostname
		// mismatch.
		rejected bool
	}{
		{
			name:   "a/plain-job-made-up-GPU-at-100",
			series: []adForged{{uuid: "GPU-forged-a", host: victim.Spec.NodeName, value: 100}},
			jobs:   []string{jobTenantPods, jobTenantHonor},
		},
		{
			name:     "b/forged-exporter-job-wrong-Hostname-at-100",
			series:   []adForged{{uuid: "GPU-forged-b", host: otherNode, value: 100, job: adExporterJob}},
			jobs:     []string{jobTenantPods, adExporterJob},
			rejected: true,
		},
		{
			name: "c/forged-zeros",
			series: []adForged{
				{uuid: "GPU-forged-c1", host: victim.Spec.NodeName, value: 0},
				{uuid: "GPU-forged-c2", host: otherNode, value: 0, job: adExporterJob},
			},
			jobs:     []string{jobTenantPods, jobTenantHonor, adExporterJob},
			rejected: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			refreshesBefore := adSelfMetric(t, env, adRefreshesMetric, "")
			tenant.Set(adExposition(victim.Name, tc.series))
			t.Cleanup(func() {
				tenant.Set("")
				adWaitForgeriesGone(t, env)
			})
			adWaitForgeries(t, env, tc.series, tc.jobs)
			// The adapter has refreshed at least twice since the forgery
			// was published, so at least once with it in Prometheus.
			framework.Eventually(t, adBound, time.Second, "two adapter refreshes over the forged series", func(context.Context) (bool, string) {
				n := adSelfMetric(t, env, adRefreshesMetric, "")
				return n >= refreshesBefore+2, fmt.Sprintf("refreshes %v, before %v", n, refreshesBefore)
			})
			adHold(t, victim.Name, honest)
			if tc.rejected {
				// The defence leaves a trace: the refreshes above read the
				// forgery and dropped it.
				n := adSelfMetric(t, env, adRejectedMetric, "hostname_mismatch")
				if n <= rejectedBefore {
					t.Errorf("%s{reason=\"hostname_mismatch\"} = %v, not above %v: the forgery was not counted", adRejectedMetric, n, rejectedBefore)
				}
				rejectedBefore = n
			}
		})
	}
}

// adHold watches the victim for adHoldSyncs HPA sync periods: what the
// aggregated APIs serve, what the HPA read and its replicas must all stay
// the honest ones.
func adHold(t *testing.T, pod string, honest float64) {
	t.Helper()
	ctx := context.Background()
	window := adHoldSyncs * adHPASync
	deadline := time.Now().Add(window)
	for polls := 0; ; polls++ {
		served, err := adServedValue(ctx, pod)
		if err != nil {
			t.Fatalf("reading the victim's value: %v", err)
		}
		if !adNear(served, honest) {
			t.Fatalf("the victim's served value moved from %.1f to %.1f: the forged series were read", honest, served)
		}
		ext, err := adExternalAvg(ctx)
		if err != nil {
			t.Fatalf("reading the victim's external value: %v", err)
		}
		if !adNear(ext, honest) {
			t.Fatalf("the victim's external avg moved from %.1f to %.1f: the forged series were read", honest, ext)
		}
		pods, extHPA, state := adHPAView(ctx)
		if pods >= 0 && !adNear(pods, honest) || extHPA >= 0 && !adNear(extHPA, honest) {
			t.Fatalf("the HPA read a forged value: %s", state)
		}
		dep, err := cluster.Client().AppsV1().Deployments(adVictimNS).Get(ctx, demo.Predictor, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n := ptr.Deref(dep.Spec.Replicas, 0); n != 1 {
			t.Fatalf("the victim was scaled to %d replicas: %s", n, state)
		}
		if time.Now().After(deadline) {
			t.Logf("held for %s (%d HPA syncs, %d polls): served %.1f, %s", window, adHoldSyncs, polls+1, served, state)
			return
		}
		time.Sleep(time.Second)
	}
}

// adForged is one forged per-process series for the victim's pod.
type adForged struct {
	uuid  string
	host  string // the Hostname label
	value float64
	job   string // a job label written by the target ("" for none)
}

// adExposition renders the forged series with every label the exporter
// sets, so that only provenance tells them apart from the real ones.
func adExposition(pod string, series []adForged) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE %s gauge\n", adMetric)
	for i, s := range series {
		labels := []string{
			fmt.Sprintf("Hostname=%q", s.host), `gpu="0"`, fmt.Sprintf("UUID=%q", s.uuid), `modelName="NVIDIA H100 80GB HBM3"`,
			fmt.Sprintf("namespace=%q", adVictimNS), fmt.Sprintf("pod=%q", pod), `container="predictor"`, fmt.Sprintf(`pid="%d"`, 4242+i),
			fmt.Sprintf("NamespaceName=%q", adVictimNS), fmt.Sprintf("PodName=%q", pod), `ContainerName="predictor"`,
		}
		if s.job != "" {
			labels = append(labels, fmt.Sprintf("job=%q", s.job))
		}
		fmt.Fprintf(&b, "%s{%s} %g\n", adMetric, strings.Join(labels, ","), s.value)
	}
	return b.String()
}

// adWaitForgeries waits until Prometheus holds every forged series under
// every expected job.
func adWaitForgeries(t *testing.T, env *demo.Env, series []adForged, jobs []string) {
	t.Helper()
	var uuids []string
	for _, s := range series {
		uuids = append(uuids, s.uuid)
	}
	framework.Eventually(t, adBound, time.Second, "Prometheus scraping the forged series", func(ctx context.Context) (bool, string) {
		vec, err := adPromQuery(ctx, env, fmt.Sprintf(`%s{UUID=~"GPU-forged-.*"}`, adMetric))
		if err != nil {
			return false, err.Error()
		}
		seen := map[string]bool{}
		for _, s := range vec {
			seen[string(s.Metric["job"])+"/"+string(s.Metric["UUID"])] = true
		}
		var missing []string
		for _, s := range series {
			for _, j := range jobs {
				// A series with a job label of its own reaches the
				// honor_labels job under that job; one without, under the
				// job's name.
				if j == jobTenantHonor && s.job != "" || j == adExporterJob && s.job == "" {
					continue
				}
				if !seen[j+"/"+s.uuid] {
					missing = append(missing, j+"/"+s.uuid)
				}
			}
		}
		return len(missing) == 0, fmt.Sprintf("missing job/UUID %v of %v; have %v", missing, uuids, seen)
	})
}

// adWaitForgeriesGone waits until Prometheus has marked the forged series
// stale, so that the next case starts from the honest state.
func adWaitForgeriesGone(t *testing.T, env *demo.Env) {
	t.Helper()
	framework.Eventually(t, adBound, time.Second, "the forged series gone from Prometheus", func(ctx context.Context) (bool, string) {
		vec, err := adPromQuery(ctx, env, fmt.Sprintf(`%s{UUID=~"GPU-forged-.*"}`, adMetric))
		if err != nil {
			return false, err.Error()
		}
		return len(vec) == 0, fmt.Sprintf("%d forged series left", len(vec))
	})
}

// adPromQuery runs an instant query against the test's Prometheus.
func adPromQuery(ctx context.Context, env *demo.Env, q string) (model.Vector, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.Prometheus.URL+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result model.Vector `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, body.Error)
	}
	return body.Data.Result, nil
}

// adSelfMetric reads a counter (with reason, when given) or a histogram's
// count from the adapter's own /metrics; 0 when the adapter does not export
// it (an adapter from before the rejection counter), which the callers'
// "it grew" checks then catch.
func adSelfMetric(t *testing.T, env *demo.Env, name, reason string) float64 {
	t.Helper()
	if env.AdapterSelfMetricsAddr == "" {
		t.Fatal("the adapter's self-metrics address is unknown")
	}
	resp, err := http.Get("http://" + env.AdapterSelfMetricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("reading the adapter's self-metrics: %v", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the adapter's self-metrics: %v", err)
	}
	mf, ok := families[name]
	if !ok {
		return 0
	}
	for _, m := range mf.GetMetric() {
		match := reason == ""
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "reason" && lp.GetValue() == reason {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// adServedValue is the victim pod's value as the HPA reads it through the
// aggregator (custom.metrics.k8s.io, pods by label selector).
func adServedValue(ctx context.Context, pod string) (float64, error) {
	raw, err := cluster.Client().Discovery().RESTClient().Get().
		AbsPath("/apis/custom.metrics.k8s.io/v1beta2/namespaces/"+adVictimNS+"/pods/*/"+adMetric).
		Param("labelSelector", "app="+demo.PredictorApp).DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, raw)
	}
	var list struct {
		Items []struct {
			DescribedObject struct {
				Name string `json:"name"`
			} `json:"describedObject"`
			Value resource.Quantity `json:"value"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return 0, err
	}
	for _, it := range list.Items {
		if it.DescribedObject.Name == pod {
			return it.Value.AsApproximateFloat64(), nil
		}
	}
	return 0, fmt.Errorf("no value for pod %s in %s", pod, raw)
}

// adExternalAvg is the victim's aggregated value on external.metrics.k8s.io.
func adExternalAvg(ctx context.Context) (float64, error) {
	raw, err := cluster.Client().Discovery().RESTClient().Get().
		AbsPath("/apis/external.metrics.k8s.io/v1beta1/namespaces/"+adVictimNS+"/"+adMetric).
		Param("labelSelector", "app="+demo.PredictorApp+",spillway.dev/aggregate=avg").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, raw)
	}
	var list struct {
		Items []struct {
			Value resource.Quantity `json:"value"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return 0, err
	}
	if len(list.Items) != 1 {
		return 0, fmt.Errorf("want one aggregated item: %s", raw)
	}
	return list.Items[0].Value.AsApproximateFloat64(), nil
}

// adVictimHPA scales the victim on the signal through both APIs, with no
// stabilization: whichever metric a forgery reached would scale it.
func adVictimHPA() *autoscalingv2.HorizontalPodAutoscaler {
	target := autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(resource.MustParse("50"))}
	fast := &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr.To(int32(0)),
		Policies:                   []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PodsScalingPolicy, Value: 2, PeriodSeconds: 5}},
	}
	return testobjects.HPA(testobjects.HPAOptions{Name: adHPA, Namespace: adVictimNS, Deployment: demo.Predictor, MinReplicas: ptr.To(int32(1)), MaxReplicas: 3},
		func(h *autoscalingv2.HorizontalPodAutoscaler) {
			h.Spec.Metrics = []autoscalingv2.MetricSpec{
				{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: adMetric}, Target: target,
				}},
				{Type: autoscalingv2.ExternalMetricSourceType, External: &autoscalingv2.ExternalMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: adMetric, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": demo.PredictorApp}}},
					Target: target,
				}},
			}
			h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: fast, ScaleDown: fast}
		})
}

// adHPAView returns the per-pod averages the HPA last read for its Pods
// and External metrics (-1 when absent) and a description of its state.
func adHPAView(ctx context.Context) (pods, ext float64, state string) {
	pods, ext = -1, -1
	h, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(adVictimNS).Get(ctx, adHPA, metav1.GetOptions{})
	if err != nil {
		return pods, ext, err.Error()
	}
	for _, m := range h.Status.CurrentMetrics {
		switch {
		case m.Pods != nil && m.Pods.Current.AverageValue != nil:
			pods = m.Pods.Current.AverageValue.AsApproximateFloat64()
		case m.External != nil && m.External.Current.AverageValue != nil:
			ext = m.External.Current.AverageValue.AsApproximateFloat64()
		}
	}
	var conds []string
	for _, c := range h.Status.Conditions {
		conds = append(conds, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Reason))
	}
	return pods, ext, fmt.Sprintf("HPA read pods=%.1f external=%.1f, replicas %d->%d, %s",
		pods, ext, h.Status.CurrentReplicas, h.Status.DesiredReplicas, strings.Join(conds, " "))
}

// adNear: the sim publishes the same value every collection; a forged
// series moves the mean by tens of points.
func adNear(got, want float64) bool { return math.Abs(got-want) < 0.5 }

func adWaitRunning(t *testing.T) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	framework.Eventually(t, adBound, time.Second, "the victim's pod Running", func(ctx context.Context) (bool, string) {
		list, err := cluster.Client().CoreV1().Pods(adVictimNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + demo.PredictorApp})
		if err != nil {
			return false, err.Error()
		}
		for i := range list.Items {
			if p := &list.Items[i]; p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" {
				pod = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pods, none Running", len(list.Items))
	})
	return pod
}

// adWaitHonestValue waits until the adapter serves the sim's value for the
// victim: the load divided by the replica's capacity.
func adWaitHonestValue(t *testing.T, pod string) float64 {
	t.Helper()
	want := 100 * adLoadRPS / demo.SeedCapacityRPS
	var got float64
	framework.Eventually(t, adBound, time.Second, "the adapter serving the victim's honest value", func(ctx context.Context) (bool, string) {
		v, err := adServedValue(ctx, pod)
		if err != nil {
			return false, err.Error()
		}
		got = v
		return adNear(v, want), fmt.Sprintf("served %.1f, want %.1f", v, want)
	})
	return got
}

// adOtherNode names a node of the cluster other than the victim's.
func adOtherNode(t *testing.T, victimNode string) string {
	t.Helper()
	nodes, err := cluster.Client().CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		if n.Name != victimNode {
			names = append(names, n.Name)
		}
	}
	if len(names) == 0 {
		return "mallory-gpu-node" // the only node is the victim's
	}
	slices.Sort(names)
	return names[0]
}

// adNamespace creates a namespace and, at the end, deletes it and waits for
// its pods to go, so the GPU it held is free for the next test.
func adNamespace(t *testing.T, name string) {
	t.Helper()
	cs := cluster.Client()
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: deleting namespace %s: %v", name, err)
			return
		}
		if err := localcluster.Poll(ctx, time.Second, "the pods of namespace "+name+" to go", func(ctx context.Context) (bool, error) {
			list, err := cs.CoreV1().Pods(name).List(ctx, metav1.ListOptions{})
			return err == nil && len(list.Items) == 0, err
		}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}
