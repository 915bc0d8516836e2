package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Pinned versions of every control-plane part the harness runs. Changing one
// changes its cache key, so a stale binary is never reused.
const (
	KubernetesVersion = "v1.37.2"
	// StagingVersion is the version published for the k8s.io/* staging modules
	// that k8s.io/kubernetes replaces with ./staging paths.
	StagingVersion   = "v0.37.2"
	EtcdVersion      = "v3.6.16"
	KwokVersion      = "v0.8.0"
	KarpenterVersion = "v1.15.0"
	// KarpenterToolchain is required by the Karpenter module's go directive.
	KarpenterToolchain = "go1.27.3"
)

// Binaries holds absolute paths of the built control-plane programs.
type Binaries struct {
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kubectl               string
	Etcd                  string
	Kwok                  string
	KarpenterKwok         string
	Prometheus            string
	// KwokModuleDir and KarpenterModuleDir are the module source trees in the
	// Go module cache; stages and CRDs are read from them at run time.
	KwokModuleDir      string
	KarpenterModuleDir string
}

// CacheDir is where built binaries live, keyed by component and version.
// SPILLWAY_CACHE_DIR overrides the user cache directory.
func CacheDir() (string, error) {
	if d := os.Getenv("SPILLWAY_CACHE_DIR"); d != "" {
		return filepath.Abs(d)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the user cache directory (set SPILLWAY_CACHE_DIR): %w", err)
	}
	return filepath.Join(base, "spillway"), nil
}

// builder builds one pinned program set and reports progress to out.
type builder struct {
	cache string
	out   io.Writer
}

// EnsureBinaries returns the pinned binaries, building any that are missing
// from the Go module proxy. A cold build takes ~20 minutes on 2 cores; a warm
// call only checks files.
func EnsureBinaries(ctx context.Context, out io.Writer) (*Binaries, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = io.Discard
	}
	b := &builder{cache: cache, out: out}
	bins := &Binaries{}

	kubeDir := filepath.Join(cache, "kubernetes-"+KubernetesVersion)
	kube := []struct {
		dst *string
		pkg string
	}{
		{&bins.KubeAPIServer, "k8s.io/kubernetes/cmd/kube-apiserver"},
		{&bins.KubeControllerManager, "k8s.io/kubernetes/cmd/kube-controller-manager"},
		{&bins.KubeScheduler, "k8s.io/kubernetes/cmd/kube-scheduler"},
		{&bins.Kubectl, "k8s.io/kubernetes/cmd/kubectl"},
	}
	for _, k := range kube {
		*k.dst = filepath.Join(kubeDir, "bin", filepath.Base(k.pkg))
		if err := b.buildKube(ctx, kubeDir, k.pkg, *k.dst); err != nil {
			return nil, err
		}
	}

	bins.Etcd = filepath.Join(cache, "etcd-"+EtcdVersion, "bin", "etcd")
	if err := b.buildEtcd(ctx, filepath.Dir(filepath.Dir(bins.Etcd)), bins.Etcd); err != nil {
		return nil, err
	}

	bins.Kwok = filepath.Join(cache, "kwok-"+KwokVersion, "bin", "kwok")
	if err := b.goInstall(ctx, "sigs.k8s.io/kwok/cmd/kwok@"+KwokVersion, bins.Kwok, ""); err != nil {
		return nil, err
	}
	// Karpenter's kwok provider installs as "kwok" too; a directory of its own
	// keeps it from overwriting the real kwok.
	bins.KarpenterKwok = filepath.Join(cache, "karpenter-kwok-"+KarpenterVersion, "bin", "kwok")
	if err := b.goInstall(ctx, "sigs.k8s.io/karpenter/kwok@"+KarpenterVersion, bins.KarpenterKwok, KarpenterToolchain); err != nil {
		return nil, err
	}

	if bins.KwokModuleDir, err = moduleDir(ctx, "sigs.k8s.io/kwok", KwokVersion, ""); err != nil {
		return nil, err
	}
	if bins.KarpenterModuleDir, err = moduleDir(ctx, "sigs.k8s.io/karpenter", KarpenterVersion, KarpenterToolchain); err != nil {
		return nil, err
	}

	if bins.Prometheus, err = exec.LookPath("prometheus"); err != nil {
		return nil, errors.New("prometheus not found on PATH: install Debian's package (apt-get install -y prometheus); .ci/run does this")
	}
	return bins, nil
}

func exists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func (b *builder) logf(format string, args ...any) {
	fmt.Fprintf(b.out, "[localcluster] "+format+"\n", args...)
}

// run executes a go command in dir, streaming a heartbeat so a person
// watching a 10-minute compile knows it is alive.
func (b *builder) run(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("%s %s (in %s): %w\n%s", name, strings.Join(args, " "), dir, err, tail(buf.String(), 4000))
			}
			return nil
		case <-tick.C:
			b.logf("  … still running %s %s (%s)", name, args[0], time.Since(start).Round(time.Second))
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// buildKube builds one k8s.io/kubernetes command through a wrapper module.
// k8s.io/kubernetes maps its staging modules to ./staging paths that do not
// exist in the downloaded module, so the wrapper replaces each with its
// published version.
func (b *builder) buildKube(ctx context.Context, dir, pkg, dst string) error {
	if exists(dst) {
		return nil
	}
	if err := b.prepareKubeModule(ctx, dir); err != nil {
		return err
	}
	b.logf("building %s %s (cold: kube-apiserver ~9 min, each other ~2-4 min on 2 cores)", filepath.Base(pkg), KubernetesVersion)
	start := time.Now()
	minor := strings.Split(strings.TrimPrefix(KubernetesVersion, "v"), ".")[1]
	ld := strings.Join([]string{
		"-s", "-w",
		"-X", "k8s.io/component-base/version.gitVersion=" + KubernetesVersion,
		"-X", "k8s.io/component-base/version.gitMajor=1",
		"-X", "k8s.io/component-base/version.gitMinor=" + minor,
		"-X", "k8s.io/component-base/version.gitTreeState=clean",
		"-X", "k8s.io/client-go/pkg/version.gitVersion=" + KubernetesVersion,
		"-X", "k8s.io/client-go/pkg/version.gitMajor=1",
		"-X", "k8s.io/client-go/pkg/version.gitMinor=" + minor,
	}, " ")
	tmp := dst + ".tmp"
	if err := b.run(ctx, dir, []string{"CGO_ENABLED=0", "GOFLAGS=-mod=mod"}, "go", "build", "-trimpath", "-ldflags", ld, "-o", tmp, pkg); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	b.logf("built %s in %s", filepath.Base(pkg), time.Since(start).Round(time.Second))
	return nil
}

var stagingReplace = regexp.MustCompile(`^\s*(k8s\.io/[^\s]+)\s+=>\s+\./staging/`)

func (b *builder) prepareKubeModule(ctx context.Context, dir string) error {
	if exists(filepath.Join(dir, "go.sum")) && exists(filepath.Join(dir, "tools.go")) {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	b.logf("preparing wrapper module for k8s.io/kubernetes %s in %s", KubernetesVersion, dir)
	info, err := downloadModule(ctx, "k8s.io/kubernetes", KubernetesVersion, "")
	if err != nil {
		return err
	}
	gomod, err := os.ReadFile(info.GoMod)
	if err != nil {
		return err
	}
	var mod strings.Builder
	fmt.Fprintf(&mod, "module spillway.local/kubebuild\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\n", KubernetesVersion)
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if m := stagingReplace.FindStringSubmatch(sc.Text()); m != nil {
			fmt.Fprintf(&mod, "replace %s => %s %s\n", m[1], m[1], StagingVersion)
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("no ./staging replaces found in %s: the wrapper module recipe no longer fits", info.GoMod)
	}
	b.logf("  %d staging modules replaced by their %s releases", n, StagingVersion)
	tools := "//go:build tools\n\npackage kubebuild\n\nimport (\n" +
		"\t_ \"k8s.io/kubernetes/cmd/kube-apiserver\"\n" +
		"\t_ \"k8s.io/kubernetes/cmd/kube-controller-manager\"\n" +
		"\t_ \"k8s.io/kubernetes/cmd/kube-scheduler\"\n" +
		"\t_ \"k8s.io/kubernetes/cmd/kubectl\"\n)\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
		return err
	}
	b.logf("  resolving dependencies (go mod tidy; downloads ~300 modules on a cold cache)")
	return b.run(ctx, dir, nil, "go", "mod", "tidy")
}

// buildEtcd builds etcd through a wrapper module: etcd's server module has
// local replaces, so "go install module@version" refuses it.
func (b *builder) buildEtcd(ctx context.Context, dir, dst string) error {
	if exists(dst) {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	b.logf("building etcd %s (~1 min)", EtcdVersion)
	start := time.Now()
	mod := fmt.Sprintf("module spillway.local/etcdbuild\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n", EtcdVersion)
	tools := "//go:build tools\n\npackage etcdbuild\n\nimport _ \"go.etcd.io/etcd/server/v3\"\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
		return err
	}
	if err := b.run(ctx, dir, nil, "go", "mod", "tidy"); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	if err := b.run(ctx, dir, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", tmp, "go.etcd.io/etcd/server/v3"); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	b.logf("built etcd in %s", time.Since(start).Round(time.Second))
	return nil
}

func (b *builder) goInstall(ctx context.Context, target, dst, toolchain string) error {
	if exists(dst) {
		return nil
	}
	gobin := filepath.Dir(dst)
	if err := os.MkdirAll(gobin, 0o755); err != nil {
		return err
	}
	b.logf("building %s (cold: a few minutes)", target)
	start := time.Now()
	env := []string{"GOBIN=" + gobin, "CGO_ENABLED=0"}
	if toolchain != "" {
		env = append(env, "GOTOOLCHAIN="+toolchain)
	}
	tmpdir, err := os.MkdirTemp("", "spillway-install-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpdir)
	if err := b.run(ctx, tmpdir, env, "go", "install", "-trimpath", target); err != nil {
		return err
	}
	if !exists(dst) {
		return fmt.Errorf("go install %s did not produce %s", target, dst)
	}
	b.logf("built %s in %s", target, time.Since(start).Round(time.Second))
	return nil
}

type moduleInfo struct {
	Dir   string
	GoMod string
	Error string
}

func downloadModule(ctx context.Context, path, version, toolchain string) (*moduleInfo, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", path+"@"+version)
	cmd.Env = os.Environ()
	if toolchain != "" {
		cmd.Env = append(cmd.Env, "GOTOOLCHAIN="+toolchain)
	}
	// Run outside any module so the project's go.mod does not interfere.
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	var info moduleInfo
	if jerr := json.Unmarshal(out, &info); jerr != nil && err == nil {
		err = jerr
	}
	if err != nil {
		return nil, fmt.Errorf("go mod download %s@%s: %w %s", path, version, err, info.Error)
	}
	if info.Error != "" {
		return nil, fmt.Errorf("go mod download %s@%s: %s", path, version, info.Error)
	}
	return &info, nil
}

func moduleDir(ctx context.Context, path, version, toolchain string) (string, error) {
	info, err := downloadModule(ctx, path, version, toolchain)
	if err != nil {
		return "", err
	}
	return info.Dir, nil
}
