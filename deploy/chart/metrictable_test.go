package chart

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spillway-dev/spillway/pkg/metrictable"
)

// checkAdapterMetricTable: the rows adapter.metrics adds reach the adapter
// as a file it loads: the rendered ConfigMap is a valid metric table with
// the defaults and the row, and the Deployment mounts it and passes
// --metrics-config; without rows nothing is mounted.
func checkAdapterMetricTable(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	var cm *unstructured.Unstructured
	for _, o := range Find(objs, "ConfigMap") {
		if strings.HasSuffix(o.GetName(), "-metrics-adapter-metrics") {
			cm = o
		}
	}
	if cm == nil {
		t.Fatal("no metric table ConfigMap rendered")
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "metrics.yaml")
	rows, err := metrictable.Load("metrics.yaml", strings.NewReader(data))
	if err != nil {
		t.Fatalf("the adapter would refuse the rendered table: %v\n%s", err, data)
	}
	last := rows[len(rows)-1]
	if len(rows) != len(metrictable.Defaults())+1 || last.Name != "my_server_queue" || last.Combine != metrictable.Sum ||
		last.PodLabels[0] != "kubernetes_pod_name" {
		t.Errorf("rows = %+v", rows)
	}
	containers, err := Containers(objs)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range containers {
		if c.Name == "adapter" {
			args := strings.Join(c.Args, " ")
			found = strings.Contains(args, "--metrics-config=/etc/spillway/metrics/metrics.yaml") &&
				strings.Contains(args, `--pod-series-selector=job="kubernetes-pods"`)
		}
	}
	if !found {
		t.Errorf("the adapter is not started with the table and pod series selector: %+v", containers)
	}
	// Without rows nothing is mounted.
	for _, o := range Find(render(t), "ConfigMap") {
		if strings.HasSuffix(o.GetName(), "-metrics-adapter-metrics") {
			t.Error("a metric table ConfigMap rendered with no rows")
		}
	}
}
