// Command fleet is the fleet-scale benchmark of the metrics adapter: on a
// local control plane, a synthetic GPU fleet (internal/fleetsim) split
// between two Prometheus shards, each with a Thanos sidecar, and `thanos
// query` over both; spillway-metrics-adapter replicas (two by default) read
// the query endpoint, behind one proxy for the aggregator. The
// fleet grows through the sizes given (20,000 to 200,000 series by
// default; 4 series per pod), and at each size the benchmark measures
//
//   - the adapter's refresh: wall time (its own histogram) and CPU per
//     refresh while idle;
//   - the query's share of a refresh: Thanos Query's own time for the
//     adapter's query (its HTTP histogram) over the refresh time; and the
//     same query timed directly against Thanos Query and one shard;
//   - the adapter's RSS and Go heap;
//   - request latency p50/p99 at a fixed rate of HPA-shaped requests (one
//     app's pods, external API), direct and through the aggregator, while
//     the refreshes go on (test/bench/adapterload).
//
// It writes the table to <out>/fleet.md.
//
//	go run ./test/bench/fleet --bin-dir bin
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

type options struct {
	binDir         string
	outDir         string
	repoRoot       string
	sizes          []int
	podsPerApp     int
	benchApp       int
	rps            float64
	duration       time.Duration
	warmup         time.Duration
	concurrency    int
	scrapeInterval time.Duration
	refresh        time.Duration
	staleness      time.Duration
	idle           time.Duration
	keepDir        bool
	replicas       int
	// memoryLimitMiB stands in for the adapter container's memory limit
	// (0: none): the adapters get the GOMEMLIMIT the binaries derive from
	// a cgroup limit, 90 % of it.
	memoryLimitMiB int
}

func (o *options) validate() error {
	var errs []error
	if o.binDir == "" {
		errs = append(errs, errors.New("--bin-dir is required"))
	}
	if o.outDir == "" {
		errs = append(errs, errors.New("--out must not be empty"))
	}
	if len(o.sizes) == 0 {
		errs = append(errs, errors.New("--sizes must list at least one size"))
	}
	per := o.podsPerApp * seriesPerPod
	prev := 0
	for _, s := range o.sizes {
		if o.podsPerApp > 0 && (s <= 0 || s%per != 0) {
			errs = append(errs, fmt.Errorf("--sizes: %d is not a positive multiple of %d (whole apps: pods per app × %d series)", s, per, seriesPerPod))
		}
		if s <= prev {
			errs = append(errs, fmt.Errorf("--sizes must grow: %d after %d", s, prev))
		}
		prev = s
	}
	if o.podsPerApp <= 0 {
		errs = append(errs, fmt.Errorf("--pods-per-app must be positive, got %d", o.podsPerApp))
	}
	if o.benchApp < 0 || (len(o.sizes) > 0 && o.podsPerApp > 0 && o.benchApp >= o.sizes[0]/(o.podsPerApp*seriesPerPod)) {
		errs = append(errs, fmt.Errorf("--bench-app %d must be an app of the smallest size", o.benchApp))
	}
	if o.replicas < 1 {
		errs = append(errs, fmt.Errorf("--replicas must be at least 1, got %d", o.replicas))
	}
	if o.memoryLimitMiB < 0 {
		errs = append(errs, fmt.Errorf("--adapter-memory-limit-mib must not be negative, got %d", o.memoryLimitMiB))
	}
	if o.rps <= 0 {
		errs = append(errs, fmt.Errorf("--rps must be positive, got %v", o.rps))
	}
	for name, d := range map[string]time.Duration{"--duration": o.duration, "--scrape-interval": o.scrapeInterval, "--refresh-interval": o.refresh, "--idle": o.idle} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if o.warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup must not be negative, got %s", o.warmup))
	}
	if o.concurrency <= 0 {
		errs = append(errs, fmt.Errorf("--concurrency must be positive, got %d", o.concurrency))
	}
	if o.staleness < o.scrapeInterval+2*o.refresh {
		errs = append(errs, fmt.Errorf("--max-staleness %s must cover a scrape interval and two refreshes (%s)", o.staleness, o.scrapeInterval+2*o.refresh))
	}
	return errors.Join(errs...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	var sizes string
	fs := pflag.NewFlagSet("fleet", pflag.ContinueOnError)
	fs.StringVar(&o.binDir, "bin-dir", "", "Directory holding spillway-metrics-adapter (make build). Required.")
	fs.StringVar(&o.outDir, "out", "out/bench", "Directory the report fleet.md is written to.")
	fs.StringVar(&o.repoRoot, "repo-root", ".", "The spillway checkout; the load generator is built from its test/bench/adapterload.")
	fs.StringVar(&sizes, "sizes", "20000,50000,100000,200000", "Fleet sizes in series, growing, comma-separated; each a multiple of pods-per-app × 4.")
	fs.IntVar(&o.podsPerApp, "pods-per-app", 50, "Pods per app; each pod gets 4 series (2 GPUs x 2 processes).")
	fs.IntVar(&o.benchApp, "bench-app", 42, "The app whose pods every measured request selects.")
	fs.Float64Var(&o.rps, "rps", 200, "Requests per second sent to each target (open loop).")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "How long each target is loaded and measured, per size.")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "Unmeasured load sent to each target first.")
	fs.IntVar(&o.concurrency, "concurrency", 50, "Most requests in flight at once per target.")
	fs.DurationVar(&o.scrapeInterval, "scrape-interval", 15*time.Second, "The shards' scrape interval.")
	fs.DurationVar(&o.refresh, "refresh-interval", 5*time.Second, "The adapter's --refresh-interval.")
	fs.DurationVar(&o.staleness, "max-staleness", time.Minute, "The adapter's --max-staleness (also the query's lookback).")
	fs.DurationVar(&o.idle, "idle", 30*time.Second, "Window without load over which refresh time and CPU are measured, per size.")
	fs.IntVar(&o.replicas, "replicas", 2, "spillway-metrics-adapter replicas, each refreshing on its own, behind one proxy for the aggregator; requests measured direct go to the first.")
	fs.IntVar(&o.memoryLimitMiB, "adapter-memory-limit-mib", 0, "Run the adapters as under a container memory limit of this many MiB: GOMEMLIMIT at 90 % of it, as the binaries set from their cgroup's limit (0: no limit, the Go runtime's defaults).")
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
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--sizes: %w", err)
		}
		o.sizes = append(o.sizes, n)
	}
	if err := o.validate(); err != nil {
		return err
	}
	b := &bench{o: o, stdout: stdout, log: stderr}
	return b.run(ctx)
}
