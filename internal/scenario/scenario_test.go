package scenario

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseTrace(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		points  int
		events  int
	}{
		{name: "header comments and events", in: "# c\nminute,rps\n0,2\n60, 4.5\n30,event,restart-onprem-pod\n", points: 2, events: 1},
		{name: "empty", in: "# only a comment\n", wantErr: "no demand points"},
		{name: "minute out of range", in: "1440,2\n", wantErr: "0..1439"},
		{name: "negative rps", in: "0,-1\n", wantErr: "finite number >= 0"},
		{name: "NaN rps", in: "0,NaN\n", wantErr: "finite number >= 0"},
		{name: "minutes must increase", in: "10,1\n10,2\n", wantErr: "does not follow"},
		{name: "unknown event", in: "0,1\n5,event,reboot\n", wantErr: "unknown event"},
		{name: "too many fields", in: "0,1,2\n", wantErr: "want \"minute,rps\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := ParseTrace([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Points) != tt.points || len(tr.Events) != tt.events {
				t.Fatalf("got %d points %d events, want %d and %d", len(tr.Points), len(tr.Events), tt.points, tt.events)
			}
		})
	}
}

func TestCommittedTracesParse(t *testing.T) {
	for _, f := range []string{"../../test/traces/tidal-day.csv", "../../test/traces/tidal-day-restart.csv"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := ParseTrace(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		peak := Seed.Replicas(maxRPS(tr))
		if peak != 3 {
			t.Errorf("%s: peak needs %d replicas, the seed scenario wants 3", f, peak)
		}
	}
}

func maxRPS(t *Trace) float64 {
	m := 0.0
	for _, p := range t.Points {
		m = math.Max(m, p.RPS)
	}
	return m
}

func TestTraceAtIsStepwise(t *testing.T) {
	tr := &Trace{Points: []Point{{Minute: 10, RPS: 1}, {Minute: 20, RPS: 5}}}
	for _, tc := range []struct{ at, want float64 }{{0, 1}, {10, 1}, {19.9, 1}, {20, 5}, {1000, 5}} {
		if got := tr.At(tc.at); got != tc.want {
			t.Errorf("At(%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestSizingReplicas(t *testing.T) {
	s := Sizing{CapacityRPS: 10, TargetUtil: 50, MinReplicas: 1, MaxReplicas: 3, OnPremSlots: 1, GPUsPerReplica: 1}
	for _, tc := range []struct {
		rps  float64
		want int
	}{{0, 1}, {5, 1}, {5.01, 2}, {10, 2}, {13, 3}, {100, 3}} {
		if got := s.Replicas(tc.rps); got != tc.want {
			t.Errorf("Replicas(%v) = %d, want %d", tc.rps, got, tc.want)
		}
	}
	if got := s.Util(30, 2); got != 100 {
		t.Errorf("Util caps at 100, got %v", got)
	}
}

func TestOracle(t *testing.T) {
	// 10 minutes at 2 req/s (1 replica), 10 at 13 (3 replicas: 2 in the
	// cloud), then 1 minute at 2 again.
	tr := &Trace{Points: []Point{{0, 2}, {10, 13}, {20, 2}}}
	f := Oracle(tr, Seed)
	if f.CloudGPUMinutes != 20 {
		t.Errorf("cloud GPU-minutes = %v, want 20", f.CloudGPUMinutes)
	}
	if f.ScaleEvents != 2 {
		t.Errorf("scale events = %d, want 2", f.ScaleEvents)
	}
	if f.MinutesOverTarget != 0 {
		t.Errorf("the oracle is never over target, got %v", f.MinutesOverTarget)
	}
	// On-prem: 11 minutes at 20 %, 10 at 13/3/10 = 43.3 %.
	want := (11*20 + 10*(13.0/3/10*100)) / 21
	if math.Abs(f.OnPremUtilization-want) > 1e-6 {
		t.Errorf("on-prem utilization = %v, want %v", f.OnPremUtilization, want)
	}
}

func TestTimelineCompute(t *testing.T) {
	tl := &Timeline{
		Samples: []Sample{
			{Elapsed: 0, DayMinute: 0, PodUtil: map[string]float64{"a": 80}, Desired: 1, PodsOnPrem: 1},
			{Elapsed: 10 * time.Second, DayMinute: 10, PodUtil: map[string]float64{"a": 40, "b": 40}, Desired: 2, PodsOnPrem: 1, PodsElastic: 1, ElasticGPUs: 1, ElasticPodGPUs: 1},
			// A sample with no served value counts neither as over target
			// nor as idle. The pod is gone; its node lingers.
			{Elapsed: 20 * time.Second, DayMinute: 20, Desired: 2, PodsOnPrem: 1, ElasticGPUs: 1},
			{Elapsed: 30 * time.Second, DayMinute: 30, PodUtil: map[string]float64{"a": 20}, Desired: 1, PodsOnPrem: 1},
		},
		Removals:            []Removal{{Pod: "b", Pool: "elastic", Reason: ReasonNodeRemoved}},
		FirstElasticRunning: 10 * time.Second,
	}
	f := tl.Compute(50, 1, 2*time.Second)
	if f.CloudGPUMinutes != 20 {
		t.Errorf("cloud GPU-minutes = %v, want 20", f.CloudGPUMinutes)
	}
	if f.CloudPodGPUMinutes != 10 {
		t.Errorf("cloud GPU-minutes held by pods = %v, want 10", f.CloudPodGPUMinutes)
	}
	if f.MinutesOverTarget != 10 {
		t.Errorf("minutes over target = %v, want 10", f.MinutesOverTarget)
	}
	if f.ScaleEvents != 2 {
		t.Errorf("scale events = %d, want 2", f.ScaleEvents)
	}
	if f.TimeToElastic != 10*time.Second {
		t.Errorf("time to elastic = %v, want 10s", f.TimeToElastic)
	}
	if want := (80*10 + 40*10) / 30.0; math.Abs(f.OnPremUtilization-want) > 1e-9 {
		t.Errorf("on-prem utilization = %v, want %v", f.OnPremUtilization, want)
	}
	if f.ElasticRemovals != 1 || f.OnPremRemovals != 0 || f.Evictions != 1 {
		t.Errorf("removals = %d elastic %d on-prem %d evicted", f.ElasticRemovals, f.OnPremRemovals, f.Evictions)
	}
}

// Time in queue: minutes over the SLO and the 95th percentile weigh each
// sample by the day minutes it holds; samples without a reading are left
// out, and a run with none has no figure (NaN), never 0.
func TestQueueFigures(t *testing.T) {
	at := func(minute, q float64) Sample { return Sample{DayMinute: minute, QueueSeconds: q} }
	tl := &Timeline{Samples: []Sample{at(0, 0), at(50, 3), at(54, math.NaN()), at(60, 1), at(100, 0)}}
	f := tl.Compute(50, 1, 2*time.Second)
	// 50 min at 0, 4 at 3 s, 40 at 1 s (the NaN sample's 6 minutes are out).
	if f.MinutesOverSLO != 4 {
		t.Errorf("minutes over SLO = %v, want 4", f.MinutesOverSLO)
	}
	// Of 94 minutes, 95 % is 89.3: 50 at 0 s and 40 at 1 s reach it.
	if f.QueueP95 != 1 {
		t.Errorf("p95 = %v, want 1", f.QueueP95)
	}
	// With the 1 s minutes shorter, the 3 s minutes hold the 95th percentile.
	tl.Samples[3].DayMinute, tl.Samples[4].DayMinute = 60, 70
	if g := tl.Compute(50, 1, 2*time.Second); g.QueueP95 != 3 {
		t.Errorf("p95 = %v, want 3", g.QueueP95)
	}
	none := (&Timeline{Samples: []Sample{at(0, math.NaN()), at(10, math.NaN())}}).Compute(50, 1, time.Second)
	if !math.IsNaN(none.MinutesOverSLO) || !math.IsNaN(none.QueueP95) {
		t.Errorf("without readings: %v, %v; want NaN", none.MinutesOverSLO, none.QueueP95)
	}
	if o := Oracle(&Trace{Points: []Point{{0, 2}, {10, 13}}}, Seed); o.MinutesOverSLO != 0 || o.QueueP95 != 0 {
		t.Errorf("oracle queue figures = %v, %v; want 0 (it never exceeds capacity)", o.MinutesOverSLO, o.QueueP95)
	}
}

func TestWriteCSVAndChart(t *testing.T) {
	tl := &Timeline{Samples: []Sample{
		{DayMinute: 0, DemandRPS: 2, PodUtil: map[string]float64{"p-abc": 20}, Desired: 1, PodsOnPrem: 1},
		{DayMinute: 600, DemandRPS: 13, PodUtil: map[string]float64{"p-abc": 43, "p-def": 43, "p-ghi": 44}, Desired: 3, PodsOnPrem: 1, PodsElastic: 2, NodesElastic: 2, ElasticGPUs: 2},
		{DayMinute: 1439, DemandRPS: 2, Desired: 1, PodsOnPrem: 1},
	}}
	var csvBuf bytes.Buffer
	if err := tl.WriteCSV(&csvBuf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(csvBuf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("csv has %d lines, want 4:\n%s", len(lines), csvBuf.String())
	}
	if !strings.Contains(lines[2], "10:00") || !strings.Contains(lines[2], "abc=43 def=43 ghi=44") {
		t.Errorf("row 2 = %q", lines[2])
	}
	// A missing value is an empty cell, never 0.
	if f := strings.Split(lines[3], ","); f[4] != "" || f[5] != "-" {
		t.Errorf("row 3 mean/pods = %q %q, want empty and -", f[4], f[5])
	}
	var img bytes.Buffer
	if err := tl.WriteChart(&img, "test", 50, 3); err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(&img)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width < 900 || cfg.Height < 600 {
		t.Errorf("chart is %dx%d", cfg.Width, cfg.Height)
	}
}
