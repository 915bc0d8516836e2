// Package install checks the Helm chart against a real API server: every
// variant of the rendered chart passes a server-side dry-run apply (its
// CRDs, cert-manager's and the Prometheus operator's applied for real
// first), and each component's ServiceAccount can do what the component
// needs and cannot do a few things it must not.
package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/spillway-dev/spillway/deploy/chart"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

// Third-party CRDs the optional chart objects need, read from these modules
// in the Go module cache (downloaded through the module proxy when absent).
var thirdPartyCRDs = []struct {
	module, version string
	files           []string
}{
	{"github.com/cert-manager/cert-manager", "v1.21.2", []string{
		"deploy/crds/cert-manager.io_certificates.yaml",
		"deploy/crds/cert-manager.io_issuers.yaml",
		"deploy/crds/cert-manager.io_clusterissuers.yaml",
	}},
	{"github.com/prometheus-operator/prometheus-operator", "v0.85.0", []string{
		"example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
		"example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
		"example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
	}},
}

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, localcluster.Options{NoKarpenter: true}, func(c *localcluster.Cluster) { cluster = c }))
}

// moduleDir downloads (or finds) a module and returns its directory.
func moduleDir(ctx context.Context, module, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = os.TempDir() // outside any module: no go.mod is read or changed
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr != nil || err != nil || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %w %s %s", module, version, err, info.Error, out)
	}
	return info.Dir, nil
}

// installCRDs applies spillway's CRDs (from the chart) and the third-party
// ones for real.
func installCRDs(t *testing.T, ctx context.Context) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chart.Dir(), "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in the chart (%v)", err)
	}
	for _, tp := range thirdPartyCRDs {
		dir, err := moduleDir(ctx, tp.module, tp.version)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range tp.files {
			files = append(files, filepath.Join(dir, f))
		}
	}
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := cluster.Apply(ctx, data); err != nil {
			t.Fatalf("applying %s: %v", f, err)
		}
		objs, err := chart.Objects(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			names = append(names, o.GetName())
		}
	}
	waitEstablished(t, names)
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// waitEstablished waits until the API server serves every named CRD, so
// dry runs of their objects do not race discovery.
func waitEstablished(t *testing.T, names []string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "CRDs established", func(ctx context.Context) (bool, string) {
		for _, n := range names {
			crd, err := dyn.Resource(crdResource).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			established := false
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				if cm["type"] == "Established" && cm["status"] == "True" {
					established = true
				}
			}
			if !established {
				return false, n + " not established"
			}
		}
		return true, ""
	})
}

func ensureNamespace(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	_, err := cluster.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// applier server-side-applies objects through a discovery-backed mapper,
// optionally as a dry run.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T) *applier {
	t.Helper()
	cfg := cluster.RESTConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	data, err := obj.MarshalJSON()
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			return fmt.Errorf("%s %s: namespaced object rendered without a namespace", gvk.Kind, obj.GetName())
		}
		ri = a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
	} else if obj.GetNamespace() != "" {
		return fmt.Errorf("%s %s: cluster-scoped object rendered with namespace %q", gvk.Kind, obj.GetName(), obj.GetNamespace())
	}
	opts := metav1.PatchOptions{FieldManager: "spillway-install-test", Force: new(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts)
	return err
}

// TestEveryVariantPassesServerSideDryRun renders each variant into its own
// namespace and has the API server validate and admit every object without
// storing it: schemas (ours, cert-manager's, the Prometheus operator's),
// RBAC escalation checks on the bindings, webhook and APIService validation.
func TestEveryVariantPassesServerSideDryRun(t *testing.T) {
	ctx := context.Background()
	installCRDs(t, ctx)
	a := newApplier(t)
	for _, v := range chart.Variants() {
		t.Run(v.Name, func(t *testing.T) {
			ns := "spillway-" + v.Name
			if len(ns) > 63 {
				ns = ns[:63]
			}
			ns = strings.TrimRight(ns, "-")
			ensureNamespace(t, ctx, ns)
			objs, err := chart.Render(ctx, chart.Release{Name: "spillway", Namespace: ns, Set: v.Set})
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			var errs []error
			for _, o := range objs {
				if err := a.apply(ctx, o, true); err != nil {
					errs = append(errs, fmt.Errorf("%s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err))
				}
			}
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPlainManifestsApply applies deploy/manifests (CRDs for real, the rest
// as a dry run), the files GitOps users apply without Helm.
func TestPlainManifestsApply(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(chart.Root(), "deploy", "manifests")
	crds, err := os.ReadFile(filepath.Join(dir, "crds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.Apply(ctx, crds); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "spillway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := chart.Objects(data)
	if err != nil {
		t.Fatal(err)
	}
	a := newApplier(t)
	for _, o := range objs {
		// The namespace is created for real: the rest is dry-run into it.
		dry := o.GetKind() != "Namespace"
		if err := a.apply(ctx, o, dry); err != nil {
			t.Errorf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// TestTryExamplesApply applies the README's "Try your own YAML" examples
// (examples/try) as a dry run into the namespace the README creates, so
// the CRDs' schemas and validation rules accept them as written.
func TestTryExamplesApply(t *testing.T) {
	ctx := context.Background()
	installCRDs(t, ctx)
	ensureNamespace(t, ctx, "try")
	files, err := filepath.Glob(filepath.Join(chart.Root(), "examples", "try", "*.yaml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("examples/try: %d files (%v), want the predictor, the ResourcePolicy, the InferenceScaler and the HPA", len(files), err)
	}
	a := newApplier(t)
	kinds := map[string]bool{}
	for _, f := range files {
		for _, o := range framework.ReadObjects(t, f) {
			kinds[o.GetKind()] = true
			if o.GetNamespace() != "try" {
				t.Errorf("%s: %s %s is not in namespace try", filepath.Base(f), o.GetKind(), o.GetName())
			}
			if err := a.apply(ctx, o, true); err != nil {
				t.Errorf("%s: %s %s/%s: %v", filepath.Base(f), o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		}
	}
	for _, k := range []string{"Deployment", "ResourcePolicy", "InferenceScaler", "HorizontalPodAutoscaler"} {
		if !kinds[k] {
			t.Errorf("examples/try has no %s", k)
		}
	}
}
