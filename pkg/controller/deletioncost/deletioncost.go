// Package deletioncost keeps controller.kubernetes.io/pod-deletion-cost on
// every pod a ResourcePolicy selects, so that when a ReplicaSet scales in,
// pods in later units (the cloud pool) go before pods in earlier ones
// (on-prem). It patches pods only, and only when the value changes: the
// Deployment and its template are KServe's and are never touched.
//
// It also adopts selected pods that were admitted without placement (the
// webhook's failurePolicy is Ignore, so pods created while no controller
// replica answered carry no placement labels): once such a pod is bound, it
// gets the placement labels of the unit its node is in together with that
// unit's deletion cost, in one patch (placement.Adopt has the rule).
package deletioncost

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/placement"
)

// metrics are the controller's instruments.
type metrics struct {
	// Patches counts pod-deletion-cost patches by namespace, policy and
	// result (ok, error).
	Patches *prometheus.CounterVec
	// Adopted counts pods adopted (placement.Adopt) by namespace, policy
	// and the unit they were adopted into.
	Adopted *prometheus.CounterVec
}

// newMetrics creates the instruments and registers them on reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		Patches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.DeletionCostPatches,
			Help: "Patches of controller.kubernetes.io/pod-deletion-cost on selected pods, by result.",
		}, []string{metricnames.LabelNamespace, metricnames.LabelPolicy, metricnames.LabelResult}),
		Adopted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.PlacementAdoptedPods,
			Help: "Selected pods admitted without placement (the webhook was not called) that were given, once bound, the placement labels and deletion cost of the unit their node is in.",
		}, []string{metricnames.LabelNamespace, metricnames.LabelPolicy, metricnames.LabelUnit}),
	}
	if err := reg.Register(m.Patches); err != nil {
		return nil, err
	}
	return m, reg.Register(m.Adopted)
}

// Reconciler keeps the annotation of one pod right, and adopts it when it
// was admitted unplaced.
type Reconciler struct {
	client   client.Client
	recorder events.EventRecorder
	metrics  *metrics
	virtual  placement.VirtualNodes
}

// Options configures the reconciler.
type Options struct {
	// VirtualNodes are the virtual nodes' label and taint, which virtual
	// units without a nodeSelector select; zero means virtual-kubelet's
	// conventions.
	VirtualNodes placement.VirtualNodes
}

// EventSource is the name events of this controller carry.
const EventSource = "spillway-deletioncost"

// New returns the reconciler; its metrics are registered on reg.
func New(c client.Client, recorder events.EventRecorder, reg prometheus.Registerer, opts Options) (*Reconciler, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("deletioncost: %w", err)
	}
	return &Reconciler{client: c, recorder: recorder, metrics: m, virtual: opts.VirtualNodes.OrDefault()}, nil
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=spillway.dev,resources=resourcepolicies,verbs=get;list;watch
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

// Register adds the controller to the manager (leader only). A policy change
// re-ranks every pod it selects; a change of its status alone does not (the
// costs come from its spec, and in a burst the status changes with every
// pod: re-ranking all of the policy's pods each time made a burst's work
// grow with its square). Every pod update is reconciled, so an unplaced pod
// is adopted as soon as the scheduler binds it, and a new leader adopts, on
// its first list, what was admitted while none ran.
func (r *Reconciler) Register(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("deletioncost").
		For(&corev1.Pod{}).
		Watches(&v1alpha1.ResourcePolicy{}, handler.EnqueueRequestsFromMapFunc(r.podsOf),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}

func (r *Reconciler) podsOf(ctx context.Context, o client.Object) []reconcile.Request {
	rp, ok := o.(*v1alpha1.ResourcePolicy)
	if !ok || len(rp.Spec.Selector) == 0 {
		return nil
	}
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(rp.Namespace), client.MatchingLabels(rp.Spec.Selector)); err != nil {
		log.FromContext(ctx).Error(err, "listing pods of ResourcePolicy", "policy", client.ObjectKeyFromObject(rp))
		return nil
	}
	reqs := make([]reconcile.Request, len(pods.Items))
	for i := range pods.Items {
		reqs[i].NamespacedName = client.ObjectKeyFromObject(&pods.Items[i])
	}
	return reqs
}

// Reconcile sets the pod's deletion cost from the unit it is in under the
// oldest policy selecting it. Pods no policy selects are left alone.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.client.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if pod.DeletionTimestamp != nil || placement.Terminal(pod) {
		return ctrl.Result{}, nil
	}
	var policies v1alpha1.ResourcePolicyList
	if err := r.client.List(ctx, &policies, client.InNamespace(pod.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing ResourcePolicies: %w", err)
	}
	rp, _ := placement.Winner(policies.Items, pod)
	if rp == nil {
		return ctrl.Result{}, nil
	}
	rp = r.virtual.Resolve(rp)
	var node *corev1.Node
	if !placement.Placed(rp, pod) && pod.Spec.NodeName != "" {
		node = &corev1.Node{}
		if err := r.client.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
			if !apierrors.IsNotFound(err) {
				return ctrl.Result{}, fmt.Errorf("reading node %s: %w", pod.Spec.NodeName, err)
			}
			node = nil
		}
	}
	if a, state := placement.Adopt(rp, pod, node); state == placement.AdoptNow {
		err := r.adopt(ctx, rp, pod, node, a)
		if apierrors.IsConflict(err) {
			// The pod changed since the cache showed it; its update event
			// brings it back here with the new state.
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	want := placement.FormatCost(placement.DeletionCost(len(rp.Spec.Units), placement.UnitOf(rp, pod, node)))
	if pod.Annotations[placement.AnnotationDeletionCost] == want {
		return ctrl.Result{}, nil
	}
	// A merge patch of the one annotation: it neither races other writers
	// of the pod nor needs its resourceVersion.
	patch := client.RawPatch("application/merge-patch+json",
		fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, placement.AnnotationDeletionCost, want))
	if err := r.client.Patch(ctx, pod, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		r.metrics.Patches.WithLabelValues(rp.Namespace, rp.Name, "error").Inc()
		return ctrl.Result{}, fmt.Errorf("patching the deletion cost of %s: %w", req.NamespacedName, err)
	}
	r.metrics.Patches.WithLabelValues(rp.Namespace, rp.Name, "ok").Inc()
	log.FromContext(ctx).V(1).Info("set pod deletion cost", "pod", req.NamespacedName, "policy", rp.Name, "cost", want)
	return ctrl.Result{}, nil
}

// adopt writes the adoption's labels and deletion cost in one merge patch.
// The patch carries the pod's resourceVersion: the decision was made from
// the cache, and if the pod changed since, the patch fails with a conflict
// and the pod is reconciled again from its new state.
func (r *Reconciler) adopt(ctx context.Context, rp *v1alpha1.ResourcePolicy, pod *corev1.Pod, node *corev1.Node, a placement.Adoption) error {
	cost := placement.FormatCost(a.Cost)
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": pod.ResourceVersion,
		"labels":          a.Labels,
		"annotations":     map[string]string{placement.AnnotationDeletionCost: cost},
	}})
	if err != nil {
		return err
	}
	key := client.ObjectKeyFromObject(pod)
	if err := r.client.Patch(ctx, pod, client.RawPatch("application/merge-patch+json", body)); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case !apierrors.IsConflict(err):
			r.metrics.Patches.WithLabelValues(rp.Namespace, rp.Name, "error").Inc()
		}
		return fmt.Errorf("adopting %s: %w", key, err)
	}
	unit := a.Labels[placement.LabelUnit]
	display := unit
	if a.Unit != placement.Outside {
		display = placement.DisplayNames(rp)[a.Unit]
	}
	r.metrics.Patches.WithLabelValues(rp.Namespace, rp.Name, "ok").Inc()
	r.metrics.Adopted.WithLabelValues(rp.Namespace, rp.Name, unit).Inc()
	if r.recorder != nil {
		r.recorder.Eventf(pod, rp, corev1.EventTypeNormal, "Adopted", "Adopt",
			"admitted without placement (the placement webhook was not called); bound to node %s, which is in unit %s of ResourcePolicy %s: labelled %s and given deletion cost %s",
			node.Name, display, rp.Name, labelList(a.Labels), cost)
	}
	log.FromContext(ctx).Info("adopted an unplaced pod", "pod", key, "policy", rp.Name, "unit", display, "node", node.Name, "cost", cost)
	return nil
}

func labelList(l map[string]string) string {
	return placement.LabelPolicy + "=" + l[placement.LabelPolicy] + ", " + placement.LabelUnit + "=" + l[placement.LabelUnit]
}
