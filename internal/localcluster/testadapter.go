package localcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// CustomMetricsAPIServerVersion pins the custom-metrics-apiserver release
// whose test-adapter EnsureTestAdapter builds; it matches go.mod so the
// floor runs the same serving stack as spillway-metrics-adapter.
const CustomMetricsAPIServerVersion = "v1.37.0"

// EnsureTestAdapter returns the path of custom-metrics-apiserver's
// test-adapter (values held in memory: the library's serving floor),
// building it into the cache through a wrapper module when missing. A cold
// build takes ~7 minutes on 2 cores and needs no cluster.
func EnsureTestAdapter(ctx context.Context, out io.Writer) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	if out == nil {
		out = io.Discard
	}
	b := &builder{cache: cache, out: out}
	dir := filepath.Join(cache, "custom-metrics-apiserver-"+CustomMetricsAPIServerVersion)
	dst := filepath.Join(dir, "bin", "test-adapter")
	if exists(dst) {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", err
	}
	const pkg = "sigs.k8s.io/custom-metrics-apiserver/test-adapter"
	b.logf("building %s %s (cold: ~7 min on 2 cores)", pkg, CustomMetricsAPIServerVersion)
	start := time.Now()
	// A wrapper module, so the project's go.mod (half-written by others at
	// times) never decides the test-adapter's dependencies.
	mod := fmt.Sprintf("module spillway.local/testadapterbuild\n\ngo 1.26\n\nrequire sigs.k8s.io/custom-metrics-apiserver %s\n", CustomMetricsAPIServerVersion)
	tools := "//go:build tools\n\npackage testadapterbuild\n\nimport _ \"" + pkg + "\"\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
		return "", err
	}
	if err := b.run(ctx, dir, nil, "go", "mod", "tidy"); err != nil {
		return "", err
	}
	tmp := dst + ".tmp"
	if err := b.run(ctx, dir, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", tmp, pkg); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	b.logf("built test-adapter in %s", time.Since(start).Round(time.Second))
	return dst, nil
}
