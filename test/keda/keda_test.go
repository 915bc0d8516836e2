package keda

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-dev/spillway/test/framework"
)

// kedaMetric is the external metric KEDA names the first trigger of type
// prometheus; its HPA is keda-hpa-<ScaledObject>.
const kedaMetric = "s0-prometheus"

// externalValue reads, through the aggregator, the value KEDA serves for a
// ScaledObject's trigger: what the HPA KEDA generated reads.
func externalValue(ctx context.Context, ns, scaledObject string) (float64, error) {
	raw, err := cluster.Client().Discovery().RESTClient().Get().
		AbsPath("/apis/external.metrics.k8s.io/v1beta1/namespaces/"+ns+"/"+kedaMetric).
		Param("labelSelector", "scaledobject.keda.sh/name="+url.QueryEscape(scaledObject)).DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, raw)
	}
	var l struct {
		Items []struct {
			Value string `json:"value"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return 0, err
	}
	if len(l.Items) != 1 {
		return 0, fmt.Errorf("%d items: %s", len(l.Items), raw)
	}
	q, err := resource.ParseQuantity(l.Items[0].Value)
	if err != nil {
		return 0, err
	}
	return q.AsApproximateFloat64(), nil
}

// waitExternalValue waits until KEDA serves want for the ScaledObject.
func waitExternalValue(t *testing.T, ns, scaledObject string, want float64) {
	t.Helper()
	framework.Eventually(t, time.Minute, time.Second, fmt.Sprintf("KEDA serving %g for %s", want, scaledObject), func(ctx context.Context) (bool, string) {
		v, err := externalValue(ctx, ns, scaledObject)
		if err != nil {
			return false, err.Error()
		}
		return v == want, fmt.Sprintf("value %g", v)
	})
}

// TestScaledObjectScalesDeploymentOnPrometheus: KEDA's operator turns a
// ScaledObject with a Prometheus trigger into an HPA on its external metric,
// its metrics API server answers the HPA through the aggregator (asking the
// operator over the mutual-TLS gRPC link), and the real HPA scales the
// Deployment 1 → 3 → 1 as the queried demand goes 5 → 30 → 5.
func TestScaledObjectScalesDeploymentOnPrometheus(t *testing.T) {
	e := setup(t)
	ns := framework.Namespace(t, cluster)
	const name = "predictor"
	createDeployment(t, ns, name)
	e.demand.set(ns, 5)
	apply(t, scaledObject(e, ns, name, name))
	status := hpaStatus(ns, "keda-hpa-"+name)

	framework.Eventually(t, time.Minute, time.Second, "KEDA's HPA on the external metric", func(ctx context.Context) (bool, string) {
		h, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "keda-hpa-"+name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if h.Spec.ScaleTargetRef.Name != name || *h.Spec.MinReplicas != 1 || h.Spec.MaxReplicas != 3 {
			return false, fmt.Sprintf("target %s, replicas %d..%d", h.Spec.ScaleTargetRef.Name, *h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].External == nil || h.Spec.Metrics[0].External.Metric.Name != kedaMetric {
			return false, fmt.Sprintf("metrics %+v", h.Spec.Metrics)
		}
		return true, ""
	})
	waitExternalValue(t, ns, name, 5)
	waitReplicas(t, ns, name, 1, status)

	e.demand.set(ns, 30)
	waitExternalValue(t, ns, name, 30)
	waitReplicas(t, ns, name, 3, status)

	e.demand.set(ns, 5)
	waitReplicas(t, ns, name, 1, status)
}

// TestKEDADefaultsOnMissingData records what KEDA v2.21.0 does, with its
// defaults (ignoreNullValues true, no fallback), when its data goes
// missing, which spillway's adapter never serves as a value: an empty
// query result (the series gone, e.g. its exporter down) is served as 0 and
// scales a loaded Deployment in; Prometheus down is an error, on which the
// HPA holds its replicas. If a KEDA upgrade changes either, this fails and
// the comparison in the docs needs a new look.
func TestKEDADefaultsOnMissingData(t *testing.T) {
	e := setup(t)
	ns := framework.Namespace(t, cluster)
	const name = "predictor"
	createDeployment(t, ns, name)
	e.demand.set(ns, 30)
	apply(t, scaledObject(e, ns, name, name))
	status := hpaStatus(ns, "keda-hpa-"+name)
	waitReplicas(t, ns, name, 3, status)

	t.Run("series-gone-is-zero", func(t *testing.T) {
		e.demand.remove(ns)
		// Prometheus marks the series stale at the next scrape; the query
		// then returns an empty vector.
		waitExternalValue(t, ns, name, 0)
		waitReplicas(t, ns, name, 1, status)
		e.demand.set(ns, 30)
		waitReplicas(t, ns, name, 3, status)
	})

	t.Run("prometheus-down-holds", func(t *testing.T) {
		before, err := failedSyncs(context.Background(), ns, "keda-hpa-"+name)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.prom.Stop(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := e.prom.Start(context.Background()); err != nil {
				t.Errorf("restarting Prometheus: %v", err)
			}
		})
		framework.Eventually(t, time.Minute, time.Second, "KEDA answering an error", func(ctx context.Context) (bool, string) {
			v, err := externalValue(ctx, ns, name)
			return err != nil, fmt.Sprintf("value %g", v)
		})
		// Three failed HPA syncs (kcm records an event each time), then the
		// replicas must be the 3 it had.
		framework.Eventually(t, time.Minute, time.Second, "the HPA failing to get the metric 3 times", func(ctx context.Context) (bool, string) {
			n, err := failedSyncs(ctx, ns, "keda-hpa-"+name)
			if err != nil {
				return false, err.Error()
			}
			return n >= before+3, fmt.Sprintf("%d failed syncs since Prometheus stopped; %s", n-before, status(ctx))
		})
		d, err := cluster.Client().AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *d.Spec.Replicas != 3 {
			t.Fatalf("replicas %d while the metric fails, want 3 held; %s", *d.Spec.Replicas, status(context.Background()))
		}
	})
}

// failedSyncs counts the HPA's FailedGetExternalMetric events (kcm records
// one per failed sync, folded into a count).
func failedSyncs(ctx context.Context, ns, hpa string) (int32, error) {
	evs, err := cluster.Client().CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name=" + hpa + ",reason=FailedGetExternalMetric",
	})
	if err != nil {
		return 0, err
	}
	var n int32
	for _, ev := range evs.Items {
		n += max(ev.Count, 1)
	}
	return n, nil
}
