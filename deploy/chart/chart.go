// Package chart renders and lints spillway's Helm chart (deploy/helm/spillway)
// with the pinned helm from tools/helm, for the chart's tests and the install
// test. It works from a checkout of the repository only: it finds the chart
// relative to this source file.
package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// KubeVersion is the Kubernetes version charts are rendered for. helm built
// with plain `go build` (as tools/helm is) would otherwise assume v1.20,
// below the chart's kubeVersion.
const KubeVersion = "v1.37.2"

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Dir is the chart's directory.
func Dir() string { return filepath.Join(Root(), "deploy", "helm", "spillway") }

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// Helm returns the pinned helm binary: $HELM when set, else bin/helm, which
// is built from tools/helm (like `make bin/helm`) when missing.
func Helm(ctx context.Context) (string, error) {
	helmOnce.Do(func() {
		if p := os.Getenv("HELM"); p != "" {
			helmPath = p
			return
		}
		p := filepath.Join(Root(), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			helmPath = p
			return
		}
		cmd := exec.CommandContext(ctx, "go", "-C", filepath.Join(Root(), "tools", "helm"), "build", "-o", p, "helm.sh/helm/v3/cmd/helm")
		if out, err := cmd.CombinedOutput(); err != nil {
			helmErr = fmt.Errorf("building helm from tools/helm: %w\n%s", err, out)
			return
		}
		helmPath = p
	})
	return helmPath, helmErr
}

// Release names what a render installs.
type Release struct {
	Name      string
	Namespace string
	// Set are --set arguments (key=value), applied in order.
	Set []string
}

func (r Release) setArgs() []string {
	var args []string
	for _, s := range r.Set {
		args = append(args, "--set", s)
	}
	return args
}

func run(ctx context.Context, args ...string) ([]byte, error) {
	helm, err := Helm(ctx)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Keep helm away from the user's repositories, plugins and cache.
	home, err := os.MkdirTemp("", "spillway-helm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(home)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %v: %w\n%s%s", args, err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.Bytes(), nil
}

// Template renders the chart's templates (not its crds/) as YAML.
func Template(ctx context.Context, r Release) ([]byte, error) {
	args := append([]string{"template", r.Name, Dir(), "--namespace", r.Namespace, "--kube-version", KubeVersion}, r.setArgs()...)
	return run(ctx, args...)
}

// Lint runs helm lint --strict: warnings fail too.
func Lint(ctx context.Context, r Release) ([]byte, error) {
	args := append([]string{"lint", Dir(), "--strict", "--namespace", r.Namespace, "--kube-version", KubeVersion}, r.setArgs()...)
	return run(ctx, args...)
}

// Objects decodes a multi-document YAML stream, skipping empty documents.
func Objects(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decoding manifest: %w", err)
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
}

// Render is Template followed by Objects.
func Render(ctx context.Context, r Release) ([]*unstructured.Unstructured, error) {
	out, err := Template(ctx, r)
	if err != nil {
		return nil, err
	}
	return Objects(out)
}

// RenderSelected renders the chart and returns the objects keep accepts, in
// render order, as one multi-document YAML stream: a part of the chart for
// callers that install only that part, such as the demo and the cluster
// tests, which run the components as local processes and take the chart's
// RBAC, webhook configuration and APIServices from it rather than writing
// their own beside it.
func RenderSelected(ctx context.Context, r Release, keep func(*unstructured.Unstructured) bool) ([]byte, error) {
	objs, err := Render(ctx, r)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, o := range objs {
		if !keep(o) {
			continue
		}
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err)
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes(), nil
}

// OfKinds accepts the objects of the given kinds, for RenderSelected.
func OfKinds(kinds ...string) func(*unstructured.Unstructured) bool {
	return func(o *unstructured.Unstructured) bool { return slices.Contains(kinds, o.GetKind()) }
}

// Find returns the objects of a kind, in render order.
func Find(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// Container is one container of a rendered workload.
type Container struct {
	Workload string // Kind/name
	Name     string
	Args     []string
	Env      map[string]any // name -> value or valueFrom
}

// Containers lists the containers of every Deployment and DaemonSet.
func Containers(objs []*unstructured.Unstructured) ([]Container, error) {
	var out []Container
	for _, o := range objs {
		if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
			continue
		}
		cs, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", o.GetKind(), o.GetName(), err)
		}
		for _, c := range cs {
			cm, _ := c.(map[string]any)
			ct := Container{Workload: o.GetKind() + "/" + o.GetName(), Env: map[string]any{}}
			ct.Name, _ = cm["name"].(string)
			args, _, err := unstructured.NestedStringSlice(cm, "args")
			if err != nil {
				return nil, fmt.Errorf("%s container %s args: %w", ct.Workload, ct.Name, err)
			}
			ct.Args = args
			env, _ := cm["env"].([]any)
			for _, e := range env {
				em, _ := e.(map[string]any)
				name, _ := em["name"].(string)
				if v, ok := em["value"]; ok {
					ct.Env[name] = v
				} else {
					ct.Env[name] = em["valueFrom"]
				}
			}
			out = append(out, ct)
		}
	}
	return out, nil
}
