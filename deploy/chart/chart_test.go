package chart

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spillway-dev/spillway/grafana"
)

const (
	testRelease   = "spillway"
	testNamespace = "spillway-system"
)

func render(t *testing.T, set ...string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := Render(context.Background(), Release{Name: testRelease, Namespace: testNamespace, Set: set})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestLintEveryVariant(t *testing.T) {
	for _, v := range Variants() {
		t.Run(v.Name, func(t *testing.T) {
			if out, err := Lint(context.Background(), Release{Name: testRelease, Namespace: testNamespace, Set: v.Set}); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

func TestAlertRulesReadOnlyExportedMetrics(t *testing.T) {
	known := grafana.SeriesNames(grafana.SpillwayMetrics(), grafana.ThirdPartyMetrics, grafana.KubeStateMetrics)
	for _, v := range Variants() {
		rules := Find(render(t, v.Set...), "PrometheusRule")
		for _, r := range rules {
			groups, _, _ := unstructured.NestedSlice(r.Object, "spec", "groups")
			n := 0
			for _, g := range groups {
				rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
				for _, rule := range rs {
					rule := rule.(map[string]any)
					n++
					expr, _ := rule["expr"].(string)
					if err := grafana.CheckQuery(expr, known); err != nil {
						t.Errorf("%s: alert %v: %v", v.Name, rule["alert"], err)
					}
					if _, ok := rule["for"]; !ok {
						t.Errorf("%s: alert %v has no for: duration", v.Name, rule["alert"])
					}
				}
			}
			if n == 0 {
				t.Errorf("%s: PrometheusRule %s has no rules", v.Name, r.GetName())
			}
		}
	}
}

func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	generated, err := filepath.Glob(filepath.Join(Root(), "config", "crd", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	inChart, err := filepath.Glob(filepath.Join(Dir(), "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(generated) == 0 {
		t.Fatal("config/crd is empty: run make generate")
	}
	names := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if !slices.Equal(names(generated), names(inChart)) {
		t.Fatalf("chart crds/ holds %v, config/crd holds %v: run hack/sync-chart-crds.sh", names(inChart), names(generated))
	}
	for _, g := range generated {
		want, _ := os.ReadFile(g)
		got, _ := os.ReadFile(filepath.Join(Dir(), "crds", filepath.Base(g)))
		if !bytes.Equal(got, want) {
			t.Errorf("chart crds/%s differs from config/crd: run hack/sync-chart-crds.sh", filepath.Base(g))
		}
	}
}

func TestPlainManifestsAreUpToDate(t *testing.T) {
	helm, err := Helm(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(Root(), "hack", "render-manifests.sh"))
	cmd.Env = append(os.Environ(), "OUT_DIR="+out, "HELM="+helm)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render-manifests.sh: %v\n%s", err, b)
	}
	for _, f := range []string{"crds.yaml", "spillway.yaml"} {
		want, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(Root(), "deploy", "manifests", f))
		if err != nil {
			t.Fatalf("%v (run hack/render-manifests.sh)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/manifests/%s is stale: run hack/render-manifests.sh", f)
		}
	}
}

// TestValuesAreDocumented requires a comment on every leaf of values.yaml,
// or on an ancestor below the top-level sections (whose banners do not
// count): a comment on resources: documents requests.cpu.
func TestValuesAreDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(Dir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var undocumented []string
	var walk func(n *yaml.Node, path string, depth int, documented bool)
	walk = func(n *yaml.Node, path string, depth int, documented bool) {
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := strings.TrimPrefix(path+"."+k.Value, ".")
			own := k.HeadComment != "" || k.LineComment != ""
			doc := documented || (own && depth > 0)
			if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
				walk(v, p, depth+1, doc)
				continue
			}
			if !doc && !own {
				undocumented = append(undocumented, p)
			}
		}
	}
	walk(doc.Content[0], "", 0, false)
	if len(undocumented) > 0 {
		t.Errorf("values.yaml fields without a comment:\n  %s", strings.Join(undocumented, "\n  "))
	}
}

func TestInvalidValuesFailWithAMessage(t *testing.T) {
	tests := []struct {
		set  []string
		want string
	}{
		{[]string{"exporter.backend=dcgm"}, `exporter.backend "dcgm": want nvml or sim`},
		{[]string{"exporter.procAccess=privileged"}, "exporter.procAccess"},
		{[]string{"adapter.tls.mode=secret"}, "adapter.tls.mode=secret needs adapter.tls.secretName"},
		{[]string{"adapter.tls.mode=secret", "adapter.tls.secretName=t"}, "adapter.tls.mode=secret needs adapter.tls.caBundle"},
		{[]string{"adapter.tls.mode=selfSigned"}, "adapter.tls.mode=selfSigned is gone"},
		{[]string{"adapter.tls.mode=none"}, `adapter.tls.mode "none": want selfManaged, secret or insecureSelfSigned`},
		{[]string{"adapter.prometheus.url="}, "adapter.prometheus.url is required"},
		{[]string{"adapter.prometheus.tls.caFile=/etc/spillway/prometheus/ca.crt"}, `adapter.prometheus.tls needs an https adapter.prometheus.url, got "http://prometheus-operated.monitoring.svc:9090"`},
		{[]string{"adapter.prometheus.url=https://thanos:9090", "adapter.prometheus.tls.keyFile=/k"}, "adapter.prometheus.tls.certFile and keyFile go together"},
		{[]string{"controller.webhook.failurePolicy=Maybe"}, "controller.webhook.failurePolicy"},
		{[]string{"adapter.external.host=localhost"}, "adapter.external.host needs adapter.external.port"},
		{[]string{"adapter.external.host=localhost", "adapter.external.port=65536"}, "adapter.external.host needs adapter.external.port"},
		{[]string{"adapter.podAntiAffinity=always"}, "adapter.podAntiAffinity"},
		{[]string{"metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true"}, "exclude each other"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.set, ","), func(t *testing.T) {
			_, err := Template(context.Background(), Release{Name: testRelease, Namespace: testNamespace, Set: tt.set})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
