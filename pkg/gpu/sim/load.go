package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Load sources of a workload's requests per second, in WorkloadStatus.Source.
const (
	SourceOverride = "override" // set over HTTP
	SourceTrace    = "trace"
	SourceNone     = "none" // neither: 0 rps
)

// Load is the simulator's load input: requests per second per workload.
// Values set live (Set, or PUT /load) win over the trace; a workload with
// neither has no load.
type Load struct {
	trace *Trace
	start time.Time
	speed float64

	mu        sync.RWMutex
	overrides map[string]float64
}

// NewLoad returns a load input over trace (nil for none). The trace starts at
// start and advances speed trace minutes per wall-clock minute, so a day-long
// trace can replay in 24 minutes with speed 60.
func NewLoad(trace *Trace, start time.Time, speed float64) (*Load, error) {
	if trace != nil && !(speed > 0) {
		return nil, fmt.Errorf("trace speed %g: must be > 0", speed)
	}
	return &Load{trace: trace, start: start, speed: speed, overrides: map[string]float64{}}, nil
}

// Set overrides a workload's load until Clear.
func (l *Load) Set(workload string, rps float64) error {
	if err := ValidateWorkload(workload); err != nil {
		return err
	}
	if !validRPS(rps) {
		return fmt.Errorf("rps %g is not a finite number >= 0", rps)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.overrides[workload] = rps
	return nil
}

// Clear drops a workload's override ("" drops them all).
func (l *Load) Clear(workload string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if workload == "" {
		clear(l.overrides)
		return
	}
	delete(l.overrides, workload)
}

// RPS is the load of workload at now and where it came from.
func (l *Load) RPS(workload string, now time.Time) (float64, string) {
	l.mu.RLock()
	v, ok := l.overrides[workload]
	l.mu.RUnlock()
	if ok {
		return v, SourceOverride
	}
	if v, ok := l.trace.RPS(workload, l.TraceMinute(now)); ok {
		return v, SourceTrace
	}
	return 0, SourceNone
}

// TraceMinute is the trace position at now.
func (l *Load) TraceMinute(now time.Time) float64 {
	return now.Sub(l.start).Minutes() * l.speed
}

// Overrides returns a copy of the live overrides.
func (l *Load) Overrides() map[string]float64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return maps.Clone(l.overrides)
}

// StatusSource reports what the simulator computed in its last collection.
type StatusSource interface {
	Status() []WorkloadStatus
}

// Handler serves the load input over HTTP:
//
//	PUT    /load?workload=ns/name&rps=N   set a workload's load
//	DELETE /load?workload=ns/name         drop it (the trace applies again)
//	DELETE /load                          drop every override
//	GET    /load                          JSON: overrides and, per workload,
//	                                      the last collection's rps, source,
//	                                      Ready replicas and per-pod utilization
func Handler(l *Load, status StatusSource) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /load", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, loadView{Overrides: l.Overrides(), Workloads: status.Status()})
	})
	mux.HandleFunc("PUT /load", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		workload := q.Get("workload")
		var errs []error
		if err := ValidateWorkload(workload); err != nil {
			errs = append(errs, err)
		}
		rps, err := ParseRPS(q.Get("rps"))
		if err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := l.Set(workload, rps); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"workload": workload, "rps": rps})
	})
	mux.HandleFunc("DELETE /load", func(w http.ResponseWriter, r *http.Request) {
		workload := r.URL.Query().Get("workload")
		if workload != "" {
			if err := ValidateWorkload(workload); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		l.Clear(workload)
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

type loadView struct {
	Overrides map[string]float64 `json:"overrides"`
	Workloads []WorkloadStatus   `json:"workloads"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

// sortedStatus orders workloads by key for stable output.
func sortedStatus(m map[string]*WorkloadStatus) []WorkloadStatus {
	out := make([]WorkloadStatus, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, *m[k])
	}
	return out
}
