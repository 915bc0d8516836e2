// Command controllerfleet is the fleet-scale benchmark of
// spillway-controller. On a local control plane (internal/localcluster, no
// Karpenter) it builds a fleet: --pools on-prem pools of --nodes-per-pool
// kwok nodes and one "cloud" pool of --cloud-nodes, --namespaces namespaces
// with --policies-per-namespace ResourcePolicies each (an on-prem unit on the
// namespace's pool, then the elastic cloud unit: the seed's shape), and
// --pods KServe-predictor-shaped pods spread evenly over the policies.
//
// The fleet's pods go through the placement webhook like real ones (a
// controller from --bin-dir runs while they are created), but they name a
// scheduler nobody runs, and the benchmark binds each itself to the node the
// webhook reserved (or a node of its unit's pool): kube-scheduler on 2
// cores would take far longer than the rest of the run for 50,000 pods.
// kwok then marks them Running. So the cached pods carry everything a
// placed, running pod carries: placement labels, signed annotations,
// affinity, kwok's status.
//
// Then, for each controller binary given (the one in --bin-dir, then the
// one in --compare-bin-dir when set, one after the other on the same
// fleet), it
//
//   - starts the controller with its webhook registered and times it to
//     ready, then waits until its work queues stay empty (its startup
//     reconciles done, at most --settle);
//   - samples its RSS from /proc/<pid>/status (VmRSS every 250 ms; VmHWM,
//     the kernel's peak) and reads its Go heap (go_memstats metrics);
//   - fires --bursts bursts of --burst pod creations selected by one policy
//     (--concurrency in flight), scheduled by kube-scheduler this time, and
//     reads the webhook's latency three ways: the controller's own
//     histogram, kube-apiserver's admission webhook histogram, and the
//     client's create latency (exact);
//   - deletes the burst's pods and stops the controller.
//
// It writes the report to <out>/controller-fleet.md.
//
//	go run ./test/bench/controllerfleet --bin-dir bin
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

type options struct {
	binDir, compareBinDir string
	compareName, name     string
	outDir                string
	repoRoot              string
	namespaces            int
	policiesPerNamespace  int
	pods                  int
	pools, nodesPerPool   int
	// memoryLimitMiB runs the measured controllers as under a container
	// memory limit of this many MiB (0: none).
	memoryLimitMiB    int
	cloudNodes        int
	createConcurrency int
	burst, bursts     int
	burstModes        []string
	concurrency       int
	settle            time.Duration
	burstGap          time.Duration
	profile           bool
	keepDir           bool
}

func (o *options) validate() error {
	var errs []error
	if o.binDir == "" {
		errs = append(errs, errors.New("--bin-dir is required"))
	}
	if o.outDir == "" {
		errs = append(errs, errors.New("--out must not be empty"))
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"--namespaces", o.namespaces}, {"--policies-per-namespace", o.policiesPerNamespace}, {"--pods", o.pods},
		{"--pools", o.pools}, {"--nodes-per-pool", o.nodesPerPool}, {"--cloud-nodes", o.cloudNodes},
		{"--create-concurrency", o.createConcurrency}, {"--burst", o.burst}, {"--bursts", o.bursts}, {"--concurrency", o.concurrency},
	} {
		if f.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", f.name, f.v))
		}
	}
	if per := o.namespaces * o.policiesPerNamespace; per > 0 && o.pods > 0 && o.pods%per != 0 {
		errs = append(errs, fmt.Errorf("--pods %d must be a multiple of namespaces × policies per namespace (%d)", o.pods, per))
	}
	if o.pools > o.namespaces && o.namespaces > 0 {
		errs = append(errs, fmt.Errorf("--pools %d must not exceed --namespaces %d (each pool serves whole namespaces)", o.pools, o.namespaces))
	}
	if len(o.burstModes) == 0 {
		errs = append(errs, errors.New("--burst-modes must name at least one mode"))
	}
	for _, m := range o.burstModes {
		if m != burstClient && m != burstDeployment {
			errs = append(errs, fmt.Errorf("--burst-modes: unknown mode %q (client or deployment)", m))
		}
	}
	if o.settle <= 0 {
		errs = append(errs, fmt.Errorf("--settle must be positive, got %s", o.settle))
	}
	if o.memoryLimitMiB < 0 {
		errs = append(errs, fmt.Errorf("--memory-limit-mib must not be negative, got %d", o.memoryLimitMiB))
	}
	if o.burstGap < 0 {
		errs = append(errs, fmt.Errorf("--burst-gap must not be negative, got %s", o.burstGap))
	}
	return errors.Join(errs...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controllerfleet:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := pflag.NewFlagSet("controllerfleet", pflag.ContinueOnError)
	fs.StringVar(&o.binDir, "bin-dir", "", "Directory holding spillway-controller (make build). Required.")
	fs.StringVar(&o.name, "name", "this build", "How the report names the controller in --bin-dir.")
	fs.StringVar(&o.compareBinDir, "compare-bin-dir", "", "Directory holding another spillway-controller (say, an older build), measured after --bin-dir's on the same fleet; empty measures only --bin-dir's.")
	fs.StringVar(&o.compareName, "compare-name", "compared", "How the report names the controller in --compare-bin-dir.")
	fs.StringVar(&o.outDir, "out", "out/bench", "Directory the report controller-fleet.md (and heap profiles) are written to.")
	fs.StringVar(&o.repoRoot, "repo-root", ".", "The spillway checkout; the CRDs are applied from its config/crd.")
	fs.IntVar(&o.namespaces, "namespaces", 500, "Namespaces the pods and policies are spread over.")
	fs.IntVar(&o.policiesPerNamespace, "policies-per-namespace", 2, "ResourcePolicies per namespace, each selecting its own app's pods.")
	fs.IntVar(&o.pods, "pods", 50000, "Pods in the fleet, spread evenly over the policies (e.g. 5000 for a quick run).")
	fs.IntVar(&o.pools, "pools", 50, "On-prem node pools; namespace i's policies use pool i mod pools as their first unit.")
	fs.IntVar(&o.nodesPerPool, "nodes-per-pool", 10, "kwok nodes per on-prem pool.")
	fs.IntVar(&o.cloudNodes, "cloud-nodes", 10, "kwok nodes of the cloud pool every policy's elastic unit selects.")
	fs.IntVar(&o.createConcurrency, "create-concurrency", 32, "Fleet pod creations (create and bind) in flight at once.")
	fs.IntVar(&o.burst, "burst", 500, "Pods created in one burst, all selected by one policy.")
	fs.IntVar(&o.bursts, "bursts", 2, "Bursts per mode and controller, each into another namespace's policy.")
	fs.StringSliceVar(&o.burstModes, "burst-modes", []string{burstClient, burstDeployment}, "How burst pods are created: client (this program, --concurrency at once) and/or deployment (a Deployment of --burst replicas, created by kube-controller-manager at its default 20 requests/s).")
	fs.IntVar(&o.concurrency, "concurrency", 50, "Burst pod creations in flight at once.")
	fs.DurationVar(&o.settle, "settle", 5*time.Minute, "Longest wait after the controller is ready for it to go idle (its startup reconciles done) before memory is read.")
	fs.DurationVar(&o.burstGap, "burst-gap", 10*time.Second, "Wait after a burst's pods are gone before the next burst.")
	fs.IntVar(&o.memoryLimitMiB, "memory-limit-mib", 512, "Run the measured controllers as under a container memory limit of this many MiB (the chart's default is 512): GOMEMLIMIT at 90 % of it, as the binary sets from its cgroup's limit (0: no limit, the Go runtime's defaults).")
	fs.BoolVar(&o.profile, "profile", false, "Run the controller from --bin-dir with --pprof-bind-address, save its CPU profile over the first 5 s of the first burst (cpu-<n>.pprof in --out) and its heap profile after the bursts (heap-<n>.pprof), and add the tops of both to the report.")
	fs.BoolVar(&o.keepDir, "keep-dir", false, "Keep the cluster directory (logs) after the run.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := o.validate(); err != nil {
		return err
	}
	b := &bench{o: o, stdout: stdout, log: stderr}
	return b.run(ctx)
}
