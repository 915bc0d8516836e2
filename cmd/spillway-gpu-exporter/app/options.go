package app

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/spillway-dev/spillway/cmd/internal/cli"
	"github.com/spillway-dev/spillway/pkg/gpu/sim"
)

// Backends.
const (
	backendNVML = "nvml"
	backendSim  = "sim"
)

// Options are the serve flags.
type Options struct {
	Backend             string
	NodeName            string
	ListenAddress       string
	CollectInterval     time.Duration
	ProcRoot            string
	Kubeconfig          string
	NVMLLibrary         string
	ExportHostProcesses bool
	Standalone          bool
	Logging             cli.Logging
	// LogLevel is the deprecated --log-level, mapped onto Logging.
	LogLevel    string
	ShowVersion bool

	Sim SimOptions
}

// SimOptions are the flags of the simulated backend.
type SimOptions struct {
	AllNodes       bool
	PodsFile       string
	TraceFile      string
	TraceSpeed     float64
	TraceLoop      bool
	Loads          []string
	LoadAddress    string
	ReplicaCapRPS  float64
	NoiseAmplitude float64
	Seed           uint64
	GPUsPerNode    int
	GPUModel       string
	MemoryMiB      float64
	Resource       string
	// ModelServerAddress serves the simulated model servers' gauges.
	ModelServerAddress string
	ServiceTime        time.Duration
}

// NewOptions returns the defaults; the node name defaults to $NODE_NAME,
// which a DaemonSet sets from the downward API (spec.nodeName).
func NewOptions() *Options {
	return &Options{
		Backend:         backendNVML,
		NodeName:        os.Getenv("NODE_NAME"),
		ListenAddress:   ":9400",
		CollectInterval: 5 * time.Second,
		ProcRoot:        "/proc",
		Sim: SimOptions{
			TraceSpeed:    1,
			LoadAddress:   "127.0.0.1:9401",
			ReplicaCapRPS: 10,
			Seed:          1,
			GPUsPerNode:   8,
			GPUModel:      "NVIDIA H100 80GB HBM3",
			MemoryMiB:     16384,
			Resource:      string(sim.DefaultResource),
			ServiceTime:   2 * time.Second,
		},
	}
}

func (o *Options) flags() (*pflag.FlagSet, *pflag.FlagSet) {
	fs := pflag.NewFlagSet(binaryName, pflag.ContinueOnError)
	fs.StringVar(&o.Backend, "backend", o.Backend, "GPU backend: nvml (the driver's NVML library; needs a cgo build and the NVIDIA driver) or sim (simulated GPUs driven by a load input; for tests and demos).")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Name of the node this exporter runs on: the Hostname label, and the pod informer's spec.nodeName filter. Defaults to $NODE_NAME (set it from the downward API). Required unless --sim-all-nodes.")
	fs.StringVar(&o.ListenAddress, "listen-address", o.ListenAddress, "Address for /metrics, /healthz and /readyz.")
	fs.DurationVar(&o.CollectInterval, "collect-interval", o.CollectInterval, "How often the background loop samples the GPUs. Scrapes only read the last sample; series are dropped, and /healthz fails, when the last good sample is older than 3 intervals.")
	fs.StringVar(&o.ProcRoot, "proc-root", o.ProcRoot, "The host's /proc, where /proc/<pid>/cgroup maps NVML's host PIDs to pods. Use /proc with hostPID: true, or mount the host's /proc elsewhere and point here.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig for the pod informer; empty means $KUBECONFIG or in-cluster configuration.")
	fs.StringVar(&o.NVMLLibrary, "nvml-library", o.NVMLLibrary, "Path or soname of the NVML library; empty means libnvidia-ml.so.1 from the dynamic loader's path.")
	fs.BoolVar(&o.ExportHostProcesses, "export-host-processes", o.ExportHostProcesses, "Also export GPU processes that run outside any pod (host daemons, the MPS server), with empty namespace/pod/container labels. Off by default: they are only counted.")
	fs.BoolVar(&o.Standalone, "standalone", o.Standalone, "Run without a Kubernetes API (nvml backend): no pod informer, so processes in pods cannot be named and are only counted (unknown_pod). For checks on a machine outside a cluster, with --export-host-processes.")
	o.Logging.AddFlags(fs, "2 adds every process whose PID cannot be mapped to a pod.")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "Deprecated, use -v: debug is -v=2, info changes nothing, warn and error log failures only.")
	fs.BoolVar(&o.ShowVersion, "version", false, "Print the version and exit.")

	s := &o.Sim
	sf := pflag.NewFlagSet(binaryName+" sim", pflag.ContinueOnError)
	sf.BoolVar(&s.AllNodes, "sim-all-nodes", s.AllNodes, "Report the GPU pods of every node from this one process (kwok clusters, whose nodes run no DaemonSet pods). Each series carries its pod's node as Hostname.")
	sf.StringVar(&s.PodsFile, "sim-pods", s.PodsFile, "Read GPU pods from this YAML/JSON file instead of watching the cluster (see docs/exporter.md); no cluster is needed.")
	sf.StringVar(&s.TraceFile, "sim-trace", s.TraceFile, "Load trace CSV: rows minute,rps (every workload) or minute,workload,rps (workload = namespace/name). Linear between rows.")
	sf.Float64Var(&s.TraceSpeed, "sim-trace-speed", s.TraceSpeed, "Time compression: trace minutes per wall-clock minute (60 replays an hour of trace in a minute).")
	sf.BoolVar(&s.TraceLoop, "sim-trace-loop", s.TraceLoop, "Repeat the trace after its last row instead of holding the last value.")
	sf.StringArrayVar(&s.Loads, "sim-load", s.Loads, "Initial load override namespace/name=rps (repeatable); wins over the trace, like PUT /load.")
	sf.StringVar(&s.LoadAddress, "sim-load-address", s.LoadAddress, "Address of the load endpoint (PUT /load?workload=ns/name&rps=N, DELETE /load, GET /load). Empty disables it. Keep it on localhost: it changes what the exporter reports.")
	sf.Float64Var(&s.ReplicaCapRPS, "sim-replica-capacity", s.ReplicaCapRPS, "Requests per second one Ready replica serves at 100% SM utilization. util = min(100, rps / readyReplicas / capacity * 100).")
	sf.Float64Var(&s.NoiseAmplitude, "sim-noise", s.NoiseAmplitude, "Uniform noise of +-N percentage points on Ready pods' utilization, reproducible from --sim-seed; 0 disables it.")
	sf.Uint64Var(&s.Seed, "sim-seed", s.Seed, "Seed of the noise.")
	sf.IntVar(&s.GPUsPerNode, "sim-gpus-per-node", s.GPUsPerNode, "GPUs each simulated node has; pods get the lowest free ones and keep them.")
	sf.StringVar(&s.GPUModel, "sim-gpu-model", s.GPUModel, "modelName label of simulated GPUs.")
	sf.Float64Var(&s.MemoryMiB, "sim-memory-mib", s.MemoryMiB, "GPU memory each simulated process uses on each of its GPUs, in MiB.")
	sf.StringVar(&s.Resource, "sim-resource", s.Resource, "Extended resource that makes a pod a GPU pod.")
	sf.StringVar(&s.ModelServerAddress, "sim-model-server-address", s.ModelServerAddress,
		"Address that serves a simulated continuous-batching model server per running GPU pod, at /pods/<namespace>/<name>/metrics: vLLM's "+
			"num_requests_waiting, num_requests_running and kv_cache_usage_perc, and spillway_sim_queue_time_seconds, from a fluid queue fed by the same load "+
			"(see docs/exporter.md). Point Prometheus's pod discovery here, keeping the pod's IP as instance. Empty disables it.")
	sf.DurationVar(&s.ServiceTime, "sim-service-time", s.ServiceTime,
		"How long one simulated request runs: a replica has --sim-replica-capacity × this many batch slots.")
	return fs, sf
}

// Validate reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	switch o.Backend {
	case backendNVML, backendSim:
	default:
		errs = append(errs, fmt.Errorf("--backend %q: want nvml or sim", o.Backend))
	}
	if o.NodeName == "" && (o.Backend != backendSim || !o.Sim.AllNodes) {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required unless --backend=sim --sim-all-nodes"))
	}
	if _, _, err := net.SplitHostPort(o.ListenAddress); err != nil {
		errs = append(errs, fmt.Errorf("--listen-address %q: %w", o.ListenAddress, err))
	}
	if o.CollectInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--collect-interval %v: must be at least 100ms", o.CollectInterval))
	}
	if o.ProcRoot == "" {
		errs = append(errs, errors.New("--proc-root is empty"))
	}
	if err := o.applyLogLevel(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Logging.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.Standalone && (o.Backend != backendNVML || o.Kubeconfig != "") {
		errs = append(errs, errors.New("--standalone applies to --backend=nvml without --kubeconfig"))
	}
	if o.Backend == backendSim {
		errs = append(errs, o.Sim.validate()...)
		if o.Sim.PodsFile != "" && o.Kubeconfig != "" {
			errs = append(errs, errors.New("--sim-pods and --kubeconfig exclude each other: the pods file replaces the cluster"))
		}
	} else if used := o.Sim.used(); len(used) > 0 {
		errs = append(errs, fmt.Errorf("%s only apply with --backend=sim", strings.Join(used, ", ")))
	}
	return errors.Join(errs...)
}

func (s *SimOptions) validate() []error {
	var errs []error
	if !(s.TraceSpeed > 0) || math.IsInf(s.TraceSpeed, 0) {
		errs = append(errs, fmt.Errorf("--sim-trace-speed %g: must be > 0", s.TraceSpeed))
	}
	if !(s.ReplicaCapRPS > 0) || math.IsInf(s.ReplicaCapRPS, 0) {
		errs = append(errs, fmt.Errorf("--sim-replica-capacity %g: must be > 0", s.ReplicaCapRPS))
	}
	if !(s.NoiseAmplitude >= 0 && s.NoiseAmplitude <= 100) {
		errs = append(errs, fmt.Errorf("--sim-noise %g: must be within [0, 100]", s.NoiseAmplitude))
	}
	if s.GPUsPerNode <= 0 {
		errs = append(errs, fmt.Errorf("--sim-gpus-per-node %d: must be > 0", s.GPUsPerNode))
	}
	if !(s.MemoryMiB >= 0) || math.IsInf(s.MemoryMiB, 0) {
		errs = append(errs, fmt.Errorf("--sim-memory-mib %g: must be >= 0", s.MemoryMiB))
	}
	if s.Resource == "" {
		errs = append(errs, errors.New("--sim-resource is empty"))
	}
	if s.ModelServerAddress != "" {
		if _, _, err := net.SplitHostPort(s.ModelServerAddress); err != nil {
			errs = append(errs, fmt.Errorf("--sim-model-server-address %q: %w", s.ModelServerAddress, err))
		}
	}
	if s.ServiceTime <= 0 {
		errs = append(errs, fmt.Errorf("--sim-service-time must be positive, got %s", s.ServiceTime))
	}
	if s.LoadAddress != "" {
		if _, _, err := net.SplitHostPort(s.LoadAddress); err != nil {
			errs = append(errs, fmt.Errorf("--sim-load-address %q: %w", s.LoadAddress, err))
		}
	}
	for _, l := range s.Loads {
		if _, _, err := parseLoad(l); err != nil {
			errs = append(errs, fmt.Errorf("--sim-load %q: %w", l, err))
		}
	}
	return errs
}

// used lists the simulator flags set to something that matters.
func (s *SimOptions) used() []string {
	var used []string
	if s.AllNodes {
		used = append(used, "--sim-all-nodes")
	}
	if s.PodsFile != "" {
		used = append(used, "--sim-pods")
	}
	if s.TraceFile != "" {
		used = append(used, "--sim-trace")
	}
	if len(s.Loads) > 0 {
		used = append(used, "--sim-load")
	}
	return used
}

// parseLoad splits "namespace/name=rps".
func parseLoad(s string) (string, float64, error) {
	w, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", 0, errors.New("want namespace/name=rps")
	}
	if err := sim.ValidateWorkload(w); err != nil {
		return "", 0, err
	}
	rps, err := sim.ParseRPS(v)
	if err != nil {
		return "", 0, err
	}
	return w, rps, nil
}

// applyLogLevel maps the deprecated --log-level onto the -v logging every
// binary shares, so a command line that sets it keeps its meaning.
func (o *Options) applyLogLevel() error {
	switch o.LogLevel {
	case "", "info":
	case "debug":
		o.Logging.Verbosity = max(o.Logging.Verbosity, 2)
	case "warn", "error":
		o.Logging.ErrorsOnly = true
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error (deprecated: use -v)", o.LogLevel)
	}
	return nil
}
