package placement

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// UnitState is what Choose needs to know about one unit at admission.
type UnitState struct {
	// Count is the number of pods counted toward the unit's max, in-flight
	// placements included.
	Count int
	// CoolingDown is true for a while after a pod was re-placed away from
	// the unit: it is treated as full.
	CoolingDown bool
	// Room is true when some usable node in the unit has room for the pod;
	// read only under LackResourceOrExceedMax.
	Room bool
	// RoomNode is that node, reserved for the pod.
	RoomNode string
	// OverMaxResources is true when the pod's requests would take the unit
	// past its maxResources: the unit is treated as at its max.
	OverMaxResources bool
	// Used is what the pods and reservations counted toward the unit
	// request, kept for units with maxResources (to add other replicas'
	// reservations to).
	Used corev1.ResourceList
	// Terminating is true when selected pods in the unit are terminating;
	// read only under LackResourceAndNoTerminating, where such a unit is
	// not skipped for lack of room (the pod waits for the room they free).
	Terminating bool
}

// SkipReason says why a unit was passed over.
type SkipReason string

// Reasons a unit is passed over.
const (
	SkipAtMax          SkipReason = "at max"
	SkipNoRoom         SkipReason = "no node with room"
	SkipCoolingDown    SkipReason = "cooling down after a re-placement"
	SkipAtMaxResources SkipReason = "the pod's requests would pass its maxResources"
	SkipUnmatchable    SkipReason = "its nodeSelector has a value no node label can hold"
)

// Skip records one unit that was passed over.
type Skip struct {
	Unit   int
	Reason SkipReason
}

// Decision is where a new pod goes.
type Decision struct {
	// Unit is the chosen unit's index, or Outside.
	Unit int
	// Node is the node whose room was reserved ("" when room was not
	// checked, or the pod waits for room).
	Node string
	// Deny is true when the strategy is required and every unit is at its
	// max: the pod may not be created now.
	Deny bool
	// Waiting is true when the chosen unit was picked although it has no
	// room or is cooling down, because every later unit is at its max, or
	// (ForTerminating) because its terminating pods are about to free room.
	Waiting bool
	// ForTerminating is true when the pod waits in a unit without room for
	// its terminating pods to leave (LackResourceAndNoTerminating).
	ForTerminating bool
	// Skipped lists the units passed over, in order.
	Skipped []Skip
}

// Choose picks the unit for a new pod. Units are tried in order, and an
// Unmatchable one is always passed over; a fixed
// unit is passed over when it is at its max, cooling down, or (under the
// LackResource policies) has no node with room. An autoscaled or virtual
// unit (Kind) only needs to be under its max: its room appears after the
// pod is pending. When every unit is passed over, the first one under its
// max is chosen anyway and the pod waits there; when every unit is at its
// max, prefer admits the pod outside the units and required denies it.
//
// Under LackResourceAndNoTerminating a unit without room is not skipped
// while it has terminating pods: the pod is placed there to wait for the
// room they free (a rollout's new pods replace the old ones in place).
func Choose(spec *v1alpha1.ResourcePolicySpec, states []UnitState) Decision {
	needRoom := NeedsRoom(spec)
	waitTerminating := WaitsForTerminating(spec)
	var d Decision
	firstUnderMax := Outside
	for i := range spec.Units {
		st := states[i]
		if Unmatchable(&spec.Units[i]) != "" {
			d.Skipped = append(d.Skipped, Skip{i, SkipUnmatchable})
			continue
		}
		if m := spec.Units[i].Max; m != nil && st.Count >= int(*m) {
			d.Skipped = append(d.Skipped, Skip{i, SkipAtMax})
			continue
		}
		if st.OverMaxResources {
			d.Skipped = append(d.Skipped, Skip{i, SkipAtMaxResources})
			continue
		}
		if firstUnderMax == Outside {
			firstUnderMax = i
		}
		switch {
		case Kind(&spec.Units[i]) != FixedUnit:
		case st.CoolingDown:
			d.Skipped = append(d.Skipped, Skip{i, SkipCoolingDown})
			continue
		case needRoom && !st.Room && waitTerminating && st.Terminating:
			d.Unit, d.Waiting, d.ForTerminating = i, true, true
			return d
		case needRoom && !st.Room:
			d.Skipped = append(d.Skipped, Skip{i, SkipNoRoom})
			continue
		}
		d.Unit = i
		if needRoom && st.Room {
			d.Node = st.RoomNode
		}
		return d
	}
	if firstUnderMax != Outside {
		d.Unit, d.Waiting = firstUnderMax, true
		return d
	}
	d.Unit = Outside
	d.Deny = Strategy(spec) == v1alpha1.StrategyRequired
	return d
}

// Explain renders the decision for events and admission messages, naming
// units as names does.
func (d Decision) Explain(names []string) string {
	var b strings.Builder
	switch {
	case d.Deny:
		b.WriteString("every unit is at its max and the strategy is required")
	case d.Unit == Outside:
		b.WriteString("every unit is at its max; placed outside the units (strategy prefer)")
	case d.ForTerminating:
		fmt.Fprintf(&b, "placed on unit %s to wait for the room its terminating pods free (LackResourceAndNoTerminating)", names[d.Unit])
	case d.Waiting:
		fmt.Fprintf(&b, "placed on unit %s to wait: every later unit is at its max", names[d.Unit])
	default:
		fmt.Fprintf(&b, "placed on unit %s", names[d.Unit])
		if d.Node != "" {
			fmt.Fprintf(&b, " (room on node %s)", d.Node)
		}
	}
	for _, s := range d.Skipped {
		fmt.Fprintf(&b, "; skipped %s: %s", names[s.Unit], s.Reason)
	}
	return b.String()
}
