package framework

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spillway-dev/spillway/deploy/chart"
	"github.com/spillway-dev/spillway/internal/localcluster"
)

// SystemNamespace is the chart's namespace for spillway (release
// "spillway"): it holds the Services that route aggregated APIs to the
// adapter on localhost, the components' certificate Secrets and the
// controllers' Lease.
const SystemNamespace = "spillway-system"

// SimReplicaCapacityRPS is the load (requests per second) one simulated
// model-server replica serves at 100 % SM utilization, as StartExporter
// configures the exporter's simulated GPUs (the seed scenario's).
const SimReplicaCapacityRPS = 10.0

// InstallCRDs applies config/crd (the controller-gen output).
func InstallCRDs(ctx context.Context, c *localcluster.Cluster, repoRoot string) error {
	crds, err := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "*.yaml"))
	if err != nil || len(crds) == 0 {
		return fmt.Errorf("no CRDs under %s/config/crd (run 'make generate')", repoRoot)
	}
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := c.Apply(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func binary(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found in %s: run 'make build' first", name, dir)
	}
	return p, nil
}

// Exporter is a running sim exporter serving every kwok node.
type Exporter struct {
	MetricsAddr string // host:port of /metrics
	LoadURL     string // base URL of the sim load input
	// ModelServerAddr is host:port of the simulated model servers
	// (/pods/<namespace>/<name>/metrics); ModelServers scrapes them.
	ModelServerAddr string
	Proc            *localcluster.Process
}

// ModelServerPort is the port a predictor's model server listens on in a
// real pod (vLLM's default): the port of the instance label pod discovery
// gives the simulated servers' series.
const ModelServerPort = 8000

// ModelServers is the pod-discovery scrape job for the simulated model
// servers of the pods labelled app=<app> ("" for every pod).
func (e *Exporter) ModelServers(job, app string) localcluster.ScrapeTarget {
	d := &localcluster.PodDiscovery{Label: "app", Value: app, Port: ModelServerPort}
	if app == "" {
		d.Label, d.Value = "", ""
	}
	return localcluster.ScrapeTarget{Job: job, Address: e.ModelServerAddr, Pods: d}
}

// StartExporter runs spillway-gpu-exporter with the sim backend for all
// nodes: one process for the whole cluster, because kwok nodes have no
// host of their own to run a DaemonSet pod on.
func StartExporter(ctx context.Context, c *localcluster.Cluster, binDir string, interval time.Duration, extraArgs ...string) (*Exporter, error) {
	bin, err := binary(binDir, "spillway-gpu-exporter")
	if err != nil {
		return nil, err
	}
	ports, err := localcluster.FreePorts(3)
	if err != nil {
		return nil, err
	}
	e := &Exporter{
		MetricsAddr:     fmt.Sprintf("127.0.0.1:%d", ports[0]),
		LoadURL:         fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		ModelServerAddr: fmt.Sprintf("127.0.0.1:%d", ports[2]),
	}
	e.Proc, err = c.StartProcess("spillway-gpu-exporter", bin, append([]string{
		"--backend=sim",
		"--sim-all-nodes",
		"--kubeconfig=" + c.KubeconfigPath(),
		"--listen-address=" + e.MetricsAddr,
		"--sim-load-address=127.0.0.1:" + strconv.Itoa(ports[1]),
		"--sim-model-server-address=" + e.ModelServerAddr,
		fmt.Sprintf("--sim-replica-capacity=%g", SimReplicaCapacityRPS),
		"--collect-interval=" + interval.String(),
	}, extraArgs...), nil)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+e.MetricsAddr+"/readyz"); err != nil {
		return nil, fmt.Errorf("exporter: %w", err)
	}
	return e, nil
}

// Controller is a running spillway-controller with its webhook registered.
type Controller struct {
	MetricsAddr string
	HealthAddr  string
	WebhookPort int
	Proc        *localcluster.Process
}

// StartController applies the chart's webhook configuration (calling
// https://localhost:<port>, CA bundle left for the controller to fill; see
// ApplyWebhookConfig), runs spillway-controller with the cluster's HPA sync
// period and waits until it is ready and has written the CA bundle.
func StartController(ctx context.Context, c *localcluster.Cluster, binDir string, extraArgs []string) (*Controller, error) {
	bin, err := binary(binDir, "spillway-controller")
	if err != nil {
		return nil, err
	}
	ports, err := localcluster.FreePorts(3)
	if err != nil {
		return nil, err
	}
	ctl := &Controller{
		MetricsAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		HealthAddr:  fmt.Sprintf("127.0.0.1:%d", ports[1]),
		WebhookPort: ports[2],
	}
	if err := ApplyWebhookConfig(ctx, c, ctl.WebhookPort); err != nil {
		return nil, err
	}
	args := append([]string{
		"--kubeconfig=" + c.KubeconfigPath(),
		"--namespace=" + SystemNamespace,
		"--leader-elect=false",
		"--webhook-host=127.0.0.1",
		"--webhook-port=" + strconv.Itoa(ctl.WebhookPort),
		"--webhook-config-name=" + WebhookConfigName,
		"--metrics-bind-address=" + ctl.MetricsAddr,
		"--health-probe-bind-address=" + ctl.HealthAddr,
		"--hpa-sync-period=5s",
		// Only the API server's client certificate may post reviews.
		"--webhook-client-ca-file=" + c.WebhookClientCAFile(),
		"--webhook-client-names=" + localcluster.WebhookClientName,
		"--v=1",
	}, extraArgs...)
	ctl.Proc, err = c.StartProcess("spillway-controller", bin, args, nil)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+ctl.HealthAddr+"/readyz"); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	return ctl, waitCABundle(ctx, c)
}

// Adapter is a running spillway-metrics-adapter behind the aggregator.
type Adapter struct {
	Port            int
	SelfMetricsAddr string
	Proc            *localcluster.Process
}

// StartAdapter registers the chart's APIServices (through an ExternalName
// Service to localhost; see ApplyAPIServices), runs spillway-metrics-adapter
// against Prometheus with a self-managed certificate whose CA it writes into
// them, and waits until the aggregator serves them, which it does only once
// it verifies the adapter.
func StartAdapter(ctx context.Context, c *localcluster.Cluster, binDir, promURL string, interval time.Duration, extraArgs []string) (*Adapter, error) {
	return startAdapter(ctx, c, binDir, promURL, interval, false, extraArgs)
}

// CustomAPIServices are the chart's APIServices of the custom metrics API:
// all that spillway registers where another server (KEDA) owns
// external.metrics.k8s.io.
var CustomAPIServices = []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"}

// StartPodsOnlyAdapter is StartAdapter for a cluster where another server
// (KEDA) owns external.metrics.k8s.io: it registers only the custom metrics
// API (the chart with adapter.apiServices.externalMetrics.enabled=false),
// and the adapter writes its CA into those APIServices alone
// (--apiservices), leaving the other server's untouched.
func StartPodsOnlyAdapter(ctx context.Context, c *localcluster.Cluster, binDir, promURL string, interval time.Duration, extraArgs []string) (*Adapter, error) {
	return startAdapter(ctx, c, binDir, promURL, interval, true, extraArgs)
}

func startAdapter(ctx context.Context, c *localcluster.Cluster, binDir, promURL string, interval time.Duration, podsOnly bool, extraArgs []string) (*Adapter, error) {
	bin, err := binary(binDir, "spillway-metrics-adapter")
	if err != nil {
		return nil, err
	}
	ports, err := localcluster.FreePorts(2)
	if err != nil {
		return nil, err
	}
	port, selfPort := ports[0], ports[1]
	if err := applyAPIServices(ctx, c, port, podsOnly); err != nil {
		return nil, err
	}
	args := append(append([]string{
		"--secure-port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1",
	}, AdapterTLSArgs()...),
		"--lister-kubeconfig="+c.KubeconfigPath(),
		"--authentication-kubeconfig="+c.KubeconfigPath(),
		"--authorization-kubeconfig="+c.KubeconfigPath(),
		"--prometheus-url="+promURL,
		"--refresh-interval="+interval.String(),
		"--max-staleness=30s",
		"--self-metrics-address="+fmt.Sprintf("127.0.0.1:%d", selfPort),
	)
	paths := []string{"/apis/custom.metrics.k8s.io/v1beta2", "/apis/external.metrics.k8s.io/v1beta1"}
	if podsOnly {
		args = append(args, "--apiservices="+strings.Join(CustomAPIServices, ","))
		paths = paths[:1]
	}
	args = append(args, extraArgs...)
	proc, err := c.StartProcess("spillway-metrics-adapter", bin, args, nil)
	if err != nil {
		return nil, err
	}
	if err := waitAPIs(ctx, c, paths); err != nil {
		return nil, err
	}
	return &Adapter{Port: port, SelfMetricsAddr: fmt.Sprintf("127.0.0.1:%d", selfPort), Proc: proc}, nil
}

// WebhookConfigName is the MutatingWebhookConfiguration the controller keeps
// its CA bundle in (the chart's, for ChartRelease).
const WebhookConfigName = "spillway-placement"

// AdapterServiceName is the Service the APIServices point at (the chart's,
// for ChartRelease); the adapter's certificate is valid for
// <AdapterServiceName>.<SystemNamespace>.svc.
const AdapterServiceName = "spillway-metrics-adapter"

// AdapterTLSArgs make an adapter manage its serving certificate as the
// chart's default does: a CA and a certificate for
// spillway-metrics-adapter.spillway-system.svc, kept in a Secret in
// SystemNamespace, with the CA written into the caBundle of the APIServices
// that ApplyAPIServices registers. The kube-apiserver dials localhost through
// the ExternalName Service but verifies the certificate for that Service's
// name, exactly as for an in-cluster adapter.
func AdapterTLSArgs() []string {
	return []string{
		"--self-managed-cert",
		"--namespace=" + SystemNamespace,
		"--cert-secret=spillway-metrics-adapter-cert",
		"--service-name=" + AdapterServiceName,
	}
}

// ChartRelease is the release of the Helm chart whose objects (RBAC,
// webhook configuration, APIServices) the local components run with: the
// chart's names in SystemNamespace, with the given --set values.
func ChartRelease(set ...string) chart.Release {
	return chart.Release{Name: "spillway", Namespace: SystemNamespace, Set: set}
}

// ApplyAPIServices registers custom.metrics.k8s.io (v1beta1, v1beta2) and
// external.metrics.k8s.io (v1beta1) to an adapter listening on
// localhost:port: the chart's APIServices and adapter Service, rendered
// with adapter.external (development only), so the Service is an
// ExternalName to localhost. They verify the adapter: their caBundle is
// left for an adapter started with AdapterTLSArgs to write, and until it
// does they are unavailable.
func ApplyAPIServices(ctx context.Context, c *localcluster.Cluster, port int) error {
	return applyAPIServices(ctx, c, port, false)
}

// applyAPIServices is ApplyAPIServices, without the external metrics API
// when podsOnly.
func applyAPIServices(ctx context.Context, c *localcluster.Cluster, port int, podsOnly bool) error {
	set := []string{"adapter.external.host=localhost", "adapter.external.port=" + strconv.Itoa(port)}
	if podsOnly {
		set = append(set, "adapter.apiServices.externalMetrics.enabled=false")
	}
	objs, err := chart.RenderSelected(ctx, ChartRelease(set...), func(o *unstructured.Unstructured) bool {
		return o.GetKind() == "APIService" || (o.GetKind() == "Service" && o.GetName() == AdapterServiceName)
	})
	if err != nil {
		return fmt.Errorf("rendering the chart's APIServices: %w", err)
	}
	return c.Apply(ctx, append([]byte(SystemNamespaceYAML), objs...))
}

// ApplyWebhookConfig applies the placement webhook's
// MutatingWebhookConfiguration as the chart renders it with
// controller.webhook.externalAddress (development only), calling
// https://localhost:<port>, with no CA bundle (the controller writes it):
// what StartController installs, and what an installer applies again
// after the configuration was deleted.
func ApplyWebhookConfig(ctx context.Context, c *localcluster.Cluster, port int) error {
	r := ChartRelease("controller.webhook.externalAddress=localhost:" + strconv.Itoa(port))
	objs, err := chart.RenderSelected(ctx, r, chart.OfKinds("MutatingWebhookConfiguration"))
	if err != nil {
		return fmt.Errorf("rendering the chart's webhook configuration: %w", err)
	}
	return c.Apply(ctx, append([]byte(SystemNamespaceYAML), objs...))
}

// WaitAPIServices waits until the aggregator serves the custom and external
// metrics APIs, which it does only once it verifies the adapter behind them.
func WaitAPIServices(ctx context.Context, c *localcluster.Cluster) error {
	return waitAPIs(ctx, c, []string{"/apis/custom.metrics.k8s.io/v1beta2", "/apis/external.metrics.k8s.io/v1beta1"})
}

func waitAPIs(ctx context.Context, c *localcluster.Cluster, paths []string) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rc := c.Client().Discovery().RESTClient()
	for _, path := range paths {
		if err := localcluster.Poll(wctx, time.Second, path+" to be served through the aggregator", func(ctx context.Context) (bool, error) {
			_, err := rc.Get().AbsPath(path).DoRaw(ctx)
			return err == nil, err
		}); err != nil {
			return err
		}
	}
	return nil
}

// waitHTTP waits until a GET of url answers 200 OK (a readiness probe).
func waitHTTP(ctx context.Context, url string) error {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	return localcluster.Poll(wctx, 300*time.Millisecond, url, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("status %s", resp.Status)
		}
		return true, nil
	})
}

// SystemNamespaceYAML is the Namespace object of SystemNamespace.
const SystemNamespaceYAML = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + SystemNamespace + "\n"

// waitCABundle waits until the controller has written its CA bundle into the
// webhook configuration; until then the API server cannot call the webhook.
func waitCABundle(ctx context.Context, c *localcluster.Cluster) error {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return localcluster.Poll(wctx, 300*time.Millisecond, "the controller to patch the webhook CA bundle", func(ctx context.Context) (bool, error) {
		wh, err := c.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfigName, metav1.GetOptions{})
		return err == nil && len(wh.Webhooks) > 0 && len(wh.Webhooks[0].ClientConfig.CABundle) > 0, err
	})
}
