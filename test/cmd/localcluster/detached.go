package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

// stopTimeout bounds how long a stop waits for the server to end its
// cluster (each process gets 10 s of grace) before killing it; its
// processes die with it (they are started with a parent-death signal).
const stopTimeout = 2 * time.Minute

// detached is a cluster served by a process of this command of its own
// (serve, try-serve) that outlives the invocation that started it, detached
// from its terminal. Its pid, log and "ready" file live in dir, with the
// cluster's state.
type detached struct {
	what  string   // for messages: "cluster", "try cluster"
	dir   string   // state
	serve []string // this command's arguments that run the server
	down  string   // how a user stops it
}

func (d detached) pidFile() string   { return filepath.Join(d.dir, "pid") }
func (d detached) readyFile() string { return filepath.Join(d.dir, "ready") }
func (d detached) logFile() string   { return filepath.Join(d.dir, "localcluster.log") }

// running returns the pid of the live server, or 0. A pid file whose
// process is gone, or is no longer this command's server (the pid was
// reused after a reboot), is stale: never signal that process.
func (d detached) running() int {
	b, err := os.ReadFile(d.pidFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(trimmed(b))
	if err != nil || pid <= 0 || !d.isServer(pid) {
		return 0
	}
	return pid
}

// isServer reports whether pid is alive and runs this command's server.
func (d detached) isServer(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	return len(args) > len(d.serve) && string(args[1]) == d.serve[0]
}

// start runs the server detached and waits until it reports the cluster
// ready, returning what it wrote into the ready file. State left by a
// server that is gone is removed first. When ctx ends first (Ctrl-C), the
// server is stopped, with everything it started, and its state removed.
func (d detached) start(ctx context.Context) ([]byte, error) {
	if pid := d.running(); pid != 0 {
		return nil, fmt.Errorf("a %s is already running (pid %d, state in %s); stop it first with: %s", d.what, pid, d.dir, d.down)
	}
	if exists(d.dir) {
		fmt.Fprintf(os.Stderr, "removing the state of a %s that is no longer running (%s)\n", d.what, d.dir)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(d.logFile())
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(self, d.serve...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A session of its own: the terminal's Ctrl-C and hangup do not reach
	// it, so the cluster outlives this invocation.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := os.WriteFile(d.pidFile(), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return nil, errors.Join(err, d.terminate(cmd.Process.Pid, exited))
	}
	fmt.Fprintf(os.Stderr, "starting the %s (pid %d, log %s)…\n", d.what, cmd.Process.Pid, logf.Name())
	var exitErr error
	gone := false
	err = localcluster.Poll(ctx, 500*time.Millisecond, "the "+d.what+" to start", func(context.Context) (bool, error) {
		select {
		case exitErr = <-exited:
			gone = true
			return true, nil
		default:
			return exists(d.readyFile()), nil
		}
	})
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "interrupted: stopping the %s\n", d.what)
		if err := d.terminate(cmd.Process.Pid, exited); err != nil {
			return nil, err
		}
		if err := os.RemoveAll(d.dir); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("interrupted; the %s was stopped and its state removed", d.what)
	case gone:
		b, _ := os.ReadFile(d.logFile())
		if exitErr == nil {
			exitErr = errors.New("exit status 0")
		}
		return nil, fmt.Errorf("the %s exited during startup (%w); the end of its log:\n%s", d.what, exitErr, tailString(string(b), 3000))
	}
	return os.ReadFile(d.readyFile())
}

// terminate stops a server this invocation started and waits for it. Its
// exit status says nothing then: stopped while starting, it fails with the
// cancelled start.
func (d detached) terminate(pid int, exited <-chan error) error {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-exited: //nolint:errcheck // see above
		return nil
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	err := <-exited
	return fmt.Errorf("the %s (pid %d) did not stop within %s and was killed: %w", d.what, pid, stopTimeout, err)
}

// stop ends the running server, which stops every process of its cluster,
// and with removeState deletes the state directory too.
func (d detached) stop(removeState bool) error {
	pid := d.running()
	if pid == 0 {
		fmt.Printf("no %s is running\n", d.what)
	} else {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stopping the %s (pid %d): %w", d.what, pid, err)
		}
		fmt.Fprintf(os.Stderr, "stopping the %s (pid %d)…\n", d.what, pid)
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		gone := func(context.Context) (bool, error) { return !d.isServer(pid), nil }
		if err := localcluster.Poll(ctx, 500*time.Millisecond, fmt.Sprintf("the %s (pid %d) to stop", d.what, pid), gone); err != nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			kctx, kcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer kcancel()
			if err := localcluster.Poll(kctx, 200*time.Millisecond, "the killed server to go", gone); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "the %s did not stop within %s and was killed\n", d.what, stopTimeout)
		}
		fmt.Printf("%s stopped\n", d.what)
	}
	if removeState {
		return os.RemoveAll(d.dir)
	}
	_ = os.Remove(d.pidFile())
	return nil
}

// ready tells the invocation waiting in start that the cluster is up,
// with what it prints (written whole, then renamed).
func (d detached) ready(info []byte) error {
	tmp := d.readyFile() + ".tmp"
	if err := os.WriteFile(tmp, info, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, d.readyFile())
}

// stopped is the server's exit: it stops the cluster (every process it
// started, by PID) and removes the files that say it is running.
func (d detached) stopped(c *localcluster.Cluster) {
	fmt.Fprintf(os.Stderr, "stopping the %s\n", d.what)
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	_ = os.Remove(d.readyFile())
	_ = os.Remove(d.pidFile())
}
