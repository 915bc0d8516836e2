package metrictable

import (
	"strings"
	"testing"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

func TestDefaultsAreValid(t *testing.T) {
	rows := Defaults()
	if err := Validate(rows); err != nil {
		t.Fatal(err)
	}
	byName := map[string]Row{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	for _, want := range []struct {
		name    string
		combine Combine
		origin  Origin
	}{
		{metricnames.ProcessSMUtil, MeanOfCappedGPUs, Exporter},
		{metricnames.ProcessMemUsed, SumOfGPUs, Exporter},
		{metricnames.VLLMRequestsWaiting, Sum, Pod},
		{metricnames.VLLMKVCacheUsage, Max, Pod},
		{metricnames.VLLMGPUCacheUsage, Max, Pod},
		{metricnames.TGIQueueSize, Sum, Pod},
	} {
		r, ok := byName[want.name]
		if !ok || r.Combine != want.combine || r.Origin != want.origin || r.Series != want.name ||
			strings.Join(r.PodLabels, ",") != "PodName,pod" || strings.Join(r.NamespaceLabels, ",") != "NamespaceName,namespace" {
			t.Errorf("row %s = %+v", want.name, r)
		}
	}
}

func TestLoad(t *testing.T) {
	cases := []struct {
		name    string
		file    string
		rows    int
		last    Row
		wantErr []string
	}{
		{name: "adds a row with defaults", file: "metrics:\n- name: queue\n  series: my_server_queue\n  combine: Max\n",
			rows: len(Defaults()) + 1,
			last: Row{Name: "queue", Series: "my_server_queue", NamespaceLabels: DefaultNamespaceLabels, PodLabels: DefaultPodLabels, Combine: Max, Origin: Pod}},
		{name: "replaces the defaults", file: `{"replaceDefaults": true, "metrics": [{"name": "q", "combine": "Sum", "podLabels": ["kubernetes_pod_name"], "namespaceLabels": ["kubernetes_namespace"]}]}`,
			rows: 1,
			last: Row{Name: "q", Series: "q", NamespaceLabels: []string{"kubernetes_namespace"}, PodLabels: []string{"kubernetes_pod_name"}, Combine: Sum, Origin: Pod}},
		{name: "unknown field", file: "metrics:\n- name: q\n  combine: Sum\n  agregation: max\n", wantErr: []string{`unknown field "agregation"`}},
		{name: "empty table", file: "replaceDefaults: true\n", wantErr: []string{"the metric table has no rows"}},
		{name: "every problem at once", file: `replaceDefaults: true
metrics:
- {name: "a.b", combine: Sum}
- {name: q, combine: ""}
- {name: Q, series: other, combine: Sum, podLabels: ["__meta_pod"], origin: Node}
- {name: r, series: q, combine: Max}
`, wantErr: []string{
			`metrics[0] (a.b): name "a.b" is not a Prometheus metric name`,
			`metrics[1] (q): combine is required`,
			`metrics[2] (Q): label "__meta_pod" is not a Prometheus label name (or is reserved`,
			`metrics[2] (Q): unknown origin "Node"`,
			`metrics[2] (Q): name "Q" is already served by metrics[1]`,
			`metrics[3] (r): series "q" from origin Pod is already read by metrics[1]`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rows, err := Load("t.yaml", strings.NewReader(c.file))
			if len(c.wantErr) > 0 {
				if err == nil {
					t.Fatalf("loaded %d rows, want an error", len(rows))
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != c.rows {
				t.Fatalf("%d rows, want %d", len(rows), c.rows)
			}
			got := rows[len(rows)-1]
			if got.Name != c.last.Name || got.Series != c.last.Series || got.Combine != c.last.Combine || got.Origin != c.last.Origin ||
				strings.Join(got.PodLabels, ",") != strings.Join(c.last.PodLabels, ",") ||
				strings.Join(got.NamespaceLabels, ",") != strings.Join(c.last.NamespaceLabels, ",") {
				t.Errorf("last row = %+v, want %+v", got, c.last)
			}
		})
	}
}
