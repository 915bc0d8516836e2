package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"syscall"
	"time"
)

// Faults: what tests of spillway's behaviour under failure do to the
// processes of a cluster. A process can be hung and resumed (SIGSTOP and
// SIGCONT: it keeps its sockets, so clients connect and then wait), killed
// without warning (SIGKILL: no shutdown code runs, leases are not released),
// and run again with the same command line, ports and data, as a kubelet
// restarts a container.

// Pause stops the process with SIGSTOP: it holds its ports and its
// connections, but answers nothing until Resume.
func (p *Process) Pause() error { return p.signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error { return p.signal(syscall.SIGCONT) }

// Kill ends the process group with SIGKILL at once, as the kernel's OOM
// killer or a node failure would, and waits until it has exited.
func (p *Process) Kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

func (p *Process) signal(sig syscall.Signal) error {
	if exited, _ := p.Exited(); exited {
		return fmt.Errorf("%s (pid %d) has already exited", p.Name, p.PID())
	}
	// The whole group: the process was started in a group of its own.
	if err := syscall.Kill(-p.PID(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sending %s to %s (pid %d): %w", sig, p.Name, p.PID(), err)
	}
	return nil
}

// Component returns the newest running or exited process of that name that
// the cluster started ("kube-apiserver", "karpenter-kwok", "prometheus",
// "spillway-controller", ...), or nil.
func (c *Cluster) Component(name string) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.procs) - 1; i >= 0; i-- {
		if c.procs[i].Name == name {
			return c.procs[i]
		}
	}
	return nil
}

// Rerun starts again a process of this cluster that has exited, with the
// same program, arguments and environment, appending to the same log, and
// puts the new process in the old one's place (so Stop still ends processes
// newest first). It refuses a process that still runs, and one the cluster
// no longer holds (after Stop), so that nothing outlives the cluster.
func (c *Cluster) Rerun(old *Process) (*Process, error) {
	if exited, _ := old.Exited(); !exited {
		return nil, fmt.Errorf("%s (pid %d) is still running", old.Name, old.PID())
	}
	c.mu.Lock()
	held := slices.Contains(c.procs, old)
	c.mu.Unlock()
	if !held {
		return nil, fmt.Errorf("%s is no longer part of this cluster (stopped, or already rerun)", old.Name)
	}
	// The old environment already holds this process's os.Environ() and
	// its own variables; exec keeps the last value of a repeated name.
	p, err := c.StartProcess(old.Name, old.cmd.Path, old.cmd.Args[1:], old.cmd.Env)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = slices.DeleteFunc(c.procs, func(q *Process) bool { return q == p })
	if i := slices.Index(c.procs, old); i >= 0 {
		c.procs[i] = p
		return p, nil
	}
	// The cluster was stopped while the new process started: end it too.
	go func() { _ = p.Stop() }()
	return nil, fmt.Errorf("%s: the cluster was stopped while it restarted", old.Name)
}

// StopComponent ends one of the cluster's own components by name (SIGTERM,
// then SIGKILL after 10 s), to simulate its outage; StartComponent brings it
// back. Stopping kube-apiserver stops the whole API; its data stays in etcd.
func (c *Cluster) StopComponent(name string) error {
	p := c.Component(name)
	if p == nil {
		return fmt.Errorf("no component %q in this cluster", name)
	}
	return p.Stop()
}

// StartComponent starts again a component that StopComponent ended, on the
// same ports, flags and data, and waits until it serves: kube-apiserver
// until its /readyz passes, Karpenter until its readiness probe does.
func (c *Cluster) StartComponent(ctx context.Context, name string) error {
	old := c.Component(name)
	if old == nil {
		return fmt.Errorf("no component %q in this cluster", name)
	}
	p, err := c.Rerun(old)
	if err != nil {
		return err
	}
	switch name {
	case "kube-apiserver":
		return c.waitAPIServerReady(ctx, p)
	case "karpenter-kwok":
		return c.waitHealthy(ctx, p, "Karpenter readiness", fmt.Sprintf("http://127.0.0.1:%d/readyz", c.ports.karpHealth))
	}
	return nil
}

// RestartAPIServer stops kube-apiserver and starts it again on the same
// port, certificates and etcd data, as an upgrade or a crash of the control
// plane would; clients see their connections and watches drop.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	if err := c.StopComponent("kube-apiserver"); err != nil {
		return err
	}
	return c.StartComponent(ctx, "kube-apiserver")
}

func (c *Cluster) waitAPIServerReady(ctx context.Context, p *Process) error {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return Poll(wctx, 300*time.Millisecond, "kube-apiserver /readyz", func(ctx context.Context) (bool, error) {
		if exited, err := p.Exited(); exited {
			return false, fmt.Errorf("kube-apiserver exited: %w (see %s)", err, p.LogPath)
		}
		if _, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Raw(); err != nil {
			return false, err
		}
		return true, nil
	})
}

func (c *Cluster) waitHealthy(ctx context.Context, p *Process, what, url string) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return Poll(wctx, 300*time.Millisecond, what, func(context.Context) (bool, error) {
		if exited, err := p.Exited(); exited {
			return false, fmt.Errorf("%s exited: %w (see %s)", p.Name, err, p.LogPath)
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// Process is the running Prometheus process (to pause or kill it).
func (p *Prometheus) Process() *Process { return p.proc }

// WipeData removes Prometheus's TSDB, so that the next Start begins with no
// history, as a Prometheus pod without a persistent volume would after a
// restart. Prometheus must be stopped.
func (p *Prometheus) WipeData() error {
	if p.proc != nil {
		if exited, _ := p.proc.Exited(); !exited {
			return fmt.Errorf("prometheus (pid %d) is running; stop it before wiping its data", p.proc.PID())
		}
	}
	return os.RemoveAll(p.dataDir)
}
