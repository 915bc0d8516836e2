package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// KEDAVersion pins the KEDA release whose operator and metrics API server
// EnsureKEDA builds; the peer spillway is measured against.
const KEDAVersion = "v2.21.0"

// KEDABinaries are KEDA's two programs the local cluster runs, and the
// module's source tree (its CRDs are read from there at run time).
type KEDABinaries struct {
	Operator  string
	Adapter   string
	ModuleDir string
}

const kedaModule = "github.com/kedacore/keda/v2"

// EnsureKEDA returns KEDA's operator and metrics API server, building them
// into <cache>/keda-<version>/bin through a wrapper module when missing. A
// cold build takes ~8 minutes on 2 cores (the adapter pulls in every
// scaler's cloud SDK); later calls only check files. It needs no cluster.
func EnsureKEDA(ctx context.Context, out io.Writer) (*KEDABinaries, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = io.Discard
	}
	b := &builder{cache: cache, out: out}
	dir := filepath.Join(cache, "keda-"+KEDAVersion)
	kb := &KEDABinaries{
		Operator: filepath.Join(dir, "bin", "keda-operator"),
		Adapter:  filepath.Join(dir, "bin", "keda-adapter"),
	}
	if kb.ModuleDir, err = moduleDir(ctx, kedaModule, KEDAVersion, ""); err != nil {
		return nil, err
	}
	if exists(kb.Operator) && exists(kb.Adapter) {
		return kb, nil
	}
	if err := b.prepareKEDAModule(ctx, dir, kb.ModuleDir); err != nil {
		return nil, err
	}
	ld := "-s -w -X " + kedaModule + "/version.Version=" + KEDAVersion
	for _, p := range []struct{ pkg, dst, eta string }{
		// The adapter first: it compiles nearly everything the operator needs.
		{kedaModule + "/cmd/adapter", kb.Adapter, "cold: ~8 min on 2 cores"},
		{kedaModule + "/cmd/operator", kb.Operator, "after the adapter: ~1 min"},
	} {
		if exists(p.dst) {
			continue
		}
		b.logf("building KEDA %s %s (%s)", filepath.Base(p.pkg), KEDAVersion, p.eta)
		start := time.Now()
		tmp := p.dst + ".tmp"
		if err := b.run(ctx, dir, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags", ld, "-o", tmp, p.pkg); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, p.dst); err != nil {
			return nil, err
		}
		b.logf("built KEDA %s in %s", filepath.Base(p.pkg), time.Since(start).Round(time.Second))
	}
	return kb, nil
}

// goModDirective matches the one-line replace directives of a go.mod whose
// target is a module version (not a local path), and its exclude directives.
var goModDirective = regexp.MustCompile(`^\s*(replace\s+\S+(?:\s+v\S+)?\s+=>\s+\S+\s+v\S+|exclude\s+\S+\s+v\S+)\s*$`)

// prepareKEDAModule writes a wrapper module requiring KEDA and copying the
// replace and exclude directives of KEDA's own go.mod (they apply only in
// the main module, and KEDA needs its replace to resolve), then resolves it.
func (b *builder) prepareKEDAModule(ctx context.Context, dir, moduleDir string) error {
	if exists(filepath.Join(dir, "go.sum")) && exists(filepath.Join(dir, "tools.go")) {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	b.logf("preparing wrapper module for %s %s in %s", kedaModule, KEDAVersion, dir)
	gomod, err := os.ReadFile(filepath.Join(moduleDir, "go.mod"))
	if err != nil {
		return err
	}
	var mod strings.Builder
	fmt.Fprintf(&mod, "module spillway.local/kedabuild\n\ngo 1.26.0\n\nrequire %s %s\n\n", kedaModule, KEDAVersion)
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if m := goModDirective.FindStringSubmatch(sc.Text()); m != nil {
			fmt.Fprintln(&mod, m[1])
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("no replace directive found in %s/go.mod: the wrapper module recipe no longer fits", moduleDir)
	}
	tools := "//go:build tools\n\npackage kedabuild\n\nimport (\n" +
		"\t_ \"" + kedaModule + "/cmd/adapter\"\n" +
		"\t_ \"" + kedaModule + "/cmd/operator\"\n)\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
		return err
	}
	b.logf("  resolving dependencies (go mod tidy; downloads the cloud SDKs of KEDA's scalers on a cold cache)")
	return b.run(ctx, dir, nil, "go", "mod", "tidy")
}

// KEDANamespace is where KEDA's objects live (the namespace of its
// Services; KEDA_CLUSTER_OBJECT_NAMESPACE, whose Secrets its
// ClusterTriggerAuthentications read).
const KEDANamespace = "keda"

// KEDAAPIService is the APIService KEDA's metrics API server owns. Only one
// server can own it: with KEDA in a cluster, spillway's adapter serves the
// custom metrics API (HPA type: Pods) only.
const KEDAAPIService = "v1beta1.external.metrics.k8s.io"

// kedaAdapterService is the Service KEDAAPIService points at; KEDA's
// serving certificate is valid for its in-cluster name, which the
// aggregator verifies.
const kedaAdapterService = "keda-metrics-apiserver"

// KEDA is KEDA's operator and metrics API server running as local processes
// against the cluster, linked by mutual TLS over gRPC, with
// external.metrics.k8s.io served by the adapter through the aggregator.
type KEDA struct {
	Binaries *KEDABinaries
	// AdapterPort is the HTTPS port of the metrics API server.
	AdapterPort int
	// OperatorMetricsAddr and AdapterMetricsAddr are host:port of each
	// program's plain-HTTP /metrics.
	OperatorMetricsAddr string
	AdapterMetricsAddr  string
	// CAFile is the CA of KEDA's certificates (the gRPC link and the
	// metrics API server's serving certificate).
	CAFile            string
	Operator, Adapter *Process
}

// StartKEDA builds KEDA when missing (see EnsureKEDA), installs its CRDs
// from the module directory, writes the certificates of its gRPC link,
// registers KEDAAPIService to its metrics API server on localhost (through
// an ExternalName Service, verified by KEDA's CA), starts the operator and
// the metrics API server, and waits until the aggregator serves the API.
// Both programs end with the cluster. Registering the APIService replaces
// whichever server owned external.metrics.k8s.io before.
func (c *Cluster) StartKEDA(ctx context.Context) (*KEDA, error) {
	kb, err := EnsureKEDA(ctx, c.log())
	if err != nil {
		return nil, err
	}
	k := &KEDA{Binaries: kb}
	if err := c.installKEDACRDs(ctx, kb.ModuleDir); err != nil {
		return nil, err
	}
	certDir := filepath.Join(c.dir, "keda", "certs")
	caPEM, err := writeKEDACerts(certDir)
	if err != nil {
		return nil, fmt.Errorf("writing KEDA's certificates: %w", err)
	}
	k.CAFile = filepath.Join(certDir, "ca.crt")
	p, err := FreePorts(6)
	if err != nil {
		return nil, err
	}
	grpcAddr := "127.0.0.1:" + itoa(p[0])
	probeAddr := "127.0.0.1:" + itoa(p[1])
	k.OperatorMetricsAddr = "127.0.0.1:" + itoa(p[2])
	k.AdapterPort = p[3]
	adapterMetricsPort := p[4]
	k.AdapterMetricsAddr = "127.0.0.1:" + itoa(adapterMetricsPort)
	if err := c.Apply(ctx, []byte(kedaAPIService(k.AdapterPort, caPEM))); err != nil {
		return nil, fmt.Errorf("registering KEDA's APIService: %w", err)
	}
	env := []string{
		"KUBECONFIG=" + c.KubeconfigPath(),
		// Every namespace; KEDA's own objects in KEDANamespace.
		"WATCH_NAMESPACE=",
		"POD_NAMESPACE=" + KEDANamespace,
		"KEDA_CLUSTER_OBJECT_NAMESPACE=" + KEDANamespace,
	}
	if k.Operator, err = c.StartProcess("keda-operator", kb.Operator, []string{
		"--leader-elect=false",
		"--metrics-bind-address=" + k.OperatorMetricsAddr,
		"--health-probe-bind-address=" + probeAddr,
		// The gRPC metrics service the adapter asks for each metric.
		"--metrics-service-bind-address=" + grpcAddr,
		// ca.crt, tls.crt, tls.key written above; KEDA's own rotation
		// (a Secret, in-cluster Service names) stays off.
		"--cert-dir=" + certDir,
		"--enable-cert-rotation=false",
		"--ca-dir=" + certDir,
		"--zap-encoder=console",
		"--zap-log-level=info",
	}, env); err != nil {
		return nil, err
	}
	if err := waitHTTPOK(ctx, "KEDA operator readiness", "http://"+probeAddr+"/readyz", k.Operator); err != nil {
		return nil, err
	}
	if k.Adapter, err = c.StartProcess("keda-adapter", kb.Adapter, []string{
		"--secure-port=" + itoa(k.AdapterPort),
		"--bind-address=127.0.0.1",
		// The serving certificate and the gRPC client certificate are the
		// same pair: the adapter reads ca.crt, tls.crt and tls.key from
		// --cert-dir for the link to the operator.
		"--cert-dir=" + certDir,
		"--tls-cert-file=" + filepath.Join(certDir, "tls.crt"),
		"--tls-private-key-file=" + filepath.Join(certDir, "tls.key"),
		"--lister-kubeconfig=" + c.KubeconfigPath(),
		"--authentication-kubeconfig=" + c.KubeconfigPath(),
		"--authorization-kubeconfig=" + c.KubeconfigPath(),
		"--metrics-service-address=" + grpcAddr,
		"--port=" + itoa(adapterMetricsPort),
		"--zap-encoder=console",
		"--zap-log-level=info",
	}, env); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rc := c.client.Discovery().RESTClient()
	if err := Poll(wctx, time.Second, "KEDA's external.metrics.k8s.io through the aggregator", func(ctx context.Context) (bool, error) {
		if exited, err := k.Adapter.Exited(); exited {
			return false, fmt.Errorf("keda-adapter exited: %w (see %s)", err, k.Adapter.LogPath)
		}
		_, err := rc.Get().AbsPath("/apis/external.metrics.k8s.io/v1beta1").DoRaw(ctx)
		return err == nil, err
	}); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.log(), "[localcluster] KEDA %s serving %s on localhost:%d\n", KEDAVersion, KEDAAPIService, k.AdapterPort)
	return k, nil
}

// installKEDACRDs applies the CRDs shipped in KEDA's module.
func (c *Cluster) installKEDACRDs(ctx context.Context, moduleDir string) error {
	crds, err := filepath.Glob(filepath.Join(moduleDir, "config", "crd", "bases", "*.yaml"))
	if err != nil {
		return err
	}
	if len(crds) == 0 {
		return fmt.Errorf("no KEDA CRDs found under %s/config/crd/bases", moduleDir)
	}
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := c.Apply(ctx, b); err != nil {
			return fmt.Errorf("installing KEDA CRD %s: %w", filepath.Base(f), err)
		}
	}
	return nil
}

// writeKEDACerts writes the files KEDA reads from its cert dir: ca.crt and
// one pair (tls.crt, tls.key) that serves the operator's gRPC service and
// the metrics API, and authenticates the adapter to the operator (the
// operator requires a client certificate from that CA). It returns the CA.
func writeKEDACerts(dir string) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	root, err := newCA("keda-local-ca")
	if err != nil {
		return nil, err
	}
	ns := KEDANamespace
	crt, key, err := root.issue("keda", nil, true,
		"keda-operator."+ns+".svc", kedaAdapterService+"."+ns+".svc", kedaAdapterService+"."+ns+".svc.cluster.local")
	if err != nil {
		return nil, err
	}
	caPEM := root.certPEM()
	for name, b := range map[string][]byte{"ca.crt": caPEM, "tls.crt": crt, "tls.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// kedaAPIService is KEDA's namespace, the ExternalName Service on localhost
// and KEDAAPIService pointing at it with KEDA's CA.
func kedaAPIService(port int, caPEM []byte) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
# Local development only: kube-apiserver proxies to https://localhost:<port>.
apiVersion: v1
kind: Service
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  type: ExternalName
  externalName: localhost
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: %[3]s
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: %[4]s
  service:
    namespace: %[1]s
    name: %[2]s
    port: %[5]d
`, KEDANamespace, kedaAdapterService, KEDAAPIService, base64.StdEncoding.EncodeToString(caPEM), port)
}

// waitHTTPOK polls url until it answers 200, failing early when proc exits.
func waitHTTPOK(ctx context.Context, what, url string, proc *Process) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return Poll(wctx, 300*time.Millisecond, what, func(context.Context) (bool, error) {
		if exited, err := proc.Exited(); exited {
			return false, fmt.Errorf("%s exited: %w (see %s)", proc.Name, err, proc.LogPath)
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}
