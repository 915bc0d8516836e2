// Package deletioncost keeps controller.kubernetes.io/pod-deletion-cost on
// every pod a ResourcePolicy selects, so that when a ReplicaSet scales in,
// pods in later units (the cloud pool) go before pods in earlier ones
// (on-prem). It patches pods only, and only when the value changes: the
// Deployment and its template are KServe's and are never touched.
package deletioncost

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/placement"
)

// Metrics are the controller's instruments.
type Metrics struct {
	// Patches counts pod-deletion-cost patches by namespace, policy and
	// result (ok, error).
	Patches *prometheus.CounterVec
}

// NewMetrics creates the instruments and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{Patches: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricnames.DeletionCostPatches,
		Help: "Patches of controller.kubernetes.io/pod-deletion-cost on selected pods, by result.",
	}, []string{metricnames.LabelNamespace, metricnames.LabelPolicy, metricnames.LabelResult})}
	return m, reg.Register(m.Patches)
}

// Reconciler keeps the annotation of one pod right.
type Reconciler struct {
	client  client.Client
	metrics *Metrics
}

// New returns the reconciler.
func New(c client.Client, metrics *Metrics) *Reconciler {
	return &Reconciler{client: c, metrics: metrics}
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=spillway.dev,resources=resourcepolicies,verbs=get;list;watch

// Register adds the controller to the manager (leader only). A policy change
// re-ranks every pod it selects.
func Register(mgr ctrl.Manager, metrics *Metrics) error {
	r := New(mgr.GetClient(), metrics)
	return ctrl.NewControllerManagedBy(mgr).
		Named("deletioncost").
		For(&corev1.Pod{}).
		Watches(&v1alpha1.ResourcePolicy{}, handler.EnqueueRequestsFromMapFunc(r.podsOf)).
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
