package main

import (
	"strings"
	"testing"
)

func TestSelected(t *testing.T) {
	both := traceDay + "," + traceRestart
	cases := []struct {
		name       string
		o          options
		wantRuns   string
		wantTraces string
		wantErr    string
	}{
		{name: "defaults", o: options{traces: both}, wantRuns: "spillway,queue,baseline", wantTraces: both},
		{name: "defaults with KEDA", o: options{traces: both, keda: true}, wantRuns: "spillway,queue,baseline,keda,keda-policy", wantTraces: both},
		{name: "play order, not flag order", o: options{runs: "keda-policy, spillway,keda", traces: traceRestart, keda: true}, wantRuns: "spillway,keda,keda-policy", wantTraces: traceRestart},
		{name: "a KEDA run without KEDA", o: options{runs: "keda", traces: both}, wantErr: "needs --keda"},
		{name: "an unknown run", o: options{runs: "spillway,hpa", traces: both}, wantErr: `no run "hpa"`},
		{name: "an unknown trace", o: options{traces: "tidal-night"}, wantErr: `no trace "tidal-night"`},
		{name: "a trace twice", o: options{traces: traceDay + "," + traceDay}, wantRuns: "spillway,queue,baseline", wantTraces: traceDay},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runs, traces, err := c.o.selected()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			names := make([]string, len(runs))
			for i, v := range runs {
				names[i] = v.name
			}
			if got := strings.Join(names, ","); got != c.wantRuns {
				t.Errorf("runs %s, want %s", got, c.wantRuns)
			}
			if got := strings.Join(traces, ","); got != c.wantTraces {
				t.Errorf("traces %s, want %s", got, c.wantTraces)
			}
		})
	}
}
