package placement

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/test/framework"
)

// TestResourcePolicyValidation sends every fixture to the real API server:
// each invalid policy is rejected with the message its
// spillway.dev/expected-error annotation names, and the seed's policy and
// the valid ones are accepted. kubectl's strict field validation is used.
func TestResourcePolicyValidation(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	dc := dynamicClient(t)
	create := func(u *unstructured.Unstructured) error {
		u = u.DeepCopy()
		u.SetNamespace(ns)
		_, err := dc.Resource(policyGVR).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{FieldValidation: "Strict"})
		return err
	}

	invalid := framework.ReadObjects(t, fixtures+"/invalid-resourcepolicies.yaml")
	if len(invalid) < 10 {
		t.Fatalf("only %d invalid fixtures", len(invalid))
	}
	for _, u := range invalid {
		t.Run("rejects/"+u.GetName(), func(t *testing.T) {
			want := u.GetAnnotations()["spillway.dev/expected-error"]
			if want == "" {
				t.Fatal("fixture lacks the spillway.dev/expected-error annotation")
			}
			err := create(u)
			if err == nil {
				t.Fatalf("accepted; want rejection containing %q", want)
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Errorf("error is %T (%v), want Invalid or BadRequest", err, err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}

	valid := append(framework.ReadObjects(t, fixtures+"/seed-resourcepolicy.yaml"), framework.ReadObjects(t, fixtures+"/valid-resourcepolicies.yaml")...)
	for _, u := range valid {
		t.Run("accepts/"+u.GetName(), func(t *testing.T) {
			if err := create(u); err != nil {
				t.Fatal(err)
			}
		})
	}

	// ACK's own examples share names; each is removed after it applied.
	ack := framework.ReadObjects(t, fixtures+"/ack-examples.yaml")
	if len(ack) < 4 {
		t.Fatalf("only %d ACK examples", len(ack))
	}
	for i, u := range ack {
		t.Run(fmt.Sprintf("accepts-ack-example-%d/%s", i, u.GetName()), func(t *testing.T) {
			if err := create(u); err != nil {
				t.Fatal(err)
			}
			if err := dc.Resource(policyGVR).Namespace(ns).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			framework.Eventually(t, 30*time.Second, 250*time.Millisecond, "the example deleted", func(ctx context.Context) (bool, string) {
				_, err := dc.Resource(policyGVR).Namespace(ns).Get(ctx, u.GetName(), metav1.GetOptions{})
				return apierrors.IsNotFound(err), fmt.Sprint(err)
			})
		})
	}
}

// TestSeedPolicy applies the seed's ResourcePolicy as the fixture has it
// (the seed's shape, apiVersion changed; here put in the test's namespace):
// units ecs and elastic chosen by alibabacloud.com/nodepool-id. With one
// 1-GPU on-prem node, 3 predictor pods go 1 on-prem and 2 to Karpenter
// nodes, ranked 1000000/0/0. Then the on-prem pod is made the newest and the
// Deployment scaled 3 → 1: the on-prem pod survives (compare
// TestWithoutPolicyScaleInRemovesNewestOnPremPod).
func TestSeedPolicy(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	const nodepoolID = "alibabacloud.com/nodepool-id"
	p := newPools(t, "seed", poolOptions{
		onPremLabels:  map[string]string{nodepoolID: "np-xxxxx"},
		elasticLabels: map[string]string{nodepoolID: "np-yyyyy"},
	})

	docs := framework.ReadObjects(t, fixtures+"/seed-resourcepolicy.yaml")
	if len(docs) != 1 || docs[0].GetAPIVersion() != "spillway.dev/v1alpha1" || docs[0].GetKind() != "ResourcePolicy" {
		t.Fatalf("seed fixture: want one spillway.dev/v1alpha1 ResourcePolicy, have %d documents", len(docs))
	}
	seed := docs[0]
	seed.SetNamespace(ns)
	manifest, err := json.Marshal(seed.Object)
	if err != nil {
		t.Fatal(err)
	}
	applyPolicy(t, string(manifest))

	const app = "isvc.qwen-predictor"
	selector := "app=" + app
	createDeployment(t, predictor(ns, app, 3))
	waitSpread(t, ns, selector, p, 1, 2)
	framework.Eventually(t, time.Minute, time.Second, "units 0/1 and costs 1000000/0/0", func(ctx context.Context) (bool, string) {
		live, _, err := livePods(ctx, ns, selector)
		if err != nil {
			return false, err.Error()
		}
		on, el, _ := split(live, p)
		ok := len(on) == 1 && len(el) == 2 &&
			on[0].Labels[labelUnit] == "0" && el[0].Labels[labelUnit] == "1" && el[1].Labels[labelUnit] == "1" &&
			costs(on)[0] == "1000000" && allEqual(costs(el), "0")
		return ok, describe(live)
	})
	framework.Eventually(t, time.Minute, time.Second, "status: ecs=1 elastic=2, all running", func(ctx context.Context) (bool, string) {
		rp, err := getPolicy(ctx, t, ns, seed.GetName())
		if err != nil {
			return false, err.Error()
		}
		st := rp.Status
		ok := st.Summary == "ecs=1 elastic=2" && st.UnitCount == 2 && len(st.Units) == 2 &&
			st.Units[0].Running == 1 && st.Units[1].Running == 2 && st.Units[0].Pending+st.Units[1].Pending == 0 && st.Outside == 0
		return ok, fmt.Sprintf("%+v", st)
	})

	onPrem, survivor := scaleInWithOnPremNewest(t, ns, selector, p, true)
	if survivor.UID != onPrem.UID {
		t.Fatalf("scale-in kept %s (pool %s); want the on-prem pod %s", survivor.Name, survivor.pool, onPrem.Name)
	}
}

// TestWithoutPolicyScaleInRemovesNewestOnPremPod repeats TestSeedPolicy's
// scale-in with no policy: the on-prem pod, Ready most recently, is the one
// the ReplicaSet removes. This is what the policy's deletion cost changes.
func TestWithoutPolicyScaleInRemovesNewestOnPremPod(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "nopolicy", poolOptions{})
	const app = "isvc.qwen-predictor"
	selector := "app=" + app
	d := predictor(ns, app, 3)
	requirePoolAffinity(&d.Spec.Template.Spec, p)
	createDeployment(t, d)
	waitSpread(t, ns, selector, p, 1, 2)

	onPrem, survivor := scaleInWithOnPremNewest(t, ns, selector, p, false)
	if survivor.UID == onPrem.UID {
		t.Fatalf("without a policy scale-in kept the on-prem pod %s; the newest pod should have gone first", onPrem.Name)
	}
	if survivor.pool != p.elastic {
		t.Fatalf("survivor %s runs in pool %q, want %s", survivor.Name, survivor.pool, p.elastic)
	}
}

// TestMaxCapsUnit: unit onprem has max 2 and room for 4 (two 2-GPU nodes):
// of 4 pods, 2 go on-prem and 2 to the elastic unit.
func TestMaxCapsUnit(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "max", poolOptions{onPremNodes: 2, shape: localcluster.NodeShape{CPU: "16", Memory: "64Gi", GPUs: 2}})
	const app = "max-predictor"
	applyPolicy(t, twoUnitPolicy(ns, app, p, ptr.To[int32](2)))
	createDeployment(t, predictor(ns, app, 4))

	onPrem, elastic := waitSpread(t, ns, "app="+app, p, 2, 2)
	for _, pod := range onPrem {
		if pod.Labels[labelUnit] != "onprem" {
			t.Errorf("pod %s runs on-prem with unit %q", pod.Name, pod.Labels[labelUnit])
		}
	}
	for _, pod := range elastic {
		if pod.Labels[labelUnit] != "elastic" {
			t.Errorf("pod %s runs on the elastic pool with unit %q", pod.Name, pod.Labels[labelUnit])
		}
	}
	framework.Eventually(t, time.Minute, time.Second, "status onprem=2 elastic=2", func(ctx context.Context) (bool, string) {
		rp, err := getPolicy(ctx, t, ns, "predictor")
		if err != nil {
			return false, err.Error()
		}
		return rp.Status.Summary == "onprem=2 elastic=2", rp.Status.Summary
	})
}

// TestBurstFillsOnPremRoomThenSpills creates 10 pods at once with on-prem
// room for 4: 4 go on-prem and 6 elastic, and none is left unschedulable on
// the on-prem unit (no pod needs re-placing), so none stays Pending past the
// grace beyond the time Karpenter takes to add its node.
func TestBurstFillsOnPremRoomThenSpills(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "burst", poolOptions{onPremNodes: 2, shape: localcluster.NodeShape{CPU: "16", Memory: "64Gi", GPUs: 2}, gpuLimit: 10})
	const app = "burst-predictor"
	selector := "app=" + app
	applyPolicy(t, twoUnitPolicy(ns, app, p, nil))
	createDeployment(t, predictor(ns, app, 10))

	seen := map[string]bool{}
	stuck := map[string]bool{}
	framework.Eventually(t, karpenterBound, time.Second, "4 pods on-prem and 6 on Karpenter nodes", func(ctx context.Context) (bool, string) {
		live, all, err := livePods(ctx, ns, selector)
		if err != nil {
			return false, err.Error()
		}
		for _, pod := range all {
			seen[pod.Name] = true
			if pod.Labels[labelUnit] == "onprem" && pod.unschedulable() {
				stuck[pod.Name] = true
			}
		}
		on, el, other := split(live, p)
		return len(on) == 4 && len(el) == 6 && len(other) == 0, describe(live)
	})
	if len(stuck) > 0 {
		t.Errorf("pods placed on-prem without room (unschedulable there): %v", keys(stuck))
	}
	if len(seen) != 10 {
		t.Errorf("%d pods existed during the burst, want 10 (a pod was re-placed or deleted): %v", len(seen), keys(seen))
	}
	live, _, err := livePods(context.Background(), ns, selector)
	if err != nil {
		t.Fatal(err)
	}
	on, el, _ := split(live, p)
	var maxPending time.Duration
	for _, pod := range live {
		pending := pod.readyAt.Sub(pod.CreationTimestamp.Time)
		maxPending = max(maxPending, pending)
	}
	for _, pod := range on {
		if pod.Labels[labelUnit] != "onprem" {
			t.Errorf("pod %s runs on-prem with unit %q", pod.Name, pod.Labels[labelUnit])
		}
	}
	for _, pod := range el {
		if pod.Labels[labelUnit] != "elastic" {
			t.Errorf("pod %s runs on the elastic pool with unit %q", pod.Name, pod.Labels[labelUnit])
		}
	}
	// A correctness bound, not a speed figure: a pod left waiting on the
	// wrong unit would need the grace plus a re-placement plus a node.
	t.Logf("longest time from creation to Ready: %s", maxPending)
	if limit := grace + 90*time.Second; maxPending > limit {
		t.Errorf("a pod was Pending %s, over the grace plus node time (%s)", maxPending, limit)
	}
}

// TestUnschedulablePodIsReplacedOnNextUnit fills the on-prem node in a way
// the webhook's room check does not model (a foreign pod holding the host
// port the predictor needs), so the predictor placed on-prem cannot
// schedule: after the grace it is deleted and its replacement goes to the
// elastic unit, within the grace plus a few seconds of the first pod's
// creation.
func TestUnschedulablePodIsReplacedOnNextUnit(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "adaptive", poolOptions{})
	ctx := context.Background()

	const hostPort = 8080
	foreign := testobjects.Pod(testobjects.PodOptions{Name: "foreign", Namespace: ns, Labels: map[string]string{"app": "foreign"}, NodeName: p.onPremNodes[0]},
		func(pod *corev1.Pod) {
			pod.Spec.TerminationGracePeriodSeconds = ptr.To(int64(0))
			pod.Spec.Containers = []corev1.Container{{
				Name: "foreign", Image: "busybox",
				Ports: []corev1.ContainerPort{{ContainerPort: hostPort, HostPort: hostPort}},
			}}
		})
	if _, err := cluster.Client().CoreV1().Pods(ns).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cluster.Client().CoreV1().Pods(ns).Delete(context.Background(), foreign.Name, metav1.DeleteOptions{})
	})
	framework.Eventually(t, time.Minute, time.Second, "the foreign pod running on-prem", func(ctx context.Context) (bool, string) {
		pod, err := cluster.Client().CoreV1().Pods(ns).Get(ctx, foreign.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return pod.Status.Phase == corev1.PodRunning, string(pod.Status.Phase)
	})

	const app = "adaptive-predictor"
	selector := "app=" + app
	applyPolicy(t, twoUnitPolicy(ns, app, p, nil))
	d := predictor(ns, app, 1)
	d.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: hostPort, HostPort: hostPort}}
	createDeployment(t, d)

	var first placedPod
	framework.Eventually(t, grace, time.Second, "the first pod placed on-prem and unschedulable there", func(ctx context.Context) (bool, string) {
		live, _, err := livePods(ctx, ns, selector)
		if err != nil {
			return false, err.Error()
		}
		if len(live) != 1 {
			return false, describe(live)
		}
		first = live[0]
		return first.Labels[labelUnit] == "onprem" && first.unschedulable(), describe(live)
	})

	const slack = 10 * time.Second
	deadline := first.CreationTimestamp.Add(grace + slack)
	var second placedPod
	framework.Eventually(t, time.Until(deadline)+slack, time.Second, "the pod re-placed on the elastic unit", func(ctx context.Context) (bool, string) {
		live, all, err := livePods(ctx, ns, selector)
		if err != nil {
			return false, err.Error()
		}
		for _, pod := range all {
			if pod.UID == first.UID && pod.DeletionTimestamp == nil {
				return false, "first pod not deleted yet: " + describe(all)
			}
		}
		if len(live) != 1 {
			return false, describe(all)
		}
		second = live[0]
		return second.Labels[labelUnit] == "elastic", describe(all)
	})
	if took := second.CreationTimestamp.Sub(first.CreationTimestamp.Time); took > grace+slack {
		t.Errorf("the replacement was created %s after the first pod, want within the grace %s + %s", took, grace, slack)
	}
	waitSpread(t, ns, selector, p, 0, 1)

	rp, err := getPolicy(ctx, t, ns, "predictor")
	if err != nil {
		t.Fatal(err)
	}
	if len(rp.Status.Units) != 2 || rp.Status.Units[0].CooldownUntil == nil {
		t.Errorf("status does not mark unit onprem as cooling down: %+v", rp.Status.Units)
	}
	events, err := cluster.Client().CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=Replaced"})
	if err != nil {
		t.Fatal(err)
	}
	if len(events.Items) == 0 {
		t.Errorf("no Replaced event in %s", ns)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
