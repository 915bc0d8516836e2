package placement

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-dev/spillway/test/framework"
)

// The ReplicaSet controller ranks Ready pods by how long they have been
// Ready in power-of-two buckets (LogarithmicScaleDown), newest first. The
// on-prem pod is the newest for certain when the elastic pods have been
// Ready at least readyRatio times as long; elasticLead is how long they are
// Ready before the on-prem pod is restarted, so that ratio holds for the
// first seconds after its replacement is Ready.
const (
	readyRatio  = 4
	elasticLead = 20 * time.Second
)

// scaleInWithOnPremNewest takes a Deployment named predictor with 3 pods (1
// on-prem, 2 on Karpenter nodes), makes the on-prem pod the most recently
// Ready one (its pod is deleted once the elastic pods have been Ready for a
// while, and its replacement comes up on-prem), then scales 3 → 1. It returns
// the on-prem pod scale-in started with and the surviving pod.
//
// withPolicy says whether a ResourcePolicy places the pods: then the costs
// must be 1000000 on-prem and 0 elastic before scaling in; without one no
// pod may carry a cost.
func scaleInWithOnPremNewest(t *testing.T, ns, selector string, p *pools, withPolicy bool) (onPrem, survivor placedPod) {
	t.Helper()
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		framework.Eventually(t, 2*time.Minute, time.Second, fmt.Sprintf("the elastic pods Ready for %s", elasticLead), func(ctx context.Context) (bool, string) {
			live, _, err := livePods(ctx, ns, selector)
			if err != nil {
				return false, err.Error()
			}
			on, el, other := split(live, p)
			if len(on) != 1 || len(el) != 2 || len(other) != 0 {
				return false, describe(live)
			}
			youngest := min(time.Since(el[0].readyAt), time.Since(el[1].readyAt))
			return youngest >= elasticLead, fmt.Sprintf("youngest elastic pod Ready for %s", youngest)
		})
		live, _, err := livePods(ctx, ns, selector)
		if err != nil {
			t.Fatal(err)
		}
		old, _, _ := split(live, p)
		if len(old) != 1 {
			t.Fatalf("want 1 pod on-prem before restarting it, have: %s", describe(live))
		}
		uid := old[0].UID
		if err := cluster.Client().CoreV1().Pods(ns).Delete(ctx, old[0].Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid},
		}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("deleting the on-prem pod %s: %v", old[0].Name, err)
		}

		var el []placedPod
		framework.Eventually(t, 2*time.Minute, time.Second, "a replacement pod Ready on-prem, every pod ranked", func(ctx context.Context) (bool, string) {
			live, _, err := livePods(ctx, ns, selector)
			if err != nil {
				return false, err.Error()
			}
			var on, other []placedPod
			on, el, other = split(live, p)
			if len(on) != 1 || on[0].UID == uid || len(el) != 2 || len(other) != 0 {
				return false, describe(live)
			}
			onPrem = on[0]
			if withPolicy {
				return costs(on)[0] == "1000000" && allEqual(costs(el), "0"), describe(live)
			}
			return allEqual(costs(live), "-"), describe(live)
		})
		// Ready times have whole seconds: round the on-prem age up.
		onAge := time.Since(onPrem.readyAt) + time.Second
		elAge := min(time.Since(el[0].readyAt), time.Since(el[1].readyAt))
		if elAge >= readyRatio*onAge {
			t.Logf("scaling in: on-prem pod Ready for %s, elastic pods for at least %s", onAge.Round(time.Second), elAge.Round(time.Second))
			break
		}
		if attempt == 3 {
			t.Fatalf("could not make the on-prem pod clearly the newest: Ready for %s, elastic for %s (want ×%d)", onAge, elAge, readyRatio)
		}
		t.Logf("on-prem pod Ready for %s, elastic only %s: restarting it again", onAge, elAge)
	}

	scale(t, ns, "predictor", 1)
	framework.Eventually(t, 2*time.Minute, time.Second, "one pod left after scaling 3 → 1", func(ctx context.Context) (bool, string) {
		live, _, err := livePods(ctx, ns, selector)
		if err != nil {
			return false, err.Error()
		}
		if len(live) != 1 {
			return false, describe(live)
		}
		survivor = live[0]
		return true, ""
	})
	return onPrem, survivor
}

// requirePoolAffinity pins a pod template to the union of the test's pools,
// so that without a policy the scheduler and Karpenter use only them.
func requirePoolAffinity(spec *corev1.PodSpec, p *pools) {
	spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{
				Key: "spillway.dev/pool", Operator: corev1.NodeSelectorOpIn, Values: []string{p.onPrem, p.elastic},
			}},
		}}},
	}}
}
