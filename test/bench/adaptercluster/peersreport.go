package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

// secs is a duration in seconds with one decimal.
func secs(d time.Duration) string {
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// medianRange is "median (min–max)" of one stage over the trials.
func medianRange(trials []stages, stage func(stages) time.Duration) string {
	if len(trials) == 0 {
		return "—"
	}
	v := make([]time.Duration, len(trials))
	for i, t := range trials {
		v[i] = stage(t)
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	if len(v) == 1 {
		return secs(med)
	}
	return fmt.Sprintf("%s (%s–%s)", secs(med), secs(v[0]), secs(v[len(v)-1]))
}

// reactionMarkdown is the reaction section of peers.md.
func (r report) reactionMarkdown(b *strings.Builder) {
	if len(r.reaction) == 0 {
		return
	}
	fmt.Fprintf(b, "\n## Reaction: a load step to a new pod Ready\n\n")
	fmt.Fprintf(b, "Same cluster and Prometheus (scrape every 5 s), kube-controller-manager's HPA sync period %s for every HPA. "+
		"Each scaler's Deployment of simulated GPU pods (spillway-gpu-exporter's sim backend, series recomputed every %s, "+
		"one replica at 100 %% SM utilization per %g req/s) steps from %d to %d req/s: 30 %% to 80 %% on one replica, "+
		"so each asks for a second (target %d per replica, 1–%d replicas, up to 100 %% per %s, no stabilization). "+
		"KEDA's trigger sums the Deployment's `%s` series (threshold %d, AverageValue); spillway's HPA is `type: Pods` on the same "+
		"series, averageValue %d, served from its cache (refresh %s). KEDA polls every %s. All scalers step at once; "+
		"%d trials; median (min–max) per stage.\n\n",
		r.hpaSync, exporterInterval, framework.SimReplicaCapacityRPS, lowRPS, stepRPS, peerTarget, peerMaxReplicas, peerScaleWindow,
		metricnames.ProcessSMUtil, peerTarget, peerTarget, peerInterval, peerInterval, r.setup.reactionTrials)
	b.WriteString("| scaler | trials | scrape | metric served | HPA scales | pod bound | pod Ready | step → Ready |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range r.reaction {
		t := res.trials
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", res.scaler.label, len(t),
			medianRange(t, func(s stages) time.Duration { return s.scrape }),
			medianRange(t, func(s stages) time.Duration { return s.served }),
			medianRange(t, func(s stages) time.Duration { return s.hpa }),
			medianRange(t, func(s stages) time.Duration { return s.schedule }),
			medianRange(t, func(s stages) time.Duration { return s.start }),
			medianRange(t, func(s stages) time.Duration { return s.total }))
	}
	for _, res := range r.reaction {
		for _, e := range res.errs {
			fmt.Fprintf(b, "\n- %s: %s", res.scaler.name, e)
		}
	}
	b.WriteString(`
Stages, each from the end of the one before: **scrape** — the step to the first Prometheus sample (its timestamp) with
the new value (exporter recompute + scrape interval); **metric served** — that sample to the metrics API (through the
aggregator, polled every 200 ms) answering the new value: spillway's cache refresh, KEDA's PromQL at request time
(default) or its poll (useCachedMetrics); **HPA scales** — to the Deployment's replicas raised, seen by a watch (the
wait for the next HPA sync; negative when the HPA read the value before the 200 ms poll did); **pod bound** —
ReplicaSet controller and scheduler, to the new pod's nodeName (existing nodes with free GPUs: no node is created);
**pod Ready** — the node's kubelet (kwok) to Ready. The scrape, spillway's refresh or KEDA's poll, and the HPA sync
are each a free-running loop whose phases to one another stay fixed within a run: a stage's spread across trials
is small and its figure is one draw of those phases (a refresh or poll wait lies anywhere within one interval).
`)
}

// outageMarkdown is the missing-data section of peers.md.
func (r report) outageMarkdown(b *strings.Builder) {
	if len(r.outages) == 0 {
		return
	}
	fmt.Fprintf(b, "\n## Missing data: replicas of a loaded Deployment through an outage\n\n")
	fmt.Fprintf(b, "Each scaler's Deployment at its peak (%d req/s: %d replicas, the maximum, each at 80 %%), then the fault for %s, "+
		"then the restore, replicas sampled every second until %s after it. Same series, Prometheus and HPA sync period (%s) for all; "+
		"KEDA polls every %s, spillway refreshes every %s and serves a value at most 30 s old (`--max-staleness`). "+
		"The fault's real length includes the restore (a restarted Prometheus replays its WAL).\n",
		peakRPS, peerMaxReplicas, r.setup.outage, r.setup.outageAfter, r.hpaSync, peerInterval, peerInterval)
	for _, o := range r.outages {
		fmt.Fprintf(b, "\n### %s", o.name)
		if o.down > 0 {
			fmt.Fprintf(b, " (%s from fault to restored)", secs(o.down))
		}
		b.WriteString("\n\n")
		if o.err != nil {
			fmt.Fprintf(b, "Failed: %v\n\n", o.err)
		}
		if len(o.rows) == 0 {
			continue
		}
		b.WriteString("| scaler | replicas at the fault | fewest replicas | first change | replicas over time (from the fault) | its HPA at the end of the fault |\n")
		b.WriteString("|---|---:|---:|---:|---|---|\n")
		for _, row := range o.rows {
			first := "none"
			if row.firstChange >= 0 {
				first = "+" + secs(row.firstChange)
			}
			fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %s |\n", row.scaler.label, row.before, row.minDuring, first, row.timeline, row.hpa)
		}
	}
	fmt.Fprintf(b, `
Notes:
- Each case runs on fresh Deployments and ScaledObjects (no failure count carries over). "read" is the metric
  value the HPA last read; failures are the ScaledObject's health count for its trigger.
- KEDA %s's Prometheus trigger has ignoreNullValues true by default: it serves an empty query result (the series
  gone) as the value 0, not as an error, so neither the HPA's hold-on-error nor `+"`fallback`"+` (which acts on errors
  only) applies. With ignoreNullValues false the empty result is an error, and fallback serves its fixed replicas.
- spillway does not serve missing or stale data as a value: its metric fails and the HPA holds.
`, localcluster.KEDAVersion)
}

// machine describes this machine: CPU count and model, memory (Linux; what
// cannot be read is left out).
func machine() string {
	parts := []string{fmt.Sprintf("%d CPUs (%s/%s)", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				parts = append(parts, strings.TrimSpace(v))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64); err == nil {
					parts = append(parts, fmt.Sprintf("%.1f GiB memory", kb/(1<<20)))
				}
				break
			}
		}
	}
	return strings.Join(parts, ", ")
}
