package app

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/spillway-dev/spillway/cmd/internal/cli"
	"github.com/spillway-dev/spillway/cmd/internal/serving"
	"github.com/spillway-dev/spillway/pkg/intern"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/pkg/provider"
	"github.com/spillway-dev/spillway/pkg/version"
)

const usageHeader = `spillway-metrics-adapter serves spillway's per-pod GPU metrics to the Horizontal
Pod Autoscaler through the aggregated APIs custom.metrics.k8s.io (v1beta1, v1beta2;
type: Pods) and external.metrics.k8s.io (v1beta1; type: External).

Every --refresh-interval it runs ONE Prometheus instant query for all spillway series
and swaps in an in-memory snapshot; requests are answered from memory. A pod's
value: per GPU, the sum of its processes (capped at 100 for utilizations), then the
mean over its GPUs (memory: the sum). Values older than --max-staleness are never
served: a request for which no selected pod has a fresh value fails, so the HPA
holds its scale instead of seeing 0. An answer that may be partial (Thanos warns
that a store or shard did not respond) fails the refresh the same way.

Only the exporter's series count: every query carries --series-selector, and a
series whose Hostname is not the node its pod is bound to is dropped and counted
(spillway_metrics_adapter_series_rejected_total{reason}).

Usage:
  spillway-metrics-adapter --prometheus-url=http://prometheus:9090 [flags]

See docs/adapter.md for the APIService objects and HPA examples.
`

// Run parses args and runs the adapter until ctx ends.
//
// Logs go to stderr through klog, like the serving library's own logs.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := NewOptions()
	own, lib := o.ownFlags(), o.libraryFlags()
	all := pflag.NewFlagSet(binaryName, pflag.ContinueOnError)
	all.AddFlagSet(own)
	all.AddFlagSet(lib)
	done, err := cli.Command{
		Binary: binaryName,
		Flags:  all,
		Help: func() string {
			return fmt.Sprintf("%s\nAdapter flags:\n%s\nServing, authentication and authorization flags (from sigs.k8s.io/custom-metrics-apiserver):\n%s",
				usageHeader, own.FlagUsages(), lib.FlagUsages())
		},
		ShowVersion: &o.ShowVersion,
		Validate:    o.Validate,
	}.Parse(args, stdout)
	if done || err != nil {
		return err
	}
	ctx, logger, err := o.Logging.Setup(ctx, stderr)
	if err != nil {
		return err
	}
	cli.MemoryLimit(logger, cli.CgroupRoot)
	return run(ctx, o)
}

func run(ctx context.Context, o *Options) error {
	log := klog.FromContext(ctx)
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return err
	}

	identity, err := promquery.ParseSeriesSelector(o.SeriesSelector)
	if err != nil {
		return fmt.Errorf("--series-selector: %w", err)
	}
	var podIdentity promquery.SeriesSelector
	if o.PodSeriesSelector != "" {
		if podIdentity, err = promquery.ParseSeriesSelector(o.PodSeriesSelector); err != nil {
			return fmt.Errorf("--pod-series-selector: %w", err)
		}
	}
	transport, err := promquery.NewTransport(o.transport)
	if err != nil {
		return fmt.Errorf("prometheus client: %w", err)
	}
	prom, err := promquery.New(promquery.Config{URL: o.PrometheusURL, Timeout: o.PrometheusTimeout, RoundTripper: transport, SeriesSelector: identity, PodSeriesSelector: podIdentity})
	if err != nil {
		return err
	}
	pods, podsSynced, err := podLister(o)
	if err != nil {
		return err
	}
	p, err := provider.New(provider.Config{
		Source:          prom,
		Pods:            pods,
		PodsSynced:      podsSynced,
		Registry:        reg,
		RefreshInterval: o.RefreshInterval,
		RefreshNice:     o.RefreshNice,
		MaxStaleness:    o.MaxStaleness,
		MinPodDataShare: o.MinPodDataShare,
		Metrics:         o.metrics,
		Clock:           clock.RealClock{},
	})
	if err != nil {
		return err
	}
	o.Adapter.WithCustomMetrics(p)
	o.Adapter.WithExternalMetrics(p)

	if err := selfManagedCert(ctx, o); err != nil {
		return err
	}
	server, err := o.Adapter.Server()
	if err != nil {
		return fmt.Errorf("building the API server: %w", err)
	}
	// The informer-sync check comes with the library; this one fails until
	// the first snapshot has loaded, and never after (provider.Ready says
	// why staleness must not take the APIServices down).
	if err := server.GenericAPIServer.AddReadyzChecks(healthz.NamedCheck("spillway-gpu-metrics", func(*http.Request) error {
		return p.Ready()
	})); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopMetrics, err := serveSelfMetrics(ctx, o.SelfMetricsAddress, reg)
	if err != nil {
		return err
	}
	defer stopMetrics()
	go p.Run(ctx)

	headers := make([]string, len(o.transport.Headers))
	for i, h := range o.transport.Headers {
		headers[i] = h.Name // names only: values may be secrets
	}
	log.Info("Starting", "version", version.String(binaryName), "prometheus", o.PrometheusURL,
		"prometheusBearerTokenFile", o.transport.BearerTokenFile, "prometheusCAFile", o.transport.CAFile,
		"prometheusClientCertFile", o.transport.CertFile, "prometheusHeaders", headers,
		"seriesSelector", identity.String(), "podSeriesSelector", podIdentity.String(), "metrics", len(o.metrics), "metricsConfig", o.MetricsConfig, "refreshInterval", o.RefreshInterval, "refreshNice", o.RefreshNice, "maxStaleness", o.MaxStaleness, "minPodDataShare", o.MinPodDataShare)
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

// podLister registers a pod informer on the library's shared factory (the
// server starts it) that keeps only what label selection and the Hostname
// check need, indexed by namespace and by label.
func podLister(o *Options) (provider.PodLister, func() bool, error) {
	factory, err := o.Adapter.Informers()
	if err != nil {
		return nil, nil, fmt.Errorf("pod informer: %w", err)
	}
	inf := factory.Core().V1().Pods().Informer()
	if err := inf.SetTransform(provider.SlimPods(intern.NewTable[map[string]string](maxSharedLabelSets))); err != nil {
		return nil, nil, err
	}
	if err := inf.AddIndexers(cache.Indexers{provider.PodLabelIndex: provider.PodLabelIndexFunc}); err != nil {
		return nil, nil, err
	}
	l, err := provider.NewInformerPods(inf.GetIndexer())
	return l, inf.HasSynced, err
}

// maxSharedLabelSets bounds the distinct label sets the pod cache shares:
// far more than the pod templates of a large cluster.
const maxSharedLabelSets = 4096

// serveSelfMetrics serves reg on a plain-HTTP /metrics; it returns once the
// port is bound so a taken port fails the start. A server that stops on its
// own is logged: the adapter keeps serving the metrics APIs without it.
func serveSelfMetrics(ctx context.Context, addr string, reg *prometheus.Registry) (func(), error) {
	if addr == "" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	group, err := serving.Listen(&serving.Server{Name: "self-metrics server", Addr: addr, Handler: mux})
	if err != nil {
		return nil, fmt.Errorf("--self-metrics-address: %w", err)
	}
	group.Start()
	log := klog.FromContext(ctx)
	stopped := make(chan struct{})
	go func() {
		select {
		case err := <-group.Failed():
			log.Error(err, "Self-metrics server stopped")
		case <-stopped:
		}
	}()
	return func() {
		close(stopped)
		if err := group.Shutdown(ctx); err != nil {
			log.Error(err, "Stopping the self-metrics server")
		}
	}, nil
}
