package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	genericapiserver "k8s.io/apiserver/pkg/server"

	"github.com/spillway-dev/spillway/pkg/version"
)

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{
			args: []string{"--help"},
			want: []string{
				"--prometheus-url", "--refresh-interval", "--max-staleness", "--self-metrics-address",
				"--prometheus-timeout", "--series-selector", `(default "job=\"spillway-gpu-exporter\"")`, "--version",
				"--prometheus-bearer-token-file", "--prometheus-ca-file", "--prometheus-client-cert-file", "--prometheus-client-key-file",
				"--prometheus-header", "--prometheus-header-file",
				// The library's flags are there too.
				"--secure-port", "--tls-cert-file", "--authentication-kubeconfig", "--authorization-kubeconfig", "--lister-kubeconfig",
				"(default 5s)", "(default 30s)", "(default 6443)",
			},
		},
		{args: []string{"--version"}, want: []string{version.String(binaryName)}},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			var out bytes.Buffer
			if err := Run(context.Background(), tt.args, &out, &out); err != nil {
				t.Fatalf("Run(%v) = %v", tt.args, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q", w)
				}
			}
		})
	}
}

func TestRunRejectsBadCommandLines(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "nothing given", args: nil, want: []string{"--prometheus-url is required"}},
		{name: "unknown flag", args: []string{"--prometheus=x"}, want: []string{"unknown flag: --prometheus", "--help"}},
		// Request-time PromQL is gone from the product (the benchmark has its
		// own server for it): the old flag fails the start.
		{name: "live query", args: []string{"--prometheus-url=http://prom:9090", "--live-query"}, want: []string{"unknown flag: --live-query"}},
		{
			name: "every problem at once",
			args: []string{
				"--prometheus-url=ftp://prom", "--refresh-interval=0", "--max-staleness=-1s", "--prometheus-timeout=0",
				"--self-metrics-address=nope", "--secure-port=70000", "--series-selector=", "--min-pod-data-share=1.5", "--refresh-nice=20", "stray",
			},
			want: []string{
				`unexpected arguments ["stray"]`,
				`--prometheus-url "ftp://prom" must be an http(s) URL`,
				"--refresh-interval must be positive",
				"--max-staleness (-1s) must be longer than --refresh-interval (0s)",
				"--prometheus-timeout must be positive",
				"--self-metrics-address",
				"--secure-port 70000",
				"--series-selector: series selector \"\": no matchers",
				"--min-pod-data-share must be within 0 and 1, got 1.5",
				"--refresh-nice must be within 0 (off) and 19, got 20",
			},
		},
		{
			name: "series selector that would let any target in",
			args: []string{"--prometheus-url=http://prom:9090", `--series-selector=job!="x"`},
			want: []string{"--series-selector", "at least one must require a value"},
		},
		{
			name: "metric table with bad rows",
			args: []string{"--prometheus-url=http://prom:9090", "--metrics-config=testdata/bad-metrics.yaml", `--pod-series-selector=job!="x"`},
			want: []string{
				"--pod-series-selector",
				`--metrics-config: metric table testdata/bad-metrics.yaml`,
				`metrics[13] (queue/depth): name "queue/depth" is not a Prometheus metric name`,
				`metrics[14] (my_queue): unknown combine "Average"`,
				`metrics[15] (my_gpu): combine SumOfGPUs needs per-process GPU series, which only origin Exporter publishes`,
				`metrics[16] (vllm:num_requests_waiting): name "vllm:num_requests_waiting" is already served by metrics[5]`,
			},
		},
		{
			name: "metric table file missing or with unknown fields",
			args: []string{"--prometheus-url=http://prom:9090", "--metrics-config=testdata/none.yaml"},
			want: []string{"--metrics-config: open testdata/none.yaml: no such file or directory"},
		},
		{
			name: "series selector on metric names",
			args: []string{"--prometheus-url=http://prom:9090", `--series-selector={__name__=~".+"}`},
			want: []string{"--series-selector", "reserved"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Run(context.Background(), tt.args, &out, &out)
			if err == nil {
				t.Fatalf("Run(%v) succeeded", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestFlagsSetOptions(t *testing.T) {
	o := NewOptions()
	own, lib := o.ownFlags(), o.libraryFlags()
	if err := own.Parse([]string{
		"--prometheus-url=https://prom.example:9090/sub", "--refresh-interval=2s", "--max-staleness=1m",
		"--self-metrics-address=127.0.0.1:0", "--prometheus-timeout=3s",
		`--series-selector={job="gpu",cluster=~"a|b"}`, "--min-pod-data-share=0.75", "--refresh-nice=0",
	}); err != nil {
		t.Fatal(err)
	}
	if err := lib.Parse([]string{"--secure-port=7443", "--lister-kubeconfig=/tmp/kc"}); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if o.PrometheusURL != "https://prom.example:9090/sub" || o.RefreshInterval != 2*time.Second || o.MaxStaleness != time.Minute ||
		o.SelfMetricsAddress != "127.0.0.1:0" || o.PrometheusTimeout != 3*time.Second ||
		o.SeriesSelector != `{job="gpu",cluster=~"a|b"}` || o.MinPodDataShare != 0.75 || o.RefreshNice != 0 {
		t.Errorf("options = %+v", o)
	}
	if o.Adapter.SecureServing.BindPort != 7443 || o.Adapter.RemoteKubeConfigFile != "/tmp/kc" {
		t.Errorf("library options: port %d, kubeconfig %q", o.Adapter.SecureServing.BindPort, o.Adapter.RemoteKubeConfigFile)
	}
	if o.Adapter.SecureServing.ServerCert.CertDirectory != "" {
		t.Errorf("self-signed certs would be written to %q", o.Adapter.SecureServing.ServerCert.CertDirectory)
	}
}

// /debug/pprof is served only with --profiling (the library's default is on).
func TestProfilingIsOptIn(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--profiling"}, true},
		{[]string{"--profiling=false"}, false},
	} {
		o := NewOptions()
		if err := o.libraryFlags().Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		var cfg genericapiserver.Config
		if err := o.Adapter.Features.ApplyTo(&cfg, nil, nil); err != nil {
			t.Fatal(err)
		}
		if cfg.EnableProfiling != tt.want {
			t.Errorf("%v: server profiling = %v, want %v", tt.args, cfg.EnableProfiling, tt.want)
		}
	}
}
