// Package resourcepolicy writes a ResourcePolicy's status: pods per unit
// (placed, running, pending), pods outside the units, and the Conflict and
// AllPodsPlaced conditions, with events when they change. It also reports
// each selected pod that was created without passing the placement webhook
// (spillway was down or unreachable; the webhook's failurePolicy is Ignore).
package resourcepolicy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/events"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/placement"
)

// metrics are the controller's instruments.
type metrics struct {
	// Unplaced is, per policy, the number of selected live pods created
	// after the policy without a placement (admitted while the webhook was
	// unavailable).
	Unplaced *prometheus.GaugeVec
}

// newMetrics creates the instruments and registers them on reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{Unplaced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricnames.PlacementUnplacedPods,
		Help: "Selected pods created without passing the placement webhook (it was unavailable), so in no unit by design.",
	}, []string{metricnames.LabelNamespace, metricnames.LabelPolicy})}
	return m, reg.Register(m.Unplaced)
}

// Reconciler keeps one policy's status.
type Reconciler struct {
	client   client.Client
	recorder events.EventRecorder
	metrics  *metrics
	clock    clock.PassiveClock
	virtual  placement.VirtualNodes

	mu sync.Mutex
	// reported holds, per policy, the unplaced pods already given an event,
	// so each gets one; it is replaced on every pass, which prunes it.
	reported map[types.NamespacedName]map[types.UID]bool
}

// Options configures the reconciler.
type Options struct {
	// Clock stamps conditions; nil means the real clock.
	Clock clock.PassiveClock
	// VirtualNodes are the virtual nodes' label and taint, which virtual
	// units without a nodeSelector select; zero means virtual-kubelet's
	// conventions.
	VirtualNodes placement.VirtualNodes
}

// EventSource is the name events of this controller carry.
const EventSource = "spillway-resourcepolicy"

// New returns the reconciler; its metrics are registered on reg.
func New(c client.Client, recorder events.EventRecorder, reg prometheus.Registerer, opts Options) (*Reconciler, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("resourcepolicy: %w", err)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Reconciler{client: c, recorder: recorder, metrics: m, clock: clk, reported: map[types.NamespacedName]map[types.UID]bool{},
		virtual: opts.VirtualNodes.OrDefault()}, nil
}

// +kubebuilder:rbac:groups=spillway.dev,resources=resourcepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=spillway.dev,resources=resourcepolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
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

// Register adds the controller to the manager (leader only). Pod changes
// wake the policies selecting the pod; a policy change wakes every policy of
// its namespace, whose conflicts may change.
func (r *Reconciler) Register(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("resourcepolicy").
		For(&v1alpha1.ResourcePolicy{}).
		Watches(&v1alpha1.ResourcePolicy{}, handler.EnqueueRequestsFromMapFunc(r.policiesInNamespace)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.policiesOf)).
		Complete(r)
}

func (r *Reconciler) policiesInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.ResourcePolicyList
	if err := r.client.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		if list.Items[i].Name != o.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

func (r *Reconciler) policiesOf(ctx context.Context, o client.Object) []reconcile.Request {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	var list v1alpha1.ResourcePolicyList
	if err := r.client.List(ctx, &list, client.InNamespace(pod.Namespace)); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if placement.Selects(&list.Items[i], pod) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// Reconcile recomputes the status from the pods the policy selects.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rp := &v1alpha1.ResourcePolicy{}
	if err := r.client.Get(ctx, req.NamespacedName, rp); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	var policies v1alpha1.ResourcePolicyList
	if err := r.client.List(ctx, &policies, client.InNamespace(rp.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing ResourcePolicies: %w", err)
	}
	var pods corev1.PodList
	if len(rp.Spec.Selector) > 0 {
		if err := r.client.List(ctx, &pods, client.InNamespace(rp.Namespace), client.MatchingLabels(rp.Spec.Selector)); err != nil {
			return ctrl.Result{}, fmt.Errorf("listing selected pods: %w", err)
		}
	}
	obs, err := r.observe(ctx, r.virtual.Resolve(rp), policies.Items, pods.Items)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.metrics.Unplaced.WithLabelValues(rp.Namespace, rp.Name).Set(float64(len(obs.unplaced)))
	r.reportUnplaced(rp, obs.unplaced)

	status := rp.Status.DeepCopy()
	status.ObservedGeneration = rp.Generation
	// Cooldowns set by the re-placement controller outlive this rebuild
	// until they end.
	now := r.clock.Now()
	for i := range obs.units {
		if placement.StatusCoolingDown(rp, i, now) {
			obs.units[i].CooldownUntil = rp.Status.Units[i].CooldownUntil
		}
	}
	status.Units = obs.units
	status.Outside = obs.outside
	status.UnitCount = int32(len(rp.Spec.Units))
	status.Summary = summary(obs.units)
	conflict := metav1.Condition{Type: v1alpha1.ConditionConflict, Status: metav1.ConditionFalse, Reason: "NoOverlap",
		Message: "no older ResourcePolicy selects this policy's pods", ObservedGeneration: rp.Generation}
	if len(obs.shadowedBy) > 0 {
		conflict.Status, conflict.Reason = metav1.ConditionTrue, "OlderPolicySelectsPods"
		conflict.Message = fmt.Sprintf("%d selected pods are also selected by older ResourcePolicy %s, which places them; this policy ignores them",
			obs.shadowed, strings.Join(obs.shadowedBy, ", "))
	}
	placed := metav1.Condition{Type: v1alpha1.ConditionAllPodsPlaced, Status: metav1.ConditionTrue, Reason: "AllPlaced",
		Message: "every selected pod went through placement", ObservedGeneration: rp.Generation}
	if n := len(obs.unplaced); n > 0 {
		placed.Status, placed.Reason = metav1.ConditionFalse, "WebhookBypassed"
		placed.Message = fmt.Sprintf("%d selected pods were created without placement (the webhook was unavailable): %s", n, names(obs.unplaced, 5))
	}
	matches := unitsMatchNodes(rp)
	wasMatching := meta.FindStatusCondition(rp.Status.Conditions, v1alpha1.ConditionUnitsMatchNodes)
	meta.SetStatusCondition(&status.Conditions, matches)
	if matches.Status == metav1.ConditionFalse && (wasMatching == nil || wasMatching.Message != matches.Message) {
		r.recorder.Eventf(rp, nil, corev1.EventTypeWarning, "UnmatchableNodeSelector", "Reconcile", "%s", matches.Message)
	}
	wasConflict := meta.IsStatusConditionTrue(rp.Status.Conditions, v1alpha1.ConditionConflict)
	wasPlaced := meta.FindStatusCondition(rp.Status.Conditions, v1alpha1.ConditionAllPodsPlaced)
	meta.SetStatusCondition(&status.Conditions, conflict)
	meta.SetStatusCondition(&status.Conditions, placed)
	if conflict.Status == metav1.ConditionTrue && !wasConflict {
		r.recorder.Eventf(rp, nil, corev1.EventTypeWarning, "Conflict", "Reconcile", "%s", conflict.Message)
	}
	if placed.Status == metav1.ConditionFalse && (wasPlaced == nil || wasPlaced.Status != metav1.ConditionFalse) {
		r.recorder.Eventf(rp, nil, corev1.EventTypeWarning, "WebhookBypassed", "Reconcile", "%s", placed.Message)
	}
	if equality.Semantic.DeepEqual(&rp.Status, status) {
		return ctrl.Result{}, nil
	}
	rp.Status = *status
	if err := r.client.Status().Update(ctx, rp); err != nil {
		if apierrors.IsConflict(err) {
			// Someone else wrote the policy; the watch brings it back.
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, fmt.Errorf("updating status: %w", err)
	}
	return ctrl.Result{}, nil
}

// unitsMatchNodes reports units whose nodeSelector holds a value no node
// label can hold. The API accepts such values because ACK does (its
// examples mask node-pool IDs as "np…****"); spillway skips those units, and
// this condition is where the user learns why.
func unitsMatchNodes(rp *v1alpha1.ResourcePolicy) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionUnitsMatchNodes, Status: metav1.ConditionTrue, Reason: "ValidNodeSelectors",
		Message: "every unit's nodeSelector can match nodes", ObservedGeneration: rp.Generation}
	display := placement.DisplayNames(rp)
	var bad []string
	for i := range rp.Spec.Units {
		u := &rp.Spec.Units[i]
		if k := placement.Unmatchable(u); k != "" {
			bad = append(bad, fmt.Sprintf("units[%d] (%s) %s=%q", i, display[i], k, u.NodeSelector[k]))
		}
	}
	if len(bad) > 0 {
		c.Status, c.Reason = metav1.ConditionFalse, "UnmatchableNodeSelector"
		c.Message = fmt.Sprintf("%s: not a valid label value, so no node can carry it; spillway places no pod in such a unit. Use the node pool's real label value",
			strings.Join(bad, ", "))
	}
	return c
}

type observation struct {
	units      []v1alpha1.UnitStatus
	outside    int32
	shadowed   int
	shadowedBy []string
	unplaced   []*corev1.Pod
}

func (r *Reconciler) observe(ctx context.Context, rp *v1alpha1.ResourcePolicy, policies []v1alpha1.ResourcePolicy, pods []corev1.Pod) (observation, error) {
	display := placement.DisplayNames(rp)
	obs := observation{units: make([]v1alpha1.UnitStatus, len(rp.Spec.Units))}
	for i, u := range rp.Spec.Units {
		obs.units[i] = v1alpha1.UnitStatus{Name: display[i], Resource: u.Resource}
	}
	nodes := map[string]*corev1.Node{}
	for i := range pods {
		p := &pods[i]
		if placement.Terminal(p) || p.DeletionTimestamp != nil {
			continue
		}
		winner, _ := placement.Winner(policies, p)
		if winner == nil {
			continue
		}
		if winner.Name != rp.Name {
			obs.shadowed++
			if !slices.Contains(obs.shadowedBy, winner.Name) {
				obs.shadowedBy = append(obs.shadowedBy, winner.Name)
			}
			continue
		}
		if _, labelled := p.Labels[placement.LabelPolicy]; !labelled && !p.CreationTimestamp.Before(&rp.CreationTimestamp) {
			obs.unplaced = append(obs.unplaced, p)
		}
		var node *corev1.Node
		if !placement.Placed(rp, p) && p.Spec.NodeName != "" {
			n, err := r.node(ctx, nodes, p.Spec.NodeName)
			if err != nil {
				return obs, err
			}
			node = n
		}
		u := placement.UnitOf(rp, p, node)
		if u == placement.Outside {
			obs.outside++
			continue
		}
		obs.units[u].Placed++
		if p.Spec.NodeName != "" && p.Status.Phase == corev1.PodRunning {
			obs.units[u].Running++
		} else {
			obs.units[u].Pending++
		}
	}
	slices.Sort(obs.shadowedBy)
	return obs, nil
}

func (r *Reconciler) node(ctx context.Context, cache map[string]*corev1.Node, name string) (*corev1.Node, error) {
	if n, ok := cache[name]; ok {
		return n, nil
	}
	n := &corev1.Node{}
	if err := r.client.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, errors.Join(fmt.Errorf("reading node %s", name), err)
		}
		n = nil
	}
	cache[name] = n
	return n, nil
}

// reportUnplaced gives each newly seen unplaced pod one event.
func (r *Reconciler) reportUnplaced(rp *v1alpha1.ResourcePolicy, pods []*corev1.Pod) {
	key := client.ObjectKeyFromObject(rp)
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.reported[key]
	now := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		now[p.UID] = true
		if !prev[p.UID] {
			r.recorder.Eventf(p, rp, corev1.EventTypeWarning, "NotPlaced", "Place",
				"selected by ResourcePolicy %s but created without placement (the spillway webhook was unavailable); it is in no unit and its scale-in rank comes from its node", rp.Name)
		}
	}
	r.reported[key] = now
}

func (r *Reconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.reported, key)
	r.mu.Unlock()
	r.metrics.Unplaced.DeleteLabelValues(key.Namespace, key.Name)
}

// summary renders "name=placed" per unit for kubectl's table.
func summary(units []v1alpha1.UnitStatus) string {
	parts := make([]string, len(units))
	for i, u := range units {
		parts[i] = fmt.Sprintf("%s=%d", u.Name, u.Placed)
	}
	return strings.Join(parts, " ")
}

func names(pods []*corev1.Pod, limit int) string {
	var out []string
	for i, p := range pods {
		if i == limit {
			out = append(out, fmt.Sprintf("and %d more", len(pods)-limit))
			break
		}
		out = append(out, p.Name)
	}
	return strings.Join(out, ", ")
}
