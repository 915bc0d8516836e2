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
