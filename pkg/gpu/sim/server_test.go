package sim

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// The fluid queue: below capacity no queue and running = λ·T; past it the
// queue grows by (λ − μ)·dt while running sticks at the slots; when load
// falls the queue drains at μ − λ; a replica leaving Ready drains with no
// arrivals; a second Ready replica halves the arrivals.
func TestServerQueue(t *testing.T) {
	pods := &mutablePods{pods: []Pod{{UID: "a", Namespace: "llm", Name: "a", Node: "n", Workload: "chat", Running: true, Ready: true}}}
	load := newLoad(t, map[string]float64{"llm/chat": 5})
	s, err := NewServer(ServerConfig{CapacityRPS: 10, ServiceTime: 2 * time.Second, MaxStep: 5 * time.Second}, pods, load)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := t0
	step := func(d time.Duration) ServerState {
		t.Helper()
		at = at.Add(d)
		if err := s.Step(at); err != nil {
			t.Fatal(err)
		}
		st := s.States()
		if len(st) == 0 {
			return ServerState{}
		}
		return st[0]
	}
	// slots = 10 rps × 2 s = 20.
	if st := step(0); !near(st.Running, 10) || st.Waiting != 0 || !near(st.KVCacheUsage, 0.5) || st.QueueTime != 0 || st.ArrivalRPS != 5 {
		t.Fatalf("at half capacity: %+v", st)
	}
	if err := load.Set("llm/chat", 14); err != nil {
		t.Fatal(err)
	}
	step(0) // the new rate applies from here
	for range 3 {
		step(2 * time.Second)
	}
	// 6 s at 4 rps over capacity.
	if st := step(0); !near(st.Waiting, 24) || st.Running != 20 || st.KVCacheUsage != 1 || !near(st.QueueTime, 2.4) {
		t.Fatalf("past capacity: %+v", st)
	}
	// A pause longer than MaxStep integrates only MaxStep.
	if st := step(time.Minute); !near(st.Waiting, 24+4*5) {
		t.Fatalf("after a long pause: %+v", st)
	}
	// A second Ready replica: 7 rps each, the first drains at 3 rps.
	pods.pods = append(pods.pods, Pod{UID: "b", Namespace: "llm", Name: "b", Node: "n", Workload: "chat", Running: true, Ready: true})
	step(0)
	all := s.States()
	if len(all) != 2 || all[0].ArrivalRPS != 7 || all[1].ArrivalRPS != 7 || !near(all[1].Running, 14) || all[1].Waiting != 0 {
		t.Fatalf("two replicas: %+v", all)
	}
	if st := step(4 * time.Second); !near(st.Waiting, 44-12) {
		t.Fatalf("draining: %+v", st)
	}
	// a leaves Ready: no arrivals, drains at 10 rps; b takes all 14.
	pods.pods[0].Ready = false
	step(0)
	// 32 queued drain at 10 rps within the 5 s.
	st := step(5 * time.Second)
	if st.ArrivalRPS != 0 || st.Waiting != 0 || st.Running != 0 || st.KVCacheUsage != 0 {
		t.Fatalf("drained and idle: %+v", st)
	}
	if b := s.States()[1]; b.ArrivalRPS != 14 || !near(b.Waiting, 4*5) {
		t.Fatalf("b alone past capacity: %+v", b)
	}
	// Stopped pods leave the model.
	pods.pods = pods.pods[1:]
	step(0)
	if all := s.States(); len(all) != 1 || all[0].Name != "b" {
		t.Fatalf("after a is gone: %+v", all)
	}
}

func TestServerHTTP(t *testing.T) {
	pods := &mutablePods{pods: []Pod{{UID: "a", Namespace: "llm", Name: "a", Node: "n", Workload: "chat", Running: true, Ready: true}}}
	s, err := NewServer(ServerConfig{CapacityRPS: 10, ServiceTime: time.Second, MaxStep: time.Second}, pods, newLoad(t, map[string]float64{"llm/chat": 4}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Step(time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	for _, c := range []struct {
		path string
		code int
		body []string
	}{
		{"/pods/llm/a/metrics", 200, []string{
			metricnames.VLLMRequestsWaiting + `{model_name="sim"} 0`,
			metricnames.VLLMRequestsRunning + `{model_name="sim"} 4`,
			metricnames.VLLMKVCacheUsage + `{model_name="sim"} 0.4`,
			"# TYPE " + QueueTimeMetric + " gauge",
		}},
		{"/pods/llm/b/metrics", 404, []string{"no running GPU pod llm/b"}},
		{"/pods", 200, []string{`"namespace":"llm","name":"a","arrivalRPS":4,"waiting":0,"running":4,"kvCacheUsage":0.4`}},
		{"/metrics", 404, []string{"want /pods/<namespace>/<name>/metrics"}},
	} {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		_ = resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: HTTP %d, want %d", c.path, resp.StatusCode, c.code)
		}
		for _, want := range c.body {
			if !strings.Contains(b.String(), want) {
				t.Errorf("%s: body lacks %q:\n%s", c.path, want, b.String())
			}
		}
	}
}

func TestServerConfigValidate(t *testing.T) {
	err := ServerConfig{CapacityRPS: math.Inf(1), ServiceTime: 0, MaxStep: -1}.Validate()
	for _, want := range []string{"per-replica capacity", "service time 0s", "max step -1ns"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}
