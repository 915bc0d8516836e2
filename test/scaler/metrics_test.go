package scaler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

// TestSeveralMetricsScaleOnTheHigher: an InferenceScaler with vLLM's
// waiting requests (5 per pod) and SM utilization (40 per pod). The real
// HPA computes a replica count for each and takes the larger:
//   - at 6 req/s on one replica (capacity 10) nothing queues, so the queue
//     asks for 1, but utilization reads 60: it asks for 2, and gets them;
//   - with the utilization target raised to 100 (a saturated replica then
//     asks for no more) and 24 req/s, utilization alone would hold 2, but
//     each replica's queue grows by 2 requests a second: the queue gets 3.
//
// Both readings show in status.currentMetrics.
func TestSeveralMetricsScaleOnTheHigher(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns := framework.Namespace(t, cluster)
	deployment(t, ns, "predictor", "multi-predictor", 1)
	workload := ns + "/predictor"
	loadURL := startPipeline(t, ctx, workload, 6)

	s := scalerFor(ns, "predictor", "predictor", 1, 3)
	s.Spec.Metrics = []v1alpha1.ScalerMetric{
		{Name: metricnames.VLLMRequestsWaiting, Type: v1alpha1.PodsMetric, Target: ptr.To(resource.MustParse("5"))},
		{Name: metricnames.ProcessSMUtil, Type: v1alpha1.PodsMetric, Target: ptr.To(resource.MustParse("40"))},
	}
	create(t, s)
	waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)
	waitReplicas(t, ns, "predictor", 2, "utilization (60 over a target of 40) scaling 1 → 2 with an empty queue")
	framework.Eventually(t, time.Minute, time.Second, "both readings in status.currentMetrics", func(ctx context.Context) (bool, string) {
		got, err := getScaler(ctx, ns, s.Name)
		if err != nil {
			return false, err.Error()
		}
		m := got.Status.CurrentMetrics
		ok := len(m) == 2 && m[0].Name == metricnames.VLLMRequestsWaiting && m[0].Value != nil &&
			m[1].Name == metricnames.ProcessSMUtil && m[1].Value != nil && m[1].Value.AsApproximateFloat64() > 20
		return ok, fmt.Sprintf("%+v", m)
	})

	got, err := getScaler(ctx, ns, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	got.Spec.Metrics[1].Target = ptr.To(resource.MustParse("100"))
	if err := kc.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)
	setLoad(t, loadURL, workload, 24)
	waitReplicas(t, ns, "predictor", 3, "the queue scaling 2 → 3 where saturated utilization (target 100) holds")
}
