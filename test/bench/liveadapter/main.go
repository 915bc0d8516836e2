// Command liveadapter is the benchmark's request-time-PromQL metrics server:
// spillway's provider behind the same custom-metrics-apiserver serving
// stack as spillway-metrics-adapter, but running one Prometheus query per
// request for the pods it selects (the prometheus-adapter way) instead of
// answering from a snapshot. test/bench/adaptercluster builds and starts it
// next to the real adapter to measure what the cache saves. It is not part
// of the product: spillway-metrics-adapter serves from its cache only.
//
//	go build -o liveadapter ./test/bench/liveadapter
//	liveadapter --prometheus-url=http://127.0.0.1:9090 --secure-port=7443 --lister-kubeconfig=... [serving flags]
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/cache"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"

	"github.com/spillway-dev/spillway/pkg/intern"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/pkg/provider"
)

const name = "liveadapter"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	adapter := &basecmd.AdapterBase{Name: name}
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	adapter.FlagSet = fs
	adapter.InstallFlags()
	var (
		promURL        = fs.String("prometheus-url", "", "Base URL of Prometheus. Required.")
		promTimeout    = fs.Duration("prometheus-timeout", 10*time.Second, "Upper bound for one Prometheus query.")
		seriesSelector = fs.String("series-selector", metricnames.LabelJob+`="`+metricnames.ExporterJob+`"`, "PromQL matchers only the exporter's series carry, as spillway-metrics-adapter's flag.")
		maxStaleness   = fs.Duration("max-staleness", 30*time.Second, "Oldest value served, as spillway-metrics-adapter's flag.")
		minShare       = fs.Float64("min-pod-data-share", 0.5, "As spillway-metrics-adapter's flag.")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if *promURL == "" {
		return errors.New("--prometheus-url is required")
	}
	identity, err := promquery.ParseSeriesSelector(*seriesSelector)
	if err != nil {
		return fmt.Errorf("--series-selector: %w", err)
	}
	prom, err := promquery.New(promquery.Config{URL: *promURL, Timeout: *promTimeout, SeriesSelector: identity})
	if err != nil {
		return err
	}
	factory, err := adapter.Informers()
	if err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	inf := factory.Core().V1().Pods().Informer()
	if err := inf.SetTransform(provider.SlimPods(intern.NewTable[map[string]string](4096))); err != nil {
		return err
	}
	if err := inf.AddIndexers(cache.Indexers{provider.PodLabelIndex: provider.PodLabelIndexFunc}); err != nil {
		return err
	}
	pods, err := provider.NewInformerPods(inf.GetIndexer())
	if err != nil {
		return err
	}
	live, err := newLiveProvider(liveConfig{
		Source:          prom,
		Pods:            pods,
		PodsSynced:      inf.HasSynced,
		MaxStaleness:    *maxStaleness,
		MinPodDataShare: *minShare,
	})
	if err != nil {
		return err
	}
	adapter.WithCustomMetrics(live)
	adapter.WithExternalMetrics(live)
	return adapter.Run(ctx)
}
