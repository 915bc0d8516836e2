package placement

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/test/framework"
)

// TestMatchLabelKeysAndPodLabelsThroughRollout: the on-prem unit has room
// for 4 pods but a max of 2, counted per pod-template-hash, and marks its
// pods with a podLabel. A rollout of a 2-replica Deployment then keeps
// every new pod on-prem: the new ReplicaSet has its own count, where one
// shared count (the old pods still running) would push its pods to the
// elastic unit. Every on-prem pod carries the unit's label.
func TestMatchLabelKeysAndPodLabelsThroughRollout(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "groups", poolOptions{onPremNodes: 2, shape: localcluster.NodeShape{CPU: "16", Memory: "64Gi", GPUs: 2}})
	const app = "groups-predictor"
	applyPolicy(t, policyManifest(ns, app, "  matchLabelKeys: [pod-template-hash]\n",
		p.onPremUnit("    max: 2\n    podLabels: {tier: onprem}\n    podAnnotations: {example.com/cost-center: gpu-onprem}\n")+p.elasticUnit()))
	createDeployment(t, predictor(ns, app, 2))
	before, _ := waitSpread(t, ns, "app="+app, p, 2, 0)
	oldHash := before[0].Labels["pod-template-hash"]

	// Roll out a new template.
	_, err := cluster.Client().AppsV1().Deployments(ns).Patch(context.Background(), "predictor", types.MergePatchType,
		[]byte(`{"spec":{"template":{"metadata":{"annotations":{"example.com/revision":"2"}}}}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, karpenterBound, time.Second, "the rollout done with both new pods on-prem", func(ctx context.Context) (bool, string) {
		live, all, err := livePods(ctx, ns, "app="+app)
		if err != nil {
			return false, err.Error()
		}
		for _, pod := range all {
			if pod.Labels["pod-template-hash"] != oldHash && pod.Labels[labelUnit] != "onprem" {
				t.Fatalf("a pod of the new ReplicaSet was placed on unit %q: %s", pod.Labels[labelUnit], describe(all))
			}
		}
		on, el, other := split(live, p)
		done := len(on) == 2 && len(el) == 0 && len(other) == 0 && len(all) == 2
		for _, pod := range on {
			done = done && pod.Labels["pod-template-hash"] != oldHash
		}
		return done, describe(all)
	})
	live, _, err := livePods(context.Background(), ns, "app="+app)
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range live {
		if pod.Labels["tier"] != "onprem" || pod.Annotations["example.com/cost-center"] != "gpu-onprem" {
			t.Errorf("pod %s lacks the unit's marks: labels %v", pod.Name, pod.Labels)
		}
	}
}

// TestVirtualNodeUnit: a unit of resource eci without nodeSelector places
// pods on a kwok node made to look like a virtual-kubelet node (label
// type=virtual-kubelet, taint virtual-kubelet.io/provider): they get the
// toleration, the node needs no room check (it is elastic), and scale-in
// removes them before the on-prem pod.
func TestVirtualNodeUnit(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "virtual", poolOptions{})
	ctx := context.Background()
	virtual, err := cluster.AddStaticGPUNodes(ctx, "virtual-kubelet", 1, localcluster.NodeShape{CPU: "64", Memory: "256Gi", GPUs: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cluster.Client().CoreV1().Nodes().Delete(context.Background(), virtual[0], metav1.DeleteOptions{})
	})
	waitUntainted(t, virtual)
	patch := []byte(`{"metadata":{"labels":{"type":"virtual-kubelet"}},"spec":{"taints":[{"key":"virtual-kubelet.io/provider","value":"kwok","effect":"NoSchedule"}]}}`)
	if _, err := cluster.Client().CoreV1().Nodes().Patch(ctx, virtual[0], types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	const app = "virtual-predictor"
	applyPolicy(t, policyManifest(ns, app, "", p.onPremUnit("")+"  - name: eci\n    resource: eci\n"))
	createDeployment(t, predictor(ns, app, 3))
	framework.Eventually(t, time.Minute, time.Second, "1 pod on-prem and 2 on the virtual node", func(ctx context.Context) (bool, string) {
		live, _, err := livePods(ctx, ns, "app="+app)
		if err != nil {
			return false, err.Error()
		}
		onPrem, onVirtual := 0, 0
		for _, pod := range live {
			switch {
			case !pod.running():
			case pod.pool == p.onPrem && pod.Labels[labelUnit] == "onprem":
				onPrem++
			case pod.Spec.NodeName == virtual[0] && pod.Labels[labelUnit] == "eci":
				onVirtual++
				tolerated := false
				for _, tol := range pod.Spec.Tolerations {
					tolerated = tolerated || tol.Key == "virtual-kubelet.io/provider"
				}
				if !tolerated {
					t.Fatalf("pod %s runs on the virtual node without its toleration: %+v", pod.Name, pod.Spec.Tolerations)
				}
			}
		}
		return onPrem == 1 && onVirtual == 2 && len(live) == 3, describe(live)
	})
	// Scale-in removes the virtual-node pods first.
	scale(t, ns, "predictor", 1)
	framework.Eventually(t, time.Minute, time.Second, "the on-prem pod left alone", func(ctx context.Context) (bool, string) {
		live, _, err := livePods(ctx, ns, "app="+app)
		if err != nil {
			return false, err.Error()
		}
		return len(live) == 1 && live[0].Labels[labelUnit] == "onprem", describe(live)
	})
}

// TestPodLabelsCountingAndMaxResources: the on-prem unit caps its pods'
// GPUs at 2 and counts only pods carrying its podLabel. A selected pod that
// was bound to an on-prem node by hand, without the label, takes a GPU but
// does not count: of 3 predictor pods, 2 go on-prem (the GPU cap, counted
// over marked pods only) and 1 to the elastic unit. Were the unmarked pod
// counted, only 1 would fit under the cap; were the cap ignored, all 3 would
// go on-prem (there is room for them).
func TestPodLabelsCountingAndMaxResources(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "marks", poolOptions{onPremNodes: 2, shape: localcluster.NodeShape{CPU: "16", Memory: "64Gi", GPUs: 2}})
	const app = "marks-predictor"
	applyPolicy(t, policyManifest(ns, app, "",
		p.onPremUnit("    maxResources: {nvidia.com/gpu: 2}\n    podLabels: {tier: onprem}\n")+p.elasticUnit()))
	ctx := context.Background()
	byHand := predictor(ns, app, 1).Spec.Template
	byHand.Name, byHand.Namespace = "by-hand", ns
	byHand.Spec.NodeName = p.onPremNodes[0]
	pod := &corev1.Pod{ObjectMeta: byHand.ObjectMeta, Spec: byHand.Spec}
	if _, err := cluster.Client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cluster.Client().CoreV1().Pods(ns).Delete(context.Background(), "by-hand", metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	})
	// The Deployment selects its pods by one more label, so that the pod
	// bound by hand is the policy's but not the ReplicaSet's.
	d := predictor(ns, app, 3)
	d.Spec.Selector.MatchLabels["role"] = "server"
	d.Spec.Template.Labels["role"] = "server"
	createDeployment(t, d)
	framework.Eventually(t, karpenterBound, time.Second, "2 predictor pods on-prem with the unit's label and 1 on the elastic unit", func(ctx context.Context) (bool, string) {
		live, _, err := livePods(ctx, ns, "app="+app)
		if err != nil {
			return false, err.Error()
		}
		onPrem, elastic := 0, 0
		for _, pod := range live {
			switch {
			case pod.Name == "by-hand" || !pod.running():
			case pod.Labels[labelUnit] == "onprem" && pod.Labels["tier"] == "onprem" && pod.pool == p.onPrem:
				onPrem++
			case pod.Labels[labelUnit] == "elastic" && pod.pool == p.elastic:
				elastic++
			}
		}
		return onPrem == 2 && elastic == 1, describe(live)
	})
}

// TestLackResourceAndNoTerminatingRollout: a rollout replaces on-prem
// pods one at a time (maxSurge 0) while each old pod is held terminating
// (a finalizer). The new pod is placed on-prem for the room its
// predecessor frees and, under LackResourceAndNoTerminating, waits there
// past the 30 s re-placement grace instead of being re-placed to the
// elastic unit; once the old pod goes, it runs on-prem.
func TestLackResourceAndNoTerminatingRollout(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "noterm", poolOptions{shape: localcluster.NodeShape{CPU: "16", Memory: "64Gi", GPUs: 2}})
	const app = "noterm-predictor"
	applyPolicy(t, policyManifest(ns, app, "  whenTryNextUnits: {policy: LackResourceAndNoTerminating}\n", p.onPremUnit("")+p.elasticUnit()))
	d := predictor(ns, app, 2)
	zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &zero, MaxUnavailable: &one}}
	createDeployment(t, d)
	before, _ := waitSpread(t, ns, "app="+app, p, 2, 0)
	oldHash := before[0].Labels["pod-template-hash"]
	ctx := context.Background()
	pods := cluster.Client().CoreV1().Pods(ns)
	release := func(ctx context.Context) {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return
		}
		for _, pod := range list.Items {
			if len(pod.Finalizers) > 0 {
				_, _ = pods.Patch(ctx, pod.Name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
			}
		}
	}
	t.Cleanup(func() { release(context.Background()) })
	for _, pod := range before {
		if _, err := pods.Patch(ctx, pod.Name, types.MergePatchType, []byte(`{"metadata":{"finalizers":["example.com/hold"]}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cluster.Client().AppsV1().Deployments(ns).Patch(ctx, "predictor", types.MergePatchType,
		[]byte(`{"spec":{"template":{"metadata":{"annotations":{"example.com/revision":"2"}}}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Past the grace (30 s) plus the controller's resync slack, the new pod
	// still waits on-prem and nothing of the new ReplicaSet spilled.
	hold := time.Now().Add(45 * time.Second)
	var waiting string
	framework.Eventually(t, time.Minute, time.Second, "the new pod waiting on-prem past the grace", func(ctx context.Context) (bool, string) {
		_, all, err := livePods(ctx, ns, "app="+app)
		if err != nil {
			return false, err.Error()
		}
		newPods := 0
		for _, pod := range all {
			if pod.Labels["pod-template-hash"] == oldHash {
				continue
			}
			newPods++
			if pod.Labels[labelUnit] != "onprem" {
				t.Fatalf("a new pod was placed on unit %q: %s", pod.Labels[labelUnit], describe(all))
			}
			if waiting == "" {
				waiting = pod.Name
			} else if pod.Name != waiting {
				t.Fatalf("the waiting pod %s was replaced by %s: %s", waiting, pod.Name, describe(all))
			}
		}
		return time.Now().After(hold) && newPods == 1, describe(all)
	})
	// Let the old pods go: the rollout ends with both new pods on-prem.
	framework.Eventually(t, karpenterBound, time.Second, "the rollout done on-prem", func(ctx context.Context) (bool, string) {
		release(ctx)
		live, all, err := livePods(ctx, ns, "app="+app)
		if err != nil {
			return false, err.Error()
		}
		on, el, other := split(live, p)
		done := len(on) == 2 && len(el) == 0 && len(other) == 0 && len(all) == 2
		for _, pod := range all {
			done = done && pod.Labels["pod-template-hash"] != oldHash
		}
		return done, describe(all)
	})
}

// TestUnmatchableNodeSelectorUnitIsSkipped: ACK's scenario 1 masks its
// node-pool IDs as "np…****". Applied as written, the policy is accepted
// (as ACK accepts it), the masked unit is skipped rather than pinned into
// a node affinity the API server would refuse, the pod lands on the next
// unit, and the policy's UnitsMatchNodes condition names the value.
func TestUnmatchableNodeSelectorUnitIsSkipped(t *testing.T) {
	startSpillway(t)
	ns := framework.Namespace(t, cluster)
	p := newPools(t, "masked", poolOptions{})
	const app = "masked-predictor"
	const masked = "np7ec79f2235954e879de07b780058****"
	applyPolicy(t, policyManifest(ns, app, "",
		"  - name: masked\n    resource: ecs\n    nodeSelector: {alibabacloud.com/nodepool-id: \""+masked+"\"}\n"+p.onPremUnit("")+p.elasticUnit()))
	createDeployment(t, predictor(ns, app, 1))
	on, _ := waitSpread(t, ns, "app="+app, p, 1, 0)
	if got := on[0].Labels[labelUnit]; got != "onprem" {
		t.Fatalf("the pod was placed on unit %q, want onprem", got)
	}
	framework.Eventually(t, 30*time.Second, 250*time.Millisecond, "UnitsMatchNodes False naming the masked value", func(ctx context.Context) (bool, string) {
		rp, err := getPolicy(ctx, t, ns, "predictor")
		if err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(rp.Status.Conditions, v1alpha1.ConditionUnitsMatchNodes)
		if c == nil {
			return false, "no condition yet"
		}
		return c.Status == metav1.ConditionFalse && c.Reason == "UnmatchableNodeSelector" && strings.Contains(c.Message, masked), c.Message
	})
}
