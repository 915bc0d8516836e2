package placement

import (
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// Reservation is a placement the webhook made whose pod the informer cache
// may not show yet. Until it does, the reservation stands in for the pod: it
// counts toward its unit's max and its requests take room on its node, so a
// burst of pods created together cannot all take the same free slot.
type Reservation struct {
	// ID is the pod's AnnotationPlacementID.
	ID string
	// Policy is the placing policy as PolicyKey renders it.
	Policy string
	// Unit is the unit label the pod got.
	Unit string
	// Node is the node whose room was counted, "" when none was.
	Node string
	// Requests is what the pod asks for (PodRequests).
	Requests corev1.ResourceList
	// Expires is when the reservation is dropped even if the pod never
	// shows up (its creation failed after admission).
	Expires time.Time
}

// UnitKey names one unit of one policy.
type UnitKey struct {
	Policy string // PolicyKey
	Unit   string // UnitLabel
}

// Tracker is the in-memory state shared by the placement webhook and the
// re-placement controller of one process: in-flight reservations and units
// cooling down after a re-placement. It is safe for concurrent use. Every
// replica serves the webhook and has its own Tracker; the state is a
// short-lived hint, so replicas need not agree.
type Tracker struct {
	clock    clock.PassiveClock
	ttl      time.Duration
	cooldown time.Duration

	mu           sync.Mutex
	reservations map[string]Reservation
	cooling      map[UnitKey]time.Time
}

// NewTracker returns a Tracker. ttl bounds how long a reservation waits for
// its pod to appear; cooldown is how long a unit is treated as full after a
// pod was re-placed away from it.
func NewTracker(clk clock.PassiveClock, ttl, cooldown time.Duration) *Tracker {
	return &Tracker{
		clock: clk, ttl: ttl, cooldown: cooldown,
		reservations: map[string]Reservation{},
		cooling:      map[UnitKey]time.Time{},
	}
}

// Cooldown is how long Cool keeps a unit full.
func (t *Tracker) Cooldown() time.Duration { return t.cooldown }

// Cool marks the unit full until now+cooldown and returns that time.
func (t *Tracker) Cool(k UnitKey) time.Time {
	until := t.clock.Now().Add(t.cooldown)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cooling[k] = until
	return until
}

// Txn is exclusive access to the tracker, so that reading the in-flight
// reservations, deciding and reserving happen as one step. Call Done when
// finished.
type Txn struct {
	t   *Tracker
	now time.Time
}

// Begin locks the tracker, first dropping expired cooldowns and
// reservations, and those whose pod seen reports as visible in the cache.
func (t *Tracker) Begin(seen func(id string) bool) *Txn {
	t.mu.Lock()
	now := t.clock.Now()
	for id, r := range t.reservations {
		if !now.Before(r.Expires) || (seen != nil && seen(id)) {
			delete(t.reservations, id)
		}
	}
	for k, until := range t.cooling {
		if !now.Before(until) {
			delete(t.cooling, k)
		}
	}
	return &Txn{t: t, now: now}
}

// Done unlocks the tracker.
func (x *Txn) Done() { x.t.mu.Unlock() }

// InFlight is every standing reservation, sorted by ID.
func (x *Txn) InFlight() []Reservation {
	out := make([]Reservation, 0, len(x.t.reservations))
	for _, r := range x.t.reservations {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Reservation) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// CoolingDown reports whether the unit is cooling down.
func (x *Txn) CoolingDown(k UnitKey) bool {
	_, ok := x.t.cooling[k]
	return ok
}

// Reserve records a reservation, setting its expiry.
func (x *Txn) Reserve(r Reservation) {
	r.Expires = x.now.Add(x.t.ttl)
	x.t.reservations[r.ID] = r
}

// Len is the number of standing reservations (for tests and metrics).
func (x *Txn) Len() int { return len(x.t.reservations) }
