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
	// Group is the pod's GroupKey under the policy's matchLabelKeys: the
	// reservation counts only toward its own group's max.
	Group string
	// Expires is when the reservation is dropped even if the pod never
	// shows up (its creation failed after admission, or the review was
	// forged).
	Expires time.Time

	// gen orders reservations for TryReserve.
	gen uint64
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
//
// Admissions for one policy serialize on that policy's lock, so that a burst
// of its pods cannot all take the same free slot or exceed a unit's max;
// admissions for different policies run side by side. Node room is shared
// between policies whose units share nodes: TryReserve catches another
// policy's reservation on the same nodes made while this one decided.
type Tracker struct {
	clock    clock.PassiveClock
	ttl      time.Duration
	cooldown time.Duration

	// mu guards the maps and gen; it is held only for map operations,
	// never while the cache is read.
	mu           sync.Mutex
	reservations map[string]Reservation
	cooling      map[UnitKey]time.Time
	policies     map[string]*policyLock
	// gen numbers reservations in the order they were made.
	gen uint64
}

// policyLock serializes one policy's admissions; users counts the
// transactions holding or waiting for it, so that an idle policy's lock is
// dropped from the map.
type policyLock struct {
	mu    sync.Mutex
	users int
}

// NewTracker returns a Tracker. ttl bounds how long a reservation waits for
// its pod to appear; cooldown is how long a unit is treated as full after a
// pod was re-placed away from it.
func NewTracker(clk clock.PassiveClock, ttl, cooldown time.Duration) *Tracker {
	return &Tracker{
		clock: clk, ttl: ttl, cooldown: cooldown,
		reservations: map[string]Reservation{},
		cooling:      map[UnitKey]time.Time{},
		policies:     map[string]*policyLock{},
	}
}

// TTL is how long a reservation waits for its pod.
func (t *Tracker) TTL() time.Duration { return t.ttl }

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

// Txn is one policy's exclusive turn at the tracker, so that reading the
// in-flight reservations, deciding and reserving happen as one step for
// that policy. Call Done when finished.
type Txn struct {
	t      *Tracker
	policy string
	lock   *policyLock
	now    time.Time
	// seenGen is gen when InFlight last read the reservations.
	seenGen uint64
}

// Begin starts a transaction holding no policy's lock: for reading and for
// tests. The webhook uses BeginPolicy.
func (t *Tracker) Begin(seen func(id string) bool) *Txn {
	return t.BeginPolicy("", seen)
}

// BeginPolicy takes the policy's lock (PolicyKey), then drops expired
// cooldowns and reservations, and the reservations whose pod seen reports
// as visible in the cache (seen is called without the tracker's map lock
// held, and may read the cache).
func (t *Tracker) BeginPolicy(policy string, seen func(id string) bool) *Txn {
	x := &Txn{t: t, policy: policy}
	if policy != "" {
		t.mu.Lock()
		l := t.policies[policy]
		if l == nil {
			l = &policyLock{}
			t.policies[policy] = l
		}
		l.users++
		t.mu.Unlock()
		l.mu.Lock()
		x.lock = l
	}
	now := t.clock.Now()
	x.now = now
	t.mu.Lock()
	var ids []string
	for id, r := range t.reservations {
		if !now.Before(r.Expires) {
			delete(t.reservations, id)
			continue
		}
		ids = append(ids, id)
	}
	for k, until := range t.cooling {
		if !now.Before(until) {
			delete(t.cooling, k)
		}
	}
	t.mu.Unlock()
	if seen != nil {
		var gone []string
		for _, id := range ids {
			if seen(id) {
				gone = append(gone, id)
			}
		}
		t.mu.Lock()
		for _, id := range gone {
			delete(t.reservations, id)
		}
		t.mu.Unlock()
	}
	return x
}

// Release drops the reservation with the given ID: its pod is now visible
// (it then holds its room itself) or gone. The webhook calls it from the
// pod informer, so that a reservation is dropped the moment its pod shows
// up, not at the next admission of the same policy, which may come when
// the pod is already gone again.
func (t *Tracker) Release(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.reservations, id)
}

// Done releases the policy's lock.
func (x *Txn) Done() {
	if x.lock == nil {
		return
	}
	x.lock.mu.Unlock()
	x.t.mu.Lock()
	x.lock.users--
	if x.lock.users == 0 {
		delete(x.t.policies, x.policy)
	}
	x.t.mu.Unlock()
	x.lock = nil
}

// InFlight is every standing reservation, of every policy (they share
// nodes), sorted by ID. TryReserve compares against this reading.
func (x *Txn) InFlight() []Reservation {
	x.t.mu.Lock()
	defer x.t.mu.Unlock()
	x.seenGen = x.t.gen
	out := make([]Reservation, 0, len(x.t.reservations))
	for _, r := range x.t.reservations {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Reservation) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// CoolingDown reports whether the unit is cooling down.
func (x *Txn) CoolingDown(k UnitKey) bool {
	x.t.mu.Lock()
	defer x.t.mu.Unlock()
	_, ok := x.t.cooling[k]
	return ok
}

// Reserve records a reservation, setting its expiry.
func (x *Txn) Reserve(r Reservation) {
	x.t.mu.Lock()
	defer x.t.mu.Unlock()
	x.reserve(r)
}

// TryReserve records the reservation unless, since InFlight was read,
// another policy reserved room on one of nodes (the nodes whose room the
// decision was based on): then the decision may rest on room that is gone,
// nothing is recorded, and the caller decides again.
func (x *Txn) TryReserve(r Reservation, nodes []string) bool {
	x.t.mu.Lock()
	defer x.t.mu.Unlock()
	if x.t.gen != x.seenGen && len(nodes) > 0 {
		for _, o := range x.t.reservations {
			if o.gen > x.seenGen && o.Policy != r.Policy && o.Node != "" && slices.Contains(nodes, o.Node) {
				return false
			}
		}
	}
	x.reserve(r)
	return true
}

func (x *Txn) reserve(r Reservation) {
	x.t.gen++
	r.gen = x.t.gen
	r.Expires = x.now.Add(x.t.ttl)
	x.t.reservations[r.ID] = r
}

// Len is the number of standing reservations (for tests and metrics).
func (x *Txn) Len() int {
	x.t.mu.Lock()
	defer x.t.mu.Unlock()
	return len(x.t.reservations)
}
