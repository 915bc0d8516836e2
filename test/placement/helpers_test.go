package placement

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/test/framework"
)

// The contract under test, written out rather than imported from the code
// under test so that a rename there fails here.
const (
	labelUnit        = "spillway.dev/unit"
	annotationCost   = "controller.kubernetes.io/pod-deletion-cost"
	labelKarpenterNP = "karpenter.sh/nodepool"
	// grace is the default re-placement grace of LackResourceOrExceedMax.
	grace = 30 * time.Second
	// karpenterBound is generous room for Karpenter to add GPU nodes for
	// pending pods (~10-25 s each batch) on a loaded 2-core machine.
	karpenterBound = 3 * time.Minute
	// fixtures holds the API fixtures shared with the unit tests.
	fixtures = repoRoot + "/pkg/apis/spillway/v1alpha1/testdata"
)

var (
	nodePoolGVR = schema.GroupVersionResource{Group: "karpenter.sh", Version: "v1", Resource: "nodepools"}
	policyGVR   = schema.GroupVersionResource{Group: "spillway.dev", Version: "v1alpha1", Resource: "resourcepolicies"}
)

func dynamicClient(t *testing.T) dynamic.Interface {
	t.Helper()
	dc, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return dc
}

// pools are one test's node pools: kwok nodes standing in for on-prem GPU
// servers and a Karpenter NodePool.
type pools struct {
	onPrem      string // spillway.dev/pool of the static nodes
	onPremNodes []string
	elastic     string // the NodePool's name and its nodes' spillway.dev/pool
}

type poolOptions struct {
	onPremNodes int
	shape       localcluster.NodeShape
	// gpuLimit caps the elastic pool (default 8).
	gpuLimit int
	// onPremLabels are patched onto every static node, elasticLabels into
	// the NodePool's template (so Karpenter's nodes carry them).
	onPremLabels, elasticLabels map[string]string
}

// newPools creates <prefix>-onprem and <prefix>-elastic. Its cleanup, which
// runs after the test's Deployments are gone (register them later), waits for
// Karpenter to remove the pool's nodes, then deletes the NodePool and the
// static nodes.
func newPools(t *testing.T, prefix string, o poolOptions) *pools {
	t.Helper()
	ctx := context.Background()
	p := &pools{onPrem: prefix + "-onprem", elastic: prefix + "-elastic"}
	if o.onPremNodes == 0 {
		o.onPremNodes = 1
	}
	if o.shape.GPUs == 0 {
		o.shape = localcluster.DefaultGPUNode
	}
	t.Cleanup(func() { p.remove(t) })
	names, err := cluster.AddStaticGPUNodes(ctx, p.onPrem, o.onPremNodes, o.shape)
	p.onPremNodes = names
	if err != nil {
		t.Fatal(err)
	}
	waitUntainted(t, names)
	if len(o.onPremLabels) > 0 {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": o.onPremLabels}})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if _, err := cluster.Client().CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Fatalf("labelling node %s: %v", n, err)
			}
		}
	}
	if err := cluster.AddElasticPool(ctx, localcluster.ElasticPool{Name: p.elastic, GPULimit: o.gpuLimit}); err != nil {
		t.Fatal(err)
	}
	// Karpenter's default budget removes 10% of a pool's nodes at a time;
	// letting it remove every empty node at once keeps cleanup short.
	spec := map[string]any{"disruption": map[string]any{"budgets": []any{map[string]any{"nodes": "100%"}}}}
	if len(o.elasticLabels) > 0 {
		spec["template"] = map[string]any{"metadata": map[string]any{"labels": o.elasticLabels}}
	}
	patch, err := json.Marshal(map[string]any{"spec": spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dynamicClient(t).Resource(nodePoolGVR).Patch(ctx, p.elastic, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching NodePool %s: %v", p.elastic, err)
	}
	return p
}

// waitUntainted waits until the node lifecycle controller has lifted the
// not-ready taint that new nodes are created with: kwok marks a node Ready at
// once, but until the taint goes (seconds later) neither the scheduler nor
// the webhook's room check may use the node.
func waitUntainted(t *testing.T, names []string) {
	t.Helper()
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "on-prem nodes without taints", func(ctx context.Context) (bool, string) {
		for _, name := range names {
			n, err := cluster.Client().CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if len(n.Spec.Taints) > 0 {
				return false, fmt.Sprintf("node %s has taints %v", name, n.Spec.Taints)
			}
		}
		return true, ""
	})
}

func (p *pools) remove(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	defer func() {
		t.Logf("cleanup: pools %s and %s removed in %s", p.onPrem, p.elastic, time.Since(start).Round(time.Second))
	}()
	err := framework.Poll(ctx, karpenterBound, time.Second, func(ctx context.Context) (bool, string) {
		nodes, err := framework.NodesOfPool(ctx, cluster, p.elastic)
		if err != nil {
			return false, err.Error()
		}
		return len(nodes) == 0, fmt.Sprintf("%d nodes left", len(nodes))
	})
	if err != nil {
		t.Errorf("cleanup: Karpenter did not remove the nodes of %s: %v", p.elastic, err)
	}
	dc, derr := dynamic.NewForConfig(cluster.RESTConfig())
	if derr == nil {
		derr = dc.Resource(nodePoolGVR).Delete(ctx, p.elastic, metav1.DeleteOptions{})
	}
	if derr != nil && !apierrors.IsNotFound(derr) {
		t.Errorf("cleanup: deleting NodePool %s: %v", p.elastic, derr)
	}
	for _, n := range p.onPremNodes {
		if err := cluster.Client().CoreV1().Nodes().Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: deleting node %s: %v", n, err)
		}
	}
}

// createDeployment creates the Deployment; its cleanup deletes it and waits
// until its pods are gone, so the pools' cleanup finds the nodes empty.
func createDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	ctx := context.Background()
	if _, err := cluster.Client().AppsV1().Deployments(d.Namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Deployment %s: %v", d.Name, err)
	}
	sel := metav1.FormatLabelSelector(d.Spec.Selector)
	t.Cleanup(func() {
		err := cluster.Client().AppsV1().Deployments(d.Namespace).Delete(ctx, d.Name,
			metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: deleting Deployment %s: %v", d.Name, err)
		}
		err = framework.Poll(ctx, 2*time.Minute, time.Second, func(ctx context.Context) (bool, string) {
			list, err := cluster.Client().CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				return false, err.Error()
			}
			return len(list.Items) == 0, fmt.Sprintf("%d pods left", len(list.Items))
		})
		if err != nil {
			t.Errorf("cleanup: pods of Deployment %s: %v", d.Name, err)
		}
	})
}

// predictor is a Deployment of 1-GPU pods (4 CPU, 12 GiB: one per
// DefaultGPUNode, two per 2-GPU node) labelled app=<app>.
func predictor(ns, app string, replicas int32) *appsv1.Deployment {
	return framework.GPUDeployment(ns, "predictor", app, replicas, "4", "12Gi")
}

func scale(t *testing.T, ns, name string, replicas int) {
	t.Helper()
	_, err := cluster.Client().AppsV1().Deployments(ns).Patch(context.Background(), name, types.MergePatchType,
		fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("scaling %s to %d: %v", name, replicas, err)
	}
}

// applyPolicy server-side-applies a ResourcePolicy manifest.
func applyPolicy(t *testing.T, manifest string) {
	t.Helper()
	if err := cluster.Apply(context.Background(), []byte(manifest)); err != nil {
		t.Fatal(err)
	}
}

// twoUnitPolicy places app=<app> on pool onPrem (with an optional max),
// then on pool elastic.
func twoUnitPolicy(ns, app string, p *pools, onPremMax *int32) string {
	extra := ""
	if onPremMax != nil {
		extra = fmt.Sprintf("    max: %d\n", *onPremMax)
	}
	return policyManifest(ns, app, "", p.onPremUnit(extra)+p.elasticUnit())
}

// policyManifest is the ResourcePolicy "predictor" of namespace ns selecting
// app=<app>: spec holds further spec fields (YAML lines at two spaces, ""
// for none), units the unit list items (at two spaces).
func policyManifest(ns, app, spec, units string) string {
	return fmt.Sprintf(`apiVersion: spillway.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: predictor
  namespace: %s
spec:
  selector: {app: %s}
%s  units:
%s`, ns, app, spec, units)
}

// onPremUnit is the unit "onprem" (resource ecs) over the static pool, with
// extra fields (YAML lines at four spaces); elasticUnit the unit "elastic"
// over the NodePool.
func (p *pools) onPremUnit(extra string) string {
	return fmt.Sprintf("  - name: onprem\n    resource: ecs\n%s    nodeSelector: {%s: %s}\n", extra, localcluster.PoolLabel, p.onPrem)
}

func (p *pools) elasticUnit() string {
	return fmt.Sprintf("  - name: elastic\n    resource: elastic\n    nodeSelector: {%s: %s}\n", localcluster.PoolLabel, p.elastic)
}

func getPolicy(ctx context.Context, t *testing.T, ns, name string) (*v1alpha1.ResourcePolicy, error) {
	u, err := dynamicClient(t).Resource(policyGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	rp := &v1alpha1.ResourcePolicy{}
	return rp, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, rp)
}

// placedPod is a live pod of a test with where it runs.
type placedPod struct {
	corev1.Pod
	pool     string    // spillway.dev/pool of its node; "" when unbound
	nodePool string    // karpenter.sh/nodepool of its node: made by Karpenter
	readyAt  time.Time // zero unless Ready
}

func (p placedPod) running() bool {
	return p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" && !p.readyAt.IsZero()
}

func (p placedPod) unschedulable() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable
		}
	}
	return false
}

// livePods lists the pods matching selector that are not being deleted,
// oldest first, with their node's pool. all also returns terminating ones.
func livePods(ctx context.Context, ns, selector string) (live, all []placedPod, err error) {
	list, err := cluster.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, nil, err
	}
	nodes, err := cluster.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	byName := map[string]*corev1.Node{}
	for i := range nodes.Items {
		byName[nodes.Items[i].Name] = &nodes.Items[i]
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i].CreationTimestamp, list.Items[j].CreationTimestamp
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		return list.Items[i].Name < list.Items[j].Name
	})
	for _, p := range list.Items {
		pp := placedPod{Pod: p}
		if n := byName[p.Spec.NodeName]; n != nil {
			pp.pool = n.Labels[localcluster.PoolLabel]
			pp.nodePool = n.Labels[labelKarpenterNP]
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				pp.readyAt = c.LastTransitionTime.Time
			}
		}
		all = append(all, pp)
		if p.DeletionTimestamp == nil {
			live = append(live, pp)
		}
	}
	return live, all, nil
}

// describe renders pods for failure messages: name, unit, pool, phase, cost.
func describe(pods []placedPod) string {
	parts := make([]string, 0, len(pods))
	for _, p := range pods {
		state := string(p.Status.Phase)
		if p.unschedulable() {
			state = "Unschedulable"
		}
		if p.DeletionTimestamp != nil {
			state += "(terminating)"
		}
		cost, ok := p.Annotations[annotationCost]
		if !ok {
			cost = "-"
		}
		parts = append(parts, fmt.Sprintf("%s[unit=%s pool=%s %s cost=%s]", p.Name, p.Labels[labelUnit], p.pool, state, cost))
	}
	return strings.Join(parts, " ")
}

// split groups pods into those running on the on-prem pool, those running on
// Karpenter's nodes of the elastic pool, and the rest.
func split(pods []placedPod, p *pools) (onPrem, elastic, other []placedPod) {
	for _, pod := range pods {
		switch {
		case !pod.running():
			other = append(other, pod)
		case pod.pool == p.onPrem && pod.nodePool == "":
			onPrem = append(onPrem, pod)
		case pod.pool == p.elastic && pod.nodePool == p.elastic:
			elastic = append(elastic, pod)
		default:
			other = append(other, pod)
		}
	}
	return onPrem, elastic, other
}

// waitSpread waits until exactly wantOnPrem pods run on the on-prem pool and
// wantElastic on Karpenter nodes of the elastic pool, with no other live pod.
func waitSpread(t *testing.T, ns, selector string, p *pools, wantOnPrem, wantElastic int) (onPrem, elastic []placedPod) {
	t.Helper()
	framework.Eventually(t, karpenterBound, time.Second,
		fmt.Sprintf("%d pods running on-prem and %d on Karpenter nodes", wantOnPrem, wantElastic),
		func(ctx context.Context) (bool, string) {
			live, _, err := livePods(ctx, ns, selector)
			if err != nil {
				return false, err.Error()
			}
			on, el, other := split(live, p)
			onPrem, elastic = on, el
			return len(on) == wantOnPrem && len(el) == wantElastic && len(other) == 0, describe(live)
		})
	return onPrem, elastic
}

// costs returns the deletion-cost annotation of each pod ("-" when absent).
func costs(pods []placedPod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		if c, ok := p.Annotations[annotationCost]; ok {
			out[i] = c
		} else {
			out[i] = "-"
		}
	}
	return out
}

func allEqual(vals []string, want string) bool {
	return !slices.ContainsFunc(vals, func(v string) bool { return v != want })
}
