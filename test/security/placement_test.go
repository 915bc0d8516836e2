package security

// Attacks on placement (issue 12, item 3): a tenant, mallory, tries to keep
// the victim's pods off the on-prem node the victim's ResourcePolicy fills
// first, by making spillway believe the node's room is taken: forged
// admission reviews posted straight to the webhook port, a pending pod
// carrying a forged reservation of the node (in mallory's namespace, and
// where the webhook does not see it), and a flood of server-side dry-run
// creations. Each runs while the victim scales up; the
// victim's new pod must still be placed on the on-prem unit and run on the
// on-prem node, and the policy's unit counts must show only the victim's
// pod.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/test/framework"
)

// The placement contract, written out rather than imported from the code
// under test.
const (
	plLabelPolicy    = "spillway.dev/policy"
	plLabelUnit      = "spillway.dev/unit"
	plAnnotationNode = "spillway.dev/reserved-node"
	plAnnotationID   = "spillway.dev/placement-id"
	plAnnotationSig  = "spillway.dev/placement-signature"
	plWebhookPath    = "/spillway/v1/pods/placement"

	plVictimNS   = "victim-placement"
	plMalloryNS  = "mallory-placement"
	plVictimApp  = "victim-predictor"
	plMalloryApp = "mallory-predictor"
	plPolicy     = "predictor"
	// plBound is generous room for a pod to be admitted, scheduled and
	// started by kwok on a loaded 2-core machine.
	plBound = 2 * time.Minute
)

var plPolicyGVR = schema.GroupVersionResource{Group: "spillway.dev", Version: "v1alpha1", Resource: "resourcepolicies"}

// plTwoUnitPolicy places app on the seed's on-prem pool first, then on the
// elastic pool.
func plTwoUnitPolicy(ns, app string) string {
	return fmt.Sprintf(`apiVersion: spillway.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  selector: {app: %[3]s}
  units:
  - name: onprem
    resource: ecs
    nodeSelector: {%[4]s: %[5]s}
  - name: elastic
    resource: elastic
    nodeSelector: {%[4]s: %[6]s}
`, plPolicy, ns, app, localcluster.PoolLabel, demo.OnPremPool, demo.ElasticPool)
}

func TestTenantCannotBendPlacement(t *testing.T) {
	env := spillway(t)
	ctx := context.Background()
	cs := cluster.Client()
	for _, ns := range []string{plVictimNS, plMalloryNS} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
		t.Cleanup(func() { plDeleteNamespace(t, ns) })
	}
	nodes, err := framework.NodesOfPool(ctx, cluster, demo.OnPremPool)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("on-prem nodes %v (%v), want the seed's one", nodes, err)
	}
	onPrem := nodes[0].Name
	plWaitNodeFree(t, onPrem)

	// The victim fills on-prem first; mallory's own policy uses the same
	// on-prem pool (which is allowed: room is shared, first come first
	// served, by real pods).
	if err := cluster.Apply(ctx, []byte(plTwoUnitPolicy(plVictimNS, plVictimApp))); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Apply(ctx, []byte(plTwoUnitPolicy(plMalloryNS, plMalloryApp))); err != nil {
		t.Fatal(err)
	}
	deploy := framework.GPUDeployment(plVictimNS, "predictor", plVictimApp, 0, "4", "12Gi")
	if _, err := cs.AppsV1().Deployments(plVictimNS).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	victimPod := func() *corev1.Pod {
		p := deploy.Spec.Template.DeepCopy()
		return &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{GenerateName: "predictor-", Namespace: plVictimNS, Labels: p.Labels},
			Spec:       p.Spec,
		}
	}

	attacks := []struct {
		name string
		// start begins the attack and returns once it is under way; check,
		// called after the victim's pod was placed, asserts what the
		// attack itself got.
		start func(t *testing.T) (stop func(), check func(t *testing.T))
	}{
		{"forged admission reviews", func(t *testing.T) (func(), func(*testing.T)) {
			return plForgeReviews(t, env.WebhookPort, victimPod)
		}},
		{"forged reservation annotation", func(t *testing.T) (func(), func(*testing.T)) {
			return plSquat(t, onPrem, plMalloryNS, false)
		}},
		// The same pod where the webhook does not see it (a namespace the
		// webhook configuration excludes; likewise any pod created while
		// the webhook was down, which failurePolicy: Ignore lets through):
		// its forged keys stay, and only the accounting's signature check
		// keeps it from taking the node.
		{"forged reservation the webhook never saw", func(t *testing.T) (func(), func(*testing.T)) {
			return plSquat(t, onPrem, "kube-system", true)
		}},
		{"dry-run flood", func(t *testing.T) (func(), func(*testing.T)) {
			return plDryRunFlood(t, victimPod)
		}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			plWaitNodeFree(t, onPrem)
			stop, check := a.start(t)
			stopped := false
			defer func() {
				if !stopped {
					stop()
				}
				plScale(t, 0)
			}()
			plScale(t, 1)
			pod := plWaitPlaced(t)
			if got := pod.Labels[plLabelUnit]; got != "onprem" {
				t.Fatalf("the victim's pod %s was placed on unit %q, want onprem (the on-prem node %s is free)", pod.Name, got, onPrem)
			}
			framework.Eventually(t, plBound, time.Second, "the victim's pod running on the on-prem node", func(ctx context.Context) (bool, string) {
				p, err := cs.CoreV1().Pods(plVictimNS).Get(ctx, pod.Name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				if p.Spec.NodeName != "" && p.Spec.NodeName != onPrem {
					t.Fatalf("the victim's pod runs on %s, want %s", p.Spec.NodeName, onPrem)
				}
				return p.Spec.NodeName == onPrem && p.Status.Phase == corev1.PodRunning, fmt.Sprintf("node %q phase %s", p.Spec.NodeName, p.Status.Phase)
			})
			plWaitCounts(t, 1, 0)
			stop()
			stopped = true
			check(t)
		})
	}
}

// plForgeReviews posts AdmissionReviews for pods of the victim's
// Deployment straight to the webhook port, from a client without the API
// server's certificate, in a loop. Each review the webhook answered would
// hold the on-prem node's room.
func plForgeReviews(t *testing.T, port int, victimPod func() *corev1.Pod) (func(), func(*testing.T)) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		// The attacker does not care who serves the port.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, plWebhookPath)
	var attempts, answered atomic.Int64
	var firstErr atomic.Value
	post := func(ctx context.Context) {
		raw, err := json.Marshal(victimPod())
		if err != nil {
			panic(err)
		}
		review := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{
				UID:       uuid.NewUUID(),
				Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
				Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
				Namespace: plVictimNS, Operation: admissionv1.Create,
				Object: runtime.RawExtension{Raw: raw},
			},
		}
		body, err := json.Marshal(review)
		if err != nil {
			panic(err)
		}
		attempts.Add(1)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			panic(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			firstErr.CompareAndSwap(nil, err.Error())
			return
		}
		defer resp.Body.Close()
		var out admissionv1.AdmissionReview
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			firstErr.CompareAndSwap(nil, resp.Status+": "+string(bytes.TrimSpace(b)))
			return
		}
		if json.Unmarshal(b, &out) == nil && out.Response != nil && len(out.Response.Patch) > 0 {
			answered.Add(1)
		}
	}
	stop := plLoop(t, 50*time.Millisecond, post, func() int64 { return attempts.Load() })
	return stop, func(t *testing.T) {
		t.Logf("forged reviews: %d posted, %d answered with a placement; first error: %v", attempts.Load(), answered.Load(), firstErr.Load())
		if n := answered.Load(); n > 0 {
			t.Errorf("the webhook placed %d forged admission reviews from a client without the API server's certificate", n)
		}
	}
}

// plSquat creates a pod in ns that claims the on-prem node: forged
// placement labels naming the victim's policy and unit, a forged
// reservation of the node and a made-up signature, a GPU request, and a
// node selector nothing satisfies, so it stays pending with its claim.
// unseen says the webhook does not see ns: the keys must then survive
// creation (else the attack is not what it claims to be); otherwise the
// webhook must strip them, and the attacker writes them again with an
// update.
func plSquat(t *testing.T, onPrem, ns string, unseen bool) (func(), func(*testing.T)) {
	ctx := context.Background()
	cs := cluster.Client()
	forged := map[string]string{plAnnotationNode: onPrem, plAnnotationID: "forged-" + string(uuid.NewUUID()), plAnnotationSig: "c3BpbGx3YXk"}
	pod := testobjects.Pod(testobjects.PodOptions{
		Name: "squatter-" + string(uuid.NewUUID())[:8], Namespace: ns,
		Labels: map[string]string{"app": "mallory-squatter", plLabelPolicy: plPolicy, plLabelUnit: "onprem"},
	}, func(p *corev1.Pod) {
		p.Annotations = forged
		p.Spec.SchedulerName = "mallory-scheduler"
		p.Spec.NodeSelector = map[string]string{"mallory.example/never": "true"}
		p.Spec.TerminationGracePeriodSeconds = ptr.To(int64(0))
		p.Spec.Containers = []corev1.Container{{
			Name: "squat", Image: "busybox",
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{localcluster.GPUResource: resource.MustParse("1")},
				Limits:   corev1.ResourceList{localcluster.GPUResource: resource.MustParse("1")},
			},
		}}
	})
	created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the squatting pod: %v", err)
	}
	kept := created.Annotations[plAnnotationNode] == onPrem && created.Annotations[plAnnotationSig] != ""
	t.Logf("squatting pod %s/%s created; forged reservation kept on creation: %v", ns, pod.Name, kept)
	if unseen && !kept {
		t.Fatalf("the forged keys of a pod the webhook does not see were removed: %v", created.Annotations)
	}
	if !kept {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"labels": map[string]string{plLabelPolicy: plPolicy, plLabelUnit: "onprem"}, "annotations": forged,
		}})
		_, err := cs.CoreV1().Pods(ns).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		t.Logf("writing the forged keys again with an update: %v", errOrOK(err))
	}
	stop := func() {
		err := cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting the squatting pod: %v", err)
		}
	}
	return stop, func(t *testing.T) {
		if !unseen && kept {
			t.Errorf("creation kept the forged keys %v on a pod the webhook saw", created.Annotations)
		}
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil && p.Spec.NodeName != "" {
			t.Errorf("the squatting pod was bound to %s; the attack needs it pending", p.Spec.NodeName)
		}
	}
}

// plDryRunFlood creates pods with server-side dry run in a loop: copies of
// the victim's pod in the victim's namespace (as anyone allowed to create
// pods there, a CI system's checks say) and pods of mallory's own policy,
// which shares the on-prem pool, in mallory's.
func plDryRunFlood(t *testing.T, victimPod func() *corev1.Pod) (func(), func(*testing.T)) {
	cs := cluster.Client()
	var attempts, admitted atomic.Int64
	var firstErr atomic.Value
	create := func(ctx context.Context) {
		mallory := victimPod()
		mallory.Namespace, mallory.Labels = plMalloryNS, map[string]string{"app": plMalloryApp}
		for _, p := range []*corev1.Pod{victimPod(), mallory} {
			attempts.Add(1)
			out, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				if ctx.Err() == nil {
					firstErr.CompareAndSwap(nil, err.Error())
				}
				continue
			}
			if out.Labels[plLabelUnit] == "onprem" {
				admitted.Add(1)
			}
		}
	}
	stop := plLoop(t, 100*time.Millisecond, create, func() int64 { return attempts.Load() })
	return stop, func(t *testing.T) {
		t.Logf("dry runs: %d, %d of them answered with the on-prem unit; first error: %v", attempts.Load(), admitted.Load(), firstErr.Load())
		if admitted.Load() == 0 {
			t.Error("no dry run was placed on-prem: the flood did not exercise the webhook")
		}
	}
}

// plLoop runs attack every pace until stop is called, and returns once
// the attack ran five times, so that it is under way before the victim
// scales.
func plLoop(t *testing.T, pace time.Duration, attack func(context.Context), count func() int64) func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			attack(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(pace):
			}
		}
	})
	framework.Eventually(t, time.Minute, 100*time.Millisecond, "the attack under way", func(context.Context) (bool, string) {
		return count() >= 5, fmt.Sprintf("%d attempts", count())
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
}

func errOrOK(err error) string {
	if err == nil {
		return "allowed"
	}
	return err.Error()
}

func plScale(t *testing.T, replicas int) {
	t.Helper()
	ctx := context.Background()
	cs := cluster.Client()
	_, err := cs.AppsV1().Deployments(plVictimNS).Patch(ctx, "predictor", types.MergePatchType,
		fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("scaling the victim to %d: %v", replicas, err)
	}
	if replicas > 0 {
		return
	}
	framework.Eventually(t, plBound, time.Second, "the victim's pods gone", func(ctx context.Context) (bool, string) {
		list, err := cs.CoreV1().Pods(plVictimNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + plVictimApp})
		if err != nil {
			return false, err.Error()
		}
		return len(list.Items) == 0, fmt.Sprintf("%d pods left", len(list.Items))
	})
}

// plWaitPlaced waits for the victim's one pod and returns it once the
// webhook's decision shows: it carries a unit label, or (unplaced) it was
// bound without one.
func plWaitPlaced(t *testing.T) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	framework.Eventually(t, plBound, 500*time.Millisecond, "the victim's new pod", func(ctx context.Context) (bool, string) {
		list, err := cluster.Client().CoreV1().Pods(plVictimNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + plVictimApp})
		if err != nil {
			return false, err.Error()
		}
		if len(list.Items) != 1 {
			return false, fmt.Sprintf("%d pods", len(list.Items))
		}
		pod = &list.Items[0]
		_, labelled := pod.Labels[plLabelUnit]
		return labelled || pod.Spec.NodeName != "", "not placed yet"
	})
	return pod
}

// plWaitCounts waits until the victim's policy status counts exactly the
// victim's pods per unit.
func plWaitCounts(t *testing.T, onPrem, elastic int32) {
	t.Helper()
	dc, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, plBound, time.Second, fmt.Sprintf("the victim's policy counting %d on-prem and %d elastic", onPrem, elastic), func(ctx context.Context) (bool, string) {
		u, err := dc.Resource(plPolicyGVR).Namespace(plVictimNS).Get(ctx, plPolicy, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		rp := &v1alpha1.ResourcePolicy{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, rp); err != nil {
			return false, err.Error()
		}
		st := rp.Status
		ok := len(st.Units) == 2 && st.Units[0].Placed == onPrem && st.Units[1].Placed == elastic && st.Outside == 0
		return ok, fmt.Sprintf("status %+v", st)
	})
}

// plWaitNodeFree waits until no live pod occupies the on-prem node's GPU
// (other tests of the package run pods there too).
func plWaitNodeFree(t *testing.T, node string) {
	t.Helper()
	framework.Eventually(t, 3*time.Minute, time.Second, "the on-prem node free", func(ctx context.Context) (bool, string) {
		list, err := cluster.Client().CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return false, err.Error()
		}
		var busy []string
		for _, p := range list.Items {
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				busy = append(busy, p.Namespace+"/"+p.Name)
			}
		}
		return len(busy) == 0, fmt.Sprintf("pods on %s: %v", node, busy)
	})
}

// plDeleteNamespace deletes a namespace and waits until its pods are gone,
// so the on-prem node is free for the next test.
func plDeleteNamespace(t *testing.T, ns string) {
	ctx := context.Background()
	cs := cluster.Client()
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("cleanup: deleting namespace %s: %v", ns, err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := localcluster.Poll(wctx, time.Second, "the pods of namespace "+ns+" to go", func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 0, err
	}); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}
