package exporter

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/podmap"
)

// TestProcessLabelsSetByName: label values follow the label names, so the
// exposition does not depend on the order of metricnames.ProcessLabels,
// and a label the exporter has no value for is an error, not a shifted
// value.
func TestProcessLabelsSetByName(t *testing.T) {
	orig := metricnames.ProcessLabels
	t.Cleanup(func() { metricnames.ProcessLabels = orig })
	reversed := slices.Clone(orig)
	slices.Reverse(reversed)
	tests := []struct {
		name    string
		labels  []string
		wantErr string
	}{
		{name: "reversed", labels: reversed},
		{name: "rotated", labels: append(slices.Clone(orig[3:]), orig[:3]...)},
		{name: "unknown label", labels: append(slices.Clone(orig), "rack"), wantErr: `process label "rack" has no value`},
		{name: "label missing", labels: slices.DeleteFunc(slices.Clone(orig), func(l string) bool { return l == metricnames.LabelPID }),
			wantErr: `label "pid" has a value but is not in metricnames.ProcessLabels`},
		{name: "label twice", labels: append(slices.Clone(orig), metricnames.LabelPod), wantErr: `process label "pod" listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			metricnames.ProcessLabels = tt.labels
			defer func() { metricnames.ProcessLabels = orig }()
			s, m, r := fixture()
			c := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			e, err := New(Config{Hostname: "gpu-node-a", Backend: "nvml", Interval: 5 * time.Second, Clock: c}, s, m, r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := e.CollectOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			c.t = c.t.Add(2 * time.Second)
			checkGolden(t, e, "fresh")
			checkHandler(t, e)
		})
	}
}

// TestSeriesReused: a process's label set is built once and shared by the
// snapshots that follow while its labels stay the same; the cache holds
// only processes of the last collection.
func TestSeriesReused(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	e, s, m := newTestExporter(t, c, false)
	collect := func() *snapshot {
		t.Helper()
		if err := e.CollectOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		return e.snap.Load()
	}
	labelsOf := func(snap *snapshot) map[string]*series {
		out := map[string]*series{}
		for _, p := range snap.samples {
			out[p.s.text] = p.s
		}
		return out
	}
	first := labelsOf(collect())
	second := labelsOf(collect())
	if len(first) != 5 || len(second) != len(first) {
		t.Fatalf("series: %d then %d, want 5 twice", len(first), len(second))
	}
	for text, sr := range first {
		if second[text] != sr {
			t.Errorf("series %s rebuilt in a steady collection", text)
		}
	}

	// PID 700 moves to the MIG pod: a new series, the old one forgotten.
	m.byPID[700] = lookupResult{id: podmap.Identity{PodUID: uidMIG, ContainerID: cidMIG}}
	third := labelsOf(collect())
	moved := 0
	for text, sr := range third {
		if strings.Contains(text, `pid="700"`) {
			moved++
			if !strings.Contains(text, `pod="mig-job"`) || first[text] != nil {
				t.Errorf("PID 700 after the move: %s (new series: %v)", text, first[text] == nil)
			}
			continue
		}
		if first[text] != sr {
			t.Errorf("series %s rebuilt though its labels did not change", text)
		}
	}
	if moved != 1 || len(e.cache.byKey) != len(third) {
		t.Errorf("PID 700 series: %d; cache holds %d series for %d exported", moved, len(e.cache.byKey), len(third))
	}

	s.sample.Processes = s.sample.Processes[:1]
	if got := labelsOf(collect()); len(got) != 1 || len(e.cache.byKey) != 1 {
		t.Errorf("after all but one process left: %d series exported, %d cached, want 1 and 1", len(got), len(e.cache.byKey))
	}
}

// TestOrderKey compares orderKey's byte order with the registry's order
// (label value by label value) over every pair of two-value tuples built
// from short strings of the bytes that matter: 0, 1 and a letter.
func TestOrderKey(t *testing.T) {
	var strs []string
	var grow func(prefix string, n int)
	grow = func(prefix string, n int) {
		strs = append(strs, prefix)
		if n == 0 {
			return
		}
		for _, b := range []string{"\x00", "\x01", "a"} {
			grow(prefix+b, n-1)
		}
	}
	grow("", 2)
	var tuples [][]string
	for _, a := range strs {
		for _, b := range strs {
			tuples = append(tuples, []string{a, b})
		}
	}
	for _, a := range tuples {
		for _, b := range tuples {
			want := slices.Compare(a, b)
			if got := strings.Compare(orderKey(a), orderKey(b)); got != want {
				t.Fatalf("orderKey(%q) vs orderKey(%q): %d, want %d", a, b, got, want)
			}
		}
	}
}
