package main

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"p50 of 1..100 is 50", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100 is 99", hundred, 99, 99 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"p1 of 1..100 is 1", hundred, 1, 1 * time.Millisecond},
		{"single value", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 4 values takes the 2nd", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of 4 values takes the 3rd", ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p99 of 10 values is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"tiny p still takes the first", ms(5, 6), 0.001, 5 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := percentile(tt.sorted, tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("percentile(p%v) = %s, want %s", tt.p, got, tt.want)
			}
		})
	}
	for _, bad := range []struct {
		sorted []time.Duration
		p      float64
	}{{nil, 50}, {ms(1), 0}, {ms(1), 101}, {ms(1), math.NaN()}} {
		if _, err := percentile(bad.sorted, bad.p); err == nil {
			t.Errorf("percentile(%v, %v) gave no error", bad.sorted, bad.p)
		}
	}
}

func TestSummarize(t *testing.T) {
	s := summary{Name: "x"}
	sent := ms(9, 1, 5, 3, 7, 2, 8, 4, 6, 10)
	scheduled := ms(19, 11, 15, 13, 17, 12, 18, 14, 16, 20)
	if err := summarize(&s, sent, scheduled); err != nil {
		t.Fatal(err)
	}
	if s.P50 != 5*time.Millisecond || s.P90 != 9*time.Millisecond || s.P99 != 10*time.Millisecond ||
		s.Max != 10*time.Millisecond || s.P99Scheduled != 20*time.Millisecond {
		t.Errorf("summary = %+v", s)
	}
	if err := summarize(&summary{Name: "empty", Errors: 3}, nil, nil); err == nil {
		t.Error("summarize without successes gave no error")
	}
	if r := ratio(30*time.Millisecond, 2*time.Millisecond); r != 15 {
		t.Errorf("ratio = %v", r)
	}
	if r := ratio(time.Second, 0); !math.IsNaN(r) {
		t.Errorf("ratio over zero = %v", r)
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in, name, url string
		wantErr       bool
	}{
		{in: "cache=https://127.0.0.1:6443/apis/x?labelSelector=app%3Dy", name: "cache", url: "https://127.0.0.1:6443/apis/x?labelSelector=app%3Dy"},
		{in: "https://h:1/a=b", name: "https://h:1/a=b", url: "https://h:1/a=b"},
		{in: "floor=/apis/custom.metrics.k8s.io/v1beta2", name: "floor", url: "/apis/custom.metrics.k8s.io/v1beta2"},
		{in: "/apis/x", name: "/apis/x", url: "/apis/x"},
		{in: "", wantErr: true},
		{in: "name=", wantErr: true},
		{in: "ftp://x", wantErr: true},
	}
	for _, tt := range tests {
		name, u, err := parseTarget(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseTarget(%q) gave no error", tt.in)
			}
			continue
		}
		if err != nil || name != tt.name || u != tt.url {
			t.Errorf("parseTarget(%q) = %q, %q, %v; want %q, %q", tt.in, name, u, err, tt.name, tt.url)
		}
	}
}

func TestLoadCountsEveryRequest(t *testing.T) {
	var mu sync.Mutex
	seen := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		n := seen
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		if n%10 == 0 {
			http.Error(w, "boom", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"items":[]}`))
	}))
	defer srv.Close()
	o := options{targets: []string{"t=" + srv.URL}, rps: 1000, duration: 40 * time.Millisecond, rounds: 1, concurrency: 4, timeout: 5 * time.Second, token: "tok"}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	client, _, err := o.client()
	if err != nil {
		t.Fatal(err)
	}
	tl := tally{name: "t", url: srv.URL}
	if err := load(context.Background(), client, srv.URL, o.rps, o.duration, o.concurrency, &tl); err != nil {
		t.Fatal(err)
	}
	s, err := tl.summary()
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 40 || s.Errors != 4 || len(s.FirstErrors) != 3 || !strings.Contains(s.FirstErrors[0], "HTTP 503: boom") {
		t.Errorf("summary = %+v", s)
	}
	if s.P50 <= 0 || s.P50 > s.P99 || s.P99 > s.Max {
		t.Errorf("percentiles out of order: %+v", s)
	}
	var out strings.Builder
	if err := report(&out, []summary{s, s}, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "t / t: p50 1.0x, p99 1.0x") {
		t.Errorf("report:\n%s", out.String())
	}
}

// With --rounds the targets take turns, a slice each per round, and each
// one's summary gathers all its slices.
func TestRoundsInterleaveTargets(t *testing.T) {
	var (
		mu   sync.Mutex
		hits []string
	)
	handler := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			hits = append(hits, name)
			mu.Unlock()
			_, _ = w.Write([]byte(`{"items":[]}`))
		}
	}
	a := httptest.NewServer(handler("a"))
	defer a.Close()
	b := httptest.NewServer(handler("b"))
	defer b.Close()
	var out strings.Builder
	err := run(context.Background(), []string{"--json", "--rps=20", "--duration=3s", "--rounds=3", "--warmup=0",
		"--target=a=" + a.URL, "--target=b=" + b.URL}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var turns []string
	for _, h := range hits {
		if len(turns) == 0 || turns[len(turns)-1] != h {
			turns = append(turns, h)
		}
	}
	if got := strings.Join(turns, ""); got != "ababab" {
		t.Errorf("targets took turns %q, want ababab", got)
	}
	var res []summary
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(res) != 2 || res[0].Name != "a" || res[1].Name != "b" || res[0].Requests != 60 || res[1].Requests != 60 {
		t.Errorf("summaries = %+v", res)
	}
	if err := run(context.Background(), []string{"--rounds=0", "--url=" + a.URL}, &out); err == nil ||
		!strings.Contains(err.Error(), "--rounds must be at least 1") {
		t.Errorf("--rounds=0: err = %v", err)
	}
	if err := run(context.Background(), []string{"--rounds=10", "--duration=5s", "--url=" + a.URL}, &out); err == nil ||
		!strings.Contains(err.Error(), "slices under a second") {
		t.Errorf("--rounds=10 --duration=5s: err = %v", err)
	}
}
