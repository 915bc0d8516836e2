package localcluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ScrapeTarget is one job Prometheus scrapes over plain HTTP.
type ScrapeTarget struct {
	Job     string
	Address string // host:port
	Path    string // default /metrics
	// HonorLabels keeps the target's own job, instance and other
	// conflicting labels instead of renaming them to exported_*.
	HonorLabels bool
}

// Prometheus is a real Prometheus server (Debian's package binary) started
// by the cluster. It is not the Debian service: it runs from a private data
// directory on a free port and ends with the cluster.
type Prometheus struct {
	URL     string
	c       *Cluster
	args    []string
	proc    *Process
	name    string
	dataDir string
}

// StartPrometheus writes a config for the targets and starts Prometheus.
func (c *Cluster) StartPrometheus(ctx context.Context, name string, interval time.Duration, targets []ScrapeTarget) (*Prometheus, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\nscrape_configs:\n", interval, interval)
	for _, t := range targets {
		path := t.Path
		if path == "" {
			path = "/metrics"
		}
		fmt.Fprintf(&b, "- job_name: %q\n  metrics_path: %q\n  honor_labels: %t\n  static_configs:\n  - targets: [%q]\n", t.Job, path, t.HonorLabels, t.Address)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	p := &Prometheus{
		URL:     fmt.Sprintf("http://127.0.0.1:%d", port),
		c:       c,
		name:    name,
		dataDir: filepath.Join(dir, "data"),
		args: []string{
			"--config.file=" + cfg,
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--storage.tsdb.retention.time=1d",
			"--web.listen-address=127.0.0.1:" + itoa(port),
			"--web.enable-lifecycle",
			"--log.level=warn",
		},
	}
	return p, p.Start(ctx)
}

// Start (re)starts a stopped Prometheus on the same port and data.
func (p *Prometheus) Start(ctx context.Context) error {
	proc, err := p.c.StartProcess(p.name, p.c.bins.Prometheus, p.args, nil)
	if err != nil {
		return err
	}
	p.proc = proc
	hc := &http.Client{Timeout: 2 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return waitFor(wctx, 300*time.Millisecond, "Prometheus ready", func(context.Context) (bool, error) {
		if exited, err := proc.Exited(); exited {
			return false, fmt.Errorf("prometheus exited: %w (see %s)", err, proc.LogPath)
		}
		resp, err := hc.Get(p.URL + "/-/ready")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// Stop ends Prometheus (to simulate a metrics outage); Start brings it back.
func (p *Prometheus) Stop() error {
	if p.proc == nil {
		return nil
	}
	return p.proc.Stop()
}
