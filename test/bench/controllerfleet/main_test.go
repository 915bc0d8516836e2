package main

import (
	"context"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func TestFlagsAreValidated(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error; "" means valid
	}{
		{"no bin dir", nil, "--bin-dir is required"},
		{"pods not a multiple", []string{"--bin-dir=bin", "--pods=1001"}, "must be a multiple"},
		{"more pools than namespaces", []string{"--bin-dir=bin", "--namespaces=10", "--pods=200", "--pools=20"}, "must not exceed"},
		{"unknown mode", []string{"--bin-dir=bin", "--burst-modes=client,kubectl"}, `unknown mode "kubectl"`},
		{"zero burst", []string{"--bin-dir=bin", "--burst=0"}, "--burst must be positive"},
		{"negative gap", []string{"--bin-dir=bin", "--burst-gap=-1s"}, "--burst-gap must not be negative"},
		{"extra argument", []string{"--bin-dir=bin", "extra"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

func TestHistogramQuantiles(t *testing.T) {
	const name = "h_seconds"
	scrape := func(b1, b2, b3, inf float64) map[string]float64 {
		return map[string]float64{
			name + `_bucket{le="0.01"}`: b1,
			name + `_bucket{le="0.05"}`: b2,
			name + `_bucket{le="0.1"}`:  b3,
			name + `_bucket{le="+Inf"}`: inf,
			name + "_count":             inf,
			"other_bucket{le=\"0.01\"}": 1000,
		}
	}
	all := func(string) bool { return true }
	before := histogramOf(scrape(10, 10, 10, 10), name, all)
	// 100 new observations: 50 up to 10 ms, 40 in (10, 50] ms, 10 in (50, 100] ms.
	h := histogramOf(scrape(60, 100, 110, 110), name, all).minus(before)
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"count", h.count, 100},
		{"p50 at the first bound", h.quantile(0.5), 0.01},
		{"p70 interpolated", h.quantile(0.7), 0.01 + 0.04*20/40},
		{"p99 interpolated", h.quantile(0.99), 0.05 + 0.05*9/10},
		{"within 50 ms", h.within(0.05), 0.9},
	} {
		if math.Abs(tc.got-tc.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if !math.IsNaN(h.within(0.02)) {
		t.Errorf("within a bound that is no bucket = %v, want NaN", h.within(0.02))
	}
	over := histogramOf(scrape(0, 0, 0, 5), name, all)
	if q := over.quantile(0.99); !math.IsInf(q, 1) {
		t.Errorf("quantile above the last bucket = %v, want +Inf", q)
	}
	if q := (histogram{}).quantile(0.5); !math.IsNaN(q) {
		t.Errorf("quantile of nothing = %v, want NaN", q)
	}
}

func TestHistogramKeepsOnlyFilteredSeries(t *testing.T) {
	const name = "apiserver_admission_webhook_admission_duration_seconds"
	m := map[string]float64{
		name + `_bucket{name="a",type="admit",le="0.025"}`:  3,
		name + `_bucket{name="a",type="admit",le="+Inf"}`:   4,
		name + `_count{name="a",type="admit"}`:              4,
		name + `_bucket{name="b",type="admit",le="0.025"}`:  100,
		name + `_count{name="b",type="admit"}`:              100,
		name + `_bucket{name="a",type="validating",le="1"}`: 7,
	}
	h := histogramOf(m, name, func(s string) bool {
		return strings.Contains(s, `name="a"`) && strings.Contains(s, `type="admit"`)
	})
	if h.count != 4 || len(h.bounds) != 1 || h.cum[0] != 3 {
		t.Fatalf("histogram = %+v, want 3 of 4 within 0.025", h)
	}
}

func TestLabelValue(t *testing.T) {
	for _, tc := range []struct {
		series, label, want string
		ok                  bool
	}{
		{`h_bucket{le="0.5"}`, "le", "0.5", true},
		{`h_bucket{name="x",le="+Inf"}`, "le", "+Inf", true},
		{`h_bucket{handle="x",le="1"}`, "le", "1", true},
		{`h_bucket{handle="x"}`, "le", "", false},
	} {
		got, ok := labelValue(tc.series, tc.label)
		if got != tc.want || ok != tc.ok {
			t.Errorf("labelValue(%q, %q) = %q, %v; want %q, %v", tc.series, tc.label, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseStatus(t *testing.T) {
	st, err := parseStatus([]byte("Name:\tspillway-controller\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n"))
	if err != nil {
		t.Fatal(err)
	}
	if st.rss != 100<<20 || st.hwm != 200<<20 {
		t.Fatalf("parseStatus = %+v, want RSS 100 MiB and HWM 200 MiB", st)
	}
	if _, err := parseStatus([]byte("Name:\tzombie\n")); err == nil {
		t.Fatal("parseStatus without VmRSS succeeded")
	}
}

func TestQuantileOfSamples(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := quantile(s, tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %s, want %s", tc.q, got, tc.want)
		}
	}
	if got := quantile(nil, 0.99); got != 0 {
		t.Errorf("quantile of nothing = %s, want 0", got)
	}
}
