package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// ServerConfig shapes the simulated model server of every GPU pod.
type ServerConfig struct {
	// CapacityRPS is what one replica completes per second with its batch
	// full: the same capacity at which its SM utilization reads 100 %.
	CapacityRPS float64
	// ServiceTime is how long one request runs (prefill and decode). A
	// replica runs CapacityRPS × ServiceTime requests at once (its batch
	// slots), each holding an equal share of the KV cache.
	ServiceTime time.Duration
	// MaxStep bounds the time one Step integrates over, so a pause (a
	// stopped process, a slow list) cannot dump minutes of arrivals at once.
	MaxStep time.Duration
}

// Validate reports every bad field at once.
func (c ServerConfig) Validate() error {
	var errs []error
	if !(c.CapacityRPS > 0) || math.IsInf(c.CapacityRPS, 0) {
		errs = append(errs, fmt.Errorf("per-replica capacity %g rps: must be > 0", c.CapacityRPS))
	}
	if c.ServiceTime <= 0 {
		errs = append(errs, fmt.Errorf("service time %s: must be > 0", c.ServiceTime))
	}
	if c.MaxStep <= 0 {
		errs = append(errs, fmt.Errorf("max step %s: must be > 0", c.MaxStep))
	}
	return errors.Join(errs...)
}

// ServerState is one pod's model server as the queueing model has it.
type ServerState struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// ArrivalRPS is the pod's share of its workload's load (0 unless Ready).
	ArrivalRPS float64 `json:"arrivalRPS"`
	// Waiting is the requests queued for a batch slot; Running those in
	// the batch.
	Waiting float64 `json:"waiting"`
	Running float64 `json:"running"`
	// KVCacheUsage is the share, in [0, 1], of the KV cache the running
	// requests hold.
	KVCacheUsage float64 `json:"kvCacheUsage"`
	// QueueTime is how long a request arriving now waits for a slot, in
	// seconds: the queue ahead of it over the rate slots free up.
	QueueTime float64 `json:"queueTimeSeconds"`
}

// Server is a fluid queueing model of a continuous-batching model server
// (vLLM, SGLang, TGI) in every running GPU pod. Each replica has
// slots = CapacityRPS × ServiceTime batch slots and completes at most
// CapacityRPS requests per second; its arrivals are its workload's load
// shared by the Ready replicas (the SM-utilization model's share). Over a
// step of dt seconds with arrival rate λ and capacity μ:
//
//	waiting' = max(0, waiting + (λ − μ)·dt)
//	running' = slots                 while waiting' > 0
//	         = min(slots, λ·ServiceTime) otherwise (Little's law)
//	kv       = running' / slots
//	queue    = waiting' / μ seconds
//
// So with no backlog running/slots is exactly the pod's simulated SM
// utilization (min(1, λ/μ)); past capacity utilization sticks at 100 % while
// the queue, and the time in it, keep growing: the signal a queue-based
// autoscaler sees and utilization cannot. A replica that stops being Ready
// keeps draining its queue with no new arrivals.
type Server struct {
	cfg  ServerConfig
	pods PodSource
	load LoadSource

	mu    sync.Mutex
	last  time.Time
	state map[string]*ServerState // by pod UID, or namespace/name without one
}

// NewServer returns a model server over the pods and load the sampler uses.
func NewServer(cfg ServerConfig, pods PodSource, load LoadSource) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, pods: pods, load: load, state: map[string]*ServerState{}}, nil
}

func podKey(p Pod) string {
	if p.UID != "" {
		return p.UID
	}
	return p.Namespace + "/" + p.Name
}

// Step advances every running pod's server to now.
func (s *Server) Step(now time.Time) error {
	pods, err := s.pods.Pods()
	if err != nil {
		return fmt.Errorf("listing GPU pods: %w", err)
	}
	ready := map[string]int{}
	for _, p := range pods {
		if p.Running && p.Ready {
			ready[p.WorkloadKey()]++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dt := 0.0
	if !s.last.IsZero() {
		dt = min(now.Sub(s.last), s.cfg.MaxStep).Seconds()
	}
	s.last = now
	mu := s.cfg.CapacityRPS
	slots := mu * s.cfg.ServiceTime.Seconds()
	rps := map[string]float64{}
	live := map[string]*ServerState{}
	for _, p := range pods {
		if !p.Running {
			continue
		}
		k := podKey(p)
		st := s.state[k]
		if st == nil {
			st = &ServerState{Namespace: p.Namespace, Name: p.Name}
		}
		live[k] = st
		lambda := 0.0
		if p.Ready {
			w := p.WorkloadKey()
			total, seen := rps[w]
			if !seen {
				total, _ = s.load.RPS(w, now)
				rps[w] = total
			}
			if total > 0 && !math.IsInf(total, 0) {
				lambda = total / float64(ready[w])
			}
		}
		st.ArrivalRPS = lambda
		st.Waiting = max(0, st.Waiting+(lambda-mu)*dt)
		if st.Waiting > 0 {
			st.Running = slots
		} else {
			st.Running = min(slots, lambda*s.cfg.ServiceTime.Seconds())
		}
		st.KVCacheUsage = st.Running / slots
		st.QueueTime = st.Waiting / mu
	}
	s.state = live
	return nil
}

// States returns every running pod's server, ordered by namespace and name.
func (s *Server) States() []ServerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ServerState, 0, len(s.state))
	for _, st := range s.state {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b ServerState) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// state returns one pod's server by namespace and name.
func (s *Server) stateOf(namespace, name string) (ServerState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.state {
		if st.Namespace == namespace && st.Name == name {
			return *st, true
		}
	}
	return ServerState{}, false
}

// QueueTimeMetric is the simulated server's own gauge of the time a request
// arriving now waits for a batch slot.
const QueueTimeMetric = "spillway_sim_queue_time_seconds"

// ServeHTTP serves GET /pods/<namespace>/<name>/metrics: the pod's server
// gauges in vLLM's names, as Prometheus would scrape them from the pod
// itself (pod discovery rewrites the address to this server and keeps the
// pod's IP as instance). Unknown pods are 404. GET /pods lists every pod's
// ServerState as JSON (benchmarks read time in queue from it).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "only GET", http.StatusMethodNotAllowed)
		return
	}
	if strings.Trim(r.URL.Path, "/") == "pods" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.States())
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "pods" || parts[3] != "metrics" {
		http.Error(w, "want /pods/<namespace>/<name>/metrics", http.StatusNotFound)
		return
	}
	st, ok := s.stateOf(parts[1], parts[2])
	if !ok {
		http.Error(w, fmt.Sprintf("no running GPU pod %s/%s", parts[1], parts[2]), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	writeGauges(w, st)
}

// writeGauges writes one pod's gauges in the text exposition format, with
// vLLM's model_name label.
func writeGauges(w io.Writer, st ServerState) {
	for _, g := range []struct {
		name, help string
		v          float64
	}{
		{metricnames.VLLMRequestsWaiting, "Requests waiting for a batch slot (simulated).", st.Waiting},
		{metricnames.VLLMRequestsRunning, "Requests in the running batch (simulated).", st.Running},
		{metricnames.VLLMKVCacheUsage, "Share of the KV cache in use, 0 to 1 (simulated).", st.KVCacheUsage},
		{QueueTimeMetric, "Seconds a request arriving now waits for a batch slot (simulated).", st.QueueTime},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s{model_name=\"sim\"} %g\n", g.name, g.help, g.name, g.name, g.v)
	}
}
