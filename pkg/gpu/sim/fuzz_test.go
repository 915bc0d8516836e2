package sim

import (
	"bytes"
	"math"
	"os"
	"testing"
)

// FuzzParseTrace feeds ParseTrace arbitrary trace files (the exporter's
// --sim-trace) and plays each accepted one at a minute. The load must be a
// finite number between the lowest and highest rps of the series: the
// simulated GPUs turn it into utilization, which the adapter serves.
func FuzzParseTrace(f *testing.F) {
	b, err := os.ReadFile("testdata/trace.csv")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, 5.0, false)
	f.Add(b, 25.0, true)
	for _, s := range []string{
		"minute,rps\n0,0\n1,60\n",
		"0,a/b,1\n0.5,a/b,2\n",
		"0,1.7976931348623157e308\n1e10,0\n",
		"0,0\n5e-324,1.7976931348623157e308\n",
		"MINUTE,WORKLOAD,RPS\n0,*,1\n0,x/y,2\n",
		"0,1\n0,2\n", "0,a,1\n", "0,a/b/c,1\n", "0,-1\n", "0,NaN\n", "-1,1\n", "0,1,2,3\n", "minute,rps\n0,a/b,1\n", "",
	} {
		f.Add([]byte(s), 0.5, false)
	}
	f.Add([]byte("0,1.7976931348623157e308\n1e10,0\n"), 5e9, false)
	f.Add([]byte("0,1.7976931348623157e308\n1e10,0\n"), 5e9+1e10, true)
	f.Fuzz(func(t *testing.T, data []byte, minute float64, loop bool) {
		tr, err := ParseTrace(bytes.NewReader(data))
		if err != nil {
			if tr != nil {
				t.Fatalf("error %v with a trace", err)
			}
			return
		}
		tr.Loop = loop
		if len(tr.series) == 0 {
			t.Fatal("accepted a trace without rows")
		}
		for key, s := range tr.series {
			if key != AllWorkloads && ValidateWorkload(key) != nil {
				t.Fatalf("accepted workload %q", key)
			}
			lo, hi := math.Inf(1), math.Inf(-1)
			for i, p := range s {
				if i > 0 && p.minute <= s[i-1].minute {
					t.Fatalf("series %s out of order: %+v", key, s)
				}
				lo, hi = min(lo, p.rps), max(hi, p.rps)
			}
			workload := key
			if key == AllWorkloads {
				workload = "some/other"
				if _, own := tr.series[workload]; own {
					continue
				}
			}
			got, ok := tr.RPS(workload, minute)
			// Rounding may land an interpolated value an ulp outside.
			if !ok || math.IsNaN(got) || math.IsInf(got, 0) || got < lo*(1-1e-12) || got > hi*(1+1e-12) {
				t.Fatalf("RPS(%s, %v, loop=%v) = %v, %v; the series spans [%v, %v]: %+v", workload, minute, loop, got, ok, lo, hi, s)
			}
		}
	})
}
