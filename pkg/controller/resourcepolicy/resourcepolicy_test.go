package resourcepolicy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/pkg/placement"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func seed(name string, created time.Time) *v1alpha1.ResourcePolicy {
	return testobjects.ResourcePolicy(testobjects.PolicyOptions{Name: name, Created: created, Generation: 1})
}

type podOpt = func(*corev1.Pod)

func placed(policy, unit string) podOpt {
	return func(p *corev1.Pod) { p.Labels[placement.LabelPolicy], p.Labels[placement.LabelUnit] = policy, unit }
}
func running(node string) podOpt {
	return func(p *corev1.Pod) { p.Spec.NodeName, p.Status.Phase = node, corev1.PodRunning }
}
func created(t time.Time) podOpt {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(t) }
}

func pod(name string, opts ...podOpt) *corev1.Pod {
	return testobjects.Pod(testobjects.PodOptions{
		Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{testobjects.AppLabel: testobjects.AppValue},
		Created: t0.Add(time.Hour), Phase: corev1.PodPending,
	}, opts...)
}

type env struct {
	client  client.Client
	r       *Reconciler
	events  *events.FakeRecorder
	metrics *metrics
}

func newEnv(t *testing.T, objs ...client.Object) *env {
	t.Helper()
	s, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	objs = append(objs, testobjects.Node(testobjects.NodeOptions{Name: "onprem-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.OnPremPool}}))
	cl := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).WithStatusSubresource(&v1alpha1.ResourcePolicy{}).Build()
	rec := events.NewFakeRecorder(20)
	r, err := New(cl, rec, prometheus.NewRegistry(), Options{Clock: clocktesting.NewFakeClock(t0.Add(2 * time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	return &env{client: cl, r: r, events: rec, metrics: r.metrics}
}

func (e *env) reconcile(t *testing.T, name string) *v1alpha1.ResourcePolicy {
	t.Helper()
	key := types.NamespacedName{Namespace: "default", Name: name}
	if _, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	rp := &v1alpha1.ResourcePolicy{}
	if err := e.client.Get(context.Background(), key, rp); err != nil {
		t.Fatal(err)
	}
	return rp
}

func (e *env) drain() []string {
	var out []string
	for len(e.events.Events) > 0 {
		out = append(out, <-e.events.Events)
	}
	return out
}

func TestStatusSeedShape(t *testing.T) {
	e := newEnv(t, seed("qwen-chat", t0),
		pod("a", placed("qwen-chat", "0"), running("onprem-1")),
		pod("b", placed("qwen-chat", "1"), running("elastic-1")),
		pod("c", placed("qwen-chat", "1")),
		pod("before", created(t0.Add(-time.Hour)), running("onprem-1")), // predates the policy: by node
		pod("done", placed("qwen-chat", "1"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("none", placed("qwen-chat", placement.UnitNone)),
	)
	rp := e.reconcile(t, "qwen-chat")
	want := []v1alpha1.UnitStatus{
		{Name: "ecs", Resource: "ecs", Placed: 2, Running: 2},
		{Name: "elastic", Resource: "elastic", Placed: 2, Running: 1, Pending: 1},
	}
	if len(rp.Status.Units) != 2 || rp.Status.Units[0] != want[0] || rp.Status.Units[1] != want[1] {
		t.Errorf("units = %+v, want %+v", rp.Status.Units, want)
	}
	if rp.Status.Summary != "ecs=2 elastic=2" || rp.Status.UnitCount != 2 || rp.Status.Outside != 1 || rp.Status.ObservedGeneration != 1 {
		t.Errorf("status = %+v", rp.Status)
	}
	if !meta.IsStatusConditionFalse(rp.Status.Conditions, v1alpha1.ConditionConflict) || !meta.IsStatusConditionTrue(rp.Status.Conditions, v1alpha1.ConditionAllPodsPlaced) ||
		!meta.IsStatusConditionTrue(rp.Status.Conditions, v1alpha1.ConditionUnitsMatchNodes) {
		t.Errorf("conditions = %+v", rp.Status.Conditions)
	}
	if ev := e.drain(); len(ev) != 0 {
		t.Errorf("events = %v, want none", ev)
	}
}

// A node-selector value no node label can hold (ACK's masked "np…****"
// IDs) is reported once, by condition and event, naming unit and value.
func TestUnmatchableNodeSelectorReported(t *testing.T) {
	rp := seed("qwen-chat", t0)
	rp.Spec.Units[0].NodeSelector = map[string]string{"alibabacloud.com/nodepool-id": "np7ec7****"}
	e := newEnv(t, rp)
	got := e.reconcile(t, "qwen-chat")
	c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionUnitsMatchNodes)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "UnmatchableNodeSelector" ||
		!strings.Contains(c.Message, `units[0] (ecs) alibabacloud.com/nodepool-id="np7ec7****"`) {
		t.Fatalf("condition = %+v", c)
	}
	if ev := e.drain(); len(ev) != 1 || !strings.Contains(ev[0], "UnmatchableNodeSelector") {
		t.Errorf("events = %v, want one UnmatchableNodeSelector", ev)
	}
	e.reconcile(t, "qwen-chat")
	if ev := e.drain(); len(ev) != 0 {
		t.Errorf("events on the second pass = %v, want none", ev)
	}
}

func TestConflict(t *testing.T) {
	e := newEnv(t, seed("older", t0), seed("newer", t0.Add(time.Minute)),
		pod("a", placed("older", "0"), running("onprem-1")))
	newer := e.reconcile(t, "newer")
	c := meta.FindStatusCondition(newer.Status.Conditions, v1alpha1.ConditionConflict)
	if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "older ResourcePolicy older") {
		t.Fatalf("newer's Conflict = %+v", c)
	}
	if newer.Status.Units[0].Placed != 0 {
		t.Error("pods another policy places must not count")
	}
	if ev := e.drain(); len(ev) != 1 || !strings.Contains(ev[0], "Conflict") {
		t.Errorf("events = %v, want one Conflict", ev)
	}
	e.reconcile(t, "newer")
	if ev := e.drain(); len(ev) != 0 {
		t.Errorf("a standing conflict must not repeat its event: %v", ev)
	}
	older := e.reconcile(t, "older")
	if meta.IsStatusConditionTrue(older.Status.Conditions, v1alpha1.ConditionConflict) || older.Status.Units[0].Placed != 1 {
		t.Errorf("older: %+v", older.Status)
	}
}

func TestUnplacedReported(t *testing.T) {
	e := newEnv(t, seed("qwen-chat", t0),
		pod("missed", running("onprem-1")),
		pod("before", created(t0.Add(-time.Hour))))
	rp := e.reconcile(t, "qwen-chat")
	c := meta.FindStatusCondition(rp.Status.Conditions, v1alpha1.ConditionAllPodsPlaced)
	if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "missed") || strings.Contains(c.Message, "before") {
		t.Fatalf("AllPodsPlaced = %+v", c)
	}
	if got := testutil.ToFloat64(e.metrics.Unplaced.WithLabelValues("default", "qwen-chat")); got != 1 {
		t.Errorf("unplaced gauge = %v, want 1", got)
	}
	ev := e.drain()
	if len(ev) != 2 || !strings.Contains(strings.Join(ev, "\n"), "NotPlaced") {
		t.Errorf("events = %v, want one NotPlaced for the pod and one WebhookBypassed", ev)
	}
	e.reconcile(t, "qwen-chat")
	if ev := e.drain(); len(ev) != 0 {
		t.Errorf("each pod is reported once: %v", ev)
	}
	if rp.Status.Units[0].Placed != 1 {
		t.Errorf("an unplaced pod still counts in its node's unit: %+v", rp.Status.Units)
	}
}

func TestCooldownCarriedOver(t *testing.T) {
	rp := seed("qwen-chat", t0)
	now := t0.Add(2 * time.Hour)
	rp.Status.Units = []v1alpha1.UnitStatus{
		{Name: "ecs", CooldownUntil: &metav1.Time{Time: now.Add(time.Minute)}},
		{Name: "elastic", CooldownUntil: &metav1.Time{Time: now.Add(-time.Minute)}},
	}
	e := newEnv(t, rp)
	got := e.reconcile(t, "qwen-chat")
	if c := got.Status.Units[0].CooldownUntil; c == nil || !c.Time.Equal(now.Add(time.Minute)) {
		t.Errorf("a running cooldown must be kept: %v", c)
	}
	if c := got.Status.Units[1].CooldownUntil; c != nil {
		t.Errorf("an ended cooldown must go: %v", c)
	}
}
