package placement

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spillway-dev/spillway/internal/localcluster"
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
	applyPolicy(t, fmt.Sprintf(`apiVersion: spillway.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: predictor
  namespace: %[1]s
spec:
  selector: {app: %[2]s}
  matchLabelKeys: [pod-template-hash]
  units:
  - name: onprem
    resource: ecs
    max: 2
    podLabels: {tier: onprem}
    podAnnotations: {example.com/cost-center: gpu-onprem}
    nodeSelector: {%[3]s: %[4]s}
  - name: elastic
    resource: elastic
    nodeSelector: {%[3]s: %[5]s}
`, ns, app, localcluster.PoolLabel, p.onPrem, p.elastic))
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
	applyPolicy(t, fmt.Sprintf(`apiVersion: spillway.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: predictor
  namespace: %[1]s
spec:
  selector: {app: %[2]s}
  units:
  - name: onprem
    resource: ecs
    nodeSelector: {%[3]s: %[4]s}
  - name: eci
    resource: eci
`, ns, app, localcluster.PoolLabel, p.onPrem))
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
