// Command fixedadapter is the benchmark's second floor: a metrics server
// that answers every request with a fixed list of --items values held in
// memory (internal/fixedmetrics), behind the same custom-metrics-apiserver serving stack as
// spillway-metrics-adapter. The library's test-adapter, the first floor,
// answers its External API with one item where spillway answers one per
// selected pod (50 in the benchmark); encoding 50 items costs the serving
// stack more than one, so test/bench/adaptercluster measures this server
// too, with spillway's answer shape and size, to show what spillway adds
// over a server that does no work at all. It is not part of the product.
//
//	go build -o fixedadapter ./test/bench/fixedadapter
//	fixedadapter --items=50 --secure-port=7443 --lister-kubeconfig=... [serving flags]
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"

	"github.com/spillway-dev/spillway/internal/fixedmetrics"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

const name = "fixedadapter"

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
		items     = fs.Int("items", 50, "Items in every list answer (External, and Pods by selector); a Pods answer by name is one item.")
		metric    = fs.String("metric", metricnames.ProcessSMUtil, "The one metric served, on both APIs.")
		namespace = fs.String("namespace", "bench", "Namespace the Pods API's items name.")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *items < 1 {
		return fmt.Errorf("--items must be at least 1, got %d", *items)
	}
	f := fixedmetrics.New(*items, *metric, *namespace)
	adapter.WithCustomMetrics(f)
	adapter.WithExternalMetrics(f)
	return adapter.Run(ctx)
}
