package scaler

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/localcluster"
	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/test/framework"
)

// pipelineInterval paces the exporter's collection, Prometheus's scrape and
// the adapter's refresh.
const pipelineInterval = 2 * time.Second

// metricsAPIServices are the APIServices framework.StartAdapter registers.
var metricsAPIServices = []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"}

var apiServiceGVK = schema.GroupVersionKind{Group: "apiregistration.k8s.io", Version: "v1", Kind: "APIService"}

// TestFallbackHoldsFloorWhileMetricsAPIUnavailable: with no metrics API
// registered the real HPA reports FailedGetPodsMetric; after
// failureThreshold failed syncs the controller raises the HPA floor to
// fallback.replicas and the HPA scales the Deployment up to it, and it never
// drops below while the metric is missing. Then the real pipeline (sim
// exporter, Prometheus, adapter) comes up: the fallback is released and the
// HPA scales on the metric again, down below the fallback floor and back up.
func TestFallbackHoldsFloorWhileMetricsAPIUnavailable(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := framework.Namespace(t, cluster)
	for _, name := range metricsAPIServices {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(apiServiceGVK)
		if err := kc.Get(ctx, types.NamespacedName{Name: name}, u); !apierrors.IsNotFound(err) {
			t.Fatalf("APIService %s: err = %v; this test needs the metrics APIs unregistered at its start", name, err)
		}
	}

	const threshold, fallbackReplicas = 3, 2
	deployment(t, ns, "predictor", "fallback-predictor", 1)
	s := scalerFor(ns, "predictor", "predictor", 1, 3)
	s.Spec.Fallback = &v1alpha1.Fallback{FailureThreshold: threshold, Replicas: fallbackReplicas}
	// Without this the HPA's default 5-minute scale-down stabilization
	// would delay the scale-down that shows normal scaling resumed.
	s.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{
		ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](0)},
	}
	create(t, s)
	waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)

	// The HPA cannot read the metric.
	var failingSince metav1.Time
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "HPA ScalingActive=False/FailedGetPodsMetric", func(ctx context.Context) (bool, string) {
		h, err := getHPA(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		c := hpaCondition(h, autoscalingv2.ScalingActive)
		if c == nil {
			return false, "no ScalingActive condition yet"
		}
		failingSince = c.LastTransitionTime
		return c.Status == corev1.ConditionFalse && c.Reason == "FailedGetPodsMetric", fmt.Sprintf("ScalingActive=%s/%s", c.Status, c.Reason)
	})

	// After the threshold the floor rises to fallback.replicas.
	var active *v1alpha1.InferenceScaler
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "fallback to raise the HPA floor to 2", func(ctx context.Context) (bool, string) {
		sc, err := getScaler(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		h, err := getHPA(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		active = sc
		return sc.Status.FallbackActive && ptr.Deref(h.Spec.MinReplicas, 0) == fallbackReplicas,
			fmt.Sprintf("HPA minReplicas %d, status %s", ptr.Deref(h.Spec.MinReplicas, 0), brief(sc))
	})
	if n := active.Status.ConsecutiveMetricFailures; n < threshold {
		t.Errorf("fallback active after %d consecutive failures, threshold %d", n, threshold)
	}
	fc := meta.FindStatusCondition(active.Status.Conditions, v1alpha1.ConditionFallbackActive)
	if fc == nil || fc.Status != metav1.ConditionTrue || fc.Reason != v1alpha1.ReasonMetricFailing {
		t.Errorf("FallbackActive condition = %s, want True/%s", condition(active.Status.Conditions, v1alpha1.ConditionFallbackActive), v1alpha1.ReasonMetricFailing)
	} else if early := failingSince.Add((threshold - 1) * 5 * time.Second); fc.LastTransitionTime.Time.Before(early) {
		// Check 1 failed at failingSince and one more every 5s HPA sync:
		// the threshold's check is (threshold-1) periods later.
		t.Errorf("fallback activated at %s, before failed check number %d at %s (first failure %s)",
			fc.LastTransitionTime.UTC().Format(time.RFC3339), threshold, early.UTC().Format(time.RFC3339), failingSince.UTC().Format(time.RFC3339))
	}
	waitEvent(t, ns, s.Name, corev1.EventTypeWarning, "FallbackActivated")
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "the HPA to scale the Deployment to the fallback floor", func(ctx context.Context) (bool, string) {
		n, err := deploymentReplicas(ctx, ns, "predictor")
		if err != nil {
			return false, err.Error()
		}
		return n >= fallbackReplicas, fmt.Sprintf("Deployment spec.replicas %d", n)
	})

	// From here until the HPA reads the metric again the Deployment must
	// stay at or above the fallback floor.
	watch := watchWhileFailing(t, ns, "predictor", s.Name)

	// The load is set before the adapter serves: the HPA's first reading
	// is already the one the rest of the test expects.
	workload := ns + "/predictor"
	loadURL := startPipeline(t, ctx, workload, 1)

	low, samples, ok := watch.wait(3 * time.Minute)
	if !ok {
		t.Fatalf("the HPA did not read the metric again (ScalingActive=True) within 3m of the pipeline starting; last: %s", watch.lastMessage())
	}
	if low < fallbackReplicas {
		t.Errorf("Deployment spec.replicas dropped to %d (of %d samples) while the metric was unavailable; fallback floor %d", low, samples, fallbackReplicas)
	} else {
		t.Logf("Deployment spec.replicas stayed >= %d over %d samples while the metric was unavailable (lowest %d)", fallbackReplicas, samples, low)
	}

	// The fallback is released and the HPA scales on the metric: 1 rps is
	// 5 % per pod against a target of 50, so it goes below the old floor.
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "fallback released and the floor back to 1", func(ctx context.Context) (bool, string) {
		sc, err := getScaler(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		h, err := getHPA(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		ok := !sc.Status.FallbackActive && ptr.Deref(h.Spec.MinReplicas, 0) == 1 &&
			hasCondition(sc, v1alpha1.ConditionFallbackActive, metav1.ConditionFalse, v1alpha1.ReasonMetricHealthy)
		return ok, fmt.Sprintf("HPA minReplicas %d, status %s", ptr.Deref(h.Spec.MinReplicas, 0), brief(sc))
	})
	waitEvent(t, ns, s.Name, corev1.EventTypeNormal, "FallbackReleased")
	waitReplicas(t, ns, "predictor", 1, "the HPA to scale down on the low metric")

	// And up on a high one: 40 rps saturates the replicas (capacity 10 rps
	// each), so the HPA goes to maxReplicas.
	setLoad(t, loadURL, workload, 40)
	waitReplicas(t, ns, "predictor", 3, "the HPA to scale up on the high metric")
	framework.Eventually(t, 30*time.Second, 500*time.Millisecond, "the scaler to mirror the metric value", func(ctx context.Context) (bool, string) {
		sc, err := getScaler(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		v := sc.Status.CurrentMetricValue
		return v != nil && v.Sign() > 0 && !sc.Status.FallbackActive, fmt.Sprintf("status %s, metric %v", brief(sc), v)
	})
}

func waitReplicas(t *testing.T, ns, name string, want int32, what string) {
	t.Helper()
	framework.Eventually(t, 2*time.Minute, 500*time.Millisecond, what, func(ctx context.Context) (bool, string) {
		n, err := deploymentReplicas(ctx, ns, name)
		if err != nil {
			return false, err.Error()
		}
		return n == want, fmt.Sprintf("Deployment spec.replicas %d, want %d", n, want)
	})
}

// failingWatch samples a Deployment's spec.replicas while its HPA reports
// ScalingActive other than True, and ends at the first True. Each sample
// reads the HPA first: a replica count read after a False condition was
// set while the metric was still failing.
type failingWatch struct {
	done    chan struct{}
	stop    chan struct{}
	mu      sync.Mutex
	low     int32
	samples int
	last    string
}

func watchWhileFailing(t *testing.T, ns, deployment, hpa string) *failingWatch {
	w := &failingWatch{done: make(chan struct{}), stop: make(chan struct{}), low: 1 << 30}
	t.Cleanup(func() { close(w.stop); <-w.done })
	go func() {
		defer close(w.done)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			msg, recovered := w.sample(ctx, ns, deployment, hpa)
			cancel()
			w.mu.Lock()
			w.last = msg
			w.mu.Unlock()
			if recovered {
				return
			}
			select {
			case <-w.stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *failingWatch) sample(ctx context.Context, ns, deployment, hpa string) (string, bool) {
	h, err := getHPA(ctx, ns, hpa)
	if err != nil {
		return err.Error(), false
	}
	c := hpaCondition(h, autoscalingv2.ScalingActive)
	if c != nil && c.Status == corev1.ConditionTrue {
		return "ScalingActive=True", true
	}
	n, err := deploymentReplicas(ctx, ns, deployment)
	if err != nil {
		return err.Error(), false
	}
	w.mu.Lock()
	w.low = min(w.low, n)
	w.samples++
	w.mu.Unlock()
	if c == nil {
		return "no ScalingActive condition", false
	}
	return fmt.Sprintf("ScalingActive=%s/%s: %s", c.Status, c.Reason, c.Message), false
}

// wait returns the lowest replica count seen, the number of samples and
// whether ScalingActive=True was seen within the timeout.
func (w *failingWatch) wait(timeout time.Duration) (int32, int, bool) {
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.low, w.samples, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.low, w.samples, true
}

func (w *failingWatch) lastMessage() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// startPipeline starts the sim exporter with the workload's load set, a
// Prometheus scraping it (and, through pod discovery, the simulated model
// servers of every GPU pod) and the adapter (registering the metrics
// APIServices), and returns the exporter's load URL. Cleanup stops them and unregisters the APIServices, so the
// cluster is left without a metrics API as it was found.
func startPipeline(t *testing.T, ctx context.Context, workload string, rps float64) string {
	t.Helper()
	exp, err := framework.StartExporter(ctx, cluster, binDir, pipelineInterval)
	if err != nil {
		t.Fatal(err)
	}
	var procs []*localcluster.Process
	procs = append(procs, exp.Proc)
	t.Cleanup(func() {
		for _, name := range metricsAPIServices {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(apiServiceGVK)
			u.SetName(name)
			if err := kc.Delete(context.Background(), u); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("unregistering APIService %s: %v", name, err)
			}
		}
		for i := len(procs) - 1; i >= 0; i-- {
			if err := procs[i].Stop(); err != nil {
				t.Errorf("stopping %s: %v", procs[i].Name, err)
			}
		}
	})
	setLoad(t, exp.LoadURL, workload, rps)
	prom, err := cluster.StartPrometheus(ctx, "prometheus", pipelineInterval, []localcluster.ScrapeTarget{
		{Job: "spillway-gpu-exporter", Address: exp.MetricsAddr},
		exp.ModelServers("model-servers", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := prom.Stop(); err != nil {
			t.Errorf("stopping Prometheus: %v", err)
		}
	})
	ad, err := framework.StartAdapter(ctx, cluster, binDir, prom.URL, pipelineInterval, nil)
	if err != nil {
		t.Fatal(err)
	}
	procs = append(procs, ad.Proc)
	return exp.LoadURL
}

// setLoad sets a workload's request rate through the sim load input.
func setLoad(t *testing.T, loadURL, workload string, rps float64) {
	t.Helper()
	q := url.Values{"workload": {workload}, "rps": {fmt.Sprint(rps)}}
	req, err := http.NewRequest(http.MethodPut, loadURL+"/load?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT load: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT load %s=%g: %s", workload, rps, resp.Status)
	}
}
