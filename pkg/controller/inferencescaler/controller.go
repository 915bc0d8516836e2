// Package inferencescaler reconciles InferenceScalers into the one
// autoscaling/v2 HPA each owns. The HPA's shape is computed by
// pkg/autoscaling; this package reads the cluster (the HPA, foreign HPAs, the
// InferenceService, the target's pod selector), applies the HPA with
// server-side apply, and reports status, events and metrics.
//
// Time enters only through an injected clock: schedule windows requeue the
// scaler exactly at their next boundary, and fallback counting is derived
// from the HPA's own condition timestamps, so there is no polling loop.
package inferencescaler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/autoscaling"
)

// +kubebuilder:rbac:groups=spillway.dev,resources=inferencescalers,verbs=get;list;watch
// +kubebuilder:rbac:groups=spillway.dev,resources=inferencescalers/status,verbs=get;update;patch
//
// The HPA's ownerReference sets blockOwnerDeletion, which clusters with the
// OwnerReferencesPermissionEnforcement admission plugin allow only to those
// who may update the owner's finalizers.
//
// +kubebuilder:rbac:groups=spillway.dev,resources=inferencescalers/finalizers,verbs=update
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch
// +kubebuilder:rbac:groups=serving.kserve.io,resources=inferenceservices,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// FieldManager is the server-side apply field manager of every HPA written.
const FieldManager = "spillway-controller"

// Defaults of Options.
const (
	// DefaultHPASyncPeriod is kube-controller-manager's default
	// --horizontal-pod-autoscaler-sync-period.
	DefaultHPASyncPeriod = 15 * time.Second
	// DefaultMissingTargetRetry is how often a scaler whose InferenceService
	// cannot be watched (KServe's CRD absent at startup) looks for it again.
	DefaultMissingTargetRetry = time.Minute
)

// targetIndex indexes InferenceScalers by the Deployment their HPA scales,
// so HPA, Deployment and InferenceService events find their scalers.
const targetIndex = "spillway.dev/target-deployment"

// inferenceServiceGVK is read as unstructured: spillway does not import KServe.
var inferenceServiceGVK = schema.FromAPIVersionAndKind(v1alpha1.InferenceServiceAPIVersion, v1alpha1.InferenceServiceKind)

// Options configures the controller.
type Options struct {
	// HPASyncPeriod must equal kube-controller-manager's
	// --horizontal-pod-autoscaler-sync-period: one failed metric read per
	// period counts as one failed check for fallback. Zero: 15s.
	HPASyncPeriod time.Duration
	// MissingTargetRetry: see DefaultMissingTargetRetry. Zero: 1m.
	MissingTargetRetry time.Duration
	// Clock: nil means the real clock.
	Clock clock.PassiveClock
}

// Controller reconciles InferenceScalers.
type Controller struct {
	client     client.Client
	recorder   events.EventRecorder
	clock      clock.PassiveClock
	syncPeriod time.Duration
	retry      time.Duration
	metrics    *metrics
	// watchesInferenceServices is set by Register when KServe's CRD is
	// served; otherwise a missing InferenceService is looked up again
	// every retry period.
	watchesInferenceServices bool
}

// New builds the reconciler. reg receives its metrics (the
// manager's registry in the binary, a fresh registry in tests).
func New(c client.Client, recorder events.EventRecorder, reg prometheus.Registerer, opts Options) (*Controller, error) {
	var errs []error
	if c == nil {
		errs = append(errs, errors.New("inferencescaler: nil client"))
	}
	if recorder == nil {
		errs = append(errs, errors.New("inferencescaler: nil event recorder"))
	}
	if opts.HPASyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("inferencescaler: HPA sync period %s is negative", opts.HPASyncPeriod))
	}
	if opts.MissingTargetRetry < 0 {
		errs = append(errs, fmt.Errorf("inferencescaler: missing-target retry %s is negative", opts.MissingTargetRetry))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	r := &Controller{
		client:     c,
		recorder:   recorder,
		clock:      opts.Clock,
		syncPeriod: opts.HPASyncPeriod,
		retry:      opts.MissingTargetRetry,
		metrics:    m,
	}
	if r.clock == nil {
		r.clock = clock.RealClock{}
	}
	if r.syncPeriod == 0 {
		r.syncPeriod = DefaultHPASyncPeriod
	}
	if r.retry == 0 {
		r.retry = DefaultMissingTargetRetry
	}
	return r, nil
}

// EventSource is the name events of this controller carry.
const EventSource = "spillway-inferencescaler"

// Register builds the controller on mgr's client and event recorder and
// adds it to mgr: the one-line form the controller wiring list uses.
func Register(mgr ctrl.Manager, reg prometheus.Registerer, opts Options) error {
	c, err := New(mgr.GetClient(), mgr.GetEventRecorder(EventSource), reg, opts)
	if err != nil {
		return err
	}
	return c.Register(mgr)
}

// Register adds the controller and its watches to mgr: InferenceScalers;
// every HPA (its own, to mirror status, and foreign ones, to detect and
// release conflicts); Deployment creation and deletion (the pod selector of
// External metrics); and InferenceService annotation changes when KServe's
// CRD is installed.
func (r *Controller) Register(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.InferenceScaler{}, targetIndex, indexTarget); err != nil {
		return fmt.Errorf("inferencescaler: index scalers by target: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("inferencescaler").
		For(&v1alpha1.InferenceScaler{}).
		Watches(&autoscalingv2.HorizontalPodAutoscaler{}, handler.EnqueueRequestsFromMapFunc(r.scalersForHPA)).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(r.scalersForDeployment),
			// The selector is immutable: only existence matters.
			builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }}))

	_, err := mgr.GetRESTMapper().RESTMapping(inferenceServiceGVK.GroupKind(), inferenceServiceGVK.Version)
	switch {
	case err == nil:
		isvc := &unstructured.Unstructured{}
		isvc.SetGroupVersionKind(inferenceServiceGVK)
		b = b.Watches(isvc, handler.EnqueueRequestsFromMapFunc(r.scalersForInferenceService),
			builder.WithPredicates(predicate.AnnotationChangedPredicate{}))
		r.watchesInferenceServices = true
	case meta.IsNoMatchError(err):
		mgr.GetLogger().Info("KServe InferenceService CRD not served; InferenceService targets are re-checked periodically",
			"retry", r.retry.String())
	default:
		return fmt.Errorf("inferencescaler: look up %s: %w", inferenceServiceGVK, err)
	}
	return b.Complete(r)
}

func indexTarget(o client.Object) []string {
	s, ok := o.(*v1alpha1.InferenceScaler)
	if !ok {
		return nil
	}
	name, err := autoscaling.TargetDeployment(s.Spec.ScaleTargetRef)
	if err != nil {
		return nil
	}
	return []string{name}
}

// scalersForHPA maps an HPA event to its owning scaler and to every scaler
// targeting the same Deployment (a foreign HPA appearing or going away).
func (r *Controller) scalersForHPA(ctx context.Context, o client.Object) []reconcile.Request {
	hpa, ok := o.(*autoscalingv2.HorizontalPodAutoscaler)
	if !ok {
		return nil
	}
	var reqs []reconcile.Request
	if ref := metav1.GetControllerOf(hpa); ref != nil && ref.Kind == "InferenceScaler" && refGroup(ref.APIVersion) == v1alpha1.GroupVersion.Group {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: hpa.Namespace, Name: ref.Name}})
	}
	if isDeploymentRef(hpa.Spec.ScaleTargetRef) {
		reqs = append(reqs, r.scalersTargeting(ctx, hpa.Namespace, hpa.Spec.ScaleTargetRef.Name)...)
	}
	return reqs
}

func (r *Controller) scalersForDeployment(ctx context.Context, o client.Object) []reconcile.Request {
	return r.scalersTargeting(ctx, o.GetNamespace(), o.GetName())
}

func (r *Controller) scalersForInferenceService(ctx context.Context, o client.Object) []reconcile.Request {
	return r.scalersTargeting(ctx, o.GetNamespace(), o.GetName()+autoscaling.KServePredictorSuffix)
}

func (r *Controller) scalersTargeting(ctx context.Context, namespace, deployment string) []reconcile.Request {
	var list v1alpha1.InferenceScalerList
	if err := r.client.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{targetIndex: deployment}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list InferenceScalers by target", "namespace", namespace, "deployment", deployment)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, s := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
	}
	return reqs
}
