package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

func TestExposition(t *testing.T) {
	tests := []struct {
		name             string
		apps, podsPerApp int
	}{
		{"one pod", 1, 1},
		{"several apps", 3, 5},
		{"benchmark size", 100, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := seriesFor(tt.apps, tt.podsPerApp)
			wantSeries := tt.apps * tt.podsPerApp * gpusPerPod * procsPerGPU
			if len(ss) != wantSeries {
				t.Fatalf("got %d series, want %d", len(ss), wantSeries)
			}
			p := expfmt.NewTextParser(model.LegacyValidation)
			fams, err := p.TextToMetricFamilies(bytes.NewReader(renderExposition(ss)))
			if err != nil {
				t.Fatalf("exposition does not parse: %v", err)
			}
			fam, ok := fams[metricnames.ProcessSMUtil]
			if !ok || len(fams) != 1 {
				t.Fatalf("got families %v, want only %s", keys(fams), metricnames.ProcessSMUtil)
			}
			if len(fam.Metric) != wantSeries {
				t.Fatalf("parsed %d series, want %d", len(fam.Metric), wantSeries)
			}
			seen := map[string]bool{}
			perPod := map[string]int{}
			for _, m := range fam.Metric {
				got := map[string]string{}
				var id strings.Builder
				for _, l := range m.Label {
					got[l.GetName()] = l.GetValue()
					id.WriteString(l.GetName() + "=" + l.GetValue() + ",")
				}
				for _, l := range metricnames.ProcessLabels {
					if got[l] == "" {
						t.Fatalf("series %s lacks label %s", id.String(), l)
					}
				}
				if got[metricnames.LabelPod] != got[metricnames.LabelACKPod] || got[metricnames.LabelNamespace] != benchNamespace {
					t.Fatalf("series %s: pod/namespace labels disagree", id.String())
				}
				if seen[id.String()] {
					t.Fatalf("duplicate series %s", id.String())
				}
				seen[id.String()] = true
				perPod[got[metricnames.LabelPod]]++
				if v := m.GetGauge().GetValue(); v < 0 || v > 100 {
					t.Fatalf("series %s has value %v, want 0-100", id.String(), v)
				}
			}
			if len(perPod) != tt.apps*tt.podsPerApp {
				t.Fatalf("series name %d pods, want %d", len(perPod), tt.apps*tt.podsPerApp)
			}
			for pod, n := range perPod {
				if n != gpusPerPod*procsPerGPU {
					t.Fatalf("pod %s has %d series, want %d", pod, n, gpusPerPod*procsPerGPU)
				}
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
