package main

import (
	"testing"
	"time"
)

func TestOutageRowOf(t *testing.T) {
	start := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	sample := func(s int, v int32) replicaSample {
		return replicaSample{at: at(s), replicas: map[string]int32{"a": v}}
	}
	tests := []struct {
		name      string
		samples   []replicaSample
		restored  time.Time
		wantMin   int32
		wantAt    int32
		wantFirst time.Duration
		wantLine  string
	}{
		{
			name:      "held",
			samples:   []replicaSample{sample(0, 3), sample(30, 3), sample(70, 3)},
			restored:  at(60),
			wantMin:   3,
			wantAt:    3,
			wantFirst: -1,
			wantLine:  "3",
		},
		{
			name:      "false zero then back",
			samples:   []replicaSample{sample(0, 3), sample(14, 2), sample(19, 1), sample(61, 1), sample(75, 3)},
			restored:  at(60),
			wantMin:   1,
			wantAt:    1,
			wantFirst: 14 * time.Second,
			wantLine:  "3 → 2 at +14s → 1 at +19s → 3 at +75s",
		},
		{
			name:      "other Deployments' samples are skipped",
			samples:   []replicaSample{{at: at(0), replicas: map[string]int32{"b": 1}}, sample(1, 3), sample(2, 2)},
			restored:  at(60),
			wantMin:   2,
			wantAt:    2,
			wantFirst: 2 * time.Second,
			wantLine:  "3 → 2 at +2s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row := outageRowOf(scaler{name: "a"}, tt.samples, start, tt.restored, "")
			if row.minDuring != tt.wantMin || row.atRestore != tt.wantAt || row.firstChange != tt.wantFirst || row.timeline != tt.wantLine {
				t.Errorf("got min %d, at restore %d, first change %s, timeline %q; want %d, %d, %s, %q",
					row.minDuring, row.atRestore, row.firstChange, row.timeline, tt.wantMin, tt.wantAt, tt.wantFirst, tt.wantLine)
			}
		})
	}
}

func TestMedianRange(t *testing.T) {
	s := func(d ...time.Duration) []stages {
		out := make([]stages, len(d))
		for i, v := range d {
			out[i] = stages{total: v}
		}
		return out
	}
	total := func(x stages) time.Duration { return x.total }
	tests := []struct {
		name   string
		trials []stages
		want   string
	}{
		{"none", nil, "—"},
		{"one", s(1500 * time.Millisecond), "1.5 s"},
		{"odd", s(3*time.Second, time.Second, 2*time.Second), "2.0 s (1.0 s–3.0 s)"},
		{"even", s(4*time.Second, time.Second, 2*time.Second, 3*time.Second), "2.5 s (1.0 s–4.0 s)"},
		{"negative stage", s(-200*time.Millisecond, 100*time.Millisecond, 300*time.Millisecond), "0.1 s (-0.2 s–0.3 s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := medianRange(tt.trials, total); got != tt.want {
				t.Errorf("medianRange = %q, want %q", got, tt.want)
			}
		})
	}
}
