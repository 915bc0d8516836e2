package provider

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/metrictable"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// Run refreshes the snapshot every RefreshInterval until ctx ends. A failed
// refresh keeps the previous snapshot, whose values then age out; it is
// logged when the state or the reason of failing changes, not on every
// tick.
func (p *Provider) Run(ctx context.Context) {
	log := klog.FromContext(ctx)
	if !p.podsSynced() {
		log.Info("Waiting for the pod informer before the first refresh")
		if !cache.WaitForCacheSync(ctx.Done(), p.podsSynced) {
			return
		}
	}
	if p.refreshNice > 0 {
		p.lowerPriority(log)
	}
	ticker := time.NewTicker(p.refreshInterval)
	defer ticker.Stop()
	failing := "" // the reason of the current failure; empty while refreshes work
	for {
		err := p.Refresh(ctx)
		switch {
		case err != nil && ctx.Err() == nil && refreshFailureReason(err) != failing:
			failing = refreshFailureReason(err)
			log.Error(err, "Refreshing metrics from Prometheus failed; serving the last snapshot until it is stale", "reason", failing, "maxStaleness", p.maxStaleness)
		case err == nil && failing != "":
			log.Info("Refreshing metrics from Prometheus works again")
			failing = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// MaxRefreshNice is the highest RefreshNice, the kernel's lowest priority.
const MaxRefreshNice = 19

// lowerPriority moves the calling goroutine, Run's, onto an OS thread of
// its own at nice refreshNice. The thread is never unlocked: when Run
// returns, the runtime ends it instead of handing other goroutines a thread
// of low priority. The HTTP connection's own goroutines stay at normal
// priority; decoding the answer and building the snapshot, the refresh's
// CPU, run here. Failing (a kernel that refuses) costs only the latency
// gain, so it is logged, not fatal, and the thread is unlocked again.
func (p *Provider) lowerPriority(log klog.Logger) {
	runtime.LockOSThread()
	if err := lowerThreadPriority(p.refreshNice); err != nil {
		// The thread's priority is unchanged: give it back to the pool
		// rather than keep a thread that only costs hand-offs.
		runtime.UnlockOSThread()
		log.Error(err, "Could not lower the refresh thread's CPU priority; refreshing at normal priority", "nice", p.refreshNice)
		return
	}
	log.V(1).Info("Refreshing on an OS thread of lower CPU priority", "nice", p.refreshNice)
}

// Refresh runs one query for the exporter's series and one for the pods'
// own (each only when the table has such rows) and publishes a new
// snapshot from both; if either fails, nothing is published. Exported so
// tests and benchmarks can drive it without a timer.
func (p *Provider) Refresh(ctx context.Context) error {
	start := time.Now()
	observedAt := p.clock.Now()
	if !p.podsSynced() {
		// Every series would be rejected as of an unknown pod.
		err := errors.New("the pod informer has not synced yet")
		p.lastErr.Store(&refreshFailure{err: err, at: observedAt})
		return err
	}
	samples, skipped, err := p.gather(ctx, p.refreshQueries)
	p.metrics.refreshDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		p.metrics.refreshErrors.WithLabelValues(refreshFailureReason(err)).Inc()
		p.lastErr.Store(&refreshFailure{err: err, at: observedAt})
		return err
	}
	snap := buildSnapshot(samples, p.specs, observedAt, p.snap.Load())
	snap.skipped = skipped
	p.snap.Store(snap)
	p.lastErr.Store(nil)
	p.metrics.recordSnapshot(snap)
	return nil
}

// refreshFailureReason classifies a failed refresh for the self-metrics.
// A partial answer fails the refresh like an unreachable server (the
// previous snapshot stays and ages out): serving it would serve the shards
// that answered as if they were the whole fleet.
func refreshFailureReason(err error) string {
	var partial *promquery.PartialResponseError
	var creds *promquery.CredentialsError
	switch {
	case errors.As(err, &partial):
		return metricnames.RefreshFailedPartialResponse
	case errors.As(err, &creds):
		return metricnames.RefreshFailedCredentials
	default:
		return metricnames.RefreshFailedQuery
	}
}

// metricNames are the served names, in table order.
func (p *Provider) metricNames() []string {
	names := make([]string, len(p.specs))
	for i, s := range p.specs {
		names[i] = s.name
	}
	return names
}

// queries are the refresh's queries, one per origin that the table has
// rows of. They are fixed by the table and built once, in New.
func (p *Provider) queries() []promquery.Query {
	var out []promquery.Query
	for _, origin := range []metrictable.Origin{metrictable.Exporter, metrictable.Pod} {
		q := promquery.Query{LookbackDelta: p.maxStaleness, Readings: map[string]promquery.Reading{}}
		if origin == metrictable.Pod {
			q.Scope = promquery.ScopePods
		}
		for _, spec := range p.specs {
			r := spec.row
			if r.Origin != origin {
				continue
			}
			q.Metrics = append(q.Metrics, r.Series)
			q.Readings[r.Series] = promquery.Reading{NamespaceLabels: r.NamespaceLabels, PodLabels: r.PodLabels, PerGPU: r.Combine.PerGPU()}
		}
		if len(q.Metrics) > 0 {
			out = append(out, q)
		}
	}
	return out
}

// gather runs the queries, tags each sample with its spec and keeps those
// whose provenance checks out.
func (p *Provider) gather(ctx context.Context, queries []promquery.Query) ([]tagged, promquery.Skipped, error) {
	var skipped promquery.Skipped
	results := make([]promquery.Result, len(queries))
	total := 0
	for i, q := range queries {
		res, err := p.source.Samples(ctx, q)
		if err != nil {
			return nil, skipped, err
		}
		results[i] = res
		total += len(res.Samples)
	}
	samples := make([]tagged, 0, total)
	for i, res := range results {
		origin := metrictable.Exporter
		if queries[i].Scope == promquery.ScopePods {
			origin = metrictable.Pod
		}
		for j := range res.Samples {
			if k, ok := p.bySeries[seriesKey{origin, res.Samples[j].Metric}]; ok {
				samples = append(samples, tagged{spec: k, Sample: &res.Samples[j]})
			}
		}
		skipped = skipped.Add(res.Skipped)
	}
	return p.admit(ctx, samples), skipped, nil
}

// admit drops, counts and logs the samples whose provenance does not check
// out (see checkProvenance).
func (p *Provider) admit(ctx context.Context, samples []tagged) []tagged {
	kept, rej := p.checkProvenance(samples)
	if n := rej.total(); n > 0 {
		for reason, c := range rej.counts {
			p.metrics.seriesRejected.WithLabelValues(reason).Add(float64(c))
		}
		// Verbose only: a hostile target can make this happen on every
		// refresh, and the counter already says it does.
		klog.FromContext(ctx).V(2).Info("Dropped series that do not come from where their metric's row says",
			"rejected", rej.counts, "example", klog.KRef(rej.example.Namespace, rej.example.Pod), "exampleMetric", rej.example.Metric,
			"exampleHostname", rej.example.Hostname, "exampleInstance", rej.example.Instance, "exampleGPU", rej.example.GPU, "exampleReason", rej.reason)
	}
	return kept
}

// Ready fails until the first snapshot has loaded (which waits for the pod
// informer), and never after: staleness is answered per request, with a 503
// naming the snapshot's age, and exported as snapshot_age_seconds. Were
// staleness to fail readiness, a Prometheus outage would make every replica
// unready at once, the metrics APIServices unavailable, and API discovery
// fail cluster-wide (namespace deletion and garbage collection stall on
// it), while the HPA gains nothing: it holds its scale on a 503 either way.
func (p *Provider) Ready() error {
	if p.snap.Load() == nil {
		return apierrors.NewServiceUnavailable("no GPU metrics loaded from Prometheus yet" + p.lastErrorSuffix())
	}
	return nil
}

// snapshotAge is the age of the served snapshot, or the time since start
// while none was loaded yet.
func (p *Provider) snapshotAge() float64 {
	since := p.startedAt
	if s := p.snap.Load(); s != nil {
		since = s.observedAt
	}
	return p.clock.Now().Sub(since).Seconds()
}

// current returns the snapshot if it may be served.
func (p *Provider) current() (*snapshot, error) {
	s := p.snap.Load()
	if s == nil {
		return nil, apierrors.NewServiceUnavailable("no GPU metrics loaded from Prometheus yet" + p.lastErrorSuffix())
	}
	if age := p.clock.Now().Sub(s.observedAt); age > p.maxStaleness {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf(
			"GPU metrics snapshot is %s old, older than the maximum staleness %s%s",
			age.Round(time.Second), p.maxStaleness, p.lastErrorSuffix()))
	}
	return s, nil
}

func (p *Provider) lastErrorSuffix() string {
	f := p.lastErr.Load()
	if f == nil {
		return ""
	}
	return fmt.Sprintf("; last refresh at %s failed: %v", f.at.UTC().Format(time.RFC3339), f.err)
}
