// Package localcluster runs a real Kubernetes control plane on loopback for
// tests and the demo: etcd, kube-apiserver, kube-controller-manager (the real
// HPA), kube-scheduler, kwok (fake nodes and pods) and Karpenter's kwok
// provider (the elastic pool), all built from pinned versions, plus a real
// Prometheus on demand. It ends only the processes it started, by PID.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configures a cluster. The zero value is usable.
type Options struct {
	// Dir holds certificates, data and logs. Empty: a new temporary directory,
	// removed by Stop unless KeepDir is set.
	Dir     string
	KeepDir bool
	// HPASyncPeriod is kube-controller-manager's HPA sync period (default 5s).
	HPASyncPeriod time.Duration
	// Log receives progress lines (builds, starts). Nil: discarded.
	Log io.Writer
	// NoKarpenter skips Karpenter's kwok provider for tests that need no
	// elastic pool (saves CPU on 2 cores).
	NoKarpenter bool
}

// Cluster is a running local control plane.
type Cluster struct {
	opts     Options
	dir      string
	bins     *Binaries
	ports    ports
	adminTok string
	cfg      *rest.Config
	client   kubernetes.Interface

	mu    sync.Mutex
	procs []*Process
	// stops end the cluster's background work (pod discovery) on Stop.
	stops []func()
}

// onStop registers f to run when the cluster stops.
func (c *Cluster) onStop(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stops = append(c.stops, f)
}

type ports struct {
	etcdClient, etcdPeer, apiserver, kcm, scheduler, kwok, karpMetrics, karpHealth int
}

// Dir is where certificates, data and logs live.
func (c *Cluster) Dir() string { return c.dir }

// Binaries are the pinned programs this cluster runs.
func (c *Cluster) Binaries() *Binaries { return c.bins }

// RESTConfig is an admin client config. Callers may copy and modify it.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.cfg) }

// Client is an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// KubeconfigPath is an admin kubeconfig file for kubectl and the binaries.
func (c *Cluster) KubeconfigPath() string { return filepath.Join(c.dir, "kubeconfig") }

// Host is the API server URL.
func (c *Cluster) Host() string { return c.cfg.Host }

// Stop ends every process this cluster started, newest first, and removes
// the temporary directory when it made one.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	procs, stops := c.procs, c.stops
	c.procs, c.stops = nil, nil
	c.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.opts.Dir == "" && !c.opts.KeepDir {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StopAfter ends a program's use of the cluster: when the run failed
// (runErr, and not because ctx was cancelled: an interrupt is not a failure
// worth the component logs) it first writes the tail of each log to w, then
// says where a kept directory is and stops everything, reporting a failure
// to stop on w. Benchmarks defer it.
func (c *Cluster) StopAfter(ctx context.Context, runErr error, w io.Writer) {
	if runErr != nil && ctx.Err() == nil {
		c.DumpLogs(w, 3000)
	}
	if c.opts.KeepDir {
		fmt.Fprintf(w, "cluster directory kept: %s\n", c.dir)
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintf(w, "stopping the cluster: %v\n", err)
	}
}

// DumpLogs writes the tail of every component's log, for failed tests.
func (c *Cluster) DumpLogs(w io.Writer, maxBytesPerLog int) {
	c.mu.Lock()
	procs := append([]*Process(nil), c.procs...)
	c.mu.Unlock()
	for _, p := range procs {
		b, err := os.ReadFile(p.LogPath)
		if err != nil {
			continue
		}
		fmt.Fprintf(w, "===== %s (%s) =====\n%s\n", p.Name, p.LogPath, tail(string(b), maxBytesPerLog))
	}
}

// Poll calls cond every interval until it returns true or ctx ends; it is
// the one polling loop of the harness, the tests (test/framework's Poll and
// Eventually) and the demo. An error from cond does not stop it (the
// condition may not hold yet, e.g. a server still starting): the last one
// is part of the error returned when ctx ends, which names what was awaited.
func Poll(ctx context.Context, interval time.Duration, what string, cond func(context.Context) (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %w)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
