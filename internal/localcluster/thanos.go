package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Thanos, for tests and benchmarks that read the fleet through a
// distributed query layer: Prometheus shards, each with a Thanos sidecar,
// and one `thanos query` over them.
const (
	ThanosVersion = "v0.42.5"
	// ThanosToolchain is required by the Thanos module's go directive
	// (go 1.26.10 at v0.42.5, newer than the project's toolchain).
	ThanosToolchain = "go1.27.3"
)

const thanosModule = "github.com/thanos-io/thanos"

// EnsureThanos returns the path of the pinned thanos binary, building it
// into the cache through a wrapper module when missing: Thanos's go.mod
// carries replace directives, which `go install module@version` refuses,
// so the wrapper copies them. A cold build takes ~3-5 minutes on 2 cores;
// a warm call only checks the file.
func EnsureThanos(ctx context.Context, out io.Writer) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	if out == nil {
		out = io.Discard
	}
	b := &builder{cache: cache, out: out}
	dir := filepath.Join(cache, "thanos-"+ThanosVersion)
	dst := filepath.Join(dir, "bin", "thanos")
	if exists(dst) {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", err
	}
	b.logf("building thanos %s with %s (cold: ~3-5 min on 2 cores)", ThanosVersion, ThanosToolchain)
	start := time.Now()
	info, err := downloadModule(ctx, thanosModule, ThanosVersion, ThanosToolchain)
	if err != nil {
		return "", err
	}
	gomod, err := os.ReadFile(info.GoMod)
	if err != nil {
		return "", err
	}
	replaces, err := replaceDirectives(gomod)
	if err != nil {
		return "", fmt.Errorf("%s: %w", info.GoMod, err)
	}
	b.logf("  wrapper module in %s with Thanos's %d replace directives", dir, len(replaces))
	var mod strings.Builder
	fmt.Fprintf(&mod, "module spillway.local/thanosbuild\n\ngo 1.26\n\nrequire %s %s\n\n", thanosModule, ThanosVersion)
	for _, r := range replaces {
		fmt.Fprintf(&mod, "replace %s\n", r)
	}
	tools := "//go:build tools\n\npackage thanosbuild\n\nimport _ \"" + thanosModule + "/cmd/thanos\"\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod.String()), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
		return "", err
	}
	// The build tags of Thanos's own release builds matter: without
	// slicelabels its gRPC codec reads Prometheus labels in the wrong
	// layout and the sidecar panics on its first Info call.
	tags, err := promuTags(filepath.Join(info.Dir, ".promu.yml"))
	if err != nil {
		return "", err
	}
	env := []string{"GOTOOLCHAIN=" + ThanosToolchain}
	b.logf("  resolving dependencies (go mod tidy)")
	if err := b.run(ctx, dir, env, "go", "mod", "tidy"); err != nil {
		return "", err
	}
	tmp := dst + ".tmp"
	const version = "github.com/prometheus/common/version."
	ld := "-s -w -X " + version + "Version=" + strings.TrimPrefix(ThanosVersion, "v") +
		" -X " + version + "Revision=" + ThanosVersion + " -X " + version + "Branch=" + ThanosVersion
	b.logf("  compiling %s/cmd/thanos (tags %s)", thanosModule, strings.Join(tags, ","))
	if err := b.run(ctx, dir, append(env, "CGO_ENABLED=0"), "go", "build", "-trimpath", "-tags", strings.Join(tags, ","),
		"-ldflags", ld, "-o", tmp, thanosModule+"/cmd/thanos"); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	b.logf("built thanos %s in %s", ThanosVersion, time.Since(start).Round(time.Second))
	return dst, nil
}

// promuTags returns the build tags Thanos's release builds use (build.tags.all
// in its .promu.yml, the Prometheus build tool's config).
func promuTags(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading Thanos's build config: %w", err)
	}
	var cfg struct {
		Build struct {
			Tags struct {
				All []string `json:"all"`
			} `json:"tags"`
		} `json:"build"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cfg.Build.Tags.All) == 0 {
		return nil, fmt.Errorf("%s lists no build tags (build.tags.all): the recipe no longer fits this Thanos", path)
	}
	return cfg.Build.Tags.All, nil
}

// replaceDirectives returns the replace directives of a go.mod, each as
// "old [version] => new version", from single-line `replace` statements and
// `replace (...)` blocks. A replacement by a directory (./ or ../ or an
// absolute path) is refused: it cannot be reproduced outside the module's
// own tree.
func replaceDirectives(gomod []byte) ([]string, error) {
	var out []string
	inBlock := false
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		switch {
		case inBlock && line == ")":
			inBlock = false
			continue
		case inBlock:
		case line == "replace (":
			inBlock = true
			continue
		case strings.HasPrefix(line, "replace "):
			line = strings.TrimSpace(strings.TrimPrefix(line, "replace "))
		default:
			continue
		}
		if line == "" {
			continue
		}
		old, repl, ok := strings.Cut(line, "=>")
		if !ok {
			return nil, fmt.Errorf("replace directive %q has no =>", line)
		}
		newPath := strings.Fields(repl)
		if len(newPath) > 0 {
			if p := newPath[0]; strings.HasPrefix(p, "./") || strings.HasPrefix(p, "../") || filepath.IsAbs(p) {
				return nil, fmt.Errorf("replace directive %q points at a directory", line)
			}
		}
		if len(newPath) != 2 {
			return nil, fmt.Errorf("replace directive %q: the replacement is not a module path and version", line)
		}
		out = append(out, strings.Join(strings.Fields(old), " ")+" => "+strings.Join(newPath, " "))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if inBlock {
		return nil, errors.New("unterminated replace block")
	}
	return out, nil
}

// ThanosOptions configures StartThanos.
type ThanosOptions struct {
	// Shards lists each shard's scrape targets: one Prometheus per entry,
	// with the external label shard=<index>, and a sidecar beside it.
	Shards [][]ScrapeTarget
	// ScrapeInterval is every shard's scrape interval (default 5s).
	ScrapeInterval time.Duration
	// NonStrict registers the sidecars as plain endpoints. Thanos Query
	// drops such an endpoint from the set it queries as soon as its health
	// check fails (it checks every 5 s), and from then on answers from the
	// remaining shards with neither a warning nor an error. Strict
	// endpoints (the default: a fleet's shards are known and static) stay
	// queried while down, so their outage is reported: as a warning when
	// partial responses are allowed, as an error when they are not.
	NonStrict bool
}

// Thanos is a fleet's distributed query layer on loopback: Prometheus
// shards, each with a Thanos sidecar, and one `thanos query` over the
// sidecars. Every process belongs to the cluster and ends with it.
type Thanos struct {
	// QueryURL serves the Prometheus HTTP API over all shards.
	QueryURL string
	Shards   []*ThanosShard
	c        *Cluster
	query    *Process
}

// ThanosShard is one Prometheus and its sidecar.
type ThanosShard struct {
	Index      int
	Prometheus *Prometheus
	// GRPCAddr is the sidecar's StoreAPI, which Thanos Query reads.
	GRPCAddr string
	httpURL  string
	c        *Cluster
	sidecar  *Process
	// lastSidecar is the sidecar process Start reruns after Stop.
	lastSidecar *Process
}

// ShardLabel is the external label that tells the shards apart.
const ShardLabel = "shard"

// StartThanos builds Thanos when missing (EnsureThanos), then starts one
// Prometheus and sidecar per shard and `thanos query` over them, and waits
// until the query sees every sidecar healthy. On error what it started
// keeps running until the cluster stops.
func (c *Cluster) StartThanos(ctx context.Context, name string, opts ThanosOptions) (*Thanos, error) {
	if len(opts.Shards) == 0 {
		return nil, errors.New("thanos: no shards")
	}
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = 5 * time.Second
	}
	bin, err := EnsureThanos(ctx, c.log())
	if err != nil {
		return nil, fmt.Errorf("building thanos: %w", err)
	}
	t := &Thanos{c: c}
	for i, targets := range opts.Shards {
		s, err := c.startThanosShard(ctx, bin, fmt.Sprintf("%s-shard-%d", name, i), i, opts.ScrapeInterval, targets)
		if err != nil {
			return nil, err
		}
		t.Shards = append(t.Shards, s)
	}

	var cfg strings.Builder
	cfg.WriteString("endpoints:\n")
	for _, s := range t.Shards {
		fmt.Fprintf(&cfg, "- address: %q\n  strict: %t\n", s.GRPCAddr, !opts.NonStrict)
	}
	dir := filepath.Join(c.dir, name+"-query")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(dir, "endpoints.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o644); err != nil {
		return nil, err
	}
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	t.QueryURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	if t.query, err = c.StartProcess(name+"-query", bin, []string{
		"query",
		"--http-address=127.0.0.1:" + itoa(ports[0]),
		"--grpc-address=127.0.0.1:" + itoa(ports[1]),
		"--endpoint.sd-config-file=" + cfgFile,
	}, nil); err != nil {
		return nil, err
	}
	if err := waitReady(ctx, t.query, t.QueryURL); err != nil {
		return nil, err
	}
	if err := t.WaitHealthy(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.log(), "[localcluster] thanos query over %d shards at %s\n", len(t.Shards), t.QueryURL)
	return t, nil
}

func (c *Cluster) startThanosShard(ctx context.Context, bin, name string, index int, interval time.Duration, targets []ScrapeTarget) (*ThanosShard, error) {
	prom, err := c.startPrometheus(ctx, name+"-prometheus", interval, targets, map[string]string{ShardLabel: itoa(index)})
	if err != nil {
		return nil, err
	}
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	s := &ThanosShard{
		Index:      index,
		Prometheus: prom,
		GRPCAddr:   "127.0.0.1:" + itoa(ports[0]),
		httpURL:    fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		c:          c,
	}
	// No object storage: the sidecar only serves Prometheus's data over
	// the StoreAPI (uploads, and the 2h block-duration flags they need on
	// Prometheus, do not apply).
	if s.sidecar, err = c.StartProcess(name+"-sidecar", bin, []string{
		"sidecar",
		"--prometheus.url=" + prom.URL,
		"--tsdb.path=" + prom.dataDir,
		"--grpc-address=" + s.GRPCAddr,
		"--http-address=127.0.0.1:" + itoa(ports[1]),
	}, nil); err != nil {
		return nil, err
	}
	// Ready once it has read Prometheus's external labels.
	return s, waitReady(ctx, s.sidecar, s.httpURL)
}

// waitReady waits until a Thanos component's /-/ready answers 200.
func waitReady(ctx context.Context, p *Process, base string) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return Poll(wctx, 300*time.Millisecond, p.Name+" ready", func(context.Context) (bool, error) {
		if exited, err := p.Exited(); exited {
			return false, fmt.Errorf("%s exited: %w (see %s)", p.Name, err, p.LogPath)
		}
		resp, err := hc.Get(base + "/-/ready")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// WaitHealthy waits until Thanos Query lists every shard's sidecar with a
// passing health check (it checks every 5 s).
func (t *Thanos) WaitHealthy(ctx context.Context) error {
	hc := &http.Client{Timeout: 5 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return Poll(wctx, 500*time.Millisecond, "thanos query to see every sidecar healthy", func(ctx context.Context) (bool, error) {
		healthy, err := t.healthyStores(ctx, hc)
		if err != nil {
			return false, err
		}
		for _, s := range t.Shards {
			if !healthy[s.GRPCAddr] {
				return false, fmt.Errorf("sidecar of shard %d (%s) not healthy yet; healthy: %v", s.Index, s.GRPCAddr, healthy)
			}
		}
		return true, nil
	})
}

// healthyStores reads /api/v1/stores: the endpoints whose last health
// check passed.
func (t *Thanos) healthyStores(ctx context.Context, hc *http.Client) (map[string]bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.QueryURL+"/api/v1/stores", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   map[string][]struct {
			Name      string  `json:"name"`
			LastError *string `json:"lastError"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("/api/v1/stores: HTTP %d: %w", resp.StatusCode, err)
	}
	healthy := map[string]bool{}
	for _, eps := range body.Data {
		for _, ep := range eps {
			healthy[ep.Name] = ep.LastError == nil
		}
	}
	return healthy, nil
}

// Stop ends the query and every shard; the cluster's Stop does too.
func (t *Thanos) Stop() error {
	errs := []error{t.query.Stop()}
	for _, s := range t.Shards {
		errs = append(errs, s.Stop())
	}
	return errors.Join(errs...)
}

// Stop ends the shard's sidecar and Prometheus: its part of the fleet is
// then unreachable through Thanos Query, as when a shard's node fails.
// Start brings both back with the same ports and data.
func (s *ThanosShard) Stop() error {
	if s.sidecar == nil {
		return nil
	}
	err := errors.Join(s.sidecar.Stop(), s.Prometheus.Stop())
	s.lastSidecar, s.sidecar = s.sidecar, nil
	return err
}

// Start runs a stopped shard again and waits until its sidecar is ready;
// Thanos.WaitHealthy then waits until the query uses it again.
func (s *ThanosShard) Start(ctx context.Context) error {
	if s.sidecar != nil {
		return fmt.Errorf("shard %d is running", s.Index)
	}
	if err := s.Prometheus.Start(ctx); err != nil {
		return err
	}
	p, err := s.c.Rerun(s.lastSidecar)
	if err != nil {
		return err
	}
	s.sidecar = p
	return waitReady(ctx, p, s.httpURL)
}
