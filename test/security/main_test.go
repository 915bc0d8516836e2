// Package security attacks spillway the way a hostile tenant would, on the
// real local control plane with spillway's three binaries running under the
// chart's RBAC (each with a token of its own ServiceAccount) and a real
// Prometheus. Tenants are namespaces: "mallory" attacks, "victim" is
// attacked. Each test performs one attack from docs/security.md and asserts
// that it fails, and that the defence left a trace where one is promised
// (a counter, an audit-visible denial).
package security

import (
	"context"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

const (
	repoRoot = "../.."
	binDir   = repoRoot + "/bin"
)

// Scrape jobs of the tenant's target (see forgedTarget).
const (
	// jobTenantPods is a cluster-wide pod job as a cluster would have it:
	// the target's own labels never override job and instance.
	jobTenantPods = "kubernetes-pods"
	// jobTenantHonor is the same target in a job with honor_labels: true,
	// the misconfiguration an older docs/install.md suggested: whatever
	// the target writes, job included, reaches Prometheus as written.
	jobTenantHonor = "kubernetes-pods-honor-labels"
)

var (
	cluster *localcluster.Cluster
	// tenant is a scrape target that namespace mallory controls; tests set
	// what it publishes.
	tenant = &forgedTarget{}
)

func TestMain(m *testing.M) {
	opts := localcluster.Options{KeepDir: os.Getenv("SPILLWAY_KEEP_CLUSTER_DIR") != ""}
	os.Exit(framework.Main(m, opts, func(c *localcluster.Cluster) { cluster = c }))
}

var (
	envOnce sync.Once
	envErr  error
	env     *demo.Env
)

// spillway starts, once for the package, the seed's node pools and all of
// spillway (exporter with simulated GPUs, controller, adapter) under the
// chart's RBAC, with a Prometheus that scrapes spillway's jobs and the
// tenant's target in both tenant jobs.
func spillway(t *testing.T) *demo.Env {
	t.Helper()
	envOnce.Do(func() {
		addr, err := tenant.start()
		if err != nil {
			envErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		env, envErr = demo.StartEnv(ctx, cluster, demo.Options{
			BinDir: binDir, RepoRoot: repoRoot, Log: os.Stderr, AsServiceAccounts: true,
			ExtraScrapeTargets: []localcluster.ScrapeTarget{
				{Job: jobTenantPods, Address: addr},
				{Job: jobTenantHonor, Address: addr, HonorLabels: true},
			},
		})
	})
	if envErr != nil {
		t.Fatalf("starting spillway (build it first: make build): %v", envErr)
	}
	return env
}

// forgedTarget serves a Prometheus text exposition that a test sets: the
// /metrics of a pod in namespace mallory.
type forgedTarget struct {
	mu   sync.Mutex
	body string
}

// Set replaces what the target publishes ("" publishes nothing).
func (f *forgedTarget) Set(exposition string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.body = exposition
}

func (f *forgedTarget) start() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		body := f.body
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte(body))
	})}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}
