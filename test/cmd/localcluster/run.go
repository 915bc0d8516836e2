package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

const usage = `usage: localcluster <command> [flags]

Runs spillway's local control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok, Karpenter's kwok provider) built from pinned versions.

commands:
  build       build the pinned control-plane binaries and Thanos into the user cache
              (no cluster); a cold build takes ~25-30 minutes on 2 cores, later calls
              return at once
  build-keda  build KEDA's operator and metrics API server (the peer the KEDA tests
              and benchmarks run) into the user cache; cold ~8 minutes on 2 cores
  up          start a cluster in the background with one on-prem GPU node and an
              elastic Karpenter NodePool, print its KUBECONFIG, and return
  down        stop the cluster started by "up" (only the processes it started)
  try         like "up", with spillway running against it: the exporter with
              simulated GPUs, the metrics adapter, the controller and a Prometheus
              scraping them; prints KUBECONFIG, the Prometheus URL and the simulated
              load endpoint (flags: --bin-dir, default bin; --repo-root, default .)
  try-down    stop the cluster started by "try" and remove its state

"up" and "try" run their cluster in a process of their own ("serve", "try-serve"),
detached from the terminal; Ctrl-C while they start stops it again.

environment:
  SPILLWAY_CACHE_DIR   where binaries and the clusters' state live (default: the
                       user cache dir, e.g. ~/.cache/spillway; "up" keeps its state
                       in cluster/, "try" in try/)
`

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("expected a command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "help":
		fmt.Print(usage)
		return nil
	case "try", "try-serve":
		return runTry(ctx, cmd, args)
	}
	if len(args) != 0 {
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("%s takes no arguments", cmd)
	}
	switch cmd {
	case "build":
		bins, err := localcluster.EnsureBinaries(ctx, os.Stderr)
		if err != nil {
			return err
		}
		// Thanos is not part of a cluster, but the fleet tests start it:
		// built here so a cold build never runs inside a test's timeout.
		if _, err := localcluster.EnsureThanos(ctx, os.Stderr); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "[localcluster] binaries ready: %s\n", filepath.Dir(filepath.Dir(bins.KubeAPIServer)))
		return nil
	case "build-keda":
		kb, err := localcluster.EnsureKEDA(ctx, os.Stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "[localcluster] KEDA %s ready: %s\n", localcluster.KEDAVersion, filepath.Dir(kb.Operator))
		return nil
	case "up":
		d, err := clusterDetached()
		if err != nil {
			return err
		}
		if _, err := d.start(ctx); err != nil {
			return err
		}
		fmt.Printf("cluster is up.\n  export KUBECONFIG=%s\n  kubectl get nodes   (kubectl %s: %s)\nstop it with: make cluster-down\n",
			filepath.Join(d.dir, "kubeconfig"), localcluster.KubernetesVersion, kubectlPath())
		return nil
	case "serve":
		return serve(ctx)
	case "down":
		d, err := clusterDetached()
		if err != nil {
			return err
		}
		return d.stop(false)
	case "try-down":
		d, err := tryDetached()
		if err != nil {
			return err
		}
		return d.stop(true)
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// runTry parses the flags of try and try-serve.
func runTry(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	binDir := fs.String("bin-dir", "bin", "directory holding spillway's binaries (make build)")
	repoRoot := fs.String("repo-root", ".", "the repository checkout (config/crd, the Helm chart)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%s: unexpected arguments %q", cmd, fs.Args())
	}
	// The detached server does not share the caller's working directory
	// assumptions: hand it absolute paths.
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	root, err := filepath.Abs(*repoRoot)
	if err != nil {
		return err
	}
	if cmd == "try-serve" {
		return tryServe(ctx, bin, root)
	}
	return try(ctx, bin, root)
}

func clusterDetached() (detached, error) {
	cache, err := localcluster.CacheDir()
	if err != nil {
		return detached{}, err
	}
	return detached{what: "cluster", dir: filepath.Join(cache, "cluster"), serve: []string{"serve"}, down: "make cluster-down"}, nil
}

// kubectlPath is the pinned kubectl, built with the control plane.
func kubectlPath() string {
	bins, err := localcluster.EnsureBinaries(context.Background(), nil)
	if err != nil {
		return "not built"
	}
	return bins.Kubectl
}

// serve runs the "up" cluster in the foreground until SIGTERM or SIGINT.
func serve(ctx context.Context) error {
	d, err := clusterDetached()
	if err != nil {
		return err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: d.dir, KeepDir: true, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer d.stopped(c)
	if _, err := c.AddStaticGPUNodes(ctx, "onprem", 1, localcluster.DefaultGPUNode); err != nil {
		return err
	}
	if err := c.AddElasticPool(ctx, localcluster.ElasticPool{Name: "elastic"}); err != nil {
		return err
	}
	if err := d.ready([]byte(c.KubeconfigPath())); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// trimmed is a file's content without surrounding space.
func trimmed(b []byte) string { return strings.TrimSpace(string(b)) }
