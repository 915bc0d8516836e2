// Package demo runs the seed scenario on a local cluster: spillway's three
// binaries as local processes, a real Prometheus scraping them, the seed's
// objects, and a tidal-day trace played through the simulated GPUs' load
// input. The demo command, the e2e test and the tidal benchmark share it.
package demo

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

// Env is a cluster with spillway running against it.
type Env struct {
	Cluster    *localcluster.Cluster
	Prometheus *localcluster.Prometheus
	LoadURL    string // the sim exporter's load endpoint
	// ModelServerURL is the base URL of the simulated model servers
	// (GET /pods lists their queues).
	ModelServerURL string
	AdapterPort    int
	WebhookPort    int
	log            io.Writer

	// AdapterSelfMetricsAddr is host:port of the adapter's plain-HTTP
	// /metrics (its own metrics, e.g. series rejections).
	AdapterSelfMetricsAddr string
	// KEDA: KEDA runs and owns external.metrics.k8s.io (Options.KEDA).
	KEDA            bool
	collectInterval time.Duration
}

// Options configures StartEnv.
type Options struct {
	BinDir string // where spillway's binaries are (make build)
	// RepoRoot locates config/crd; default: the current directory.
	RepoRoot string
	Log      io.Writer
	// CollectInterval paces the exporter, Prometheus and the adapter cache.
	CollectInterval time.Duration
	// AsServiceAccounts runs each component with a token of the
	// ServiceAccount the Helm chart gives it, under the chart's RBAC,
	// instead of as cluster admin.
	AsServiceAccounts bool
	// ExtraScrapeTargets are scraped by the same Prometheus beside
	// spillway's own jobs (tests use them for tenants' targets).
	ExtraScrapeTargets []localcluster.ScrapeTarget
	// KEDA also runs KEDA (built into the user cache on first use), which
	// then owns external.metrics.k8s.io: the adapter registers the custom
	// metrics API only, as the chart does with KEDA in the cluster, so
	// runs may scale with Run.KEDA.
	KEDA bool
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
// controller. Prometheus scrapes all three and the simulated model servers,
// so every dashboard query has data.
func StartEnv(ctx context.Context, c *localcluster.Cluster, o Options) (*Env, error) {
	o.defaults()
	e := &Env{Cluster: c, log: o.Log, KEDA: o.KEDA, collectInterval: o.CollectInterval}
	expArgs, ctrlArgs, adArgs, err := prepare(ctx, c, o)
	if err != nil {
		return nil, err
	}
	exp, err := framework.StartExporter(ctx, c, o.BinDir, o.CollectInterval, expArgs...)
	if err != nil {
		return nil, err
	}
	e.LoadURL = exp.LoadURL
	e.ModelServerURL = "http://" + exp.ModelServerAddr
	ctrl, err := framework.StartController(ctx, c, o.BinDir, ctrlArgs)
	if err != nil {
		return nil, err
	}
	e.WebhookPort = ctrl.WebhookPort
	prom, err := c.StartPrometheus(ctx, "prometheus", o.CollectInterval, append([]localcluster.ScrapeTarget{
		{Job: ExporterJob, Address: exp.MetricsAddr},
		{Job: "spillway-controller", Address: ctrl.MetricsAddr},
		exp.ModelServers("model-servers", PredictorApp),
	}, o.ExtraScrapeTargets...))
	if err != nil {
		return nil, err
	}
	e.Prometheus = prom
	startAdapter := framework.StartAdapter
	if o.KEDA {
		startAdapter = framework.StartPodsOnlyAdapter
	}
	ad, err := startAdapter(ctx, c, o.BinDir, prom.URL, o.CollectInterval, adArgs)
	if err != nil {
		return nil, err
	}
	if o.KEDA {
		if _, err := c.StartKEDA(ctx); err != nil {
			return nil, fmt.Errorf("starting KEDA: %w", err)
		}
	}
	e.AdapterPort = ad.Port
	e.AdapterSelfMetricsAddr = ad.SelfMetricsAddr
	// The adapter needs Prometheus's URL to start, so its own metrics are
	// scraped from then on, under the job the chart's monitors give it.
	if err := prom.AddTargets(ctx, localcluster.ScrapeTarget{Job: "spillway-metrics-adapter", Address: ad.SelfMetricsAddr}); err != nil {
		return nil, err
	}
	return e, nil
}

// prepare adds the seed's node pools and installs spillway's CRDs, and with
// AsServiceAccounts the chart's RBAC; it returns the flags that make each
// component (exporter, controller, adapter) use its ServiceAccount's token.
func prepare(ctx context.Context, c *localcluster.Cluster, o Options) (expArgs, ctrlArgs, adArgs []string, err error) {
	if _, err := c.AddStaticGPUNodes(ctx, OnPremPool, 1, localcluster.DefaultGPUNode); err != nil {
		return nil, nil, nil, err
	}
	// Empty cloud nodes go quickly: in a compressed day every real second
	// of an idle node is minutes of cloud GPU time.
	if err := c.AddElasticPool(ctx, localcluster.ElasticPool{Name: ElasticPool, ConsolidateAfter: 2 * time.Second}); err != nil {
		return nil, nil, nil, err
	}
	if err := framework.InstallCRDs(ctx, c, o.RepoRoot); err != nil {
		return nil, nil, nil, err
	}
	if !o.AsServiceAccounts {
		return nil, nil, nil, nil
	}
	kcs, err := ServiceAccountKubeconfigs(ctx, c)
	if err != nil {
		return nil, nil, nil, err
	}
	ad := kcs["spillway-metrics-adapter"]
	return []string{"--kubeconfig=" + kcs["spillway-gpu-exporter"]},
		[]string{"--kubeconfig=" + kcs["spillway-controller"]},
		[]string{"--lister-kubeconfig=" + ad, "--authentication-kubeconfig=" + ad, "--authorization-kubeconfig=" + ad},
		nil
}
