package fleetsim

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
			f := Fleet{Namespace: "bench", Node: "bench-gpu-node", Apps: tt.apps, PodsPerApp: tt.podsPerApp}
			ss := f.Series()
			wantSeries := tt.apps * tt.podsPerApp * SeriesPerPod
			if len(ss) != wantSeries {
				t.Fatalf("got %d series, want %d", len(ss), wantSeries)
			}
			p := expfmt.NewTextParser(model.LegacyValidation)
			fams, err := p.TextToMetricFamilies(bytes.NewReader(Render(ss)))
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
				if got[metricnames.LabelPod] != got[metricnames.LabelACKPod] || got[metricnames.LabelNamespace] != f.Namespace {
					t.Fatalf("series %s: pod/namespace labels disagree", id.String())
				}
				if got[metricnames.LabelHostname] != f.Node {
					t.Fatalf("series %s: Hostname is not the fleet's node %s", id.String(), f.Node)
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
			if len(perPod) != f.Pods() {
				t.Fatalf("series name %d pods, want %d", len(perPod), f.Pods())
			}
			for pod, n := range perPod {
				if n != SeriesPerPod {
					t.Fatalf("pod %s has %d series, want %d", pod, n, SeriesPerPod)
				}
			}
		})
	}
}

// TestShard: the shards of a fleet partition its series by pod, and every
// app with at least as many pods as shards has pods in each.
func TestShard(t *testing.T) {
	tests := []struct {
		name                     string
		apps, podsPerApp, shards int
	}{
		{"one shard", 2, 3, 1},
		{"two shards", 3, 4, 2},
		{"odd pods per app", 5, 5, 2},
		{"three shards", 4, 6, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Fleet{Namespace: "ns", Node: "n", Apps: tt.apps, PodsPerApp: tt.podsPerApp}
			all := f.Series()
			podShard := map[string]int{}
			total := 0
			for i := range tt.shards {
				ss := Shard(all, i, tt.shards)
				total += len(ss)
				apps := map[string]bool{}
				for _, s := range ss {
					pod := s.Labels[metricnames.LabelPod]
					if prev, ok := podShard[pod]; ok && prev != i {
						t.Fatalf("pod %s is in shards %d and %d", pod, prev, i)
					}
					podShard[pod] = i
					apps[pod[:len("app-000")]] = true
				}
				if len(apps) != tt.apps {
					t.Errorf("shard %d has pods of %d apps, want all %d", i, len(apps), tt.apps)
				}
			}
			if total != len(all) {
				t.Fatalf("shards hold %d series, the fleet %d", total, len(all))
			}
			for a := range tt.apps {
				for j := range tt.podsPerApp {
					pod := PodName(AppName(a), j)
					if got, want := podShard[pod], ShardOfPod(a, j, tt.podsPerApp, tt.shards); got != want {
						t.Errorf("pod %s is in shard %d, ShardOfPod says %d", pod, got, want)
					}
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
