// Package controller holds the single list of everything spillway-controller
// runs on its manager: Register below. Adding a controller is one line in
// that list.
//
// Every package under pkg/controller has the same shape:
//
//   - Options: its settings and the objects it shares with others (clock,
//     placement tracker, virtual nodes); a zero field means its default.
//   - New(client, recorder, reg, Options): builds the reconciler (or the
//     webhook), with its own metrics registered on reg; unit tests call it
//     with a fake client and a fresh registry.
//   - Register(mgr, reg, Options): New on mgr's client and an event
//     recorder named by the package's EventSource, then the method
//     Register(mgr), which adds the watches (or the webhook) to mgr.
//
// The one exception is certs: its Manager serves the webhook's certificate,
// so it is built before the manager (the webhook server's TLS options read
// it) on a direct client, and its first chain is issued before the webhook
// listens; the list below only adds it to the manager (Manager.Register) to
// keep the chain current. It has no metrics.
package controller

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/spillway-dev/spillway/pkg/controller/certs"
	"github.com/spillway-dev/spillway/pkg/controller/deletioncost"
	"github.com/spillway-dev/spillway/pkg/controller/fleetmetrics"
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
	// Certificates, when set, is the webhook's certificate manager, its
	// first chain already issued (Ensure); nil when the certificate is
	// mounted from files.
	Certificates *certs.Manager
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

// Register adds every controller and webhook to mgr. Webhooks and the
// certificate manager run on every replica; controllers run on the elected
// leader.
func Register(mgr manager.Manager, d Deps) error {
	virtual := d.VirtualNodes.OrDefault()
	// One tracker, shared: the webhook reads the cooldowns the re-placement
	// controller sets.
	tracker := placement.NewTracker(d.Clock, d.ReservationTTL, d.UnitCooldown)
	reg := d.Registerer

	steps := []struct {
		name     string
		register func() error
	}{
		{"webhook certificate", func() error {
			if d.Certificates == nil {
				return nil
			}
			return d.Certificates.Register(mgr)
		}},
		{"placement webhook", func() error {
			return placementwebhook.Register(mgr, reg, placementwebhook.Options{
				Tracker: tracker, Clock: d.Clock, Keys: d.PlacementKeys, ClientAuth: d.WebhookClientAuth, VirtualNodes: virtual,
			})
		}},
		{"re-placement", func() error {
			return spillover.Register(mgr, reg, spillover.Options{Tracker: tracker, Clock: d.Clock, VirtualNodes: virtual})
		}},
		{"deletion cost", func() error {
			return deletioncost.Register(mgr, reg, deletioncost.Options{VirtualNodes: virtual})
		}},
		{"ResourcePolicy status", func() error {
			return resourcepolicy.Register(mgr, reg, resourcepolicy.Options{Clock: d.Clock, VirtualNodes: virtual})
		}},
		// InferenceScaler (issue 6): one HPA per InferenceScaler.
		{"InferenceScaler", func() error {
			return inferencescaler.Register(mgr, reg, inferencescaler.Options{HPASyncPeriod: d.HPASyncPeriod, Clock: d.Clock})
		}},
		{"fleet metrics", func() error { return fleetmetrics.Register(mgr, d.Registerer, fleetmetrics.Options{}) }},
	}
	for _, s := range steps {
		if err := s.register(); err != nil {
			return fmt.Errorf("registering %s: %w", s.name, err)
		}
	}
	return nil
}
