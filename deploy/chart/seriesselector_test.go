package chart

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// adapterSelector returns the adapter's --series-selector, parsed the way the
// binary parses it.
func adapterSelector(t *testing.T, objs []*unstructured.Unstructured) promquery.SeriesSelector {
	t.Helper()
	cs, err := Containers(objs)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name != "adapter" {
			continue
		}
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--series-selector="); ok {
				sel, err := promquery.ParseSeriesSelector(v)
				if err != nil {
					t.Fatalf("the chart's --series-selector does not parse: %v", err)
				}
				return sel
			}
		}
		t.Fatalf("adapter args %q lack --series-selector", c.Args)
	}
	t.Fatal("no adapter container rendered")
	return nil
}

// exporterJobs returns the job label each rendered ServiceMonitor or
// PodMonitor of the exporter gives its series: the Service's name (the
// operator's default, no jobLabel) or the PodMonitor's job relabeling.
func exporterJobs(t *testing.T, objs []*unstructured.Unstructured, exporter string) []string {
	t.Helper()
	var jobs []string
	for _, sm := range Find(objs, "ServiceMonitor") {
		if sm.GetName() != exporter {
			continue
		}
		if str(sm, "spec", "jobLabel") != "" {
			t.Errorf("ServiceMonitor %s sets jobLabel: the job is no longer the Service's name", sm.GetName())
		}
		// The chart's Service for the exporter carries the ServiceMonitor's
		// name; the operator uses the Service's name as the job.
		jobs = append(jobs, sm.GetName())
	}
	for _, pm := range Find(objs, "PodMonitor") {
		if pm.GetName() != exporter {
			continue
		}
		eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
		job := ""
		for _, ep := range eps {
			rls, _, _ := unstructured.NestedSlice(ep.(map[string]any), "relabelings")
			for _, r := range rls {
				rm := r.(map[string]any)
				if rm["targetLabel"] == "job" {
					job, _ = rm["replacement"].(string)
				}
			}
		}
		if job == "" {
			t.Errorf("PodMonitor %s does not set the job label", pm.GetName())
		}
		jobs = append(jobs, job)
	}
	return jobs
}

// TestAdapterSelectsTheExportersJob: in every variant (and under another
// release name) the adapter's series selector is exactly the job the
// chart's ServiceMonitor/PodMonitor give the exporter, so the adapter reads
// the exporter's series and nothing else.
func TestAdapterSelectsTheExportersJob(t *testing.T) {
	type tc struct {
		name, release string
		set           []string
		exporter      string // the exporter's fullname, its job
	}
	var cases []tc
	for _, v := range Variants() {
		cases = append(cases, tc{v.Name, testRelease, v.Set, metricnames.ExporterJob})
	}
	cases = append(cases,
		tc{"other-release-servicemonitor", "gpu", []string{"metrics.serviceMonitor.enabled=true"}, "gpu-spillway-gpu-exporter"},
		tc{"other-release-podmonitor", "gpu", []string{"metrics.podMonitor.enabled=true"}, "gpu-spillway-gpu-exporter"},
	)
	checked := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs, err := Render(context.Background(), Release{Name: c.release, Namespace: testNamespace, Set: c.set})
			if err != nil {
				t.Fatal(err)
			}
			if !hasAdapter(objs) {
				t.Skip("no adapter in this variant")
			}
			sel := adapterSelector(t, objs)
			want := promquery.SeriesSelector{{Label: metricnames.LabelJob, Op: promquery.MatchEqual, Value: c.exporter}}
			if sel.String() != want.String() {
				t.Errorf("--series-selector = %s, want %s", sel, want)
			}
			for _, job := range exporterJobs(t, objs, c.exporter) {
				checked++
				if !sel.Matches(model.Metric{metricnames.LabelJob: model.LabelValue(job)}) {
					t.Errorf("the exporter's job %q does not pass the adapter's selector %s", job, sel)
				}
			}
		})
	}
	if checked < 3 {
		t.Errorf("only %d ServiceMonitor/PodMonitor jobs were compared; the check proves little", checked)
	}
}

func hasAdapter(objs []*unstructured.Unstructured) bool {
	for _, d := range Find(objs, "Deployment") {
		if strings.HasSuffix(d.GetName(), "-metrics-adapter") {
			return true
		}
	}
	return false
}

// TestSeriesSelectorValue: adapter.seriesSelector reaches the flag as
// written (quotes of both kinds and commas included), for a scrape config
// of one's own.
func TestSeriesSelectorValue(t *testing.T) {
	const value = `job="gpu-exporter",cluster=~"a|b'c"`
	// --set splits on unescaped commas.
	objs := render(t, "adapter.seriesSelector="+strings.ReplaceAll(value, ",", `\,`))
	if got := adapterSelector(t, objs).String(); got != value {
		t.Errorf("--series-selector = %s, want %s", got, value)
	}
}

// TestAdapterReadinessProbe: the probe is the adapter's /readyz, which fails
// only until the first snapshot and the pod informer have loaded (the rule
// is unit-tested in pkg/provider); nothing else is wired in its place.
func TestAdapterReadinessProbe(t *testing.T) {
	objs := render(t)
	for _, d := range Find(objs, "Deployment") {
		if d.GetName() != "spillway-metrics-adapter" {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		probe, _, _ := unstructured.NestedMap(cs[0].(map[string]any), "readinessProbe", "httpGet")
		if probe["path"] != "/readyz" || probe["port"] != "https" || probe["scheme"] != "HTTPS" {
			t.Errorf("adapter readinessProbe.httpGet = %v, want /readyz on the https port", probe)
		}
		return
	}
	t.Fatal("no adapter Deployment rendered")
}
