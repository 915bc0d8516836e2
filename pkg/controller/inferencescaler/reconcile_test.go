package inferencescaler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/spillway-dev/spillway/internal/testobjects"
	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/autoscaling"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

const ns = "serving"

var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

// recorder keeps events as "Type Reason note".
type recorder struct{ events []string }

func (r *recorder) Eventf(_ runtime.Object, _ runtime.Object, eventtype, reason, _ string, note string, args ...interface{}) {
	r.events = append(r.events, eventtype+" "+reason+" "+fmt.Sprintf(note, args...))
}

// take returns the events since the last call.
func (r *recorder) take() []string {
	e := r.events
	r.events = nil
	return e
}

type fixture struct {
	t     *testing.T
	c     *Controller
	cl    client.Client
	rec   *recorder
	clock *testingclock.FakePassiveClock
	reg   *prometheus.Registry
}

func newFixture(t *testing.T, objs ...client.Object) *fixture {
	t.Helper()
	scheme, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	cl := fake.NewClientBuilder().
		WithScheme(scheme).
		WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.InferenceScaler{}, &autoscalingv2.HorizontalPodAutoscaler{}).
		WithIndex(&v1alpha1.InferenceScaler{}, targetIndex, indexTarget).
		Build()
	f := &fixture{t: t, cl: cl, rec: &recorder{}, clock: testingclock.NewFakePassiveClock(t0), reg: prometheus.NewRegistry()}
	c, err := New(cl, f.rec, f.reg, Options{HPASyncPeriod: 15 * time.Second, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	return f
}

func (f *fixture) reconcile(name string) reconcile.Result {
	f.t.Helper()
	res, err := f.c.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	if err != nil {
		f.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (f *fixture) scaler(name string) *v1alpha1.InferenceScaler {
	f.t.Helper()
	s := &v1alpha1.InferenceScaler{}
	if err := f.cl.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		f.t.Fatal(err)
	}
	return s
}

// hpa returns the HPA of that name, or nil.
func (f *fixture) hpa(name string) *autoscalingv2.HorizontalPodAutoscaler {
	f.t.Helper()
	h := &autoscalingv2.HorizontalPodAutoscaler{}
	err := f.cl.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, h)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

func (f *fixture) setHPAStatus(name string, st autoscalingv2.HorizontalPodAutoscalerStatus) {
	f.t.Helper()
	h := f.hpa(name)
	h.Status = st
	if err := f.cl.Status().Update(context.Background(), h); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) update(s *v1alpha1.InferenceScaler) {
	f.t.Helper()
	s.Generation++
	if err := f.cl.Update(context.Background(), s); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) counter(name string, labels ...string) float64 {
	f.t.Helper()
	var c prometheus.Collector
	switch name {
	case metricnames.InferenceScalerReconciles:
		c = f.c.metrics.reconciles.WithLabelValues(labels...)
	case metricnames.InferenceScalerScheduleActivations:
		c = f.c.metrics.scheduleActivations.WithLabelValues(labels...)
	case metricnames.InferenceScalerFallbackActivations:
		c = f.c.metrics.fallbackActivations.WithLabelValues(labels...)
	}
	return testutil.ToFloat64(c)
}

func deploymentScaler(name, deployment string) *v1alpha1.InferenceScaler {
	return &v1alpha1.InferenceScaler{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name), Generation: 1},
		Spec: v1alpha1.InferenceScalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: deployment},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    3,
		},
	}
}

func inferenceService(name string, annotations map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(inferenceServiceGVK)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetAnnotations(annotations)
	return u
}

func condition(t *testing.T, s *v1alpha1.InferenceScaler, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(s.Status.Conditions, typ)
	if c == nil {
		t.Fatalf("no %s condition in %+v", typ, s.Status.Conditions)
	}
	return *c
}

func wantCondition(t *testing.T, s *v1alpha1.InferenceScaler, typ string, status metav1.ConditionStatus, reason, msgPart string) {
	t.Helper()
	c := condition(t, s, typ)
	if c.Status != status || c.Reason != reason || !strings.Contains(c.Message, msgPart) {
		t.Errorf("%s = %s/%s %q, want %s/%s containing %q", typ, c.Status, c.Reason, c.Message, status, reason, msgPart)
	}
}

func wantEvents(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("events %q, want prefixes %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("event %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

func TestArenaInferenceService(t *testing.T) {
	s := &v1alpha1.InferenceScaler{
		ObjectMeta: metav1.ObjectMeta{Name: "qwen-chat", Namespace: ns, UID: "uid-qwen", Generation: 1},
		Spec: v1alpha1.InferenceScalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetRef{APIVersion: "serving.kserve.io/v1beta1", Kind: "InferenceService", Name: "qwen-chat"},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    3,
		},
	}
	f := newFixture(t, s, inferenceService("qwen-chat", map[string]string{autoscaling.KServeAutoscalerClassAnnotation: "external"}))
	if res := f.reconcile("qwen-chat"); res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %v without schedules or failing metrics", res.RequeueAfter)
	}
	got := f.hpa("qwen-chat")
	if got == nil {
		t.Fatal("no HPA created")
	}
	want, err := autoscaling.DesiredHPA(s, autoscaling.Inputs{})
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got.Spec, want.Spec) || !equality.Semantic.DeepEqual(got.OwnerReferences, want.OwnerReferences) ||
		!equality.Semantic.DeepEqual(got.Labels, want.Labels) {
		t.Errorf("HPA\n%+v\nwant\n%+v", got, want)
	}
	if got.Spec.ScaleTargetRef.Name != "qwen-chat-predictor" {
		t.Errorf("HPA targets %q", got.Spec.ScaleTargetRef.Name)
	}
	st := f.scaler("qwen-chat")
	wantCondition(t, st, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied, "between 1 and 3 replicas")
	wantCondition(t, st, v1alpha1.ConditionHPAScalingActive, metav1.ConditionUnknown, v1alpha1.ReasonHPAStatusUnknown, "")
	if st.Status.HPAName != "qwen-chat" || st.Status.EffectiveMinReplicas != 1 || st.Status.ObservedGeneration != 1 {
		t.Errorf("status %+v", st.Status)
	}
	if meta.FindStatusCondition(st.Status.Conditions, v1alpha1.ConditionScheduleActive) != nil ||
		meta.FindStatusCondition(st.Status.Conditions, v1alpha1.ConditionFallbackActive) != nil {
		t.Errorf("schedule/fallback conditions without schedules or fallback: %+v", st.Status.Conditions)
	}
	wantEvents(t, f.rec.take(), "Normal HPAApplied")

	// A second pass changes nothing: no status write, no event.
	rv := st.ResourceVersion
	f.reconcile("qwen-chat")
	if f.scaler("qwen-chat").ResourceVersion != rv {
		t.Error("an idempotent reconcile rewrote the status")
	}
	wantEvents(t, f.rec.take())
	if n := f.counter(metricnames.InferenceScalerReconciles, resultApplied); n != 2 {
		t.Errorf("applied reconciles = %v, want 2", n)
	}
}

func TestManagedFieldsAndManualEdit(t *testing.T) {
	f := newFixture(t, deploymentScaler("qwen", "qwen-predictor"))
	f.reconcile("qwen")
	h := f.hpa("qwen")
	h.Spec.MinReplicas = ptr.To[int32](3)
	if err := f.cl.Update(context.Background(), h, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	f.reconcile("qwen")
	if got := *f.hpa("qwen").Spec.MinReplicas; got != 1 {
		t.Errorf("minReplicas after a manual edit and a reconcile = %d, want 1", got)
	}
}

func TestScheduleWindowRaisesAndRestores(t *testing.T) {
	s := deploymentScaler("qwen", "qwen-predictor")
	s.Spec.Schedules = []v1alpha1.Schedule{{Name: "am-peak", Cron: "0 9 * * *", Duration: metav1.Duration{Duration: 2 * time.Hour}, MinReplicas: 3}}
	f := newFixture(t, s)

	type step struct {
		requeue time.Duration
		floor   int32
		active  string
		events  []string
	}
	steps := []step{
		{time.Hour, 1, "", []string{"Normal HPAApplied"}},                      // 08:00
		{2 * time.Hour, 3, "am-peak", []string{"Normal ScheduleWindowOpened"}}, // 09:00
		{22 * time.Hour, 1, "", []string{"Normal ScheduleWindowClosed"}},       // 11:00
		{2 * time.Hour, 3, "am-peak", []string{"Normal ScheduleWindowOpened"}}, // 09:00 next day
	}
	for i, want := range steps {
		res := f.reconcile("qwen")
		if res.RequeueAfter != want.requeue {
			t.Errorf("step %d at %v: RequeueAfter = %v, want %v", i, f.clock.Now(), res.RequeueAfter, want.requeue)
		}
		if got := *f.hpa("qwen").Spec.MinReplicas; got != want.floor {
			t.Errorf("step %d: HPA minReplicas = %d, want %d", i, got, want.floor)
		}
		st := f.scaler("qwen").Status
		if st.ActiveSchedule != want.active || st.EffectiveMinReplicas != want.floor {
			t.Errorf("step %d: status active %q floor %d", i, st.ActiveSchedule, st.EffectiveMinReplicas)
		}
		if st.NextScheduleBoundary == nil || !st.NextScheduleBoundary.Time.Equal(f.clock.Now().Add(want.requeue)) {
			t.Errorf("step %d: next boundary %v", i, st.NextScheduleBoundary)
		}
		wantEvents(t, f.rec.take(), want.events...)
		// Wake up exactly when asked, as the work queue would.
		f.clock.SetTime(f.clock.Now().Add(res.RequeueAfter))
	}
	if n := f.counter(metricnames.InferenceScalerScheduleActivations, ns, "qwen", "am-peak"); n != 2 {
		t.Errorf("schedule activations = %v, want 2", n)
	}
	wantCondition(t, f.scaler("qwen"), v1alpha1.ConditionScheduleActive, metav1.ConditionTrue, v1alpha1.ReasonWindowOpen, "am-peak (floor 3 until 2026-03-03T11:00:00Z)")
}

func TestFallbackAfterConsecutiveFailures(t *testing.T) {
	s := deploymentScaler("qwen", "qwen-predictor")
	s.Spec.Fallback = &v1alpha1.Fallback{FailureThreshold: 3, Replicas: 2}
	f := newFixture(t, s)
	f.reconcile("qwen")
	f.rec.take()
	wantCondition(t, f.scaler("qwen"), v1alpha1.ConditionFallbackActive, metav1.ConditionFalse, v1alpha1.ReasonMetricHealthy, "")

	failing := autoscalingv2.HorizontalPodAutoscalerStatus{
		CurrentReplicas: 1, DesiredReplicas: 1,
		CurrentMetrics: []autoscalingv2.MetricStatus{{}},
		Conditions: []autoscalingv2.HorizontalPodAutoscalerCondition{{
			Type: autoscalingv2.ScalingActive, Status: corev1.ConditionFalse, Reason: "FailedGetPodsMetric",
			Message: "unable to fetch metrics from custom metrics API", LastTransitionTime: metav1.NewTime(t0),
		}},
	}
	f.setHPAStatus("qwen", failing)
	for i, want := range []struct {
		failures int32
		requeue  time.Duration
		floor    int32
		reason   string
	}{
		{1, 15 * time.Second, 1, v1alpha1.ReasonBelowFailureThreshold},
		{2, 15 * time.Second, 1, v1alpha1.ReasonBelowFailureThreshold},
		{3, 0, 2, v1alpha1.ReasonMetricFailing},
	} {
		res := f.reconcile("qwen")
		st := f.scaler("qwen")
		if st.Status.ConsecutiveMetricFailures != want.failures || res.RequeueAfter != want.requeue || *f.hpa("qwen").Spec.MinReplicas != want.floor {
			t.Errorf("check %d: failures %d requeue %v floor %d, want %d %v %d", i+1,
				st.Status.ConsecutiveMetricFailures, res.RequeueAfter, *f.hpa("qwen").Spec.MinReplicas, want.failures, want.requeue, want.floor)
		}
		wantCondition(t, st, v1alpha1.ConditionFallbackActive, metav1.ConditionStatus(map[bool]string{true: "True", false: "False"}[want.floor == 2]), want.reason, "")
		if st.Status.CurrentMetricValue != nil {
			t.Errorf("a failed read is reported as %v", st.Status.CurrentMetricValue)
		}
		f.clock.SetTime(f.clock.Now().Add(15 * time.Second))
	}
	wantEvents(t, f.rec.take(), "Warning FallbackActivated")
	st := f.scaler("qwen")
	if !st.Status.FallbackActive {
		t.Error("status.fallbackActive is false")
	}
	wantCondition(t, st, v1alpha1.ConditionHPAScalingActive, metav1.ConditionFalse, "FailedGetPodsMetric", "unable to fetch metrics")

	// More failing checks keep the floor and do not count a new activation.
	f.clock.SetTime(f.clock.Now().Add(time.Minute))
	f.reconcile("qwen")
	if n := f.counter(metricnames.InferenceScalerFallbackActivations, ns, "qwen"); n != 1 {
		t.Errorf("fallback activations = %v, want 1", n)
	}

	// The metric comes back: the floor is restored at once.
	avg := resource.MustParse("40")
	f.setHPAStatus("qwen", autoscalingv2.HorizontalPodAutoscalerStatus{
		CurrentReplicas: 2, DesiredReplicas: 1,
		CurrentMetrics: []autoscalingv2.MetricStatus{{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricStatus{
			Metric: autoscalingv2.MetricIdentifier{Name: v1alpha1.DefaultMetricName}, Current: autoscalingv2.MetricValueStatus{AverageValue: &avg}}}},
		Conditions: []autoscalingv2.HorizontalPodAutoscalerCondition{{
			Type: autoscalingv2.ScalingActive, Status: corev1.ConditionTrue, Reason: "ValidMetricFound", LastTransitionTime: metav1.NewTime(f.clock.Now()),
		}},
	})
	if res := f.reconcile("qwen"); res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %v with a healthy metric", res.RequeueAfter)
	}
	if got := *f.hpa("qwen").Spec.MinReplicas; got != 1 {
		t.Errorf("floor after recovery = %d, want 1", got)
	}
	st = f.scaler("qwen")
	if st.Status.FallbackActive || st.Status.ConsecutiveMetricFailures != 0 {
		t.Errorf("status after recovery: %+v", st.Status)
	}
	if st.Status.CurrentMetricValue == nil || st.Status.CurrentMetricValue.String() != "40" || st.Status.CurrentReplicas != 2 || st.Status.DesiredReplicas != 1 {
		t.Errorf("mirrored status: metric %v current %d desired %d", st.Status.CurrentMetricValue, st.Status.CurrentReplicas, st.Status.DesiredReplicas)
	}
	wantEvents(t, f.rec.take(), "Normal FallbackReleased")
}

func TestForeignHPARefused(t *testing.T) {
	foreign := testobjects.HPA(testobjects.HPAOptions{Name: "qwen-predictor", Namespace: ns, Deployment: "qwen-predictor", MaxReplicas: 5})
	other := testobjects.HPA(testobjects.HPAOptions{Name: "unrelated", Namespace: ns, Deployment: "llama-predictor", MaxReplicas: 5})
	f := newFixture(t, deploymentScaler("qwen", "qwen-predictor"), foreign, other)
	f.reconcile("qwen")
	if f.hpa("qwen") != nil {
		t.Fatal("an HPA was created next to a foreign one")
	}
	wantCondition(t, f.scaler("qwen"), v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonForeignHPA,
		"HPA qwen-predictor already scales Deployment qwen-predictor")
	wantEvents(t, f.rec.take(), "Warning ForeignHPA HPA qwen-predictor already scales")
	f.reconcile("qwen")
	wantEvents(t, f.rec.take()) // reported once, not on every pass
	if n := f.counter(metricnames.InferenceScalerReconciles, resultRefused); n != 2 {
		t.Errorf("refused reconciles = %v, want 2", n)
	}

	// The HPA watch maps the foreign HPA to this scaler, so removing it
	// wakes the scaler.
	reqs := f.c.scalersForHPA(context.Background(), foreign)
	if len(reqs) != 1 || reqs[0].Name != "qwen" {
		t.Errorf("foreign HPA maps to %v", reqs)
	}
	if err := f.cl.Delete(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	f.reconcile("qwen")
	if f.hpa("qwen") == nil {
		t.Fatal("no HPA after the foreign one left")
	}
	wantEvents(t, f.rec.take(), "Normal HPAApplied")
	if reqs := f.c.scalersForHPA(context.Background(), f.hpa("qwen")); len(reqs) != 2 || reqs[0].Name != "qwen" {
		// Owner and target both map to the scaler; the queue merges them.
		t.Errorf("own HPA maps to %v", reqs)
	}
}

func TestForeignHPAAppearsLater(t *testing.T) {
	f := newFixture(t, deploymentScaler("qwen", "qwen-predictor"))
	f.reconcile("qwen")
	before := f.hpa("qwen")
	foreign := testobjects.HPA(testobjects.HPAOptions{Name: "manual", Namespace: ns, Deployment: "qwen-predictor", MaxReplicas: 5})
	if err := f.cl.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	f.reconcile("qwen")
	wantCondition(t, f.scaler("qwen"), v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonForeignHPA, "HPA qwen is left as it was")
	if after := f.hpa("qwen"); after == nil || after.ResourceVersion != before.ResourceVersion {
		t.Error("the scaler's own HPA was changed or deleted while a foreign HPA is present")
	}
}

func TestHPANameConflict(t *testing.T) {
	squatter := testobjects.HPA(testobjects.HPAOptions{Name: "qwen", Namespace: ns, Deployment: "something-else", MaxReplicas: 7})
	f := newFixture(t, deploymentScaler("qwen", "qwen-predictor"), squatter)
	f.reconcile("qwen")
	wantCondition(t, f.scaler("qwen"), v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonHPANameConflict, "not controlled by this InferenceScaler")
	if h := f.hpa("qwen"); h.Spec.MaxReplicas != 7 || h.Spec.ScaleTargetRef.Name != "something-else" {
		t.Errorf("the squatting HPA was overwritten: %+v", h.Spec)
	}
}

func TestInferenceServiceChecks(t *testing.T) {
	tests := []struct {
		name    string
		isvc    *unstructured.Unstructured
		reason  string
		msg     string
		requeue time.Duration
	}{
		{"missing", nil, v1alpha1.ReasonTargetNotFound, "InferenceService qwen-chat does not exist", DefaultMissingTargetRetry},
		{"annotation unset", inferenceService("qwen-chat", nil), v1alpha1.ReasonKServeAutoscalerClassNotExternal,
			`serving.kserve.io/autoscalerClass unset (KServe then uses "hpa"); set it to "external" so KServe does not create its own HPA for Deployment qwen-chat-predictor`, DefaultMissingTargetRetry},
		{"annotation hpa", inferenceService("qwen-chat", map[string]string{autoscaling.KServeAutoscalerClassAnnotation: "hpa"}),
			v1alpha1.ReasonKServeAutoscalerClassNotExternal, `autoscalerClass "hpa"; set it to "external"`, DefaultMissingTargetRetry},
		{"annotation external", inferenceService("qwen-chat", map[string]string{autoscaling.KServeAutoscalerClassAnnotation: "external"}),
			v1alpha1.ReasonHPAApplied, "scales Deployment qwen-chat-predictor", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := deploymentScaler("qwen-chat", "")
			s.Spec.ScaleTargetRef = v1alpha1.ScaleTargetRef{APIVersion: "serving.kserve.io/v1beta1", Kind: "InferenceService", Name: "qwen-chat"}
			objs := []client.Object{s}
			if tt.isvc != nil {
				objs = append(objs, tt.isvc)
			}
			f := newFixture(t, objs...)
			res := f.reconcile("qwen-chat")
			status := metav1.ConditionFalse
			if tt.reason == v1alpha1.ReasonHPAApplied {
				status = metav1.ConditionTrue
			}
			wantCondition(t, f.scaler("qwen-chat"), v1alpha1.ConditionReady, status, tt.reason, tt.msg)
			if (f.hpa("qwen-chat") != nil) != (status == metav1.ConditionTrue) {
				t.Errorf("HPA exists = %v with Ready %s", f.hpa("qwen-chat") != nil, status)
			}
			// In these tests no InferenceService watch is registered, so a
			// refusal retries on its own.
			if res.RequeueAfter != tt.requeue {
				t.Errorf("RequeueAfter = %v, want %v", res.RequeueAfter, tt.requeue)
			}
		})
	}
}

func TestInvalidSpecReported(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*v1alpha1.InferenceScaler)
		msg    []string
	}{
		{"cron out of range", func(s *v1alpha1.InferenceScaler) {
			s.Spec.Schedules = []v1alpha1.Schedule{{Name: "peak", Cron: "0 25 * * *", Duration: metav1.Duration{Duration: time.Hour}, MinReplicas: 2}}
		}, []string{`schedules[0] "peak": cron "0 25 * * *"`}},
		{"unknown zone", func(s *v1alpha1.InferenceScaler) {
			s.Spec.Schedules = []v1alpha1.Schedule{{Name: "peak", Cron: "0 9 * * *", TimeZone: "Mars/Olympus", Duration: metav1.Duration{Duration: time.Hour}, MinReplicas: 2}}
		}, []string{`timeZone "Mars/Olympus" is not a known IANA zone`}},
		{"unknown kind", func(s *v1alpha1.InferenceScaler) { s.Spec.ScaleTargetRef.Kind = "StatefulSet" }, []string{"is not an apps/v1 Deployment"}},
		{"zero target", func(s *v1alpha1.InferenceScaler) {
			s.Spec.Metric = &v1alpha1.ScalerMetric{Target: ptr.To(resource.MustParse("0"))}
		}, []string{"metric.target 0 is not above zero"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := deploymentScaler("qwen", "qwen-predictor")
			tt.mutate(s)
			f := newFixture(t, s)
			f.reconcile("qwen")
			for _, m := range tt.msg {
				wantCondition(t, f.scaler("qwen"), v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec, m)
			}
			if f.hpa("qwen") != nil {
				t.Error("an HPA was applied from an invalid spec")
			}
			wantEvents(t, f.rec.take(), "Warning InvalidSpec")
			if n := f.counter(metricnames.InferenceScalerReconciles, resultInvalid); n != 1 {
				t.Errorf("invalid reconciles = %v", n)
			}
		})
	}
}

func TestExternalMetricUsesPodSelector(t *testing.T) {
	s := deploymentScaler("qwen", "qwen-predictor")
	s.Spec.Metric = &v1alpha1.ScalerMetric{Type: v1alpha1.ExternalMetric}
	f := newFixture(t, s)
	f.reconcile("qwen")
	wantCondition(t, f.scaler("qwen"), v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonPodSelectorUnknown, "Deployment qwen-predictor")
	if f.hpa("qwen") != nil {
		t.Fatal("an External HPA was applied without a selector")
	}

	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "isvc.qwen-predictor"}}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "qwen-predictor", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Selector: sel, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: sel.MatchLabels},
		}},
	}
	if err := f.cl.Create(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if reqs := f.c.scalersForDeployment(context.Background(), d); len(reqs) != 1 || reqs[0].Name != "qwen" {
		t.Errorf("Deployment maps to %v", reqs)
	}
	f.reconcile("qwen")
	h := f.hpa("qwen")
	if h == nil {
		t.Fatal("no HPA once the Deployment exists")
	}
	m := h.Spec.Metrics[0]
	if m.Type != autoscalingv2.ExternalMetricSourceType || !equality.Semantic.DeepEqual(m.External.Metric.Selector, sel) {
		t.Errorf("metric %+v", m)
	}
}

func TestPaused(t *testing.T) {
	s := deploymentScaler("qwen", "qwen-predictor")
	s.Spec.Schedules = []v1alpha1.Schedule{{Name: "am-peak", Cron: "0 9 * * *", Duration: metav1.Duration{Duration: 2 * time.Hour}, MinReplicas: 3}}
	f := newFixture(t, s)
	f.reconcile("qwen")
	f.setHPAStatus("qwen", autoscalingv2.HorizontalPodAutoscalerStatus{CurrentReplicas: 2, DesiredReplicas: 2})

	s = f.scaler("qwen")
	s.Spec.Paused = true
	f.update(s)
	if res := f.reconcile("qwen"); res.RequeueAfter != 0 {
		t.Errorf("a paused scaler requeues after %v", res.RequeueAfter)
	}
	h := f.hpa("qwen")
	if *h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 2 {
		t.Errorf("paused HPA min %d max %d, want 2 2", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	st := f.scaler("qwen")
	wantCondition(t, st, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonPaused, "pinned at 2 replicas")
	wantCondition(t, st, v1alpha1.ConditionScheduleActive, metav1.ConditionFalse, v1alpha1.ReasonPaused, "")
	if st.Status.PausedReplicas == nil || *st.Status.PausedReplicas != 2 {
		t.Errorf("pausedReplicas %v", st.Status.PausedReplicas)
	}

	// The pin holds while the window opens and the HPA reports other counts.
	f.setHPAStatus("qwen", autoscalingv2.HorizontalPodAutoscalerStatus{CurrentReplicas: 3, DesiredReplicas: 3})
	f.clock.SetTime(t0.Add(90 * time.Minute))
	f.reconcile("qwen")
	if h := f.hpa("qwen"); *h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 2 {
		t.Errorf("the pin moved: min %d max %d", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	if n := f.counter(metricnames.InferenceScalerScheduleActivations, ns, "qwen", "am-peak"); n != 0 {
		t.Errorf("a window opened while paused: %v", n)
	}

	// Unpausing restores the schedule floor and the range.
	s = f.scaler("qwen")
	s.Spec.Paused = false
	f.update(s)
	f.reconcile("qwen")
	if h := f.hpa("qwen"); *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 3 {
		t.Errorf("after unpausing in the window: min %d max %d, want 3 3", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	if st := f.scaler("qwen"); st.Status.PausedReplicas != nil || st.Status.ActiveSchedule != "am-peak" {
		t.Errorf("status after unpausing: %+v", st.Status)
	}
}

func TestPausedBeforeAnyHPA(t *testing.T) {
	s := deploymentScaler("qwen", "qwen-predictor")
	s.Spec.Paused = true
	f := newFixture(t, s)
	f.reconcile("qwen")
	if f.hpa("qwen") != nil {
		t.Error("a paused scaler created an HPA")
	}
	wantCondition(t, f.scaler("qwen"), v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonPaused, "none is created")
}

func TestDeletedScalerIsIgnored(t *testing.T) {
	f := newFixture(t)
	if res := f.reconcile("gone"); res != (reconcile.Result{}) {
		t.Errorf("result %+v for a missing scaler", res)
	}
}

func TestNewControllerValidates(t *testing.T) {
	_, err := New(nil, nil, prometheus.NewRegistry(), Options{HPASyncPeriod: -time.Second})
	if err == nil {
		t.Fatal("accepted nil client, nil recorder and a negative period")
	}
	for _, want := range []string{"nil client", "nil event recorder", "HPA sync period -1s is negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
