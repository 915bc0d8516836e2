package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/spillway-dev/spillway/pkg/promquery"
)

// Run refreshes the snapshot every RefreshInterval until ctx ends. A failed
// refresh keeps the previous snapshot, whose values then age out; it is
// logged when the state changes, not on every tick. In live-query mode
// there is nothing to refresh and Run just waits.
func (p *Provider) Run(ctx context.Context) {
	if p.live {
		<-ctx.Done()
		return
	}
	log := klog.FromContext(ctx)
	if !p.podsSynced() {
		log.Info("Waiting for the pod informer before the first refresh")
		if !cache.WaitForCacheSync(ctx.Done(), p.podsSynced) {
			return
		}
	}
	ticker := time.NewTicker(p.refreshInterval)
	defer ticker.Stop()
	failing := false
	for {
		err := p.Refresh(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			log.Error(err, "Refreshing GPU metrics from Prometheus failed; serving the last snapshot until it is stale", "maxStaleness", p.maxStaleness)
			failing = true
		case err == nil && failing:
			log.Info("Refreshing GPU metrics from Prometheus works again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Refresh runs the one query for every spillway series and publishes a new
// snapshot. Exported so tests and benchmarks can drive it without a timer.
func (p *Provider) Refresh(ctx context.Context) error {
	start := time.Now()
	observedAt := p.now()
	if !p.podsSynced() {
		// Every series would be rejected as of an unknown pod.
		err := errors.New("the pod informer has not synced yet")
		p.lastErr.Store(&refreshFailure{err: err, at: observedAt})
		return err
	}
	q := promquery.Query{Metrics: p.metricNames(), LookbackDelta: p.maxStaleness}
	res, err := p.source.Samples(ctx, q)
	if err == nil {
		res.Samples = p.admit(ctx, res.Samples)
	}
	p.metrics.refreshDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		p.metrics.refreshErrors.Inc()
		p.lastErr.Store(&refreshFailure{err: err, at: observedAt})
		return err
	}
	snap := buildSnapshot(res.Samples, p.specs, p.index, observedAt)
	snap.skipped = res.Skipped
	p.snap.Store(snap)
	p.lastErr.Store(nil)
	p.metrics.recordSnapshot(snap)
	return nil
}

// admit drops, counts and logs the samples whose provenance does not check
// out (see checkProvenance).
func (p *Provider) admit(ctx context.Context, samples []promquery.Sample) []promquery.Sample {
	kept, rej := p.checkProvenance(samples)
	if n := rej.total(); n > 0 {
		for reason, c := range rej.counts {
			p.metrics.seriesRejected.WithLabelValues(reason).Add(float64(c))
		}
		// Verbose only: a hostile target can make this happen on every
		// refresh, and the counter already says it does.
		klog.FromContext(ctx).V(2).Info("Dropped series that do not come from the exporter on their pod's node",
			"rejected", rej.counts, "example", klog.KRef(rej.example.Namespace, rej.example.Pod),
			"exampleHostname", rej.example.Hostname, "exampleGPU", rej.example.GPU, "exampleReason", rej.reason)
	}
	return kept
}

func (p *Provider) metricNames() []string {
	names := make([]string, len(p.specs))
	for i, s := range p.specs {
		names[i] = s.name
	}
	return names
}

// Ready fails until the first snapshot has loaded (which waits for the pod
// informer), and never after: staleness is answered per request, with a 503
// naming the snapshot's age, and exported as snapshot_age_seconds. Were
// staleness to fail readiness, a Prometheus outage would make every replica
// unready at once, the metrics APIServices unavailable, and API discovery
// fail cluster-wide (namespace deletion and garbage collection stall on
// it), while the HPA gains nothing: it holds its scale on a 503 either way.
func (p *Provider) Ready() error {
	if p.live {
		return nil
	}
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
	return p.now().Sub(since).Seconds()
}

// current returns the snapshot if it may be served.
func (p *Provider) current() (*snapshot, error) {
	s := p.snap.Load()
	if s == nil {
		return nil, apierrors.NewServiceUnavailable("no GPU metrics loaded from Prometheus yet" + p.lastErrorSuffix())
	}
	if age := p.now().Sub(s.observedAt); age > p.maxStaleness {
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

// view returns the data to answer one request from: the shared snapshot in
// cache mode, or in live-query mode a snapshot built from a query for just
// these pods (the way prometheus-adapter works, kept for benchmarks).
func (p *Provider) view(ctx context.Context, metric int, namespace string, pods []string) (*snapshot, error) {
	if !p.live {
		return p.current()
	}
	// Defense in depth: the query escapes everything anyway, but nothing
	// that is not a valid Kubernetes name has a reason to reach Prometheus.
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid namespace %q: %v", namespace, errs))
	}
	for _, pod := range pods {
		if errs := validation.IsDNS1123Subdomain(pod); len(errs) > 0 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid pod name %q: %v", pod, errs))
		}
	}
	observedAt := p.now()
	res, err := p.source.Samples(ctx, promquery.Query{
		Metrics:       []string{p.specs[metric].name},
		Namespace:     namespace,
		Pods:          pods,
		LookbackDelta: p.maxStaleness,
	})
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("querying Prometheus: %v", err))
	}
	return buildSnapshot(p.admit(ctx, res.Samples), p.specs, p.index, observedAt), nil
}
