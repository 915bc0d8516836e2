package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// outageScalers are measured under each outage, side by side.
var outageScalers = []scaler{kedaDefault, kedaFallback, kedaStrict, spillwayHPA}

// outageNamespace holds one outage case's Deployments and scalers: each
// case starts from fresh ScaledObjects, so no failure count or cached state
// carries over from the case before.
func outageNamespace(i int) string { return fmt.Sprintf("peers-outage-%d", i+1) }

// outageCase is one way the data goes missing.
type outageCase struct {
	name  string
	fault func(ctx context.Context, e *peerEnv) error
	// restore ends the fault in namespace ns; it returns once the failed
	// part serves again.
	restore func(ctx context.Context, e *peerEnv, ns string) error
}

var outageCases = []outageCase{
	{
		name:    "Prometheus down",
		fault:   func(_ context.Context, e *peerEnv) error { return e.prom.Stop() },
		restore: func(ctx context.Context, e *peerEnv, _ string) error { return e.prom.Start(ctx) },
	},
	{
		// Prometheus keeps running and scraping; the exporter's target
		// fails, so its series are marked stale and every query for them
		// returns an empty result.
		name: "series gone (exporter down, Prometheus up)",
		fault: func(_ context.Context, e *peerEnv) error {
			if err := e.exporter.Proc.Kill(); err != nil {
				return err
			}
			<-e.exporter.Proc.Done()
			return nil
		},
		restore: func(ctx context.Context, e *peerEnv, ns string) error {
			p, err := e.c.Rerun(e.exporter.Proc)
			if err != nil {
				return err
			}
			e.exporter.Proc = p
			// Its simulated load lives in the process: set it again as
			// soon as it listens.
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			for {
				err := e.setLoad(wctx, ns, outageScalers, peakRPS)
				if err == nil {
					return nil
				}
				select {
				case <-wctx.Done():
					return fmt.Errorf("the restarted exporter does not take its load: %w", err)
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	},
}

// outageRow is what one scaler did through one outage.
type outageRow struct {
	scaler scaler
	// before is the replicas when the fault began (the peak).
	before int32
	// minDuring is the fewest replicas from the fault's start until
	// after seconds after it ended; atRestore when it ended.
	minDuring, atRestore int32
	// firstChange is when the replicas first differed from before (-1:
	// never in the window).
	firstChange time.Duration
	// timeline is "3 → 1 at +14 s → …".
	timeline string
	// hpa is the HPA's state just before the fault ended.
	hpa string
}

// outageResult is one outage case's rows.
type outageResult struct {
	name  string
	down  time.Duration // fault start to restored
	after time.Duration // observed after the restore
	rows  []outageRow
	err   error
}

// runOutages runs each case once: every scaler's Deployment at its peak
// (3 replicas, loaded), the fault for the outage duration, then the
// restore, sampling replicas throughout.
func runOutages(ctx context.Context, e *peerEnv, outage, after time.Duration) []outageResult {
	var results []outageResult
	for i, oc := range outageCases {
		if err := ctx.Err(); err != nil {
			break
		}
		e.logf("outage %q: %s for %s", oc.name, strings.Join(names(outageScalers), ", "), outage)
		r := runOutage(ctx, e, outageNamespace(i), oc, outage, after)
		if r.err != nil {
			e.logf("  outage %q: %v", oc.name, r.err)
		}
		results = append(results, r)
	}
	return results
}

func names(ss []scaler) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.name
	}
	return out
}

func runOutage(ctx context.Context, e *peerEnv, ns string, oc outageCase, outage, after time.Duration) outageResult {
	r := outageResult{name: oc.name, after: after}
	if err := e.createNamespace(ctx, ns); err != nil {
		r.err = err
		return r
	}
	for _, s := range outageScalers {
		if err := e.createScaler(ctx, ns, s); err != nil {
			r.err = err
			return r
		}
	}
	// The case's pods go back to one replica each when it is over.
	defer func() { _ = e.setLoad(ctx, ns, outageScalers, lowRPS) }()
	if err := e.setLoad(ctx, ns, outageScalers, peakRPS); err != nil {
		r.err = err
		return r
	}
	if err := e.waitReplicas(ctx, ns, outageScalers, peerMaxReplicas, 5*time.Minute); err != nil {
		r.err = fmt.Errorf("reaching the peak before the fault: %w", err)
		return r
	}
	sctx, stop := context.WithCancel(ctx)
	samples := e.sampleReplicas(sctx, ns)
	start := time.Now()
	if err := oc.fault(ctx, e); err != nil {
		stop()
		<-samples
		r.err = fmt.Errorf("fault: %w", err)
		return r
	}
	select {
	case <-ctx.Done():
	case <-time.After(outage):
	}
	hpa := map[string]string{}
	for _, s := range outageScalers {
		hpa[s.name] = e.hpaState(ctx, ns, s)
	}
	restoreErr := oc.restore(ctx, e, ns)
	restored := time.Now()
	r.down = restored.Sub(start)
	select {
	case <-ctx.Done():
	case <-time.After(after):
	}
	stop()
	ss := <-samples
	if restoreErr != nil {
		r.err = fmt.Errorf("restore: %w", restoreErr)
	}
	for _, s := range outageScalers {
		r.rows = append(r.rows, outageRowOf(s, ss, start, restored, hpa[s.name]))
	}
	return r
}

// outageRowOf summarizes one scaler's replicas over the samples.
func outageRowOf(s scaler, ss []replicaSample, start, restored time.Time, hpa string) outageRow {
	row := outageRow{scaler: s, before: -1, minDuring: -1, atRestore: -1, firstChange: -1, hpa: hpa}
	var tl []string
	last := int32(-1)
	for _, smp := range ss {
		v, ok := smp.replicas[s.name]
		if !ok {
			continue
		}
		if row.before < 0 {
			row.before = v
			tl = append(tl, fmt.Sprint(v))
		}
		if row.minDuring < 0 || v < row.minDuring {
			row.minDuring = v
		}
		if !smp.at.After(restored) {
			row.atRestore = v
		}
		if last >= 0 && v != last {
			off := smp.at.Sub(start)
			if row.firstChange < 0 {
				row.firstChange = off
			}
			tl = append(tl, fmt.Sprintf("%d at +%ds", v, int(off.Round(time.Second)/time.Second)))
		}
		last = v
	}
	row.timeline = strings.Join(tl, " → ")
	return row
}
