package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/spillway-dev/spillway/cmd/internal/cli"
	"github.com/spillway-dev/spillway/cmd/internal/serving"
	"github.com/spillway-dev/spillway/pkg/exporter"
	"github.com/spillway-dev/spillway/pkg/exporter/podindex"
	"github.com/spillway-dev/spillway/pkg/gpu"
	"github.com/spillway-dev/spillway/pkg/gpu/sim"
	"github.com/spillway-dev/spillway/pkg/podmap"
	"github.com/spillway-dev/spillway/pkg/version"
)

const serveUsage = `spillway-gpu-exporter exports the SM utilization, memory and codec utilization of
every GPU process, labelled with the pod and container it runs in, for Prometheus:
DCGM_CUSTOM_PROCESS_SM_UTIL and friends, with ACK's label names (docs/exporter.md).

A background loop samples the GPUs every --collect-interval; scrapes of /metrics only
read the last sample. NVML reports host PIDs: /proc/<pid>/cgroup (under --proc-root)
gives each PID's pod UID and container ID, and a pod informer limited to this node
gives their names. Processes outside any pod are counted, not exported.

Usage:
  spillway-gpu-exporter [serve] [flags]
  spillway-gpu-exporter podmap --proc-root DIR [--pid N]   (see podmap --help)

Endpoints: /metrics, /healthz (fails when the last good collection is older than 3
intervals), /readyz (ready after the first good collection).
`

const informerSyncTimeout = 2 * time.Minute

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := NewOptions()
	own, simFlags := o.flags()
	all := pflag.NewFlagSet(binaryName, pflag.ContinueOnError)
	all.AddFlagSet(own)
	all.AddFlagSet(simFlags)
	done, err := cli.Command{
		Binary: binaryName,
		Flags:  all,
		Help: func() string {
			return fmt.Sprintf("%s\nFlags:\n%s\nSimulated backend (--backend=sim):\n%s", serveUsage, own.FlagUsages(), simFlags.FlagUsages())
		},
		ShowVersion: &o.ShowVersion,
		Validate:    o.Validate,
	}.Parse(args, stdout)
	if done || err != nil {
		return err
	}
	ctx, logger, err := o.Logging.Setup(ctx, stderr)
	if err != nil {
		return err
	}
	cli.MemoryLimit(logger, cli.CgroupRoot)
	return serve(ctx, o)
}

// backend is a sampler with what it needs around it.
type backend struct {
	sampler  gpu.Sampler
	close    func() error
	mapper   exporter.PIDMapper
	resolver exporter.PodResolver
	// loadHandler serves the simulator's load endpoint; nil otherwise.
	loadHandler http.Handler
	// models is the simulator's model servers, when they are served; nil
	// otherwise.
	models *sim.Server
}

func serve(ctx context.Context, o *Options) error {
	log := klog.FromContext(ctx)
	clk := clock.RealClock{}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var b *backend
	var err error
	switch o.Backend {
	case backendSim:
		b, err = simBackend(ctx, o, clk)
	default:
		b, err = nvmlBackend(ctx, o)
	}
	if err != nil {
		return err
	}
	defer func() {
		if err := b.close(); err != nil {
			log.Error(err, "closing the backend")
		}
	}()

	exp, err := exporter.New(exporter.Config{
		Hostname:            o.NodeName,
		Backend:             o.Backend,
		Interval:            o.CollectInterval,
		ExportHostProcesses: o.ExportHostProcesses,
		Clock:               clk,
	}, b.sampler, b.mapper, b.resolver)
	if err != nil {
		return err
	}
	metrics, err := exp.Handler(scrapeErrorLog{log},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", exp.Healthz)
	mux.HandleFunc("GET /readyz", exp.Readyz)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%s\n/metrics\n/healthz\n/readyz\n", version.String(binaryName))
	})

	servers := []*serving.Server{{Name: "metrics server", Addr: o.ListenAddress, Handler: mux}}
	if b.loadHandler != nil && o.Sim.LoadAddress != "" {
		servers = append(servers, &serving.Server{Name: "sim load server", Addr: o.Sim.LoadAddress, Handler: b.loadHandler})
	}
	if b.models != nil {
		servers = append(servers, &serving.Server{Name: "sim model servers", Addr: o.Sim.ModelServerAddress, Handler: b.models})
	}
	group, err := serving.Listen(servers...)
	if err != nil {
		return err
	}
	for _, s := range servers {
		log.Info("listening", "server", s.Name, "address", s.BoundAddr())
	}

	group.Start()
	done := make(chan struct{})
	go func() { exp.Run(ctx); close(done) }()
	if b.models != nil {
		go stepModels(ctx, b.models, clk)
	}
	log.Info("started", "version", version.Version, "backend", o.Backend, "node", o.NodeName, "interval", o.CollectInterval)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-group.Failed():
	}
	cancel()
	if err := group.Shutdown(ctx); err != nil {
		log.Error(err, "shutting down")
	}
	<-done
	return runErr
}

func nvmlBackend(ctx context.Context, o *Options) (*backend, error) {
	procfs := os.DirFS(o.ProcRoot)
	// A wrong --proc-root would silently turn every process into "unreadable".
	if _, err := fs.Stat(procfs, "1/cgroup"); err != nil {
		return nil, fmt.Errorf("--proc-root %s does not look like the host's /proc (reading 1/cgroup: %w); run with hostPID: true or mount the host's /proc there", o.ProcRoot, err)
	}
	sampler, closeFn, err := newNVMLSampler(o.NVMLLibrary)
	if err != nil {
		return nil, err
	}
	mapper := podmap.NewMapper(procfs)
	if o.Standalone {
		klog.FromContext(ctx).Info("standalone: no pod informer; processes in pods are counted as unknown_pod, not exported")
		return &backend{sampler: sampler, close: closeFn, mapper: mapper, resolver: noPods{}}, nil
	}
	cfg, err := serving.RestConfig(binaryName, o.Kubeconfig)
	if err != nil {
		return nil, errors.Join(err, closeFn())
	}
	pods, err := podindex.PodListWatch(cfg, o.NodeName)
	if err != nil {
		return nil, errors.Join(err, closeFn())
	}
	idx, err := podindex.New(pods, nil, podindex.Options{})
	if err != nil {
		return nil, errors.Join(err, closeFn())
	}
	if err := startIndex(ctx, idx); err != nil {
		return nil, errors.Join(err, closeFn())
	}
	return &backend{sampler: sampler, close: closeFn, mapper: mapper, resolver: idx}, nil
}

// noPods resolves nothing: the --standalone resolver.
type noPods struct{}

func (noPods) Resolve(string, string) (gpu.PodRef, bool) { return gpu.PodRef{}, false }

func simBackend(ctx context.Context, o *Options, clk clock.PassiveClock) (*backend, error) {
	s := o.Sim
	var pods sim.PodSource
	if s.PodsFile != "" {
		static, err := sim.ReadPodsFile(s.PodsFile)
		if err != nil {
			return nil, err
		}
		pods = static
	} else {
		cfg, err := serving.RestConfig(binaryName, o.Kubeconfig)
		if err != nil {
			return nil, err
		}
		// Cluster-wide even for one node: a workload's Ready replicas are
		// counted across all nodes, so per-node exporters agree.
		podsLW, err := podindex.PodListWatch(cfg, "")
		if err != nil {
			return nil, err
		}
		meta, err := metadata.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("kubernetes metadata client: %w", err)
		}
		idx, err := podindex.New(podsLW, podindex.ReplicaSetListWatch(meta), podindex.Options{})
		if err != nil {
			return nil, err
		}
		if err := startIndex(ctx, idx); err != nil {
			return nil, err
		}
		pods = sim.KubePods{List: idx.Pods, DeploymentOf: idx.DeploymentOf, Resource: corev1.ResourceName(s.Resource)}
	}
	var trace *sim.Trace
	if s.TraceFile != "" {
		t, err := sim.ReadTraceFile(s.TraceFile)
		if err != nil {
			return nil, err
		}
		t.Loop = s.TraceLoop
		trace = t
	}
	load, err := sim.NewLoad(trace, clk.Now(), s.TraceSpeed)
	if err != nil {
		return nil, err
	}
	for _, l := range s.Loads {
		w, rps, _ := parseLoad(l) // validated
		if err := load.Set(w, rps); err != nil {
			return nil, err
		}
	}
	sampler, err := sim.New(sim.Config{
		Node:           o.NodeName,
		AllNodes:       s.AllNodes,
		GPUsPerNode:    s.GPUsPerNode,
		Model:          s.GPUModel,
		CapacityRPS:    s.ReplicaCapRPS,
		NoiseAmplitude: s.NoiseAmplitude,
		Seed:           s.Seed,
		MemoryMiB:      s.MemoryMiB,
		Clock:          clk,
	}, pods, load)
	if err != nil {
		return nil, err
	}
	b := &backend{
		sampler:     sampler,
		close:       func() error { return nil },
		loadHandler: sim.Handler(load, sampler),
	}
	if s.ModelServerAddress != "" {
		cfg := sim.ServerConfig{CapacityRPS: s.ReplicaCapRPS, ServiceTime: s.ServiceTime, MaxStep: 5 * time.Second}
		if b.models, err = sim.NewServer(cfg, pods, load); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// stepModels advances the simulated model servers every second: their
// queues integrate load over time, whoever scrapes them and how often.
func stepModels(ctx context.Context, models *sim.Server, clk clock.PassiveClock) {
	log := klog.FromContext(ctx)
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	failing := false
	for {
		err := models.Step(clk.Now())
		if err != nil && !failing {
			log.Error(err, "stepping the simulated model servers")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func startIndex(ctx context.Context, idx *podindex.Index) error {
	log := klog.FromContext(ctx)
	idx.Start(ctx)
	syncCtx, cancel := context.WithTimeout(ctx, informerSyncTimeout)
	defer cancel()
	log.Info("waiting for the pod informer")
	if err := idx.WaitForSync(syncCtx); err != nil {
		return fmt.Errorf("pod informer not synced within %v (can the service account list and watch pods?): %w", informerSyncTimeout, err)
	}
	return nil
}

// scrapeErrorLog logs what the /metrics handler reports (promhttp.Logger).
type scrapeErrorLog struct{ log klog.Logger }

func (l scrapeErrorLog) Println(v ...any) { l.log.Error(nil, fmt.Sprint(v...)) }
