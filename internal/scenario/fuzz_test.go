package scenario

import (
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseTrace feeds ParseTrace arbitrary trace files. An accepted trace
// must satisfy what the demo and the oracle assume of it, print back to a
// file that parses to the same trace, and be played by the oracle with a
// replica count that never falls as demand rises.
func FuzzParseTrace(f *testing.F) {
	for _, p := range []string{"../../test/traces/tidal-day.csv", "../../test/traces/tidal-day-restart.csv"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"# c\nminute,rps\n0,2\n60, 4.5\n30,event,restart-onprem-pod\n",
		"MINUTE,RPS\r\n0,1e308\r\n1439,0x1p-2\r\n",
		"0,1\n0,event,restart-onprem-pod\n0,event,restart-onprem-pod\n",
		"0,1e30\n1,9223372036854775807\n2,5.000000001\n",
		"1440,2\n", "-1,2\n", "0,-0\n", "0,NaN\n", "0,Inf\n", "10,1\n10,2\n", "0,1,2\n", "0\n", ",\n", "0,event,reboot\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := ParseTrace(data)
		if err != nil {
			if tr != nil {
				t.Fatalf("error %v with a trace", err)
			}
			return
		}
		checkTrace(t, tr)
		again, err := ParseTrace([]byte(formatTrace(tr)))
		if err != nil {
			t.Fatalf("the trace printed back does not parse: %v\n%s", err, formatTrace(tr))
		}
		if !reflect.DeepEqual(again, tr) {
			t.Fatalf("round trip changed the trace:\n%+v\n%+v", tr, again)
		}
		first, last := tr.Span()
		if first != tr.Points[0].Minute || last != tr.Points[len(tr.Points)-1].Minute {
			t.Fatalf("span %d..%d of %+v", first, last, tr.Points)
		}
		for _, p := range tr.Points {
			if got := tr.At(float64(p.Minute)); got != p.RPS {
				t.Fatalf("At(%d) = %v, the point says %v", p.Minute, got, p.RPS)
			}
		}
		checkSizing(t, Seed, tr)
		fig := Oracle(tr, Seed)
		if fig.CloudGPUMinutes < 0 || fig.OnPremUtilization < 0 || fig.OnPremUtilization > 100+1e-9 || fig.ScaleEvents < 0 {
			t.Fatalf("oracle figures out of range: %+v", fig)
		}
	})
}

func checkTrace(t *testing.T, tr *Trace) {
	t.Helper()
	if len(tr.Points) == 0 {
		t.Fatal("accepted a trace without points")
	}
	for i, p := range tr.Points {
		if p.Minute < 0 || p.Minute >= 1440 {
			t.Fatalf("point %d at minute %d", i, p.Minute)
		}
		if math.IsNaN(p.RPS) || math.IsInf(p.RPS, 0) || p.RPS < 0 {
			t.Fatalf("point %d with demand %v", i, p.RPS)
		}
		if i > 0 && p.Minute <= tr.Points[i-1].Minute {
			t.Fatalf("minutes out of order: %+v", tr.Points)
		}
	}
	for i, e := range tr.Events {
		if e.Minute < 0 || e.Minute >= 1440 || e.Action != "restart-onprem-pod" {
			t.Fatalf("event %d: %+v", i, e)
		}
		if i > 0 && e.Minute < tr.Events[i-1].Minute {
			t.Fatalf("events out of order: %+v", tr.Events)
		}
	}
}

// checkSizing asserts the replica count of each point's demand is within
// [min, max] and never below that of a lower demand.
func checkSizing(t *testing.T, s Sizing, tr *Trace) {
	t.Helper()
	demands := make([]float64, len(tr.Points))
	for i, p := range tr.Points {
		demands[i] = p.RPS
	}
	slices.Sort(demands)
	prev := 0
	for i, d := range demands {
		n := s.Replicas(d)
		if n < s.MinReplicas || n > s.MaxReplicas {
			t.Fatalf("Replicas(%v) = %d, outside [%d, %d]", d, n, s.MinReplicas, s.MaxReplicas)
		}
		if per := s.CapacityRPS * s.TargetUtil / 100; d > per*float64(s.MaxReplicas) && n != s.MaxReplicas {
			t.Fatalf("Replicas(%v) = %d, but %d replicas serve only %v", d, n, s.MaxReplicas, per*float64(s.MaxReplicas))
		}
		if i > 0 && n < prev {
			t.Fatalf("Replicas(%v) = %d but Replicas(%v) = %d", demands[i-1], prev, d, n)
		}
		prev = n
	}
}

func formatTrace(tr *Trace) string {
	var b strings.Builder
	b.WriteString("minute,rps\n")
	for _, p := range tr.Points {
		fmt.Fprintf(&b, "%d,%s\n", p.Minute, strconv.FormatFloat(p.RPS, 'g', -1, 64))
	}
	for _, e := range tr.Events {
		fmt.Fprintf(&b, "%d,event,%s\n", e.Minute, e.Action)
	}
	return b.String()
}
