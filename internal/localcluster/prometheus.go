package localcluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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
	// Pods, when set, makes this a pod-discovery job instead of a static
	// target: see PodDiscovery.
	Pods *PodDiscovery
}

// PodDiscovery scrapes the cluster's pods the way a real cluster's
// Prometheus does (kubernetes_sd_configs, role pod, against this cluster's
// API server): one target per running pod with an IP, labelled namespace
// and pod, with instance = <pod IP>:Port. kwok pods have no network, so the
// address scraped is rewritten to Address (the simulated model servers) and
// the path to /pods/<namespace>/<name>/metrics; instance keeps the pod's
// IP, exactly what the adapter's provenance check reads.
type PodDiscovery struct {
	// Label is a label key=value a pod must carry to be scraped; an empty
	// Label scrapes every pod.
	Label, Value string
	// Port is the port instance names (the model server's port in a real
	// pod).
	Port int
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
		if t.Pods != nil {
			writePodDiscovery(&b, t, c.KubeconfigPath())
			continue
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

// writePodDiscovery writes a kubernetes_sd job for t (see PodDiscovery).
func writePodDiscovery(b *strings.Builder, t ScrapeTarget, kubeconfig string) {
	keep := ""
	if t.Pods.Label != "" {
		keep = fmt.Sprintf("\n  - source_labels: [__meta_kubernetes_pod_label_%s]\n    regex: %s\n    action: keep", sdLabelName(t.Pods.Label), regexpQuote(t.Pods.Value))
	}
	fmt.Fprintf(b, `- job_name: %q
  honor_labels: %t
  kubernetes_sd_configs:
  - role: pod
    kubeconfig_file: %q
  relabel_configs:%s
  - source_labels: [__meta_kubernetes_pod_phase]
    regex: Running
    action: keep
  - source_labels: [__meta_kubernetes_pod_ip]
    regex: (.+)
    action: keep
  - source_labels: [__meta_kubernetes_pod_ip]
    regex: (.+)
    replacement: ${1}:%d
    target_label: instance
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
  - source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_name]
    separator: /
    regex: (.+)
    replacement: /pods/${1}/metrics
    target_label: __metrics_path__
  - replacement: %q
    target_label: __address__
`, t.Job, t.HonorLabels, kubeconfig, keep, t.Pods.Port, t.Address)
}

// sdLabelName is how Prometheus's pod discovery spells a label key in its
// meta label: every character outside [a-zA-Z0-9_] becomes '_'.
func sdLabelName(key string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, key)
}

// regexpQuote quotes a literal for a relabel regex, as a YAML string.
func regexpQuote(v string) string {
	return strconv.Quote(regexp.QuoteMeta(v))
}
