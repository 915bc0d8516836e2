package placementwebhook

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	rules "github.com/spillway-dev/spillway/pkg/placement"
)

// reasonShared counts admissions that could not read or write the shared
// reservations and so treated every unit with a max as full.
const reasonShared = "shared-reservation"

// Bounds of the shared reservation step. Writers of one policy's status are
// the replicas' webhooks (each serializes its own admissions per policy)
// and the status controllers, so a few rounds settle a conflict; the time
// bound keeps the answer well inside the webhook's timeout (3 s in the
// chart).
const (
	maxSharedAttempts = 5
	sharedTimeout     = time.Second
)

// sharedReservations keeps the reservations into units with a max in the
// ResourcePolicy's status, where every replica sees them. A reservation is
// written with the resourceVersion the decision was made on, so two
// replicas deciding on the same state cannot both take the last slot: one
// write conflicts, and that replica reads again and decides again.
type sharedReservations struct {
	apiReader client.Reader // the API server, not a cache
	client    client.Client
	clock     clock.PassiveClock
	ttl       time.Duration
	metrics   *metrics
}

// reserve decides again on fresh shared state and publishes the
// reservation. states are the unit states the first decision was made on
// (cache counts plus this replica's reservations, inflight); the fresh
// status adds the other replicas' reservations. It returns the decision,
// which may be another unit or a denial. When the state cannot be read or
// written it never over-admits: every unit with a max counts as full.
//
// listed holds the placement IDs of the pods that states were counted
// from: their reservations are not counted again. A pod that reached the
// cache after states were counted is in neither states nor listed, so its
// reservation still counts it.
func (s *sharedReservations) reserve(ctx context.Context, rp *v1alpha1.ResourcePolicy, req admission.Request, podReq corev1.ResourceList, group string, states []rules.UnitState, inflight []rules.Reservation, listed map[string]bool) rules.Decision {
	ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	mine := map[string]bool{}
	for _, r := range inflight {
		mine[r.ID] = true
	}
	id := string(req.UID)
	var lastErr error
	for attempt := 0; attempt < maxSharedAttempts; attempt++ {
		fresh := &v1alpha1.ResourcePolicy{}
		if err := s.apiReader.Get(ctx, client.ObjectKeyFromObject(rp), fresh); err != nil {
			lastErr = fmt.Errorf("reading ResourcePolicy %s: %w", rp.Name, err)
			break
		}
		now := s.clock.Now()
		kept := prune(fresh.Status.Reservations, now)
		st := append([]rules.UnitState(nil), states...)
		// A decision made again (TryReserve lost a node to another
		// policy) replaces this pod's own earlier reservation.
		kept = slices.DeleteFunc(kept, func(r v1alpha1.PlacementReservation) bool { return r.ID == id })
		for _, r := range kept {
			if mine[r.ID] || listed[r.ID] {
				continue // already counted in states
			}
			if r.Group != group {
				continue // another group's max (matchLabelKeys)
			}
			if u, ok := rules.UnitIndex(rp, r.Unit); ok && u != rules.Outside && u < len(st) {
				st[u].Count++
				if len(rp.Spec.Units[u].MaxResources) > 0 {
					st[u].Used = rules.AddRequests(st[u].Used.DeepCopy(), r.Requests)
				}
			}
		}
		for u := range st {
			st[u].OverMaxResources = rules.ExceedsMaxResources(&rp.Spec.Units[u], st[u].Used, podReq)
		}
		d := rules.Choose(&rp.Spec, st)
		if d.Deny || d.Unit == rules.Outside || !rules.Capped(&rp.Spec.Units[d.Unit]) {
			// No capped unit is taken: nothing to publish.
			return d
		}
		r := v1alpha1.PlacementReservation{
			ID: id, Unit: rules.UnitLabel(rp, d.Unit), Node: d.Node, Group: group, Expires: metav1.NewTime(now.Add(s.ttl)),
		}
		if len(rp.Spec.Units[d.Unit].MaxResources) > 0 {
			// Only the capped resources: the status stays small.
			r.Requests = corev1.ResourceList{}
			for name := range rp.Spec.Units[d.Unit].MaxResources {
				if q, ok := podReq[name]; ok {
					r.Requests[name] = q
				}
			}
		}
		fresh.Status.Reservations = append(kept, r)
		err := s.client.Status().Update(ctx, fresh)
		if err == nil {
			return d
		}
		if !apierrors.IsConflict(err) {
			lastErr = fmt.Errorf("writing the reservation to ResourcePolicy %s: %w", rp.Name, err)
			break
		}
		lastErr = err
	}
	s.metrics.Errors.WithLabelValues(reasonShared).Inc()
	log.FromContext(ctx).Error(lastErr, "shared reservations unavailable; treating every unit with a max as full", "policy", rp.Name)
	return rules.Choose(&rp.Spec, full(rp, states))
}

// prune drops expired reservations. A reservation whose pod exists stays
// until it expires too: whether the pod is counted depends on each
// replica's own cache, so only the replica deciding can tell (listed), and
// a replica that dropped it on the strength of its cache would hide the
// pod from a replica whose cache has not seen it yet (a burst over two
// replicas put a fourth pod into a unit with max 3 that way).
func prune(in []v1alpha1.PlacementReservation, now time.Time) []v1alpha1.PlacementReservation {
	out := make([]v1alpha1.PlacementReservation, 0, len(in)+1)
	for _, r := range in {
		if now.Before(r.Expires.Time) {
			out = append(out, r)
		}
	}
	return out
}

// full returns states with every capped unit at its max.
func full(rp *v1alpha1.ResourcePolicy, states []rules.UnitState) []rules.UnitState {
	st := append([]rules.UnitState(nil), states...)
	for i := range st {
		if m := rp.Spec.Units[i].Max; m != nil && st[i].Count < int(*m) {
			st[i].Count = int(*m)
		}
		if len(rp.Spec.Units[i].MaxResources) > 0 {
			st[i].OverMaxResources = true
		}
	}
	return st
}
