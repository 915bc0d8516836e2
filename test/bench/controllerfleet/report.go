package main

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

type report struct {
	when     time.Time
	o        options
	fleet    fleetStats
	runs     []controllerRun
	duration time.Duration
}

func ms(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// msq formats a histogram quantile in seconds.
func msq(s float64) string {
	switch {
	case math.IsNaN(s):
		return "—"
	case math.IsInf(s, 1):
		return "> last bucket"
	}
	return fmt.Sprintf("%.1f ms", s*1000)
}

func pct(f float64) string {
	if math.IsNaN(f) {
		return "—"
	}
	return fmt.Sprintf("%.1f %%", 100*f)
}

func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }

func secs(d time.Duration) string {
	if d <= 0 {
		return "not within --settle"
	}
	return d.Round(100 * time.Millisecond).String()
}

func (r report) markdown() string {
	var b strings.Builder
	o := r.o
	fmt.Fprintf(&b, "# Controller fleet benchmark\n\n")
	fmt.Fprintf(&b, "Run %s, %s in all, on %d CPUs (control plane, kwok, client and controller on the same cores).\n\n",
		r.when.UTC().Format(time.RFC3339), r.duration.Round(time.Second), runtime.NumCPU())
	nodes := o.pools*o.nodesPerPool + o.cloudNodes
	fmt.Fprintf(&b, "Fleet: Kubernetes %s; %d kwok nodes (%d on-prem pools of %d, a cloud pool of %d); %d namespaces with %d ResourcePolicies "+
		"(%d each: an on-prem unit on the namespace's pool, then the elastic cloud unit); %d KServe-predictor-shaped pods "+
		"(%d per policy, 2 containers, 1 GPU each), placed by the webhook, bound by the benchmark to the node it reserved "+
		"(they name a scheduler nobody runs) and marked Running by kwok.\n\n",
		localcluster.KubernetesVersion, nodes, o.pools, o.nodesPerPool, o.cloudNodes, o.namespaces, o.namespaces*o.policiesPerNamespace,
		o.policiesPerNamespace, o.pods, o.pods/(o.namespaces*o.policiesPerNamespace))
	f := r.fleet
	fmt.Fprintf(&b, "Building it: nodes %s, namespaces and policies %s, pods created and bound %s (%.0f/s, %d at once; %d left unplaced by the webhook), "+
		"all Running %s later.\n\n",
		f.nodes.Round(time.Second), f.policies.Round(time.Second), f.create.Round(time.Second), float64(o.pods)/f.create.Seconds(),
		o.createConcurrency, f.unplaced, f.running.Round(time.Second))

	b.WriteString("## Memory\n\n")
	if o.memoryLimitMiB > 0 {
		fmt.Fprintf(&b, "Each controller runs as under a %d MiB container memory limit (GOMEMLIMIT=%dMiB, 90 %% of it, as the binary sets from its cgroup), at the chart's default verbosity (--v=0).\n\n",
			o.memoryLimitMiB, o.memoryLimitMiB*9/10)
	} else {
		b.WriteString("Each controller runs with no memory limit (the Go runtime's defaults: GOGC=100, no GOMEMLIMIT), at the chart's default verbosity (--v=0).\n\n")
	}
	b.WriteString("| controller | to ready | startup reconciles done | RSS settled | peak RSS at settle (VmHWM) | Go heap in use settled | Go runtime from OS | largest RSS sampled, bursts included | VmHWM at end | Go heap in use after bursts |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, run := range r.runs {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", run.name, run.ready.Round(100*time.Millisecond), secs(run.settled),
			mib(run.rssSettled), mib(run.hwmSettled), mib(run.heapSettled), mib(run.sysSettled), mib(run.rssMax), mib(run.hwmEnd), mib(run.heapEnd))
	}

	fmt.Fprintf(&b, "\n## Bursts\n\n%d pods per burst, all selected by one policy, scheduled by kube-scheduler, created two ways: "+
		"*client*, by this program, %d creations in flight, no rate limit (a stress test: every review queues on the policy's lock); "+
		"*deployment*, by kube-controller-manager's ReplicaSet controller for a new Deployment of %d replicas (slow-start batches under its client's "+
		"default 20 requests/s, as a scale-up reaches the webhook).\n\n", o.burst, o.concurrency, o.burst)
	b.WriteString("| controller | mode | burst | namespace | wall | placed (on-prem / cloud) | webhook p50 / p99 (own histogram) | answered ≤ 50 ms (own, exact) | apiserver's webhook call p50 / p99 | ≤ 25 ms / ≤ 100 ms (apiserver, exact) | client create p50 / p99 / max | controller CPU |\n")
	b.WriteString("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, run := range r.runs {
		for i, br := range run.bursts {
			if br.err != nil {
				fmt.Fprintf(&b, "| %s | %s | %d | %s | failed: %s |||||||\n", run.name, br.mode, i, br.namespace, strings.ReplaceAll(br.err.Error(), "|", "/"))
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %d of %d (%d / %d) | %s / %s | %s | %s / %s | %s / %s | %s / %s / %s | %.1f s |\n",
				run.name, br.mode, i, br.namespace, br.wall.Round(time.Millisecond), br.placed, br.pods, br.onPrem, br.cloud,
				msq(br.own.quantile(0.5)), msq(br.own.quantile(0.99)), pct(br.own.within(0.05)),
				msq(br.apiserver.quantile(0.5)), msq(br.apiserver.quantile(0.99)), pct(br.apiserver.within(0.025)), pct(br.apiserver.within(0.1)),
				ms(quantile(br.client, 0.5)), ms(quantile(br.client, 0.99)), ms(quantile(br.client, 1)), br.cpu)
		}
	}
	b.WriteString(`
How each figure is taken:

- to ready: from starting the process until /readyz answers and the CA bundle is written (its informers
  have listed every pod, node and policy by then); startup reconciles done: from ready until it used under a tenth
  of a core (process_cpu_seconds_total) over three 2 s intervals in a row;
- RSS and VmHWM: /proc/<pid>/status of the controller process (VmHWM is the kernel's peak resident set);
  the largest RSS sampled is from reading VmRSS every 250 ms from start to the end of the bursts; Go heap:
  its go_memstats_heap_inuse_bytes and go_memstats_sys_bytes;
- webhook p50/p99 (own): spillway_placement_webhook_duration_seconds over the burst (buckets 0.5 ms to 1 s,
  interpolated within a bucket as histogram_quantile does), the time the handler takes; answered ≤ 50 ms is
  the share of the burst's reviews in buckets up to 0.05, exact;
- apiserver's webhook call: kube-apiserver's apiserver_admission_webhook_admission_duration_seconds for
  the placement webhook, which adds TLS and the network round trip (its buckets are 5, 25, 100, 500 ms…,
  so its quantiles are coarse);
- client create: the benchmark's own pod create calls in mode client, exact (they include the whole
  admission chain and the write to etcd); wall: from the first create (or the Deployment's) until the
  burst's pods all exist.
`)
	for _, run := range r.runs {
		if run.profile != "" {
			fmt.Fprintf(&b, "\n## Heap profile of %s after the bursts (in use)\n\n```\n%s```\n", run.name, run.profile)
		}
		if run.cpuProfile != "" {
			fmt.Fprintf(&b, "\n## CPU profile of %s over the first %d s of its first burst\n\n```\n%s```\n", run.name, profileSeconds, run.cpuProfile)
		}
	}
	return b.String()
}
