// Package demo runs the seed scenario on a local cluster: spillway's three
// binaries as local processes, a real Prometheus scraping them, the seed's
// objects, and a tidal-day trace played through the simulated GPUs' load
// input. The demo command, the e2e test and the tidal benchmark share it.
package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

// SystemNamespace holds the Services that route aggregated APIs to the
// adapter on localhost.
const SystemNamespace = "spillway-system"

// Env is a cluster with spillway running against it.
type Env struct {
	Cluster     *localcluster.Cluster
	Prometheus  *localcluster.Prometheus
	LoadURL     string // the sim exporter's load endpoint
	AdapterPort int
	WebhookPort int
	log         io.Writer
}

// Options configures StartEnv.
type Options struct {
	BinDir string // where spillway's binaries are (make build)
	// RepoRoot locates config/crd; default: the current directory.
	RepoRoot string
	Log      io.Writer
	// CollectInterval paces the exporter, Prometheus and the adapter cache.
	CollectInterval time.Duration
}

func (o *Options) defaults() {
	if o.CollectInterval == 0 {
		o.CollectInterval = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.RepoRoot == "" {
		o.RepoRoot = "."
	}
}

// StartEnv adds the seed's node pools (one on-prem node with 1 GPU, an
// elastic Karpenter NodePool of GPU instances), installs spillway's CRDs,
// APIServices and webhook configuration, and starts the exporter (sim
// backend, one process serving every node), Prometheus, the adapter and the
// controller.
func StartEnv(ctx context.Context, c *localcluster.Cluster, o Options) (*Env, error) {
	o.defaults()
	e := &Env{Cluster: c, log: o.Log}
	bin := func(name string) (string, error) {
		p := filepath.Join(o.BinDir, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s not found in %s: run 'make build' first", name, o.BinDir)
		}
		return p, nil
	}
	exporter, err := bin("spillway-gpu-exporter")
	if err != nil {
		return nil, err
	}
	adapter, err := bin("spillway-metrics-adapter")
	if err != nil {
		return nil, err
	}
	controller, err := bin("spillway-controller")
	if err != nil {
		return nil, err
	}

	if _, err := c.AddStaticGPUNodes(ctx, OnPremPool, 1, localcluster.DefaultGPUNode); err != nil {
		return nil, err
	}
	if err := c.AddElasticPool(ctx, localcluster.ElasticPool{Name: ElasticPool}); err != nil {
		return nil, err
	}
	crds, err := filepath.Glob(filepath.Join(o.RepoRoot, "config", "crd", "*.yaml"))
	if err != nil || len(crds) == 0 {
		return nil, fmt.Errorf("no CRDs under %s/config/crd (run 'make generate')", o.RepoRoot)
	}
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := c.Apply(ctx, b); err != nil {
			return nil, err
		}
	}

	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	metricsPort, loadPort, adapterPort, webhookPort, ctrlMetricsPort, ctrlHealthPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	e.AdapterPort, e.WebhookPort = adapterPort, webhookPort
	e.LoadURL = fmt.Sprintf("http://127.0.0.1:%d", loadPort)
	interval := o.CollectInterval.String()

	if _, err := c.StartProcess("spillway-gpu-exporter", exporter, []string{
		"--backend=sim",
		"--sim-all-nodes",
		"--kubeconfig=" + c.KubeconfigPath(),
		"--listen-address=127.0.0.1:" + itoa(metricsPort),
		"--sim-load-address=127.0.0.1:" + itoa(loadPort),
		fmt.Sprintf("--sim-capacity-rps=%g", SeedCapacityRPS),
		"--collect-interval=" + interval,
	}, nil); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort)); err != nil {
		return nil, fmt.Errorf("exporter: %w", err)
	}
	prom, err := c.StartPrometheus(ctx, "prometheus", o.CollectInterval, []localcluster.ScrapeTarget{
		{Job: "spillway-gpu-exporter", Address: fmt.Sprintf("127.0.0.1:%d", metricsPort)},
		{Job: "spillway-controller", Address: fmt.Sprintf("127.0.0.1:%d", ctrlMetricsPort)},
	})
	if err != nil {
		return nil, err
	}
	e.Prometheus = prom

	if err := c.Apply(ctx, []byte(apiServices(adapterPort))); err != nil {
		return nil, err
	}
	if _, err := c.StartProcess("spillway-metrics-adapter", adapter, []string{
		"--secure-port=" + itoa(adapterPort),
		"--bind-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(c.Dir(), "adapter-certs"),
		"--kubeconfig=" + c.KubeconfigPath(),
		"--authentication-kubeconfig=" + c.KubeconfigPath(),
		"--authorization-kubeconfig=" + c.KubeconfigPath(),
		"--prometheus-url=" + prom.URL,
		"--refresh-interval=" + interval,
		"--max-staleness=30s",
	}, nil); err != nil {
		return nil, err
	}

	if err := c.Apply(ctx, []byte(webhookConfig(webhookPort))); err != nil {
		return nil, err
	}
	if _, err := c.StartProcess("spillway-controller", controller, []string{
		"--kubeconfig=" + c.KubeconfigPath(),
		"--leader-elect=false",
		"--webhook-port=" + itoa(webhookPort),
		"--webhook-host=127.0.0.1",
		"--webhook-cert-dir=" + filepath.Join(c.Dir(), "webhook-certs"),
		"--webhook-config-name=" + WebhookConfigName,
		"--metrics-bind-address=127.0.0.1:" + itoa(ctrlMetricsPort),
		"--health-probe-bind-address=127.0.0.1:" + itoa(ctrlHealthPort),
	}, nil); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", ctrlHealthPort)); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if err := e.waitAPIServices(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// WebhookConfigName is the MutatingWebhookConfiguration the controller keeps
// its CA bundle in.
const WebhookConfigName = "spillway-placement"

func apiServices(port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
# Local development only: kube-apiserver proxies to https://localhost:<port>.
apiVersion: v1
kind: Service
metadata:
  name: spillway-metrics-adapter
  namespace: %[1]s
spec:
  type: ExternalName
  externalName: localhost
`, SystemNamespace)
	for _, gv := range []struct{ group, version string }{
		{"custom.metrics.k8s.io", "v1beta1"},
		{"custom.metrics.k8s.io", "v1beta2"},
		{"external.metrics.k8s.io", "v1beta1"},
	} {
		fmt.Fprintf(&b, `---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: %[2]s.%[1]s
spec:
  group: %[1]s
  version: %[2]s
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service:
    namespace: %[3]s
    name: spillway-metrics-adapter
    port: %[4]d
`, gv.group, gv.version, SystemNamespace, port)
	}
	return b.String()
}

func webhookConfig(port int) string {
	return fmt.Sprintf(`apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: %s
webhooks:
- name: placement.spillway.dev
  admissionReviewVersions: ["v1"]
  sideEffects: None
  # spillway being down must never block pod creation.
  failurePolicy: Ignore
  timeoutSeconds: 5
  reinvocationPolicy: Never
  clientConfig:
    url: https://localhost:%d/mutate-v1-pod
  rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["pods"]
  namespaceSelector:
    matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: ["kube-system", "%s"]
`, WebhookConfigName, port, SystemNamespace)
}

func (e *Env) waitAPIServices(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rc := e.Cluster.Client().Discovery().RESTClient()
	for _, path := range []string{"/apis/custom.metrics.k8s.io/v1beta2", "/apis/external.metrics.k8s.io/v1beta1"} {
		for {
			_, err := rc.Get().AbsPath(path).DoRaw(wctx)
			if err == nil {
				break
			}
			select {
			case <-wctx.Done():
				return fmt.Errorf("waiting for %s to be served through the aggregator: %w", path, err)
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func waitHTTP(ctx context.Context, url string) error {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("waiting for %s: %w", url, err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func freePorts(n int) ([]int, error) {
	out := make([]int, 0, n)
	seen := map[int]bool{}
	for len(out) < n {
		p, err := localcluster.FreePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}
