// Package app holds spillway-metrics-adapter's flags, validation and wiring.
package app

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"

	"github.com/spillway-dev/spillway/cmd/internal/cli"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/metrictable"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/pkg/provider"
)

const binaryName = "spillway-metrics-adapter"

// defaultRefreshNice gives a refresh thread the kernel's weight 110 against
// a request thread's 1024: about a tenth of a CPU both want. At 200,000
// series (some 0.6 s of CPU) a refresh then still ends in about 6 s while
// requests saturate the CPU, inside the default --max-staleness.
const defaultRefreshNice = 10

// Options is everything the command line sets.
type Options struct {
	// Adapter carries the custom-metrics-apiserver library's own options
	// (secure serving, delegated authn/authz, audit, lister kubeconfig).
	Adapter *basecmd.AdapterBase

	PrometheusURL     string
	PrometheusTimeout time.Duration
	// Credentials of the Prometheus client (promquery.TransportConfig).
	PrometheusBearerTokenFile string
	PrometheusCAFile          string
	PrometheusCertFile        string
	PrometheusKeyFile         string
	PrometheusHeaders         []string // Name=Value
	PrometheusHeaderFiles     []string // Name=path
	// transport is what Validate built from the credential flags.
	transport promquery.TransportConfig

	SeriesSelector     string // parsed by Validate and again by run
	PodSeriesSelector  string // likewise
	MetricsConfig      string // a metric table file, loaded by Validate
	RefreshInterval    time.Duration
	RefreshNice        int
	MaxStaleness       time.Duration
	MinPodDataShare    float64
	SelfMetricsAddress string
	// metrics is the metric table Validate loaded.
	metrics []metrictable.Row
	// Certs: the self-managed serving certificate (certs.go).
	Certs       certOptions
	Logging     cli.Logging
	ShowVersion bool
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	serverOpts := options.NewCustomMetricsAdapterServerOptions()
	// An aggregated API server does not need a privileged port.
	serverOpts.SecureServing.BindPort = 6443
	// Without --tls-cert-file and with no --cert-dir, self-signed serving
	// certificates stay in memory instead of being written under the
	// working directory.
	serverOpts.SecureServing.ServerCert.CertDirectory = ""
	// /debug/pprof on the secure port is opt-in (--profiling), not the
	// library's default on: a profile is for a maintainer chasing a cost,
	// and a CPU profile request makes the server work for as long as it
	// asks. With --profiling it is served behind the same delegated authn
	// and authz as the metrics (a non-resource URL: cluster-admin's by
	// default).
	serverOpts.Features.EnableProfiling = false
	return &Options{
		Adapter:            &basecmd.AdapterBase{Name: binaryName, CustomMetricsAdapterServerOptions: serverOpts},
		PrometheusTimeout:  10 * time.Second,
		SeriesSelector:     metricnames.LabelJob + `="` + metricnames.ExporterJob + `"`,
		RefreshInterval:    5 * time.Second,
		RefreshNice:        defaultRefreshNice,
		MaxStaleness:       30 * time.Second,
		MinPodDataShare:    0.5,
		SelfMetricsAddress: ":9102",
		Certs:              defaultCertOptions(),
	}
}

// ownFlags are spillway's flags; libraryFlags the serving stack's. They are
// kept apart so --help can print them in two sections.
func (o *Options) ownFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet(binaryName, pflag.ContinueOnError)
	fs.StringVar(&o.PrometheusURL, "prometheus-url", o.PrometheusURL,
		"Base URL of the Prometheus server that scrapes spillway-gpu-exporter, e.g. http://prometheus.monitoring.svc:9090, or of anything serving its HTTP API "+
			"over several (Thanos Query, Mimir, Cortex; a path prefix such as /prometheus is kept). Required. Every query sends partial_response=false, and an answer "+
			"with warnings (a store or shard that did not respond) fails the refresh like an unreachable server: part of the fleet is never served as all of it. "+
			"There is no setting that accepts partial answers.")
	fs.DurationVar(&o.PrometheusTimeout, "prometheus-timeout", o.PrometheusTimeout,
		"Upper bound for one Prometheus query, sent to Prometheus as its evaluation timeout too.")
	fs.StringVar(&o.PrometheusBearerTokenFile, "prometheus-bearer-token-file", o.PrometheusBearerTokenFile,
		"File with a token sent to Prometheus as 'Authorization: Bearer <token>' (Thanos, Mimir or Cortex behind an authenticating gateway). "+
			"Read on every query, so a rotated token (a Secret volume) is used from the next refresh. Never logged.")
	fs.StringVar(&o.PrometheusCAFile, "prometheus-ca-file", o.PrometheusCAFile,
		"PEM bundle of the CAs Prometheus's serving certificate must chain to (instead of the system's roots). Needs an https --prometheus-url. Re-read on every query.")
	fs.StringVar(&o.PrometheusCertFile, "prometheus-client-cert-file", o.PrometheusCertFile,
		"PEM client certificate presented to Prometheus (mutual TLS), with --prometheus-client-key-file. Needs an https --prometheus-url. "+
			"Both are re-read on every query, so a rotated certificate is used from the next refresh.")
	fs.StringVar(&o.PrometheusKeyFile, "prometheus-client-key-file", o.PrometheusKeyFile,
		"PEM private key of --prometheus-client-cert-file.")
	fs.StringArrayVar(&o.PrometheusHeaders, "prometheus-header", o.PrometheusHeaders,
		"Name=Value: an HTTP header sent with every query, e.g. X-Scope-OrgID=team-a for Mimir or Cortex. Repeatable. "+
			"Headers the HTTP client owns (Host, Connection and the other hop-by-hop ones, Content-Type, Content-Length, Accept-Encoding) are refused, "+
			"and Authorization with --prometheus-bearer-token-file. Put secrets in --prometheus-header-file, not here (command lines are visible).")
	fs.StringArrayVar(&o.PrometheusHeaderFiles, "prometheus-header-file", o.PrometheusHeaderFiles,
		"Name=path: an HTTP header whose value is the content of the file (surrounding whitespace trimmed), re-read on every query: for secret values. Repeatable; "+
			"the same rules as --prometheus-header.")
	fs.StringVar(&o.SeriesSelector, "series-selector", o.SeriesSelector,
		"PromQL label matchers that only the exporter's series carry, added to every query: the scrape job Prometheus gives spillway-gpu-exporter "+
			"(the chart's ServiceMonitor/PodMonitor use the exporter Service's name). Comma-separated, braces optional, e.g. 'job=\"spillway-gpu-exporter\",cluster=\"a\"'. "+
			"Required: series from any other target (a tenant's pod can publish the same metric names) are never read. "+
			"Each series' Hostname must also be the node its pod is bound to; others are dropped and counted in spillway_metrics_adapter_series_rejected_total.")
	fs.StringVar(&o.PodSeriesSelector, "pod-series-selector", o.PodSeriesSelector,
		"PromQL label matchers added to the query for series the pods publish themselves (metric table rows of origin Pod: vLLM, SGLang and TGI gauges), "+
			"e.g. 'job=\"kubernetes-pods\"'. Optional: whatever job scraped them, such a series counts only when the host of its instance label is its pod's IP "+
			"(the address Prometheus scraped), so keep instance as Prometheus sets it.")
	fs.StringVar(&o.MetricsConfig, "metrics-config", o.MetricsConfig,
		"Metric table file (YAML): rows added to the built-in table (the exporter's five DCGM_CUSTOM_PROCESS_* metrics, vLLM's num_requests_waiting, num_requests_running, "+
			"kv_cache_usage_perc and gpu_cache_usage_perc, SGLang's num_queue_reqs and num_running_reqs, TGI's queue_size and batch_current_size), or replacing it "+
			"with replaceDefaults: true. Each row: name (served to the HPA), series (Prometheus name; default name), namespaceLabels and podLabels "+
			"(default NamespaceName,namespace and PodName,pod), combine (MeanOfCappedGPUs, SumOfGPUs, Sum or Max), origin (Exporter or Pod; default Pod). "+
			"Validated at start; see docs/adapter.md.")
	fs.DurationVar(&o.RefreshInterval, "refresh-interval", o.RefreshInterval,
		"How often the adapter queries Prometheus (one query for the exporter's series, one for the pods' own) and swaps in a new in-memory snapshot. Requests never wait for Prometheus.")
	fs.IntVar(&o.RefreshNice, "refresh-nice", o.RefreshNice, fmt.Sprintf(
		"Nice value (1 to %d; 0: off) of the OS thread that decodes Prometheus's answer and builds the snapshot (Linux; ignored elsewhere). "+
			"While a refresh runs, the kernel then gives the threads serving requests the CPU first, so refreshes do not lengthen request latency "+
			"on a busy node. Needs no privilege. The default keeps a refresh about 10 %% of the CPU when requests saturate it; 19 keeps it 1.5 %%, "+
			"which can delay refreshes past --max-staleness under sustained overload.", provider.MaxRefreshNice))
	fs.DurationVar(&o.MaxStaleness, "max-staleness", o.MaxStaleness,
		"Oldest value the adapter serves. If Prometheus cannot be reached, the last snapshot is served until it is this old; after that every request fails "+
			"with 503 naming the snapshot's age (the HPA then keeps its current scale). /readyz stays ready: it only waits for the first snapshot, so an outage "+
			"cannot make the metrics APIs unavailable to discovery. Also sent to Prometheus as lookback_delta, so keep it at least twice the exporter's scrape interval. "+
			"Must be longer than --refresh-interval.")
	fs.Float64Var(&o.MinPodDataShare, "min-pod-data-share", o.MinPodDataShare,
		"Smallest share (0 to 1) of the pods a request selects that must have a fresh value, counting only pods that are running, not being deleted "+
			"and started more than --max-staleness ago (younger pods count only once they report, so new replicas never block a scale-out). "+
			"Below it the request fails with 503 naming the counts and the HPA keeps its scale: when one node's exporter or scrape is down, "+
			"the pods still reporting must not decide alone (a low reading from them would scale in the pods nobody measured). "+
			"0 answers whenever any selected pod has data; 1 needs every expected pod.")
	fs.StringVar(&o.SelfMetricsAddress, "self-metrics-address", o.SelfMetricsAddress,
		"host:port for a plain-HTTP /metrics with the adapter's own metrics (refresh duration and errors, snapshot age and size, requests and latency by API). Empty disables it.")
	o.Certs.addFlags(fs)
	o.Logging.AddFlags(fs, "2 adds the series dropped by the provenance checks, higher adds the serving library's detail.")
	fs.BoolVar(&o.ShowVersion, "version", false, "Print the version and exit.")
	return fs
}

func (o *Options) libraryFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet(binaryName+"-server", pflag.ContinueOnError)
	o.Adapter.FlagSet = fs
	o.Adapter.InstallFlags()
	return fs
}

// Validate reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	switch u, err := url.Parse(o.PrometheusURL); {
	case o.PrometheusURL == "":
		errs = append(errs, errors.New("--prometheus-url is required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("--prometheus-url: %w", err))
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		errs = append(errs, fmt.Errorf("--prometheus-url %q must be an http(s) URL with a host", o.PrometheusURL))
	case u.Query().Has(promquery.PartialResponseParam):
		errs = append(errs, fmt.Errorf("--prometheus-url %q sets %s: the adapter always sends %s=false, so a shard that does not answer fails the refresh instead of serving part of the fleet",
			o.PrometheusURL, promquery.PartialResponseParam, promquery.PartialResponseParam))
	}
	errs = append(errs, o.validateTransport()...)
	if o.PrometheusTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--prometheus-timeout must be positive, got %s", o.PrometheusTimeout))
	}
	if _, err := promquery.ParseSeriesSelector(o.SeriesSelector); err != nil {
		errs = append(errs, fmt.Errorf("--series-selector: %w", err))
	}
	if o.PodSeriesSelector != "" {
		if _, err := promquery.ParseSeriesSelector(o.PodSeriesSelector); err != nil {
			errs = append(errs, fmt.Errorf("--pod-series-selector: %w", err))
		}
	}
	o.metrics = metrictable.Defaults()
	if o.MetricsConfig != "" {
		rows, err := loadMetrics(o.MetricsConfig)
		if err != nil {
			errs = append(errs, fmt.Errorf("--metrics-config: %w", err))
		}
		o.metrics = rows
	}
	if o.RefreshInterval <= 0 {
		errs = append(errs, fmt.Errorf("--refresh-interval must be positive, got %s", o.RefreshInterval))
	}
	if o.RefreshNice < 0 || o.RefreshNice > provider.MaxRefreshNice {
		errs = append(errs, fmt.Errorf("--refresh-nice must be within 0 (off) and %d, got %d", provider.MaxRefreshNice, o.RefreshNice))
	}
	if o.MaxStaleness <= o.RefreshInterval {
		errs = append(errs, fmt.Errorf("--max-staleness (%s) must be longer than --refresh-interval (%s)", o.MaxStaleness, o.RefreshInterval))
	}
	if !(o.MinPodDataShare >= 0 && o.MinPodDataShare <= 1) {
		errs = append(errs, fmt.Errorf("--min-pod-data-share must be within 0 and 1, got %v", o.MinPodDataShare))
	}
	if o.SelfMetricsAddress != "" {
		if _, _, err := net.SplitHostPort(o.SelfMetricsAddress); err != nil {
			errs = append(errs, fmt.Errorf("--self-metrics-address: %w", err))
		}
	}
	if err := o.Logging.Validate(); err != nil {
		errs = append(errs, err)
	}
	if so := o.Adapter.CustomMetricsAdapterServerOptions; so != nil {
		errs = append(errs, o.Certs.validate(so.SecureServing.ServerCert.CertKey.CertFile)...)
		errs = append(errs, o.Adapter.Validate()...)
	}
	return errors.Join(errs...)
}

// validateTransport builds o.transport from the credential flags and
// reports every problem with them.
func (o *Options) validateTransport() []error {
	var errs []error
	o.transport = promquery.TransportConfig{
		BearerTokenFile: o.PrometheusBearerTokenFile,
		CAFile:          o.PrometheusCAFile,
		CertFile:        o.PrometheusCertFile,
		KeyFile:         o.PrometheusKeyFile,
	}
	for _, h := range o.PrometheusHeaders {
		name, value, ok := strings.Cut(h, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("--prometheus-header %q: want Name=Value", h))
			continue
		}
		o.transport.Headers = append(o.transport.Headers, promquery.Header{Name: name, Value: value})
	}
	for _, h := range o.PrometheusHeaderFiles {
		name, path, ok := strings.Cut(h, "=")
		if !ok || path == "" {
			errs = append(errs, fmt.Errorf("--prometheus-header-file %q: want Name=path", h))
			continue
		}
		o.transport.Headers = append(o.transport.Headers, promquery.Header{Name: name, File: path})
	}
	if u, err := url.Parse(o.PrometheusURL); err == nil && u.Scheme == "http" &&
		(o.PrometheusCAFile != "" || o.PrometheusCertFile != "" || o.PrometheusKeyFile != "") {
		errs = append(errs, fmt.Errorf("--prometheus-ca-file, --prometheus-client-cert-file and --prometheus-client-key-file need an https --prometheus-url, got %q", o.PrometheusURL))
	}
	if o.PrometheusKeyFile != "" && o.PrometheusCertFile == "" {
		errs = append(errs, errors.New("--prometheus-client-key-file needs --prometheus-client-cert-file"))
	}
	if o.PrometheusCertFile != "" && o.PrometheusKeyFile == "" {
		errs = append(errs, errors.New("--prometheus-client-cert-file needs --prometheus-client-key-file"))
	}
	check := o.transport
	if (check.CertFile == "") != (check.KeyFile == "") {
		check.CertFile, check.KeyFile = "", "" // reported above, with the flags' names
	}
	if err := check.Validate(); err != nil {
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) {
			for _, e := range joined.Unwrap() {
				errs = append(errs, fmt.Errorf("prometheus client: %w", e))
			}
		} else {
			errs = append(errs, fmt.Errorf("prometheus client: %w", err))
		}
	}
	return errs
}

// loadMetrics reads a metric table file.
func loadMetrics(path string) ([]metrictable.Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return metrictable.Load(path, f)
}
