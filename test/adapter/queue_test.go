package adapter

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

// forger serves a settable exposition on /metrics.
type forger struct {
	addr string
	mu   sync.Mutex
	body string
}

func startForger() (*forger, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &forger{addr: ln.Addr().String()}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			f.mu.Lock()
			defer f.mu.Unlock()
			fmt.Fprint(w, f.body)
		}))
	}()
	return f, nil
}

func (f *forger) set(body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.body = body
}

// queueHPA scales the predictor on vLLM's waiting requests, 5 per pod, with
// a scale-down stabilization window: a queue empties as soon as capacity
// catches up, so without one the HPA would flap.
func queueHPA(ns string, external bool) *autoscalingv2.HorizontalPodAutoscaler {
	h := hpa(ns, external)
	target := autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(resource.MustParse("5"))}
	if external {
		h.Spec.Metrics[0].External.Metric.Name = metricnames.VLLMRequestsWaiting
		h.Spec.Metrics[0].External.Target = target
	} else {
		h.Spec.Metrics[0].Pods.Metric.Name = metricnames.VLLMRequestsWaiting
		h.Spec.Metrics[0].Pods.Target = target
	}
	down := *h.Spec.Behavior.ScaleDown // shared with ScaleUp: copy it
	down.StabilizationWindowSeconds = ptr.To(int32(20))
	h.Spec.Behavior.ScaleDown = &down
	return h
}

// TestQueueMetricScalesThroughBothAPIs: the real HPA scales a predictor on
// vllm:num_requests_waiting (a name with a colon, as vLLM spells it)
// through custom.metrics.k8s.io and external.metrics.k8s.io. The series
// come from the simulated model servers, scraped as pod targets with
// instance = the pod's IP (localcluster.PodDiscovery). At 24 req/s
// one replica (10 req/s) queues 14 more each second: 1 → 3; at 3 req/s the
// queue stays empty: back to 1.
func TestQueueMetricScalesThroughBothAPIs(t *testing.T) {
	scalesUpAndDown(t, queueHPA)
}

// TestConfiguredRowAndForgedSeries: a row added by --metrics-config is
// served; a tenant target that publishes the queue metric for a pod it is
// not (a forged namespace and pod, scraped with honor_labels) is rejected
// as an instance mismatch, and one without pod labels is skipped: neither
// is ever served.
func TestConfiguredRowAndForgedSeries(t *testing.T) {
	p := setup(t)
	ns := framework.Namespace(t, cluster)
	createPredictor(t, ns)
	setLoad(t, ns, 24) // one replica, no HPA: its queue grows 14 per second
	ctx := context.Background()
	var pod string
	framework.Eventually(t, time.Minute, time.Second, "the predictor pod running with an IP", func(ctx context.Context) (bool, string) {
		pods, err := cluster.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if p.Status.PodIP != "" {
				pod = p.Name
			}
		}
		return pod != "", fmt.Sprintf("%d pods", len(pods.Items))
	})
	p.forger.set(fmt.Sprintf("%s{namespace=%q,pod=%q} 100000\n%s{namespace=%q} 100000\n",
		metricnames.VLLMRequestsWaiting, ns, pod, metricnames.VLLMRequestsWaiting, ns))
	t.Cleanup(func() { p.forger.set("") })

	sel := url.QueryEscape("app=" + app)
	get := func(ctx context.Context, metric string) (float64, error) {
		u, err := url.Parse("/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + ns + "/pods/%2A/" + url.PathEscape(metric) + "?labelSelector=" + sel)
		if err != nil {
			return 0, err
		}
		l, err := getRawQuery(ctx, u)
		if err != nil {
			return 0, err
		}
		if len(l.Items) != 1 {
			return 0, fmt.Errorf("%d items", len(l.Items))
		}
		return quantity(t, l.Items[0].Value), nil
	}
	framework.Eventually(t, 90*time.Second, time.Second, "the configured row serving a queue time over 1 s", func(ctx context.Context) (bool, string) {
		v, err := get(ctx, configuredRow)
		if err != nil {
			return false, err.Error()
		}
		return v > 1, fmt.Sprintf("%s = %v", configuredRow, v)
	})
	framework.Eventually(t, 60*time.Second, time.Second, "the forged series rejected and counted", func(ctx context.Context) (bool, string) {
		var mismatch, missing float64
		err := framework.ScrapeMetrics(ctx, p.adapter.SelfMetricsAddr, func(series string, v float64) {
			switch {
			case strings.HasPrefix(series, metricnames.AdapterSeriesRejected) && strings.Contains(series, `"`+metricnames.RejectedInstanceMismatch+`"`):
				mismatch = v
			case strings.HasPrefix(series, metricnames.AdapterSnapshotSkippedSeries) && strings.Contains(series, `"missing_labels"`):
				missing = v
			}
		})
		if err != nil {
			return false, err.Error()
		}
		return mismatch >= 1 && missing >= 1, fmt.Sprintf("instance_mismatch %v, missing_labels %v", mismatch, missing)
	})
	// The served value is the pod's own queue, which grows 14/s from the
	// load set above; the forgery would read 100000.
	v, err := get(ctx, metricnames.VLLMRequestsWaiting)
	if err != nil {
		t.Fatal(err)
	}
	if v <= 0 || v >= 100000 {
		t.Fatalf("served %s = %v: want the pod's own queue", metricnames.VLLMRequestsWaiting, v)
	}
}
