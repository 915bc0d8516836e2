package sim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestLoadPrecedence(t *testing.T) {
	tr, err := ParseTrace(strings.NewReader("0,demo/llm,10\n10,demo/llm,30\n"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l, err := NewLoad(tr, start, 60) // one trace minute per second
	if err != nil {
		t.Fatal(err)
	}
	at := start.Add(5 * time.Second) // trace minute 5
	if rps, src := l.RPS("demo/llm", at); rps != 20 || src != SourceTrace {
		t.Errorf("trace: %g %s, want 20 trace", rps, src)
	}
	if rps, src := l.RPS("demo/other", at); rps != 0 || src != SourceNone {
		t.Errorf("no input: %g %s, want 0 none", rps, src)
	}
	if err := l.Set("demo/llm", 3); err != nil {
		t.Fatal(err)
	}
	if rps, src := l.RPS("demo/llm", at); rps != 3 || src != SourceOverride {
		t.Errorf("override: %g %s, want 3 override", rps, src)
	}
	l.Clear("demo/llm")
	if _, src := l.RPS("demo/llm", at); src != SourceTrace {
		t.Errorf("after Clear the trace should apply again, got %s", src)
	}
	for _, bad := range []struct {
		w   string
		rps float64
	}{{"nope", 1}, {"a/b", -1}} {
		if err := l.Set(bad.w, bad.rps); err == nil {
			t.Errorf("Set(%q, %g) accepted", bad.w, bad.rps)
		}
	}
	if _, err := NewLoad(tr, start, 0); err == nil {
		t.Errorf("speed 0 with a trace accepted")
	}
}

type fixedStatus []WorkloadStatus

func (f fixedStatus) Status() []WorkloadStatus { return f }

func TestHandler(t *testing.T) {
	l, err := NewLoad(nil, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	status := fixedStatus{{Workload: "demo/llm", RPS: 12, Source: SourceOverride, Replicas: 2, ReadyReplicas: 2, PodUtil: 60}}
	srv := httptest.NewServer(Handler(l, status))
	defer srv.Close()

	do := func(method, query string) int {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/load"+query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		method, query string
		wantCode      int
	}{
		{"PUT", "?workload=demo/llm&rps=12", 200},
		{"PUT", "?workload=demo/b&rps=1.5", 200},
		{"PUT", "?workload=demo&rps=1", 400},
		{"PUT", "?workload=demo/llm&rps=-3", 400},
		{"PUT", "?workload=demo/llm", 400},
		{"DELETE", "?workload=demo/b", 204},
		{"DELETE", "?workload=bad", 400},
		{"POST", "", 405},
	}
	for _, tt := range tests {
		if code := do(tt.method, tt.query); code != tt.wantCode {
			t.Errorf("%s /load%s = %d, want %d", tt.method, tt.query, code, tt.wantCode)
		}
	}

	resp, err := http.Get(srv.URL + "/load")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got loadView
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.Overrides) != 1 || got.Overrides["demo/llm"] != 12 {
		t.Errorf("overrides = %v, want only demo/llm=12", got.Overrides)
	}
	if len(got.Workloads) != 1 || got.Workloads[0] != status[0] {
		t.Errorf("workloads = %+v", got.Workloads)
	}

	if code := do("DELETE", ""); code != 204 || len(l.Overrides()) != 0 {
		t.Errorf("DELETE /load left %v", l.Overrides())
	}
}
