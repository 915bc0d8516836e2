package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/scenario"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

type options struct {
	binDir      string
	out         string
	trace       string
	restart     string
	dayDuration time.Duration
	sampleEvery time.Duration
	bench       bool
	keda        bool
	runs        string
	traces      string
}

// The tidal benchmark's runs, by the name --runs selects them with, in the
// order they are played.
var benchVariants = []benchVariant{
	{"spillway", "spillway (ResourcePolicy + InferenceScaler on SM util)", true, false, false},
	{"queue", fmt.Sprintf("spillway on the queue (waiting %d/pod, SM util %d as second metric)", demo.QueueTarget, demo.QueueRunUtilTarget), true, true, false},
	{"baseline", "baseline (same HPA on SM util, no ResourcePolicy)", false, false, false},
	{"keda", "KEDA " + localcluster.KEDAVersion + " (ScaledObject on the same series, no ResourcePolicy)", false, false, true},
	{"keda-policy", "KEDA " + localcluster.KEDAVersion + " + spillway's ResourcePolicy", true, false, true},
}

type benchVariant struct {
	name, label string
	policy      bool
	onQueue     bool
	keda        bool
}

// The traces --traces selects: --trace and --restart-trace.
const (
	traceDay     = "tidal-day"
	traceRestart = "tidal-day-restart"
)

// selected returns the runs and traces the flags select, in play order.
func (o options) selected() ([]benchVariant, []string, error) {
	var runs []benchVariant
	var errs []error
	want := map[string]bool{}
	if o.runs == "" {
		for _, v := range benchVariants {
			want[v.name] = !v.keda || o.keda
		}
	} else {
		for _, n := range strings.Split(o.runs, ",") {
			want[strings.TrimSpace(n)] = true
		}
	}
	for _, v := range benchVariants {
		if !want[v.name] {
			continue
		}
		delete(want, v.name)
		if v.keda && !o.keda {
			errs = append(errs, fmt.Errorf("--runs %s needs --keda (KEDA is not started without it)", v.name))
		}
		runs = append(runs, v)
	}
	for n, on := range want {
		if on {
			errs = append(errs, fmt.Errorf("--runs: no run %q (known: spillway, queue, baseline, keda, keda-policy)", n))
		}
	}
	traces := []string{}
	for _, n := range strings.Split(o.traces, ",") {
		switch n = strings.TrimSpace(n); n {
		case traceDay, traceRestart:
			if !slices.Contains(traces, n) {
				traces = append(traces, n)
			}
		default:
			errs = append(errs, fmt.Errorf("--traces: no trace %q (known: %s, %s)", n, traceDay, traceRestart))
		}
	}
	if len(runs) == 0 || len(traces) == 0 {
		errs = append(errs, errors.New("--runs and --traces must each select at least one"))
	}
	return runs, traces, errors.Join(errs...)
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.StringVar(&o.binDir, "bin-dir", "bin", "directory holding spillway's binaries (make build)")
	fs.StringVar(&o.out, "out", "out/demo", "directory for timeline.csv, timeline.png, summary.md and the cluster's logs")
	fs.StringVar(&o.trace, "trace", "test/traces/tidal-day.csv", "demand trace: lines of minute-of-day,requests-per-second")
	fs.StringVar(&o.restart, "restart-trace", "test/traces/tidal-day-restart.csv", "with --bench: the variant whose on-prem pod restarts at the peak")
	fs.DurationVar(&o.dayDuration, "day-duration", 8*time.Minute, "real time the 24-hour trace is compressed into")
	fs.DurationVar(&o.sampleEvery, "sample-every", 2*time.Second, "how often the live table samples the cluster")
	fs.BoolVar(&o.bench, "bench", false, "run the tidal benchmark: each trace with spillway and with a plain HPA, next to the oracle")
	fs.StringVar(&o.runs, "runs", "", "with --bench: the runs to play, comma-separated, from spillway, queue, baseline, keda and keda-policy (the last two need --keda); default: the first three, and the KEDA two with --keda")
	fs.StringVar(&o.traces, "traces", traceDay+","+traceRestart, "with --bench: the traces to play, comma-separated: "+traceDay+" (--trace) and "+traceRestart+" (--restart-trace)")
	fs.BoolVar(&o.keda, "keda", false, "also run KEDA "+localcluster.KEDAVersion+" (built into the user cache on first use, ~8 min cold): the demo scales the predictor with a KEDA ScaledObject on the same series instead of the InferenceScaler (the ResourcePolicy still places it); with --bench, each trace is also played KEDA-scaled, without and with the ResourcePolicy")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: demo [flags]

Starts a local control plane (built from pinned versions on first use), runs
spillway's exporter (simulated GPUs), metrics adapter and controller against it
with a real Prometheus, applies the seed's predictor, ResourcePolicy and
InferenceScaler, and plays a compressed tidal day. Everything it starts is
stopped on exit, including Ctrl-C.

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.dayDuration < time.Minute {
		return fmt.Errorf("--day-duration %s is too short: Karpenter needs ~20 s to add a node", o.dayDuration)
	}
	if _, _, err := o.selected(); err != nil {
		return err
	}
	trace, err := readTrace(o.trace)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	clusterDir, err := filepath.Abs(filepath.Join(o.out, "cluster"))
	if err != nil {
		return err
	}
	_ = os.RemoveAll(clusterDir)
	fmt.Fprintln(os.Stderr, "== building what is missing and starting the local control plane")
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: clusterDir, KeepDir: true, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "== stopping everything the demo started")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	env, err := demo.StartEnv(ctx, c, demo.Options{BinDir: o.binDir, Log: os.Stderr, AsServiceAccounts: true, KEDA: o.keda})
	if err != nil {
		return fmt.Errorf("%w (component logs: %s)", err, filepath.Join(clusterDir, "logs"))
	}
	fmt.Fprintf(os.Stderr, "== spillway is running; KUBECONFIG=%s (logs in %s)\n", c.KubeconfigPath(), filepath.Join(clusterDir, "logs"))
	if o.bench {
		restart, err := readTrace(o.restart)
		if err != nil {
			return err
		}
		return bench(ctx, env, o, map[string]*scenario.Trace{traceDay: trace, traceRestart: restart})
	}
	fmt.Printf("== playing %s: 24 h in %s (one row every %s)\n", o.trace, o.dayDuration, o.sampleEvery)
	res, err := env.Play(ctx, demo.Run{Namespace: "qwen", Trace: trace, DayDuration: o.dayDuration, SampleEvery: o.sampleEvery, WithPolicy: true, KEDA: o.keda, Table: os.Stdout})
	if err != nil {
		return err
	}
	label := "spillway"
	if o.keda {
		label = "KEDA " + localcluster.KEDAVersion + " scaling, spillway's ResourcePolicy placing"
	}
	return writeOutputs(o.out, o.trace, label, trace, res)
}

func readTrace(path string) (*scenario.Trace, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := scenario.ParseTrace(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func writeOutputs(dir, traceName, label string, trace *scenario.Trace, res *demo.Result) error {
	tl := res.Timeline
	csvF, err := os.Create(filepath.Join(dir, "timeline.csv"))
	if err != nil {
		return err
	}
	if err := tl.WriteCSV(csvF); err != nil {
		csvF.Close()
		return err
	}
	if err := csvF.Close(); err != nil {
		return err
	}
	png, err := os.Create(filepath.Join(dir, "timeline.png"))
	if err != nil {
		return err
	}
	if err := tl.WriteChart(png, "spillway seed scenario: on-prem first, spill to cloud at peak, drain cloud first", scenario.Seed.TargetUtil, scenario.Seed.MaxReplicas); err != nil {
		png.Close()
		return err
	}
	if err := png.Close(); err != nil {
		return err
	}
	var b strings.Builder
	oracle := scenario.Oracle(trace, scenario.Seed)
	fmt.Fprintf(&b, "# spillway demo summary\n\nTrace: `%s` (24 h compressed; figures in day-minutes).\n\n", traceName)
	figuresTable(&b, []row{{label, res.Figures}, {"oracle (exact replicas, on-prem first, instant nodes)", oracle}}, oracle)
	fmt.Fprintf(&b, "\n- Peak: %d replicas running, %d of them on elastic (Karpenter) nodes.\n", res.PeakReplicas, res.PeakElastic)
	fmt.Fprintf(&b, "- Longest time a predictor pod was Pending: %s.\n", res.MaxPendingAge.Round(time.Second))
	fmt.Fprintf(&b, "- HPA scale-down window: %s (the HPA's default 5 minutes, compressed like the day).\n", res.ScaleDownWindow)
	fmt.Fprintf(&b, "\n## Pods removed\n\n| real time | day time | pod | pool | why |\n|---|---|---|---|---|\n")
	for _, r := range tl.Removals {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.Elapsed.Round(time.Second), scenario.DayClock(r.DayMinute), r.Pod, r.Pool, r.Reason)
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\n%s\nwrote %s/timeline.csv, timeline.png, summary.md\n", b.String(), dir)
	return nil
}

type row struct {
	name string
	f    scenario.Figures
}

func figuresTable(w io.Writer, rows []row, oracle scenario.Figures) {
	fmt.Fprintf(w, "| run | cloud GPU-min | ratio to oracle | of which pods held | on-prem util %% | min over target | min over %s in queue | p95 time in queue | scale events | first over-target → elastic pod Running | removed on-prem / elastic | evicted by node removal |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n", demo.QueueSLO)
	for _, r := range rows {
		ratio := "-"
		if oracle.CloudGPUMinutes > 0 {
			ratio = fmt.Sprintf("%.2f", r.f.CloudGPUMinutes/oracle.CloudGPUMinutes)
		}
		tte := "-"
		if r.f.TimeToElastic >= 0 {
			tte = r.f.TimeToElastic.Round(time.Second).String()
		}
		slo, p95 := "-", "-"
		if !math.IsNaN(r.f.MinutesOverSLO) {
			slo, p95 = fmt.Sprintf("%.0f", r.f.MinutesOverSLO), fmt.Sprintf("%.1f s", r.f.QueueP95)
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %.0f | %.1f | %.0f | %s | %s | %d | %s | %d / %d | %d |\n", r.name, r.f.CloudGPUMinutes, ratio, r.f.CloudPodGPUMinutes,
			r.f.OnPremUtilization, r.f.MinutesOverTarget, slo, p95, r.f.ScaleEvents, tte, r.f.OnPremRemovals, r.f.ElasticRemovals, r.f.Evictions)
	}
}

func bench(ctx context.Context, env *demo.Env, o options, traces map[string]*scenario.Trace) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# tidal benchmark\n\n24 h compressed into %s per run (one real second is %.1f day-minutes); figures in day-minutes. HPA scale-down window %s.\n"+
		"Time in queue is the simulated model servers' (real seconds: the servers run in real time), averaged over the requests arriving; the SLO is %s.\n",
		o.dayDuration, 24*60/o.dayDuration.Seconds(), demo.CompressedWindow(5*time.Minute, o.dayDuration), demo.QueueSLO)
	if o.keda {
		fmt.Fprintf(&b, "KEDA runs: a ScaledObject in place of the InferenceScaler, its Prometheus trigger summing the predictor pods' `%s` "+
			"with threshold 50 (AverageValue: the replicas the InferenceScaler's Pods target of 50 asks for), polled every collect interval, "+
			"its HPA with the InferenceScaler's replicas and behavior; KEDA owns external.metrics.k8s.io and spillway's adapter serves the custom metrics API only.\n",
			metricnames.ProcessSMUtil)
	}
	variants, names, err := o.selected()
	if err != nil {
		return err
	}
	for _, name := range names {
		trace := traces[name]
		oracle := scenario.Oracle(trace, scenario.Seed)
		rows := []row{}
		for _, v := range variants {
			ns := fmt.Sprintf("bench-%s-%t-%t", name, v.policy, v.onQueue)
			if v.keda {
				ns += "-keda"
			}
			fmt.Fprintf(os.Stderr, "== %s: %s\n", name, v.label)
			res, err := env.Play(ctx, demo.Run{Namespace: ns, Trace: trace, DayDuration: o.dayDuration, SampleEvery: o.sampleEvery, WithPolicy: v.policy, OnQueue: v.onQueue, KEDA: v.keda, Table: os.Stderr})
			if err != nil {
				return err
			}
			rows = append(rows, row{v.label, res.Figures})
			if err := env.Teardown(ctx, ns); err != nil {
				return err
			}
		}
		rows = append(rows, row{"oracle", oracle})
		fmt.Fprintf(&b, "\n## %s\n\n", name)
		figuresTable(&b, rows, oracle)
	}
	if err := os.WriteFile(filepath.Join(o.out, "bench.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Println(b.String())
	return nil
}
