// Package exporter tests spillway-gpu-exporter's sim backend against real
// pods on kwok nodes, scraped by a real Prometheus.
package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, localcluster.Options{NoKarpenter: true}, func(c *localcluster.Cluster) { cluster = c }))
}

type promResult struct {
	Status string `json:"status"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func query(ctx context.Context, promURL, q string) (*promResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, promURL+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r promResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: status %s", q, r.Status)
	}
	return &r, nil
}

func TestSimExporterScrapedByPrometheusFollowsLoad(t *testing.T) {
	ctx := context.Background()
	nodes, err := cluster.AddStaticGPUNodes(ctx, "gpu", 2, localcluster.DefaultGPUNode)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := framework.StartExporter(ctx, cluster, "../../bin", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	prom, err := cluster.StartPrometheus(ctx, "prometheus", 2*time.Second, []localcluster.ScrapeTarget{{Job: "spillway-gpu-exporter", Address: exp.MetricsAddr}})
	if err != nil {
		t.Fatal(err)
	}
	ns := framework.Namespace(t, cluster)
	d := framework.GPUDeployment(ns, "predictor", "predictor", 2, "4", "12Gi")
	if _, err := cluster.Client().AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env := &demo.Env{Cluster: cluster, LoadURL: exp.LoadURL}

	// Two Ready replicas share the load; each serves 10 req/s at 100 %.
	for _, step := range []struct {
		rps, want float64
	}{{6, 30}, {16, 80}, {40, 100}} {
		if err := env.SetLoad(ctx, ns, "predictor", step.rps); err != nil {
			t.Fatal(err)
		}
		q := fmt.Sprintf(`%s{namespace=%q}`, metricnames.ProcessSMUtil, ns)
		framework.Eventually(t, 90*time.Second, 2*time.Second, fmt.Sprintf("both pods at %.0f%% for %.0f req/s", step.want, step.rps), func(ctx context.Context) (bool, string) {
			r, err := query(ctx, prom.URL, q)
			if err != nil {
				return false, err.Error()
			}
			pods, err := cluster.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			nodeOf := map[string]string{}
			for _, p := range pods.Items {
				nodeOf[p.Name] = p.Spec.NodeName
			}
			if len(r.Data.Result) != 2 {
				return false, fmt.Sprintf("%d series: %+v", len(r.Data.Result), r.Data.Result)
			}
			for _, s := range r.Data.Result {
				m := s.Metric
				pod := m[metricnames.LabelPod]
				if _, ok := nodeOf[pod]; !ok {
					return false, "series for unknown pod " + pod
				}
				if m[metricnames.LabelACKPod] != pod || m[metricnames.LabelACKNamespace] != ns || m[metricnames.LabelNamespace] != ns {
					return false, fmt.Sprintf("labels do not name the pod consistently: %v", m)
				}
				if m[metricnames.LabelHostname] != nodeOf[pod] {
					return false, fmt.Sprintf("Hostname %q, pod runs on %q", m[metricnames.LabelHostname], nodeOf[pod])
				}
				if m[metricnames.LabelContainer] != "predictor" || m[metricnames.LabelACKContainer] != "predictor" {
					return false, fmt.Sprintf("container labels: %v", m)
				}
				v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
				if err != nil {
					return false, err.Error()
				}
				if v < step.want-0.5 || v > step.want+0.5 {
					return false, fmt.Sprintf("pod %s at %v", pod, v)
				}
			}
			return true, ""
		})
	}
	_ = nodes
}
