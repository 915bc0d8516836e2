package spillover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/pkg/placement"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func policy(mutate ...func(*v1alpha1.ResourcePolicy)) *v1alpha1.ResourcePolicy {
	return testobjects.ResourcePolicy(testobjects.PolicyOptions{
		Created: t0, Selector: map[string]string{"app": "qwen"},
		Units: []v1alpha1.Unit{
			{Name: "onprem", NodeSelector: map[string]string{"pool": "onprem"}},
			{Name: "spot", NodeSelector: map[string]string{"pool": "spot"}},
			{Name: "elastic", NodeSelector: map[string]string{"pool": "elastic"}},
		},
	}, mutate...)
}

// stuck is a pod placed on unit, unschedulable since creation at created.
func stuck(name, unit string, created time.Time, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := testobjects.Pod(testobjects.PodOptions{
		Name: name, UID: types.UID("uid-" + name), Created: created, Phase: corev1.PodPending,
		Labels: map[string]string{"app": "qwen", placement.LabelPolicy: "qwen-chat", placement.LabelUnit: unit},
	}, func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "qwen-abc", UID: "rs", Controller: ptr.To(true)}}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}
	})
	for _, m := range mutate {
		m(p)
	}
	return p
}

func TestReconcile(t *testing.T) {
	now := t0.Add(time.Hour)
	old := now.Add(-time.Minute)
	cases := []struct {
		name    string
		policy  *v1alpha1.ResourcePolicy
		pod     *corev1.Pod
		others  []client.Object
		deleted bool
		requeue time.Duration
		event   string
	}{
		{"past grace on first unit: re-placed", policy(), stuck("p", "onprem", old), nil, true, 0, "Replaced"},
		{"past grace on a middle unit: re-placed", policy(), stuck("p", "spot", old), nil, true, 0, "Replaced"},
		{"within grace: called back when it ends", policy(), stuck("p", "onprem", now.Add(-10*time.Second)), nil, false, 20 * time.Second, ""},
		{"last unit: never", policy(), stuck("p", "elastic", old), nil, false, 0, ""},
		{"placed outside: never", policy(), stuck("p", placement.UnitNone, old), nil, false, 0, ""},
		{"exceed max waits forever", policy(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.WhenTryNextUnits = &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.ExceedMax}
		}), stuck("p", "onprem", old), nil, false, 0, ""},
		{"timeout policy uses its timeout", policy(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.WhenTryNextUnits = &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.TimeoutOrExceedMax, Timeout: &metav1.Duration{Duration: 5 * time.Minute}}
		}), stuck("p", "onprem", old), nil, false, 4 * time.Minute, ""},
		{"not owned by a ReplicaSet: left in place", policy(), stuck("p", "onprem", old, func(p *corev1.Pod) {
			p.OwnerReferences[0].Kind = "StatefulSet"
		}), nil, false, 0, "NotReplaced"},
		{"no owner: left in place", policy(), stuck("p", "onprem", old, func(p *corev1.Pod) { p.OwnerReferences = nil }), nil, false, 0, "NotReplaced"},
		{"scheduled: nothing to do", policy(), stuck("p", "onprem", old, func(p *corev1.Pod) {
			p.Status.Conditions[0].Status = corev1.ConditionTrue
		}), nil, false, 0, ""},
		{"bound: nothing to do", policy(), stuck("p", "onprem", old, func(p *corev1.Pod) { p.Spec.NodeName = "n1" }), nil, false, 0, ""},
		{"waiting for the scheduler, not unschedulable", policy(), stuck("p", "onprem", old, func(p *corev1.Pod) { p.Status.Conditions = nil }), nil, false, 0, ""},
		{"policy gone", nil, stuck("p", "onprem", old), nil, false, 0, ""},
		{"timeout policy without a timeout waits ACK's 15m", policy(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.WhenTryNextUnits = &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.TimeoutOrExceedMax}
		}), stuck("p", "onprem", old), nil, false, 14 * time.Minute, ""},
		{"no terminating: waits while its unit has terminating pods", policy(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.WhenTryNextUnits = &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.LackResourceAndNoTerminating}
		}), stuck("p", "onprem", old), []client.Object{stuck("leaving", "onprem", old, func(p *corev1.Pod) {
			p.Spec.NodeName, p.DeletionTimestamp, p.Finalizers = "onprem-1", &metav1.Time{Time: now}, []string{"example.com/hold"}
		})}, false, 30 * time.Second, ""},
		{"no terminating: re-placed once none is left", policy(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.WhenTryNextUnits = &v1alpha1.WhenTryNextUnits{Policy: v1alpha1.LackResourceAndNoTerminating}
		}), stuck("p", "onprem", old), []client.Object{stuck("leaving-elsewhere", "spot", old, func(p *corev1.Pod) {
			p.Spec.NodeName, p.DeletionTimestamp, p.Finalizers = "spot-1", &metav1.Time{Time: now}, []string{"example.com/hold"}
		})}, true, 0, "Replaced"},
		{"later units at max: wait", policy(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.Units[1].Max, rp.Spec.Units[2].Max = ptr.To[int32](1), ptr.To[int32](0)
		}), stuck("p", "onprem", old), []client.Object{stuck("q", "spot", old, func(p *corev1.Pod) { p.Spec.NodeName = "spot-1" })}, false, 30 * time.Second, "NotReplaced"},
		{"later unit under max: re-placed", policy(func(rp *v1alpha1.ResourcePolicy) {
			rp.Spec.Units[1].Max, rp.Spec.Units[2].Max = ptr.To[int32](2), ptr.To[int32](0)
		}), stuck("p", "onprem", old), []client.Object{stuck("q", "spot", old, func(p *corev1.Pod) { p.Spec.NodeName = "spot-1" })}, true, 0, "Replaced"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := kubescheme.New()
			if err != nil {
				t.Fatal(err)
			}
			objs := append([]client.Object{c.pod}, c.others...)
			if c.policy != nil {
				objs = append(objs, c.policy)
			}
			cl := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).WithStatusSubresource(&v1alpha1.ResourcePolicy{}).Build()
			clk := clocktesting.NewFakeClock(now)
			tracker := placement.NewTracker(clk, time.Minute, 2*time.Minute)
			rec := events.NewFakeRecorder(10)
			r, err := New(cl, rec, prometheus.NewRegistry(), Options{Tracker: tracker, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			m := r.metrics

			res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c.pod)})
			if err != nil {
				t.Fatal(err)
			}
			if res.RequeueAfter != c.requeue {
				t.Errorf("RequeueAfter = %v, want %v", res.RequeueAfter, c.requeue)
			}
			err = cl.Get(context.Background(), client.ObjectKeyFromObject(c.pod), &corev1.Pod{})
			if gone := apierrors.IsNotFound(err); gone != c.deleted {
				t.Errorf("deleted = %v, want %v", gone, c.deleted)
			}
			tx := tracker.Begin(nil)
			cooling := tx.CoolingDown(placement.UnitKey{Policy: "default/qwen-chat", Unit: c.pod.Labels[placement.LabelUnit]})
			tx.Done()
			if cooling != c.deleted {
				t.Errorf("unit cooling down = %v, want %v", cooling, c.deleted)
			}
			if c.policy != nil {
				rp := &v1alpha1.ResourcePolicy{}
				if err := cl.Get(context.Background(), client.ObjectKeyFromObject(c.policy), rp); err != nil {
					t.Fatal(err)
				}
				idx, _ := placement.UnitIndex(rp, c.pod.Labels[placement.LabelUnit])
				if got := placement.StatusCoolingDown(rp, idx, now); got != c.deleted {
					t.Errorf("status cooldown = %v, want %v (status %+v)", got, c.deleted, rp.Status.Units)
				}
			}
			if got := testutil.ToFloat64(m.Replacements.WithLabelValues("default", "qwen-chat", c.pod.Labels[placement.LabelUnit])); (got == 1) != c.deleted {
				t.Errorf("replacements metric = %v", got)
			}
			var got []string
			for len(rec.Events) > 0 {
				got = append(got, <-rec.Events)
			}
			if c.event == "" && len(got) > 0 {
				t.Errorf("unexpected events %v", got)
			}
			if c.event != "" && (len(got) == 0 || !strings.Contains(got[0], " "+c.event+" ")) {
				t.Errorf("events %v, want %s", got, c.event)
			}
		})
	}
}
