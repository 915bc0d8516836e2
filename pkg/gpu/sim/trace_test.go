package sim

import (
	"errors"
	"io/fs"
	"math"
	"strings"
	"testing"
)

func TestTraceRPS(t *testing.T) {
	tr, err := ReadTraceFile("testdata/trace.csv")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		workload string
		minute   float64
		loop     bool
		want     float64
		wantOK   bool
	}{
		{"demo/llm", 0, false, 10, true},
		{"demo/llm", 5, false, 20, true},
		{"demo/llm", 10, false, 30, true},
		{"demo/llm", 15, false, 30, true},
		{"demo/llm", 99, false, 30, true},
		{"demo/llm", -1, false, 10, true},
		{"demo/llm", 25, true, 20, true}, // 25 mod 20 = 5
		{"demo/other", 7, false, 4, true},
	}
	for _, tt := range tests {
		tr.Loop = tt.loop
		got, ok := tr.RPS(tt.workload, tt.minute)
		if ok != tt.wantOK || math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("RPS(%s, %g, loop=%v) = %g, %v; want %g, %v", tt.workload, tt.minute, tt.loop, got, ok, tt.want, tt.wantOK)
		}
	}
	noDefault, err := ParseTrace(strings.NewReader("0,a/b,1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := noDefault.RPS("a/c", 0); ok {
		t.Errorf("workload without a series and no default reported a load")
	}
	var none *Trace
	if _, ok := none.RPS("a/b", 0); ok {
		t.Errorf("nil trace reported a load")
	}
}

func TestParseTraceTwoColumns(t *testing.T) {
	tr, err := ParseTrace(strings.NewReader("minute,rps\n0,0\n1,60\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tr.RPS("any/thing", 0.5); got != 30 {
		t.Errorf("RPS at 0.5 = %g, want 30", got)
	}
}

func TestParseTraceErrors(t *testing.T) {
	tests := []struct {
		name, csv string
		want      []string
	}{
		{"empty", "# nothing\n", []string{"no rows"}},
		{"field count", "0,1,2,3\n", []string{"line 1", "got 4 fields"}},
		{"header width", "minute,rps\n0,a/b,1\n", []string{"line 2", "header has 2"}},
		{"bad minute", "x,1\n-1,2\n", []string{"line 1", "line 2", "minute"}},
		{"bad rps", "0,-1\n1,NaN\n2,inf\n", []string{"line 1", "line 2", "line 3", "rps"}},
		{"bad workload", "0,nons,1\n0,a/b/c,1\n", []string{"line 1", "line 2", "namespace/name"}},
		{"not increasing", "0,a/b,1\n0,a/b,2\n", []string{"line 2", "does not follow"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTrace(strings.NewReader(tt.csv))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := ReadTraceFile("testdata/missing.csv"); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
