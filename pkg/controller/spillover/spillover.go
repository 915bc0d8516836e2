// Package spillover is the re-placement controller: it lets a pod that a
// ResourcePolicy put on a unit where it cannot schedule spill over to a
// later unit. Once such a pod has been unschedulable past the policy's
// grace, it is deleted (only when a ReplicaSet owns it, so a replacement
// comes), and the unit is treated as full for a cooldown so the webhook
// puts the replacement on a later unit.
package spillover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/events"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/placement"
)

// metrics are the controller's instruments.
type metrics struct {
	// Replacements counts pods deleted for re-placement, by namespace,
	// policy and the unit they left.
	Replacements *prometheus.CounterVec
}

// newMetrics creates the instruments and registers them on reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{Replacements: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricnames.PlacementReplacements,
		Help: "Pods deleted because they stayed unschedulable on their unit past the grace, so their replacement goes to a later unit.",
	}, []string{metricnames.LabelNamespace, metricnames.LabelPolicy, metricnames.LabelUnit})}
	return m, reg.Register(m.Replacements)
}

// Reconciler watches placed pods.
type Reconciler struct {
	client   client.Client
	tracker  *placement.Tracker
	recorder events.EventRecorder
	metrics  *metrics
	clock    clock.PassiveClock
	virtual  placement.VirtualNodes
}

// Options configures the reconciler.
type Options struct {
	// Tracker is the one the placement webhook uses: the cooldowns set
	// here keep the webhook off the unit a pod left.
	Tracker *placement.Tracker
	// Clock measures the graces; nil means the real clock.
	Clock clock.PassiveClock
	// VirtualNodes are the virtual nodes' label and taint, which virtual
	// units without a nodeSelector select; zero means virtual-kubelet's
	// conventions.
	VirtualNodes placement.VirtualNodes
}

// EventSource is the name events of this controller carry.
const EventSource = "spillway-replacement"

// New returns the reconciler; its metrics are registered on reg.
func New(c client.Client, recorder events.EventRecorder, reg prometheus.Registerer, opts Options) (*Reconciler, error) {
	if opts.Tracker == nil {
		return nil, errors.New("spillover: no placement tracker")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("spillover: %w", err)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Reconciler{client: c, tracker: opts.Tracker, recorder: recorder, metrics: m, clock: clk, virtual: opts.VirtualNodes.OrDefault()}, nil
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=spillway.dev,resources=resourcepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=spillway.dev,resources=resourcepolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Register builds the reconciler on mgr's client and event recorder and
// adds it to mgr: the form the controller wiring list uses.
func Register(mgr ctrl.Manager, reg prometheus.Registerer, opts Options) error {
	r, err := New(mgr.GetClient(), mgr.GetEventRecorder(EventSource), reg, opts)
	if err != nil {
		return err
	}
	return r.Register(mgr)
}

// Register adds the controller to the manager (it runs on the leader only).
func (r *Reconciler) Register(mgr ctrl.Manager) error {
	placed := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, ok := o.GetLabels()[placement.LabelPolicy]
		return ok
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("replacement").
		For(&corev1.Pod{}, builder.WithPredicates(placed)).
		Complete(r)
}

// Reconcile re-places the pod when it has been unschedulable on a non-last
// unit past the grace, and otherwise asks to be called back when the grace
// ends.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.client.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	policyName := pod.Labels[placement.LabelPolicy]
	if policyName == "" || pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil || placement.Terminal(pod) {
		return ctrl.Result{}, nil
	}
	if !unschedulable(pod) {
		return ctrl.Result{}, nil
	}
	rp := &v1alpha1.ResourcePolicy{}
	if err := r.client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: policyName}, rp); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	rp = r.virtual.Resolve(rp)
	unit, ok := placement.UnitIndex(rp, pod.Labels[placement.LabelUnit])
	// Only a fixed unit's pods are re-placed: an autoscaled or virtual
	// unit makes its room after the pod is pending.
	if !ok || unit == placement.Outside || unit == len(rp.Spec.Units)-1 || placement.Kind(&rp.Spec.Units[unit]) != placement.FixedUnit {
		return ctrl.Result{}, nil
	}
	grace, ok := placement.Grace(&rp.Spec)
	if !ok {
		return ctrl.Result{}, nil
	}
	if wait := pod.CreationTimestamp.Add(grace).Sub(r.clock.Now()); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	names := placement.DisplayNames(rp)
	owner := metav1.GetControllerOf(pod)
	if owner == nil || owner.Kind != "ReplicaSet" {
		r.recorder.Eventf(pod, rp, corev1.EventTypeWarning, "NotReplaced", "Replace",
			"unschedulable on unit %s for over %s, but no ReplicaSet owns the pod to create a replacement; left in place", names[unit], grace)
		return ctrl.Result{}, nil
	}
	if placement.WaitsForTerminating(&rp.Spec) {
		terminating, err := r.unitHasTerminating(ctx, rp, unit)
		if err != nil {
			return ctrl.Result{}, err
		}
		if terminating {
			// LackResourceAndNoTerminating: the room they hold is the
			// pod's; it moves on only once none is left.
			return ctrl.Result{RequeueAfter: grace}, nil
		}
	}
	later, err := r.laterUnitUnderMax(ctx, rp, unit, pod)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !later {
		r.recorder.Eventf(pod, rp, corev1.EventTypeWarning, "NotReplaced", "Replace",
			"unschedulable on unit %s for over %s, but every later unit is at its max; waiting", names[unit], grace)
		return ctrl.Result{RequeueAfter: grace}, nil
	}

	// The local tracker serves this replica's webhook at once; the status
	// serves every other replica's, through their caches.
	until := r.tracker.Cool(placement.UnitKey{Policy: placement.PolicyKey(rp), Unit: pod.Labels[placement.LabelUnit]})
	if err := r.recordCooldown(ctx, rp, unit, until); err != nil {
		return ctrl.Result{}, err
	}
	uid := pod.UID
	if err := r.client.Delete(ctx, pod, client.Preconditions{UID: &uid}); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("deleting pod %s for re-placement: %w", req.NamespacedName, err)
	}
	r.metrics.Replacements.WithLabelValues(rp.Namespace, rp.Name, pod.Labels[placement.LabelUnit]).Inc()
	r.recorder.Eventf(pod, rp, corev1.EventTypeWarning, "Replaced", "Replace",
		"unschedulable on unit %s for over %s: deleted so its ReplicaSet's replacement is placed on a later unit; unit %s counts as full until %s",
		names[unit], grace, names[unit], until.UTC().Format(time.RFC3339))
	r.recorder.Eventf(rp, pod, corev1.EventTypeNormal, "Replaced", "Replace",
		"pod %s was unschedulable on unit %s for over %s and was deleted for re-placement", pod.Name, names[unit], grace)
	log.FromContext(ctx).Info("re-placed pod", "pod", req.NamespacedName, "policy", rp.Name, "unit", names[unit])
	return ctrl.Result{}, nil
}

// recordCooldown writes the cooldown into the policy's status.
func (r *Reconciler) recordCooldown(ctx context.Context, rp *v1alpha1.ResourcePolicy, unit int, until time.Time) error {
	if len(rp.Status.Units) != len(rp.Spec.Units) {
		// No status for these units yet: a skeleton the status controller
		// fills in.
		names := placement.DisplayNames(rp)
		rp.Status.Units = make([]v1alpha1.UnitStatus, len(rp.Spec.Units))
		for i := range rp.Status.Units {
			rp.Status.Units[i] = v1alpha1.UnitStatus{Name: names[i], Resource: rp.Spec.Units[i].Resource}
		}
	}
	rp.Status.Units[unit].CooldownUntil = &metav1.Time{Time: until}
	if err := r.client.Status().Update(ctx, rp); err != nil {
		return fmt.Errorf("recording the cooldown of unit %d in ResourcePolicy %s: %w", unit, rp.Name, err)
	}
	return nil
}

// unschedulable reports whether the scheduler has found no node for the pod.
func unschedulable(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable
		}
	}
	return false
}

// laterUnitUnderMax reports whether some unit after unit is under its max,
// so deleting the pod can help.
func (r *Reconciler) laterUnitUnderMax(ctx context.Context, rp *v1alpha1.ResourcePolicy, unit int, pod *corev1.Pod) (bool, error) {
	for i := range rp.Spec.Units[unit+1:] {
		if u := &rp.Spec.Units[unit+1+i]; !placement.Capped(u) && placement.Unmatchable(u) == "" {
			return true, nil
		}
	}
	pods, err := r.selected(ctx, rp)
	if err != nil {
		return false, err
	}
	// With matchLabelKeys each group of pods has its own max.
	var nodeErr error
	counts, used := placement.Usage(rp, placement.InGroup(rp, pods, pod), r.nodeOf(ctx, &nodeErr))
	if nodeErr != nil {
		return false, nodeErr
	}
	req := placement.PodRequests(pod)
	for i := unit + 1; i < len(rp.Spec.Units); i++ {
		u := &rp.Spec.Units[i]
		if placement.Unmatchable(u) != "" {
			continue
		}
		if (u.Max == nil || counts[i] < int(*u.Max)) && !placement.ExceedsMaxResources(u, used[i], req) {
			return true, nil
		}
	}
	return false, nil
}

// unitHasTerminating reports whether selected pods in the unit are
// terminating.
func (r *Reconciler) unitHasTerminating(ctx context.Context, rp *v1alpha1.ResourcePolicy, unit int) (bool, error) {
	pods, err := r.selected(ctx, rp)
	if err != nil {
		return false, err
	}
	var nodeErr error
	terminating := placement.TerminatingUnits(rp, pods, r.nodeOf(ctx, &nodeErr))
	return terminating[unit], nodeErr
}

func (r *Reconciler) selected(ctx context.Context, rp *v1alpha1.ResourcePolicy) ([]*corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(rp.Namespace), client.MatchingLabels(rp.Spec.Selector)); err != nil {
		return nil, fmt.Errorf("listing selected pods: %w", err)
	}
	return placement.Pointers(pods.Items), nil
}

// nodeOf reads nodes by name; a node that is gone is nil, other errors
// are joined into errp.
func (r *Reconciler) nodeOf(ctx context.Context, errp *error) func(string) *corev1.Node {
	return func(name string) *corev1.Node {
		n := &corev1.Node{}
		if err := r.client.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
			if !apierrors.IsNotFound(err) {
				*errp = errors.Join(*errp, fmt.Errorf("reading node %s: %w", name, err))
			}
			return nil
		}
		return n
	}
}
