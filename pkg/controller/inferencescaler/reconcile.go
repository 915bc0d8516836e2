package inferencescaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	autoscalingv2ac "k8s.io/client-go/applyconfigurations/autoscaling/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/autoscaling"
)

// maxConditionMessage is metav1.Condition's limit.
const maxConditionMessage = 32768

// outcome is what one evaluation decided besides the status it wrote.
type outcome struct {
	result  string
	requeue time.Duration
	err     error
}

// Reconcile brings the scaler's HPA and status in line with its spec and the
// current instant. Events and metrics are emitted only after the status
// write succeeds, from the difference between the old and new status, so a
// conflict-and-retry never counts a schedule or fallback activation twice.
func (r *Controller) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	s := &v1alpha1.InferenceScaler{}
	if err := r.client.Get(ctx, req.NamespacedName, s); err != nil {
		if apierrors.IsNotFound(err) {
			// Its HPA carries an owner reference: the garbage collector
			// deletes it.
			return reconcile.Result{}, nil
		}
		r.metrics.reconciles.WithLabelValues(resultError).Inc()
		return reconcile.Result{}, err
	}
	if !s.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	before := s.Status.DeepCopy()
	out := r.evaluate(ctx, s, r.clock.Now())
	if !equality.Semantic.DeepEqual(before, &s.Status) {
		if err := r.client.Status().Update(ctx, s); err != nil {
			r.metrics.reconciles.WithLabelValues(resultError).Inc()
			return reconcile.Result{}, fmt.Errorf("update status of InferenceScaler %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	r.announce(s, before)
	r.metrics.reconciles.WithLabelValues(out.result).Inc()
	return reconcile.Result{RequeueAfter: out.requeue}, out.err
}

// evaluate decides the HPA, applies it and fills s.Status. It refuses to
// touch the HPA while the spec or the cluster make the result unsafe: a
// schedule that does not parse, an HPA of the same name that is not ours, a
// foreign HPA on the same Deployment, or an InferenceService that would make
// KServe create its own HPA.
func (r *Controller) evaluate(ctx context.Context, s *v1alpha1.InferenceScaler, now time.Time) outcome {
	st := &s.Status
	st.ObservedGeneration = s.Generation
	st.HPAName = s.Name
	nowT := metav1.NewTime(now)

	target, terr := autoscaling.TargetDeployment(s.Spec.ScaleTargetRef)
	schedules, serr := autoscaling.ParseSchedules(s.Spec.Schedules)
	if err := errors.Join(terr, serr); err != nil {
		r.setReady(s, metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec, err.Error(), nowT)
		return outcome{result: resultInvalid}
	}
	c, no, err := r.gather(ctx, s, target)
	if err != nil {
		return outcome{result: resultError, err: err}
	}
	if no != nil {
		r.setReady(s, metav1.ConditionFalse, no.reason, no.msg, nowT)
		return outcome{result: resultRefused, requeue: no.requeue}
	}
	if s.Spec.Paused && c.own == nil {
		clearDynamicStatus(st)
		r.setPausedConditions(s, nowT)
		r.setReady(s, metav1.ConditionTrue, v1alpha1.ReasonPaused,
			"paused before an HPA existed: none is created until spec.paused is cleared", nowT)
		return outcome{result: resultPaused}
	}
	in, sched, fb := r.inputs(s, c, schedules, now)
	desired, failed := r.applyDesired(ctx, s, in, nowT)
	if failed != nil {
		return *failed
	}
	return r.report(s, c.own, desired, target, sched, fb, now)
}

// refusal is why evaluate leaves the HPA alone: the Ready condition's
// reason and message, and when to look again (zero: on the next event).
type refusal struct {
	reason, msg string
	requeue     time.Duration
}

// cluster is what evaluate read from the cluster for one scaler.
type cluster struct {
	// own is the scaler's HPA; nil before it is first applied.
	own *autoscalingv2.HorizontalPodAutoscaler
	// podSelector is the target Deployment's, read only when an External
	// metric has no selector of its own.
	podSelector *metav1.LabelSelector
}

// gather reads what the HPA depends on and runs the refusal checks, in
// order, stopping at the first refusal or read error: the scaler's own
// HPA, the InferenceService, foreign HPAs on the target, the target's pod
// selector.
func (r *Controller) gather(ctx context.Context, s *v1alpha1.InferenceScaler, target string) (cluster, *refusal, error) {
	var c cluster
	own, no, err := r.ownHPA(ctx, s)
	if no != nil || err != nil {
		return c, no, err
	}
	c.own = own
	if no, err := r.checkInferenceService(ctx, s, target); no != nil || err != nil {
		return c, no, err
	}
	if no, err := r.checkForeignHPAs(ctx, s, target, own); no != nil || err != nil {
		return c, no, err
	}
	sel, no, err := r.podSelector(ctx, s, target)
	if no != nil || err != nil {
		return c, no, err
	}
	c.podSelector = sel
	return c, nil, nil
}

// ownHPA reads the HPA named after the scaler; one that the scaler does not
// control is refused.
func (r *Controller) ownHPA(ctx context.Context, s *v1alpha1.InferenceScaler) (*autoscalingv2.HorizontalPodAutoscaler, *refusal, error) {
	existing := &autoscalingv2.HorizontalPodAutoscaler{}
	switch err := r.client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, existing); {
	case err == nil:
		if !metav1.IsControlledBy(existing, s) {
			return nil, &refusal{reason: v1alpha1.ReasonHPANameConflict, msg: fmt.Sprintf(
				"HPA %s already exists and is not controlled by this InferenceScaler; rename the InferenceScaler or remove that HPA", s.Name)}, nil
		}
		return existing, nil, nil
	case apierrors.IsNotFound(err):
		return nil, nil, nil
	default:
		return nil, nil, fmt.Errorf("get HPA %s/%s: %w", s.Namespace, s.Name, err)
	}
}

// checkInferenceService refuses an InferenceService target that is
// missing or whose autoscaler class would make KServe create its own HPA.
func (r *Controller) checkInferenceService(ctx context.Context, s *v1alpha1.InferenceScaler, target string) (*refusal, error) {
	ref := s.Spec.ScaleTargetRef
	if !autoscaling.IsInferenceService(ref) {
		return nil, nil
	}
	// Without a watch on InferenceServices nothing would wake the scaler
	// when one appears or its annotation changes.
	var retry time.Duration
	if !r.watchesInferenceServices {
		retry = r.retry
	}
	isvc := &unstructured.Unstructured{}
	isvc.SetGroupVersionKind(inferenceServiceGVK)
	err := r.client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: ref.Name}, isvc)
	switch {
	case meta.IsNoMatchError(err):
		return &refusal{reason: v1alpha1.ReasonTargetNotFound, msg: fmt.Sprintf(
			"InferenceService %s cannot be read: KServe's %s CRD is not installed", ref.Name, inferenceServiceGVK.GroupVersion()), requeue: retry}, nil
	case apierrors.IsNotFound(err):
		return &refusal{reason: v1alpha1.ReasonTargetNotFound, msg: fmt.Sprintf("InferenceService %s does not exist", ref.Name), requeue: retry}, nil
	case err != nil:
		return nil, fmt.Errorf("get InferenceService %s/%s: %w", s.Namespace, ref.Name, err)
	}
	if class := isvc.GetAnnotations()[autoscaling.KServeAutoscalerClassAnnotation]; class != autoscaling.KServeAutoscalerClassExternal {
		shown := fmt.Sprintf("%q", class)
		if class == "" {
			shown = `unset (KServe then uses "hpa")`
		}
		return &refusal{reason: v1alpha1.ReasonKServeAutoscalerClassNotExternal, msg: fmt.Sprintf(
			"InferenceService %s has annotation %s %s; set it to %q so KServe does not create its own HPA for Deployment %s",
			ref.Name, autoscaling.KServeAutoscalerClassAnnotation, shown, autoscaling.KServeAutoscalerClassExternal, target), requeue: retry}, nil
	}
	return nil, nil
}

// checkForeignHPAs refuses while an HPA the scaler does not control scales
// the same Deployment.
func (r *Controller) checkForeignHPAs(ctx context.Context, s *v1alpha1.InferenceScaler, target string, own *autoscalingv2.HorizontalPodAutoscaler) (*refusal, error) {
	var hpas autoscalingv2.HorizontalPodAutoscalerList
	if err := r.client.List(ctx, &hpas, client.InNamespace(s.Namespace)); err != nil {
		return nil, fmt.Errorf("list HPAs in %s: %w", s.Namespace, err)
	}
	var foreign []string
	for i := range hpas.Items {
		h := &hpas.Items[i]
		if !metav1.IsControlledBy(h, s) && isDeploymentRef(h.Spec.ScaleTargetRef) && h.Spec.ScaleTargetRef.Name == target {
			foreign = append(foreign, h.Name)
		}
	}
	if len(foreign) == 0 {
		return nil, nil
	}
	sort.Strings(foreign)
	msg := fmt.Sprintf("HPA %s already scales Deployment %s and is not controlled by this InferenceScaler; "+
		"two HPAs on one workload disable each other, so delete it or retarget this InferenceScaler",
		strings.Join(foreign, ", "), target)
	if own != nil {
		msg += fmt.Sprintf("; HPA %s is left as it was", own.Name)
	}
	return &refusal{reason: v1alpha1.ReasonForeignHPA, msg: msg}, nil
}

// podSelector reads the target Deployment's pod selector when an External
// metric has no selector of its own; nil when none is needed.
func (r *Controller) podSelector(ctx context.Context, s *v1alpha1.InferenceScaler, target string) (*metav1.LabelSelector, *refusal, error) {
	if !needsPodSelector(&s.Spec) {
		return nil, nil, nil
	}
	d := &appsv1.Deployment{}
	switch err := r.client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: target}, d); {
	case apierrors.IsNotFound(err):
		return nil, &refusal{reason: v1alpha1.ReasonPodSelectorUnknown, msg: fmt.Sprintf(
			"metric type External has no selector, and Deployment %s, whose pod selector it defaults to, does not exist", target)}, nil
	case err != nil:
		return nil, nil, fmt.Errorf("get Deployment %s/%s: %w", s.Namespace, target, err)
	}
	return d.Spec.Selector, nil, nil
}

// inputs evaluates what the HPA's shape depends on at now: the replicas it
// is pinned at while paused (recorded in the status on the first paused
// pass), or the schedule floor and the fallback.
func (r *Controller) inputs(s *v1alpha1.InferenceScaler, c cluster, schedules []autoscaling.Schedule, now time.Time) (autoscaling.Inputs, autoscaling.ScheduleState, autoscaling.FallbackState) {
	st := &s.Status
	in := autoscaling.Inputs{PodSelector: c.podSelector}
	var sched autoscaling.ScheduleState
	var fb autoscaling.FallbackState
	if s.Spec.Paused {
		if st.PausedReplicas == nil {
			n := c.own.Status.CurrentReplicas
			if n < 1 {
				n = ptr.Deref(c.own.Spec.MinReplicas, 1)
			}
			st.PausedReplicas = ptr.To(n)
		}
		in.PausedReplicas = st.PausedReplicas
		return in, sched, fb
	}
	st.PausedReplicas = nil
	sched = autoscaling.EvaluateSchedules(schedules, now)
	var conds []autoscalingv2.HorizontalPodAutoscalerCondition
	if c.own != nil {
		conds = c.own.Status.Conditions
	}
	fb = autoscaling.EvaluateFallback(s.Spec.Fallback, conds, now, r.syncPeriod)
	in.ScheduleFloor = sched.Floor
	in.FallbackActive = fb.Active
	return in, sched, fb
}

// applyDesired computes the HPA from in and applies it; on failure it sets
// Ready and returns the outcome.
func (r *Controller) applyDesired(ctx context.Context, s *v1alpha1.InferenceScaler, in autoscaling.Inputs, nowT metav1.Time) (*autoscalingv2.HorizontalPodAutoscaler, *outcome) {
	desired, err := autoscaling.DesiredHPA(s, in)
	if err != nil {
		r.setReady(s, metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec, err.Error(), nowT)
		return nil, &outcome{result: resultInvalid}
	}
	if err := r.apply(ctx, desired); err != nil {
		r.setReady(s, metav1.ConditionFalse, v1alpha1.ReasonApplyFailed, fmt.Sprintf("apply HPA %s: %v", desired.Name, err), nowT)
		if apierrors.IsInvalid(err) {
			// The API server will refuse it again until the spec changes.
			return nil, &outcome{result: resultInvalid}
		}
		return nil, &outcome{result: resultError, err: fmt.Errorf("apply HPA %s/%s: %w", desired.Namespace, desired.Name, err)}
	}
	return desired, nil
}

// report fills the status after the HPA was applied: the HPA's own status
// mirrored, the effective floor, schedule and fallback, and the conditions.
func (r *Controller) report(s *v1alpha1.InferenceScaler, own, desired *autoscalingv2.HorizontalPodAutoscaler, target string,
	sched autoscaling.ScheduleState, fb autoscaling.FallbackState, now time.Time) outcome {
	st := &s.Status
	nowT := metav1.NewTime(now)
	r.mirror(s, own, nowT)
	st.EffectiveMinReplicas = ptr.Deref(desired.Spec.MinReplicas, 1)
	st.ActiveSchedule = sched.ActiveNames()
	st.NextScheduleBoundary = nil
	if !sched.NextBoundary.IsZero() {
		st.NextScheduleBoundary = ptr.To(metav1.NewTime(sched.NextBoundary))
	}
	st.FallbackActive = fb.Active
	st.ConsecutiveMetricFailures = fb.ConsecutiveFailures

	if s.Spec.Paused {
		r.setPausedConditions(s, nowT)
		r.setReady(s, metav1.ConditionTrue, v1alpha1.ReasonPaused, fmt.Sprintf(
			"HPA %s is pinned at %d replicas while paused; schedules and fallback resume when spec.paused is cleared",
			desired.Name, desired.Spec.MaxReplicas), nowT)
		return outcome{result: resultPaused}
	}
	r.setScheduleCondition(s, sched, nowT)
	r.setFallbackCondition(s, fb, nowT)
	r.setReady(s, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied, fmt.Sprintf(
		"HPA %s scales Deployment %s between %d and %d replicas on %s",
		desired.Name, target, st.EffectiveMinReplicas, desired.Spec.MaxReplicas, metricName(s)), nowT)
	return outcome{result: resultApplied, requeue: nextWake(now, sched.NextBoundary, fb.NextCheck)}
}

// nextWake is the delay to the earliest future instant among ts; zero (no
// requeue) when there is none. Schedule boundaries and fallback checks are
// the only times the HPA's spec can change without an event.
func nextWake(now time.Time, ts ...time.Time) time.Duration {
	var d time.Duration
	for _, t := range ts {
		if t.IsZero() {
			continue
		}
		// A boundary already due (processing took a moment) is re-evaluated
		// promptly rather than dropped.
		w := max(t.Sub(now), time.Millisecond)
		if d == 0 || w < d {
			d = w
		}
	}
	return d
}

// apply writes the HPA with server-side apply. Only the fields set in
// DesiredHPA are owned; ForceOwnership takes them back from a manual edit.
func (r *Controller) apply(ctx context.Context, hpa *autoscalingv2.HorizontalPodAutoscaler) error {
	// The typed HPA and its apply configuration share one JSON shape; every
	// field DesiredHPA leaves zero is omitempty there, so nothing unintended
	// is claimed. Status belongs to the HPA controller.
	data, err := json.Marshal(hpa)
	if err != nil {
		return err
	}
	ac := &autoscalingv2ac.HorizontalPodAutoscalerApplyConfiguration{}
	if err := json.Unmarshal(data, ac); err != nil {
		return err
	}
	ac.Status = nil
	return r.client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership)
}

// mirror copies the HPA's replicas, metric reading and conditions.
func (r *Controller) mirror(s *v1alpha1.InferenceScaler, hpa *autoscalingv2.HorizontalPodAutoscaler, now metav1.Time) {
	st := &s.Status
	var hs autoscalingv2.HorizontalPodAutoscalerStatus
	if hpa != nil {
		hs = hpa.Status
	}
	st.CurrentReplicas = hs.CurrentReplicas
	st.DesiredReplicas = hs.DesiredReplicas
	st.CurrentMetrics = autoscaling.CurrentMetrics(hs, autoscaling.Metrics(&s.Spec))
	st.CurrentMetricValue = nil
	if len(st.CurrentMetrics) > 0 && st.CurrentMetrics[0].Value != nil {
		v := st.CurrentMetrics[0].Value.DeepCopy()
		st.CurrentMetricValue = &v
	}
	for _, c := range autoscaling.MirrorConditions(hs.Conditions, s.Generation, now) {
		c.Message = truncate(c.Message)
		meta.SetStatusCondition(&st.Conditions, c)
	}
}

func (r *Controller) setReady(s *v1alpha1.InferenceScaler, status metav1.ConditionStatus, reason, msg string, now metav1.Time) {
	setCondition(s, v1alpha1.ConditionReady, status, reason, msg, now)
}

func (r *Controller) setScheduleCondition(s *v1alpha1.InferenceScaler, st autoscaling.ScheduleState, now metav1.Time) {
	if len(s.Spec.Schedules) == 0 {
		meta.RemoveStatusCondition(&s.Status.Conditions, v1alpha1.ConditionScheduleActive)
		return
	}
	next := "never"
	if !st.NextBoundary.IsZero() {
		next = st.NextBoundary.UTC().Format(time.RFC3339)
	}
	if len(st.Active) == 0 {
		setCondition(s, v1alpha1.ConditionScheduleActive, metav1.ConditionFalse, v1alpha1.ReasonNoWindowOpen,
			"no schedule window is open; next boundary "+next, now)
		return
	}
	parts := make([]string, len(st.Active))
	for i, w := range st.Active {
		parts[i] = fmt.Sprintf("%s (floor %d until %s)", w.Name, w.MinReplicas, w.End.UTC().Format(time.RFC3339))
	}
	setCondition(s, v1alpha1.ConditionScheduleActive, metav1.ConditionTrue, v1alpha1.ReasonWindowOpen,
		"open: "+strings.Join(parts, ", ")+"; next boundary "+next, now)
}

func (r *Controller) setFallbackCondition(s *v1alpha1.InferenceScaler, fb autoscaling.FallbackState, now metav1.Time) {
	spec := s.Spec.Fallback
	if spec == nil {
		meta.RemoveStatusCondition(&s.Status.Conditions, v1alpha1.ConditionFallbackActive)
		return
	}
	threshold := spec.FailureThreshold
	if threshold < 1 {
		threshold = v1alpha1.DefaultFallbackFailureThreshold
	}
	switch {
	case fb.Active:
		setCondition(s, v1alpha1.ConditionFallbackActive, metav1.ConditionTrue, v1alpha1.ReasonMetricFailing, fmt.Sprintf(
			"the HPA has failed to read %s for %d consecutive checks since %s (threshold %d); floor held at %d replicas",
			metricName(s), fb.ConsecutiveFailures, fb.Since.UTC().Format(time.RFC3339), threshold, spec.Replicas), now)
	case fb.Failing:
		setCondition(s, v1alpha1.ConditionFallbackActive, metav1.ConditionFalse, v1alpha1.ReasonBelowFailureThreshold, fmt.Sprintf(
			"the HPA has failed to read %s for %d of %d consecutive checks", metricName(s), fb.ConsecutiveFailures, threshold), now)
	default:
		setCondition(s, v1alpha1.ConditionFallbackActive, metav1.ConditionFalse, v1alpha1.ReasonMetricHealthy,
			"the HPA is not reporting a metric failure", now)
	}
}

func (r *Controller) setPausedConditions(s *v1alpha1.InferenceScaler, now metav1.Time) {
	if len(s.Spec.Schedules) > 0 {
		setCondition(s, v1alpha1.ConditionScheduleActive, metav1.ConditionFalse, v1alpha1.ReasonPaused, "schedules are not evaluated while paused", now)
	} else {
		meta.RemoveStatusCondition(&s.Status.Conditions, v1alpha1.ConditionScheduleActive)
	}
	if s.Spec.Fallback != nil {
		setCondition(s, v1alpha1.ConditionFallbackActive, metav1.ConditionFalse, v1alpha1.ReasonPaused, "fallback is not evaluated while paused", now)
	} else {
		meta.RemoveStatusCondition(&s.Status.Conditions, v1alpha1.ConditionFallbackActive)
	}
}

func setCondition(s *v1alpha1.InferenceScaler, typ string, status metav1.ConditionStatus, reason, msg string, now metav1.Time) {
	meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{
		Type:               typ,
		Status:             status,
		ObservedGeneration: s.Generation,
		LastTransitionTime: now,
		Reason:             reason,
		Message:            truncate(msg),
	})
}

// clearDynamicStatus drops what only a live HPA or an evaluation supplies.
func clearDynamicStatus(st *v1alpha1.InferenceScalerStatus) {
	st.CurrentReplicas, st.DesiredReplicas = 0, 0
	st.CurrentMetricValue = nil
	st.EffectiveMinReplicas = 0
	st.ActiveSchedule = ""
	st.NextScheduleBoundary = nil
	st.FallbackActive = false
	st.ConsecutiveMetricFailures = 0
	st.PausedReplicas = nil
}

// announce turns status transitions into events and counters.
func (r *Controller) announce(s *v1alpha1.InferenceScaler, before *v1alpha1.InferenceScalerStatus) {
	after := &s.Status
	oldReady := meta.FindStatusCondition(before.Conditions, v1alpha1.ConditionReady)
	if ready := meta.FindStatusCondition(after.Conditions, v1alpha1.ConditionReady); ready != nil &&
		(oldReady == nil || oldReady.Status != ready.Status || oldReady.Reason != ready.Reason) {
		kind := corev1.EventTypeNormal
		if ready.Status != metav1.ConditionTrue {
			kind = corev1.EventTypeWarning
		}
		r.recorder.Eventf(s, nil, kind, ready.Reason, "Reconcile", "%s", ready.Message)
	}

	was := splitNames(before.ActiveSchedule)
	now := splitNames(after.ActiveSchedule)
	for _, name := range now {
		if !slices.Contains(was, name) {
			r.metrics.scheduleActivations.WithLabelValues(s.Namespace, s.Name, name).Inc()
			r.recorder.Eventf(s, nil, corev1.EventTypeNormal, "ScheduleWindowOpened", "RaiseFloor",
				"schedule %s opened: floor %d", name, after.EffectiveMinReplicas)
		}
	}
	for _, name := range was {
		if !slices.Contains(now, name) {
			r.recorder.Eventf(s, nil, corev1.EventTypeNormal, "ScheduleWindowClosed", "RestoreFloor",
				"schedule %s closed: floor %d", name, after.EffectiveMinReplicas)
		}
	}

	switch {
	case after.FallbackActive && !before.FallbackActive:
		r.metrics.fallbackActivations.WithLabelValues(s.Namespace, s.Name).Inc()
		r.recorder.Eventf(s, nil, corev1.EventTypeWarning, "FallbackActivated", "RaiseFloor",
			"the HPA failed to read %s for %d consecutive checks: floor raised to %d", metricName(s), after.ConsecutiveMetricFailures, after.EffectiveMinReplicas)
	case before.FallbackActive && !after.FallbackActive:
		r.recorder.Eventf(s, nil, corev1.EventTypeNormal, "FallbackReleased", "RestoreFloor",
			"the metric is readable again: floor back to %d", after.EffectiveMinReplicas)
	}
}

func splitNames(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// metricName names the scaler's metrics for messages.
func metricName(s *v1alpha1.InferenceScaler) string {
	var names []string
	for _, m := range autoscaling.Metrics(&s.Spec) {
		names = append(names, m.Name)
	}
	return strings.Join(names, " and ")
}

// needsPodSelector: an External metric without a selector reads the
// target Deployment's pod selector.
func needsPodSelector(spec *v1alpha1.InferenceScalerSpec) bool {
	for _, m := range autoscaling.Metrics(spec) {
		if m.Type == v1alpha1.ExternalMetric && m.Selector == nil {
			return true
		}
	}
	return false
}

// isDeploymentRef: an HPA target that is a Deployment, however its API
// version is spelled (apps/v1, the long-gone extensions group, or empty).
func isDeploymentRef(ref autoscalingv2.CrossVersionObjectReference) bool {
	if ref.Kind != v1alpha1.DeploymentKind {
		return false
	}
	switch refGroup(ref.APIVersion) {
	case "apps", "extensions", "":
		return true
	}
	return false
}

func refGroup(apiVersion string) string {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return ""
	}
	return gv.Group
}

func truncate(msg string) string {
	if len(msg) <= maxConditionMessage {
		return msg
	}
	return msg[:maxConditionMessage-3] + "..."
}
