package localcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// Prometheus does with Kubernetes pod discovery and the usual relabeling:
// one target per running pod with an IP, labelled namespace and pod, with
// instance = <pod IP>:Port. Debian's Prometheus is built without
// Kubernetes discovery, so the cluster plays that part: it lists the pods
// every second into a file-discovery file. kwok pods have no network, so
// the address scraped is Address (the simulated model servers) and the
// path /pods/<namespace>/<name>/metrics; instance keeps the pod's IP,
// exactly what the adapter's provenance check reads.
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
	URL      string
	c        *Cluster
	args     []string
	proc     *Process
	name     string
	dir      string
	dataDir  string
	port     int
	interval time.Duration
	// externalLabels go in the global config (a Thanos sidecar requires
	// them; see StartThanos).
	externalLabels map[string]string

	mu      sync.Mutex
	targets []ScrapeTarget
}

// StartPrometheus writes a config for the targets and starts Prometheus.
func (c *Cluster) StartPrometheus(ctx context.Context, name string, interval time.Duration, targets []ScrapeTarget) (*Prometheus, error) {
	return c.startPrometheus(ctx, name, interval, targets, nil)
}

// startPrometheus is StartPrometheus with external labels in the global
// config (which a Thanos sidecar requires; see StartThanos).
func (c *Cluster) startPrometheus(ctx context.Context, name string, interval time.Duration, targets []ScrapeTarget, externalLabels map[string]string) (*Prometheus, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := &Prometheus{
		URL:            fmt.Sprintf("http://127.0.0.1:%d", port),
		c:              c,
		name:           name,
		dir:            dir,
		dataDir:        filepath.Join(dir, "data"),
		port:           port,
		interval:       interval,
		externalLabels: externalLabels,
		args: []string{
			"--config.file=" + filepath.Join(dir, "prometheus.yml"),
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--storage.tsdb.retention.time=1d",
			"--web.listen-address=127.0.0.1:" + itoa(port),
			"--web.enable-lifecycle",
			"--log.level=warn",
		},
	}
	if err := p.addTargets(targets); err != nil {
		return nil, err
	}
	return p, p.Start(ctx)
}

// AddTargets adds scrape jobs to a running Prometheus: it rewrites the
// configuration and has Prometheus reload it. Servers that need
// Prometheus's URL to start (the metrics adapter) are scraped this way.
func (p *Prometheus) AddTargets(ctx context.Context, targets ...ScrapeTarget) error {
	if err := p.addTargets(targets); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/-/reload", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reloading Prometheus: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("reloading Prometheus: %s: %s", resp.Status, b)
	}
	return nil
}

// addTargets appends targets, starts the pod discovery of those that need
// it and writes the configuration of every target so far.
func (p *Prometheus) addTargets(targets []ScrapeTarget) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range targets {
		if t.Pods == nil {
			continue
		}
		file := p.podTargetsFile(t)
		if err := os.WriteFile(file, []byte("[]"), 0o644); err != nil {
			return err
		}
		dctx, cancel := context.WithCancel(context.Background())
		p.c.onStop(cancel)
		go p.c.discoverPods(dctx, *t.Pods, t.Address, file)
	}
	p.targets = append(p.targets, targets...)
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", p.interval, p.interval)
	if len(p.externalLabels) > 0 {
		b.WriteString("  external_labels:\n")
		for _, k := range slices.Sorted(maps.Keys(p.externalLabels)) {
			fmt.Fprintf(&b, "    %s: %q\n", k, p.externalLabels[k])
		}
	}
	b.WriteString("scrape_configs:\n")
	for _, t := range p.targets {
		if t.Pods != nil {
			writePodDiscovery(&b, t, p.podTargetsFile(t))
			continue
		}
		path := t.Path
		if path == "" {
			path = "/metrics"
		}
		fmt.Fprintf(&b, "- job_name: %q\n  metrics_path: %q\n  honor_labels: %t\n  static_configs:\n  - targets: [%q]\n", t.Job, path, t.HonorLabels, t.Address)
	}
	return os.WriteFile(filepath.Join(p.dir, "prometheus.yml"), []byte(b.String()), 0o644)
}

// podTargetsFile is the file-discovery file of a pod-discovery job.
func (p *Prometheus) podTargetsFile(t ScrapeTarget) string {
	return filepath.Join(p.dir, fmt.Sprintf("%s-%d-targets.json", t.Job, p.port))
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
	return Poll(wctx, 300*time.Millisecond, "Prometheus ready", func(context.Context) (bool, error) {
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

// writePodDiscovery writes a file-discovery job for t (see PodDiscovery)
// reading targets from file.
func writePodDiscovery(b *strings.Builder, t ScrapeTarget, file string) {
	fmt.Fprintf(b, "- job_name: %q\n  honor_labels: %t\n  file_sd_configs:\n  - files: [%q]\n    refresh_interval: 1s\n", t.Job, t.HonorLabels, file)
}

// fileTarget is one entry of a Prometheus file-discovery file.
type fileTarget struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// discoverPods keeps file listing, once a second until ctx ends, one target
// per running pod with an IP that carries the discovery's label: what
// Kubernetes pod discovery with the usual relabeling yields (namespace,
// pod, instance = <pod IP>:port), with the address and path pointed at the
// simulated servers. The file is replaced atomically.
func (c *Cluster) discoverPods(ctx context.Context, d PodDiscovery, address, file string) {
	sel := ""
	if d.Label != "" {
		sel = d.Label + "=" + d.Value
	}
	write := func() {
		pods, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return
		}
		targets := []fileTarget{}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
				continue
			}
			targets = append(targets, fileTarget{Targets: []string{address}, Labels: map[string]string{
				"namespace":        p.Namespace,
				"pod":              p.Name,
				"instance":         net.JoinHostPort(p.Status.PodIP, strconv.Itoa(d.Port)),
				"__metrics_path__": "/pods/" + p.Namespace + "/" + p.Name + "/metrics",
			}})
		}
		data, err := json.Marshal(targets)
		if err != nil {
			return
		}
		tmp := file + ".tmp"
		if os.WriteFile(tmp, data, 0o644) == nil {
			_ = os.Rename(tmp, file)
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		write()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
