// Command adaptercluster is the metrics adapter's end-to-end benchmark: on a
// local control plane with 5,000 Running pods and a real Prometheus holding
// 20,000 DCGM_CUSTOM_PROCESS_SM_UTIL series, it serves the same requests
// from three servers side by side — custom-metrics-apiserver's test-adapter
// (values in memory: the serving stack's floor), spillway-metrics-adapter
// (answers from its cache) and test/bench/liveadapter (the same provider
// and serving stack, but one PromQL query per request: the prometheus-
// adapter way, which the product does not offer) — and loads each in turn
// at a fixed rate with test/bench/adapterload. It prints p50/p99 per server
// and path and writes the table to <out>/adapter.md.
//
//	go run ./test/bench/adaptercluster --bin-dir bin
//
// Everything runs on this machine's cores, load generator included, so the
// figures only mean something next to each other; the floor is there to
// tell the serving library's own cost from the adapter's.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

type options struct {
	binDir      string
	outDir      string
	repoRoot    string
	apps        int
	podsPerApp  int
	benchApp    int
	rps         float64
	duration    time.Duration
	rounds      int
	warmup      time.Duration
	concurrency int
	aggregator  bool
	keda        bool
	peerScaling bool
	// reactionTrials, outage and outageAfter pace the peer scaling
	// scenarios.
	reactionTrials int
	outage         time.Duration
	outageAfter    time.Duration
	keepDir        bool
}

// slice is how long each target is loaded per round.
func (o options) slice() time.Duration { return o.duration / time.Duration(o.rounds) }

func (o *options) validate() error {
	var errs []error
	if o.binDir == "" {
		errs = append(errs, errors.New("--bin-dir is required"))
	}
	if o.outDir == "" {
		errs = append(errs, errors.New("--out must not be empty"))
	}
	if o.apps <= 0 || o.apps > 1000 {
		errs = append(errs, fmt.Errorf("--apps must be in 1..1000, got %d", o.apps))
	}
	if o.podsPerApp <= 0 {
		errs = append(errs, fmt.Errorf("--pods-per-app must be positive, got %d", o.podsPerApp))
	}
	if o.benchApp < 0 || o.benchApp >= o.apps {
		errs = append(errs, fmt.Errorf("--bench-app must be in 0..%d, got %d", o.apps-1, o.benchApp))
	}
	if o.rps <= 0 {
		errs = append(errs, fmt.Errorf("--rps must be positive, got %v", o.rps))
	}
	if o.duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration must be positive, got %s", o.duration))
	}
	if o.rounds < 1 {
		errs = append(errs, fmt.Errorf("--rounds must be at least 1, got %d", o.rounds))
	} else if o.rounds > 1 && o.slice() < time.Second {
		errs = append(errs, fmt.Errorf("--duration %s in %d rounds leaves slices under a second: use fewer rounds", o.duration, o.rounds))
	}
	if o.warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup must not be negative, got %s", o.warmup))
	}
	if o.peerScaling && o.reactionTrials <= 0 {
		errs = append(errs, fmt.Errorf("--reaction-trials must be positive, got %d", o.reactionTrials))
	}
	if o.peerScaling && (o.outage <= 0 || o.outageAfter <= 0) {
		errs = append(errs, fmt.Errorf("--outage and --outage-after must be positive, got %s and %s", o.outage, o.outageAfter))
	}
	if o.concurrency <= 0 {
		errs = append(errs, fmt.Errorf("--concurrency must be positive, got %d", o.concurrency))
	}
	return errors.Join(errs...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "adaptercluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := pflag.NewFlagSet("adaptercluster", pflag.ContinueOnError)
	fs.StringVar(&o.binDir, "bin-dir", "", "Directory holding spillway-metrics-adapter (make build). Required.")
	fs.StringVar(&o.outDir, "out", "out/bench", "Directory the report adapter.md is written to.")
	fs.StringVar(&o.repoRoot, "repo-root", ".", "The spillway checkout; the load generator is built from its test/bench/adapterload.")
	fs.IntVar(&o.apps, "apps", 100, "Number of apps (label app=app-NNN) whose pods are created in namespace bench.")
	fs.IntVar(&o.podsPerApp, "pods-per-app", 50, "Pods per app; each pod gets 4 series (2 GPUs x 2 processes).")
	fs.IntVar(&o.benchApp, "bench-app", 42, "The app whose pods every measured request selects.")
	fs.Float64Var(&o.rps, "rps", 200, "Requests per second sent to each target (open loop).")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "How long each target is loaded and measured.")
	fs.IntVar(&o.rounds, "rounds", 6, "Load the latency targets round-robin in this many rounds, each target for --duration/rounds per round, so what disturbs the machine for a while (scrapes, refreshes, other processes' garbage collection) falls on every target alike; the default's 5 s slices match the scrape and refresh interval, so each slice holds one of each. 1 loads each target for its whole --duration in turn.")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "Unmeasured load sent to each target first.")
	fs.IntVar(&o.concurrency, "concurrency", 50, "Most requests in flight at once per target.")
	fs.BoolVar(&o.aggregator, "aggregator", true, "Also register the cache-mode adapter through the kube-apiserver aggregator and measure that path.")
	fs.BoolVar(&o.keda, "keda", true, "Then measure KEDA "+localcluster.KEDAVersion+"'s external metric for ScaledObjects over the same series, direct and through the aggregator (builds KEDA into the user cache on first use, ~8 min cold), and write <out>/peers.md.")
	fs.BoolVar(&o.peerScaling, "peer-scaling", true, "With --keda, then scale real Deployments side by side with KEDA's HPA and spillway's (HPA type Pods), from the same simulated GPU series: time a load step to a new pod Ready (--reaction-trials), and follow the replicas of loaded Deployments through Prometheus down and through the series gone (--outage); written to <out>/peers.md.")
	fs.IntVar(&o.reactionTrials, "reaction-trials", 5, "Load steps timed per scaler.")
	fs.DurationVar(&o.outage, "outage", 60*time.Second, "How long each outage (Prometheus down; the exporter down) lasts.")
	fs.DurationVar(&o.outageAfter, "outage-after", 45*time.Second, "How long replicas are followed after each outage ends.")
	fs.BoolVar(&o.keepDir, "keep-dir", false, "Keep the cluster directory (logs, Prometheus data) after the run.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := o.validate(); err != nil {
		return err
	}
	b := &bench{o: o, stdout: stdout, log: stderr}
	return b.run(ctx)
}
