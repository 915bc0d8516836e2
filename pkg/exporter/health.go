package exporter

import (
	"fmt"
	"net/http"
	"time"
)

// StaleAfter is how many collection intervals a snapshot stays servable.
// Past it, process series disappear (never frozen at an old value) and
// /healthz fails.
const StaleAfter = 3

// stale reports whether a snapshot of this age may no longer be served:
// past StaleAfter intervals its process series are left out of scrapes.
func (e *Exporter) stale(age time.Duration) bool {
	return age > StaleAfter*e.cfg.Interval
}

// Healthz fails once the last successful collection (or, before the first,
// the exporter's start) is more than StaleAfter intervals old: the backend
// is wedged and a restart may help.
func (e *Exporter) Healthz(w http.ResponseWriter, _ *http.Request) {
	ref, what := e.started, "started"
	if snap := e.snap.Load(); snap != nil {
		ref, what = snap.at, "last successful collection"
	}
	age := e.cfg.Clock.Now().Sub(ref)
	if e.stale(age) {
		http.Error(w, fmt.Sprintf("unhealthy: %s %s ago, more than %d collection intervals of %s", what, age.Round(time.Millisecond), StaleAfter, e.cfg.Interval), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// Readyz succeeds once one collection has succeeded, so Prometheus is not
// pointed at an exporter with nothing to say.
func (e *Exporter) Readyz(w http.ResponseWriter, _ *http.Request) {
	if e.snap.Load() == nil {
		http.Error(w, "not ready: no successful collection yet", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}
