package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

// tryInfo is what try-serve reports once spillway runs, for try to print.
type tryInfo struct {
	Kubeconfig string `json:"kubeconfig"`
	Kubectl    string `json:"kubectl"`
	Prometheus string `json:"prometheus"`
	Load       string `json:"load"`
	Logs       string `json:"logs"`
}

func tryDetached() (detached, error) {
	cache, err := localcluster.CacheDir()
	if err != nil {
		return detached{}, err
	}
	return detached{what: "try cluster", dir: filepath.Join(cache, "try"), serve: []string{"try-serve"}, down: "make try-down"}, nil
}

// try starts try-serve detached and prints how to use what it runs.
func try(ctx context.Context, binDir, repoRoot string) error {
	// Fail here, not in the detached server's log, when make build is missing.
	for _, b := range []string{"spillway-gpu-exporter", "spillway-metrics-adapter", "spillway-controller"} {
		if !exists(filepath.Join(binDir, b)) {
			return fmt.Errorf("%s not found in %s: run 'make build' first", b, binDir)
		}
	}
	d, err := tryDetached()
	if err != nil {
		return err
	}
	d.serve = append(d.serve, "--bin-dir="+binDir, "--repo-root="+repoRoot)
	b, err := d.start(ctx)
	if err != nil {
		return err
	}
	var info tryInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return fmt.Errorf("reading what the try cluster reported: %w", err)
	}
	fmt.Printf(`spillway is running on a local cluster (state in %s, logs in %s):
  the exporter with simulated GPUs (one replica serves %g req/s at 100 %% SM utilization),
  the metrics adapter, the controller with its placement webhook, and a Prometheus scraping them;
  one on-prem node %s-0 with 1 GPU (%s=%s) and an elastic Karpenter pool of 1-GPU nodes (%s=%s).

  export KUBECONFIG=%s
  kubectl (%s):  %s
  Prometheus:    %s
  load endpoint: %s
      curl -X PUT '%s?workload=<namespace>/<deployment>&rps=25'

Try your own YAML: README.md, "Try your own YAML" (examples in examples/try/).
Stop it with: make try-down
`, d.dir, info.Logs, framework.SimReplicaCapacityRPS,
		demo.OnPremPool, localcluster.PoolLabel, demo.OnPremPool, localcluster.PoolLabel, demo.ElasticPool,
		info.Kubeconfig, localcluster.KubernetesVersion, info.Kubectl, info.Prometheus, info.Load, info.Load)
	return nil
}

// tryServe runs the try cluster in the foreground until SIGTERM or SIGINT:
// the control plane with the seed's node pools, spillway's CRDs, RBAC
// (each component with its chart ServiceAccount's permissions), webhook
// configuration and APIServices, and its three binaries with Prometheus.
func tryServe(ctx context.Context, binDir, repoRoot string) error {
	d, err := tryDetached()
	if err != nil {
		return err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: d.dir, KeepDir: true, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer d.stopped(c)
	env, err := demo.StartEnv(ctx, c, demo.Options{BinDir: binDir, RepoRoot: repoRoot, Log: os.Stderr, AsServiceAccounts: true})
	if err != nil {
		return err
	}
	info, err := json.Marshal(tryInfo{
		Kubeconfig: c.KubeconfigPath(),
		Kubectl:    c.Binaries().Kubectl,
		Prometheus: env.Prometheus.URL,
		Load:       env.LoadURL + "/load",
		Logs:       filepath.Join(c.Dir(), "logs"),
	})
	if err != nil {
		return err
	}
	if err := d.ready(info); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "spillway is running; SIGTERM or SIGINT stops it")
	<-ctx.Done()
	return nil
}
