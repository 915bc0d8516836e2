package placement

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
	cache     client.Reader // for pods: a reservation whose pod is seen is done
	clock     clock.PassiveClock
	ttl       time.Duration
	metrics   *Metrics
}

// reserve decides again on fresh shared state and publishes the
// reservation. states are the unit states the first decision was made on
// (cache counts plus this replica's reservations, inflight); the fresh
// status adds the other replicas' reservations. It returns the decision,
// which may be another unit or a denial. When the state cannot be read or
// written it never over-admits: every unit with a max counts as full.
func (s *sharedReservations) reserve(ctx context.Context, rp *v1alpha1.ResourcePolicy, req admission.Request, states []rules.UnitState, inflight []rules.Reservation) rules.Decision {
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
		kept, err := s.prune(ctx, fresh.Status.Reservations, now)
		if err != nil {
			lastErr = err
			break
		}
		st := append([]rules.UnitState(nil), states...)
		// A decision made again (TryReserve lost a node to another
		// policy) replaces this pod's own earlier reservation.
		kept = slices.DeleteFunc(kept, func(r v1alpha1.PlacementReservation) bool { return r.ID == id })
		for _, r := range kept {
			if mine[r.ID] {
				continue // already counted in states
			}
			if u, ok := rules.UnitIndex(rp, r.Unit); ok && u != rules.Outside && u < len(st) {
				st[u].Count++
			}
		}
		d := rules.Choose(&rp.Spec, st)
		if d.Deny || d.Unit == rules.Outside || rp.Spec.Units[d.Unit].Max == nil {
			// No unit with a max is taken: nothing to publish.
			return d
		}
		fresh.Status.Reservations = append(kept, v1alpha1.PlacementReservation{
			ID: id, Unit: rules.UnitLabel(rp, d.Unit), Node: d.Node, Expires: metav1.NewTime(now.Add(s.ttl)),
		})
		err = s.client.Status().Update(ctx, fresh)
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

// prune drops expired reservations and those whose pod the cache shows
// (the pod then counts itself).
func (s *sharedReservations) prune(ctx context.Context, in []v1alpha1.PlacementReservation, now time.Time) ([]v1alpha1.PlacementReservation, error) {
	out := make([]v1alpha1.PlacementReservation, 0, len(in)+1)
	for _, r := range in {
		if !now.Before(r.Expires.Time) {
			continue
		}
		var pods corev1.PodList
		if err := s.cache.List(ctx, &pods, client.MatchingFields{IndexPlacementID: r.ID}); err != nil {
			return nil, fmt.Errorf("looking up placed pods: %w", err)
		}
		if len(pods.Items) > 0 {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// full returns states with every unit that has a max at its max.
func full(rp *v1alpha1.ResourcePolicy, states []rules.UnitState) []rules.UnitState {
	st := append([]rules.UnitState(nil), states...)
	for i := range st {
		if m := rp.Spec.Units[i].Max; m != nil && st[i].Count < int(*m) {
			st[i].Count = int(*m)
		}
	}
	return st
}
