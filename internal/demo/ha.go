package demo

import (
	"context"
	"fmt"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

// ControllerLeaseName is the controllers' leader-election Lease in
// SystemNamespace: the chart's (release "spillway"), whose Role grants the
// controller that one Lease by name.
const ControllerLeaseName = "spillway-controller"

// HAOptions configures StartHA.
type HAOptions struct {
	Options
	// Controllers and Adapters are the replica counts (default 2 each).
	Controllers, Adapters int
	// ControllerArgs and AdapterArgs are extra flags for every replica.
	ControllerArgs, AdapterArgs []string
}

// Replica is one supervised replica of a spillway component: restarted if
// it exits on its own (as a kubelet would), kept down after Kill or Stop
// until Start.
type Replica struct {
	*localcluster.Supervised
	// Addr is host:port of what the replica serves behind its proxy (the
	// webhook, the aggregated API).
	Addr string
	// ReadyURL is the replica's readiness probe: the controller's
	// /readyz on its health port, the adapter's /readyz on its secure
	// port (HTTPS with the adapter's own certificate).
	ReadyURL string
	// MetricsAddr is host:port of the replica's plain-HTTP /metrics.
	MetricsAddr string
}

// HA is the seed's environment with every spillway server replicated the
// way the chart runs it: controllers with leader election, each serving the
// placement webhook, and metrics adapters, each behind a TCP proxy that
// stands in for the component's Service. Prometheus is reached by the
// adapters through a DelayProxy, so a test can make it answer late.
type HA struct {
	*Env
	Exporter *framework.Exporter
	// ExporterScrape is what Prometheus scrapes for the exporter's job:
	// the exporter's page, less what a test drops.
	ExporterScrape  *localcluster.ScrapeFilter
	Controllers     []*Replica
	ControllerProxy *localcluster.TCPProxy
	Adapters        []*Replica
	AdapterProxy    *localcluster.TCPProxy
	PrometheusProxy *localcluster.DelayProxy
}

// StartHA is StartEnv with replicated servers. The webhook configuration
// and the APIServices point at the proxies, so the API server reaches
// whichever replica is up, as through a Service.
func StartHA(ctx context.Context, c *localcluster.Cluster, o HAOptions) (*HA, error) {
	o.defaults()
	if o.Controllers == 0 {
		o.Controllers = 2
	}
	if o.Adapters == 0 {
		o.Adapters = 2
	}
	h := &HA{Env: &Env{Cluster: c, log: o.Log}}
	expArgs, ctrlArgs, adArgs, err := prepare(ctx, c, o.Options)
	if err != nil {
		return nil, err
	}
	exp, err := framework.StartExporter(ctx, c, o.BinDir, o.CollectInterval, expArgs...)
	if err != nil {
		return nil, err
	}
	h.Exporter, h.LoadURL = exp, exp.LoadURL
	if h.ExporterScrape, err = localcluster.StartScrapeFilter(exp.MetricsAddr); err != nil {
		return nil, err
	}

	// Controllers: each registers the webhook at its own port while it
	// starts (StartController waits for its CA bundle); the configuration
	// then moves to the proxy.
	ctrlArgs = append(append(ctrlArgs, "--leader-elect=true", "--leader-election-id="+ControllerLeaseName), o.ControllerArgs...)
	targets := []localcluster.ScrapeTarget{{Job: "spillway-gpu-exporter", Address: h.ExporterScrape.Addr}}
	var webhookAddrs []string
	for i := range o.Controllers {
		ctl, err := framework.StartController(ctx, c, o.BinDir, ctrlArgs)
		if err != nil {
			return nil, fmt.Errorf("controller replica %d: %w", i, err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ctl.WebhookPort)
		webhookAddrs = append(webhookAddrs, addr)
		h.Controllers = append(h.Controllers, &Replica{
			Supervised: c.Supervise(ctl.Proc), Addr: addr,
			ReadyURL: "http://" + ctl.HealthAddr + "/readyz", MetricsAddr: ctl.MetricsAddr,
		})
		job := "spillway-controller"
		if i > 0 {
			job = fmt.Sprintf("spillway-controller-%d", i)
		}
		targets = append(targets, localcluster.ScrapeTarget{Job: job, Address: ctl.MetricsAddr})
	}
	if h.ControllerProxy, err = localcluster.StartTCPProxy(webhookAddrs...); err != nil {
		return nil, err
	}
	if err := framework.ApplyWebhookConfig(ctx, c, h.ControllerProxy.Port()); err != nil {
		return nil, err
	}
	h.WebhookPort = h.ControllerProxy.Port()

	prom, err := c.StartPrometheus(ctx, "prometheus", o.CollectInterval, append(targets, o.ExtraScrapeTargets...))
	if err != nil {
		return nil, err
	}
	h.Prometheus = prom
	if h.PrometheusProxy, err = localcluster.StartDelayProxy(prom.URL); err != nil {
		return nil, err
	}

	// Adapters: likewise, each is first served through the aggregator on
	// its own port, then the APIServices move to the proxy.
	adArgs = append(adArgs, o.AdapterArgs...)
	var adapterAddrs []string
	for i := range o.Adapters {
		ad, err := framework.StartAdapter(ctx, c, o.BinDir, h.PrometheusProxy.URL, o.CollectInterval, adArgs)
		if err != nil {
			return nil, fmt.Errorf("adapter replica %d: %w", i, err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ad.Port)
		adapterAddrs = append(adapterAddrs, addr)
		h.Adapters = append(h.Adapters, &Replica{
			Supervised: c.Supervise(ad.Proc), Addr: addr,
			ReadyURL: "https://" + addr + "/readyz", MetricsAddr: ad.SelfMetricsAddr,
		})
		job := "spillway-metrics-adapter"
		if i > 0 {
			job = fmt.Sprintf("spillway-metrics-adapter-%d", i)
		}
		if err := prom.AddTargets(ctx, localcluster.ScrapeTarget{Job: job, Address: ad.SelfMetricsAddr}); err != nil {
			return nil, err
		}
	}
	if h.AdapterProxy, err = localcluster.StartTCPProxy(adapterAddrs...); err != nil {
		return nil, err
	}
	if err := framework.ApplyAPIServices(ctx, c, h.AdapterProxy.Port()); err != nil {
		return nil, err
	}
	if err := framework.WaitAPIServices(ctx, c); err != nil {
		return nil, err
	}
	h.AdapterPort = h.AdapterProxy.Port()
	if len(h.Adapters) > 0 {
		h.AdapterSelfMetricsAddr = h.Adapters[0].MetricsAddr
	}
	return h, nil
}

// Close stops the proxies (the processes end with the cluster).
func (h *HA) Close() {
	for _, p := range []*localcluster.TCPProxy{h.ControllerProxy, h.AdapterProxy} {
		if p != nil {
			_ = p.Close()
		}
	}
	if h.PrometheusProxy != nil {
		_ = h.PrometheusProxy.Close()
	}
	if h.ExporterScrape != nil {
		_ = h.ExporterScrape.Close()
	}
}
