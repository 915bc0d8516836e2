package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

const usage = `usage: localcluster <command>

Runs spillway's local control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok, Karpenter's kwok provider) built from pinned versions.

commands:
  build   build the pinned control-plane binaries into the user cache (no cluster);
          a cold build takes ~20-25 minutes on 2 cores, later calls return at once
  up      start a cluster in the background with one on-prem GPU node and an elastic
          Karpenter NodePool, print its KUBECONFIG, and return
  down    stop the cluster started by "up" (only the processes it started)

environment:
  SPILLWAY_CACHE_DIR   where binaries and the "up" cluster's state live
                       (default: the user cache dir, e.g. ~/.cache/spillway)
`

func run(ctx context.Context, args []string) error {
	if len(args) != 1 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("expected exactly one command")
	}
	switch args[0] {
	case "build":
		bins, err := localcluster.EnsureBinaries(ctx, os.Stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "[localcluster] binaries ready: %s\n", filepath.Dir(filepath.Dir(bins.KubeAPIServer)))
		return nil
	case "up":
		return up(ctx)
	case "serve":
		return serve(ctx)
	case "down":
		return down()
	case "-h", "--help", "help":
		fmt.Print(usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func stateDir() (string, error) {
	cache, err := localcluster.CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "cluster"), nil
}

// up starts "serve" detached from this terminal and waits for it to report
// the kubeconfig, so the cluster outlives the make invocation.
func up(ctx context.Context) error {
	dir, err := stateDir()
	if err != nil {
		return err
	}
	if pid, err := readPID(dir); err == nil && syscall.Kill(pid, 0) == nil {
		return fmt.Errorf("a cluster is already running (pid %d); KUBECONFIG=%s; run 'make cluster-down' first", pid, filepath.Join(dir, "kubeconfig"))
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "localcluster.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(self, "serve")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "starting the cluster (pid %d, log %s)…\n", cmd.Process.Pid, logf.Name())
	ready := filepath.Join(dir, "ready")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var exitErr error
	err = localcluster.Poll(ctx, 500*time.Millisecond, "the cluster to start", func(context.Context) (bool, error) {
		select {
		case exitErr = <-exited:
			return true, nil
		default:
		}
		_, err := os.Stat(ready)
		return err == nil, nil
	})
	switch {
	case err != nil:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return err
	case !exists(ready):
		b, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("the cluster exited during startup: %w\n%s", cmp.Or(exitErr, errors.New("exit status 0")), tailString(string(b), 3000))
	}
	fmt.Printf("cluster is up.\n  export KUBECONFIG=%s\n  kubectl get nodes   (kubectl %s: %s)\nstop it with: make cluster-down\n",
		filepath.Join(dir, "kubeconfig"), localcluster.KubernetesVersion, mustKubectl())
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func mustKubectl() string {
	bins, err := localcluster.EnsureBinaries(context.Background(), nil)
	if err != nil {
		return "not built"
	}
	return bins.Kubectl
}

// serve runs the cluster in the foreground until SIGTERM or SIGINT.
func serve(ctx context.Context) error {
	dir, err := stateDir()
	if err != nil {
		return err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, KeepDir: true, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "stopping the cluster")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Remove(filepath.Join(dir, "ready"))
		os.Remove(filepath.Join(dir, "pid"))
	}()
	if _, err := c.AddStaticGPUNodes(ctx, "onprem", 1, localcluster.DefaultGPUNode); err != nil {
		return err
	}
	if err := c.AddElasticPool(ctx, localcluster.ElasticPool{Name: "elastic"}); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(c.KubeconfigPath()), 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func down() error {
	dir, err := stateDir()
	if err != nil {
		return err
	}
	pid, ok := signalCluster(dir, syscall.SIGTERM)
	if !ok {
		os.Remove(filepath.Join(dir, "pid"))
		fmt.Println("no cluster is running")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := localcluster.Poll(ctx, 500*time.Millisecond, fmt.Sprintf("the cluster (pid %d) to stop", pid), func(context.Context) (bool, error) {
		_, alive := signalCluster(dir, 0)
		return !alive, nil
	}); err != nil {
		return err
	}
	fmt.Println("cluster stopped")
	return nil
}

func readPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// signalCluster sends sig to the recorded cluster process; false when there
// is no pid file or no such process.
func signalCluster(dir string, sig syscall.Signal) (int, bool) {
	pid, err := readPID(dir)
	if err != nil {
		return 0, false
	}
	return pid, syscall.Kill(pid, sig) == nil
}
