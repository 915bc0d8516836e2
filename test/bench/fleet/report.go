package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/fleetsim"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

type report struct {
	when     time.Time
	o        options
	rows     []row
	duration time.Duration
}

func ms(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }

func share(part, whole time.Duration) string {
	if part <= 0 || whole <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f %%", 100*float64(part)/float64(whole))
}

func (r report) markdown() string {
	var b strings.Builder
	o := r.o
	fmt.Fprintf(&b, "# Fleet benchmark: the adapter through Thanos Query\n\n")
	fmt.Fprintf(&b, "Run %s, %s in all, on %d CPUs (load generator, control plane, Prometheus, Thanos and adapter on the same cores).\n\n",
		r.when.UTC().Format(time.RFC3339), r.duration.Round(time.Second), runtime.NumCPU())
	fmt.Fprintf(&b, "Setup: Kubernetes %s; a synthetic fleet of %s series (4 per pod, pods split between %d Debian Prometheus shards by pod, scraped every %s), "+
		"a Thanos %s sidecar per shard and `thanos query` over both (strict endpoints); %d spillway-metrics-adapter replica(s) each reading the query endpoint on its own (the aggregator reaches them through one TCP proxy, round robin per connection), "+
		"--refresh-interval=%s, --max-staleness=%s, %s. Requests: %.0f req/s for %s (+%s warm-up) of the external API for one app's %d pods (app=%s), "+
		"open loop, at most %d in flight, sent while the refreshes go on.\n\n",
		localcluster.KubernetesVersion, metricnames.ProcessSMUtil, shards, o.scrapeInterval, localcluster.ThanosVersion,
		o.replicas, o.refresh, o.staleness, memoryLimit(o.memoryLimitMiB), o.rps, o.duration, o.warmup, o.podsPerApp, fleetsim.AppName(o.benchApp), o.concurrency)
	b.WriteString("| series | pods | refresh wall (mean) | adapter CPU per refresh | Thanos Query time per refresh | its share | adapter query direct: Thanos Query / one shard | adapter RSS | Go heap | p50 / p99 direct | p50 / p99 via aggregator |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range r.rows {
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s |\n",
			row.series, row.pods, ms(row.refreshWall), ms(row.refreshCPU), ms(row.thanosInRefresh), share(row.thanosInRefresh, row.refreshWall),
			ms(row.directThanos), ms(row.directShard), mib(row.rssBytes), mib(row.heapBytes), latency(row, 0), latency(row, 1))
	}
	b.WriteString(`
How each figure is taken, per size, once the adapter's snapshot holds every series:

- refresh wall and CPU: over an idle window of ` + o.idle.String() + ` (no requests), the change in each replica's
  ` + "`" + metricnames.AdapterRefreshDuration + "`" + ` sum and count, and in its process_cpu_seconds_total per refresh;
  the larger of the replicas';
- Thanos Query time per refresh: Thanos Query's own http_request_duration_seconds for the instant-query
  handler over the same window (only the adapter queries then); its share is that over the refresh's wall time;
- adapter query direct: the adapter's query (its default table's exporter rows) timed from this program,
  whole answer read, median of 3, against Thanos Query and against shard 0's Prometheus (half the series);
- RSS and Go heap: each replica's process_resident_memory_bytes and go_memstats_heap_inuse_bytes, the
  largest of the readings after the idle window and after the load;
- p50/p99: test/bench/adapterload, to the first replica's own port and through kube-apiserver's aggregator.
`)
	for _, row := range r.rows {
		for i, err := range row.loadErr {
			if err != nil {
				fmt.Fprintf(&b, "\nAt %d series the %s load failed: %v\n", row.series, []string{"direct", "aggregator"}[i], err)
			}
		}
	}
	return b.String()
}

func latency(r row, i int) string {
	if i >= len(r.loads) || r.loads[i].P99 <= 0 {
		return "—"
	}
	return ms(r.loads[i].P50) + " / " + ms(r.loads[i].P99)
}

func memoryLimit(mib int) string {
	if mib <= 0 {
		return "no memory limit (the Go runtime's defaults: GOGC=100, no GOMEMLIMIT)"
	}
	return fmt.Sprintf("as under a %d MiB container memory limit (GOMEMLIMIT=%dMiB, 90 %% of it, as the binaries set from their cgroup)", mib, mib*9/10)
}
