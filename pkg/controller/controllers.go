// Package controller holds the single list of everything spillway-controller
// runs on its manager. Each concern lives in its own package under
// pkg/controller with a Register function; adding a controller is one line
// in Register below.
package controller

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/spillway-dev/spillway/pkg/controller/deletioncost"
	"github.com/spillway-dev/spillway/pkg/controller/inferencescaler"
	"github.com/spillway-dev/spillway/pkg/controller/placementwebhook"
	"github.com/spillway-dev/spillway/pkg/controller/resourcepolicy"
	"github.com/spillway-dev/spillway/pkg/controller/spillover"
	"github.com/spillway-dev/spillway/pkg/placement"
)

// Deps are the settings and shared objects the controllers take.
type Deps struct {
	// Registerer receives every metric (the manager's registry).
	Registerer prometheus.Registerer
	// Clock drives graces, cooldowns and reservation expiry.
	Clock clock.Clock
	// UnitCooldown is how long a unit counts as full after a pod was
	// re-placed away from it.
	UnitCooldown time.Duration
	// ReservationTTL bounds how long an in-flight placement waits for its
	// pod to show up in the cache.
	ReservationTTL time.Duration
	// PlacementKeys is the secret the webhook's placement signatures are
	// derived from; every replica must get the same one (the webhook's TLS
	// private key).
	PlacementKeys placementwebhook.KeySource
	// WebhookClientAuth, when set, restricts the placement webhook to
	// clients with an accepted certificate (its Configure must be among the
	// webhook server's TLS options too).
	WebhookClientAuth *placementwebhook.ClientAuth
	// HPASyncPeriod is kube-controller-manager's HPA sync period; one
	// failed metric read per period is one failed check for an
	// InferenceScaler's fallback.
	HPASyncPeriod time.Duration
	// VirtualNodes are the label and taint of the cluster's virtual nodes,
	// for virtual units without a nodeSelector; zero means virtual-kubelet's
	// conventions.
	VirtualNodes placement.VirtualNodes
}

// Leader election (configured in cmd/spillway-controller) holds a Lease in
// spillway's namespace and records its events there with the core API (the
// controllers' own events go through events.k8s.io).
//
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch,namespace=spillway-system
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch,namespace=spillway-system

// Register adds every controller and webhook to mgr. Webhooks are served by
// every replica; controllers run on the elected leader.
func Register(mgr manager.Manager, d Deps) error {
	if len(d.VirtualNodes.Labels) == 0 {
		d.VirtualNodes = placement.DefaultVirtualNodes()
	}
	// One tracker, shared: the webhook reads the cooldowns the re-placement
	// controller sets.
	tracker := placement.NewTracker(d.Clock, d.ReservationTTL, d.UnitCooldown)

	placementMetrics, err := placementwebhook.NewMetrics(d.Registerer)
	if err != nil {
		return fmt.Errorf("placement metrics: %w", err)
	}
	replacementMetrics, err := spillover.NewMetrics(d.Registerer)
	if err != nil {
		return fmt.Errorf("re-placement metrics: %w", err)
	}
	costMetrics, err := deletioncost.NewMetrics(d.Registerer)
	if err != nil {
		return fmt.Errorf("deletion-cost metrics: %w", err)
	}
	statusMetrics, err := resourcepolicy.NewMetrics(d.Registerer)
	if err != nil {
		return fmt.Errorf("ResourcePolicy metrics: %w", err)
	}

	steps := []struct {
		name     string
		register func() error
	}{
		{"placement webhook", func() error {
			return placementwebhook.Register(mgr, tracker, placementMetrics, d.Clock, d.PlacementKeys, d.WebhookClientAuth, d.VirtualNodes)
		}},
		{"re-placement", func() error { return spillover.Register(mgr, tracker, replacementMetrics, d.Clock, d.VirtualNodes) }},
		{"deletion cost", func() error { return deletioncost.Register(mgr, costMetrics, d.VirtualNodes) }},
		{"ResourcePolicy status", func() error { return resourcepolicy.Register(mgr, statusMetrics, d.Clock, d.VirtualNodes) }},
		// InferenceScaler (issue 6): one HPA per InferenceScaler.
		{"InferenceScaler", func() error {
			return inferencescaler.Register(mgr, d.Registerer, inferencescaler.Options{HPASyncPeriod: d.HPASyncPeriod, Clock: d.Clock})
		}},
	}
	for _, s := range steps {
		if err := s.register(); err != nil {
			return fmt.Errorf("registering %s: %w", s.name, err)
		}
	}
	return nil
}
