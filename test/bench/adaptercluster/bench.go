package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/fleetsim"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// The synthetic fleet: every benchmark pod is in benchNamespace, bound to
// benchNode (the Hostname of every series).
const (
	benchNamespace = "bench"
	benchNode      = "bench-gpu-node"
)

// benchJob is the scrape job of the synthetic exporter; the adapters under
// test select it with --series-selector.
const benchJob = "bench-gpu-exporter"

// hpaSyncPeriod is kube-controller-manager's HPA sync period: one for
// every HPA of the run, KEDA's and spillway's.
const hpaSyncPeriod = 5 * time.Second

type bench struct {
	o      options
	stdout io.Writer
	log    io.Writer
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[adaptercluster] "+format+"\n", args...)
}

// load measures targets in one adapterload run, logging what failed.
func (b *bench) load(ctx context.Context, loadBin, kubeconfig string, targets []target) []result {
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.name
	}
	b.logf("loading %s: %.0f req/s for %s each (+%s warm-up), in %d rounds of %s per target",
		strings.Join(names, ", "), b.o.rps, b.o.duration, b.o.warmup, b.o.rounds, b.o.slice())
	results := runLoad(ctx, loadBin, kubeconfig, targets, b.o)
	for _, r := range results {
		if r.err != nil {
			b.logf("  %s failed: %v", r.target.name, r.err)
		}
	}
	return results
}

func (b *bench) run(ctx context.Context) (err error) {
	started := time.Now()
	binDir, err := filepath.Abs(b.o.binDir)
	if err != nil {
		return err
	}
	adapterBin := filepath.Join(binDir, "spillway-metrics-adapter")
	if _, err := os.Stat(adapterBin); err != nil {
		return fmt.Errorf("%s not found: run 'make build' first", adapterBin)
	}
	// Both builds need no cluster; doing them first keeps a cold build from
	// running while a control plane waits.
	testAdapterBin, err := localcluster.EnsureTestAdapter(ctx, b.log)
	if err != nil {
		return fmt.Errorf("building the test-adapter: %w", err)
	}
	if b.o.keda {
		if _, err := localcluster.EnsureKEDA(ctx, b.log); err != nil {
			return fmt.Errorf("building KEDA: %w", err)
		}
	}
	tmp, err := os.MkdirTemp("", "spillway-adaptercluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	loadBin, err := buildCommand(ctx, b.o.repoRoot, tmp, "adapterload")
	if err != nil {
		return err
	}
	liveBin, err := buildCommand(ctx, b.o.repoRoot, tmp, "liveadapter")
	if err != nil {
		return err
	}
	fixedBin, err := buildCommand(ctx, b.o.repoRoot, tmp, "fixedadapter")
	if err != nil {
		return err
	}
	if err := checkPortFree(testAdapterWritePort); err != nil {
		return err
	}

	fleet := fleetsim.Fleet{Namespace: benchNamespace, Node: benchNode, Apps: b.o.apps, PodsPerApp: b.o.podsPerApp}
	series := fleet.Series()
	exposition := fleetsim.Render(series)
	metricsSrv, err := fleetsim.Serve(exposition)
	if err != nil {
		return err
	}
	defer metricsSrv.Close()
	b.logf("serving %d series of %s (%d KiB) on %s", len(series), metricnames.ProcessSMUtil, len(exposition)>>10, metricsSrv.Addr)

	c, err := localcluster.Start(ctx, localcluster.Options{NoKarpenter: true, Log: b.log, KeepDir: b.o.keepDir, HPASyncPeriod: hpaSyncPeriod})
	if err != nil {
		return fmt.Errorf("starting the local cluster: %w", err)
	}
	defer func() { c.StopAfter(ctx, err, b.log) }()

	pods, err := fleet.CreatePods(ctx, c.RESTConfig(), b.log)
	if err != nil {
		return err
	}
	prom, err := c.StartPrometheus(ctx, "prometheus", 5*time.Second, []localcluster.ScrapeTarget{
		{Job: benchJob, Address: metricsSrv.Addr},
	})
	if err != nil {
		return err
	}
	if err := fleetsim.WaitSeries(ctx, prom.URL, len(series), 3*time.Minute, b.log); err != nil {
		return err
	}

	srv, err := startServers(ctx, c, binaries{adapter: adapterBin, live: liveBin, testAdapter: testAdapterBin, fixed: fixedBin}, prom.URL, b.o.aggregator, b.o.podsPerApp)
	if err != nil {
		return err
	}
	app := fleetsim.AppName(b.o.benchApp)
	if err := srv.seedFloor(ctx, pods[app]); err != nil {
		return err
	}
	targets := buildTargets(srv, app, pods[app][0])
	if err := waitTargets(ctx, c, targets, len(pods[app]), b.log); err != nil {
		return err
	}

	results := b.load(ctx, loadBin, c.KubeconfigPath(), targets)
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.o.keda {
		kts, err := startKEDA(ctx, c, srv, prom.URL, app)
		if err != nil {
			return err
		}
		if err := waitTargets(ctx, c, kts, len(pods[app]), b.log); err != nil {
			return err
		}
		results = append(results, b.load(ctx, loadBin, c.KubeconfigPath(), kts)...)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	var reaction []reactionResult
	var outages []outageResult
	if b.o.keda && b.o.peerScaling {
		e, err := startPeerEnv(ctx, c, prom, binDir, b.log)
		if err != nil {
			return fmt.Errorf("starting the peer scaling scenarios: %w", err)
		}
		reaction = runReaction(ctx, e, b.o.reactionTrials)
		outages = runOutages(ctx, e, b.o.outage, b.o.outageAfter)
		if err := ctx.Err(); err != nil {
			return err
		}
	}

	rep := report{
		hpaSync:  hpaSyncPeriod,
		reaction: reaction,
		outages:  outages,
		when:     started,
		setup:    b.o,
		pods:     b.o.apps * b.o.podsPerApp,
		series:   len(series),
		results:  results,
		duration: time.Since(started),
	}
	text := rep.markdown()
	fmt.Fprint(b.stdout, text)
	if err := os.MkdirAll(b.o.outDir, 0o755); err != nil {
		return err
	}
	out := filepath.Join(b.o.outDir, "adapter.md")
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		return err
	}
	b.logf("wrote %s", out)
	if b.o.keda {
		peers := filepath.Join(b.o.outDir, "peers.md")
		text := rep.peersMarkdown()
		fmt.Fprint(b.stdout, "\n"+text)
		if err := os.WriteFile(peers, []byte(text), 0o644); err != nil {
			return err
		}
		b.logf("wrote %s", peers)
	}
	for _, o := range outages {
		if o.err != nil {
			return fmt.Errorf("outage %q: %w", o.name, o.err)
		}
	}
	for _, r := range reaction {
		if len(r.errs) > 0 {
			return fmt.Errorf("reaction of %s: %s", r.scaler.name, strings.Join(r.errs, "; "))
		}
	}
	for _, r := range results {
		if r.err != nil && !r.target.reference {
			return fmt.Errorf("target %s failed: %w", r.target.name, r.err)
		}
	}
	return nil
}
