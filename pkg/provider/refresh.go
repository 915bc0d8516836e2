package provider

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
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
	q := promquery.Query{Metrics: p.metricNames(), LookbackDelta: p.maxStaleness}
	res, err := p.source.Samples(ctx, q)
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

func (p *Provider) metricNames() []string {
	names := make([]string, len(p.specs))
	for i, s := range p.specs {
		names[i] = s.name
	}
	return names
}

// Ready fails while no snapshot was ever loaded or the newest one is older
// than MaxStaleness: the adapter then cannot answer anything truthfully.
func (p *Provider) Ready() error {
	if p.live {
		return nil
	}
	_, err := p.current()
	return err
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
	return buildSnapshot(res.Samples, p.specs, p.index, observedAt), nil
}
