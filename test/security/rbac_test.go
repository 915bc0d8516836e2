package security

// Attacks with spillway-controller's own token (issue 12, item 2) and by a
// tenant on spillway's pod labels (item 3, on UPDATE). The controller's
// ClusterRole must patch and delete pods and write HPAs in every namespace;
// RBAC cannot say which fields or which objects, so the chart's
// ValidatingAdmissionPolicies do. Each test first shows the write RBAC
// allows (or the legitimate one that must keep working), then the attack
// the policy refuses.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/testobjects"
	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/test/framework"
)

// The chart's policies (deploy/helm/spillway/templates/admissionpolicy.yaml)
// as the demo installs them (release "spillway"), and the annotation the
// controller may write besides spillway's own keys.
const (
	rbacControllerPolicy = "spillway-controller"
	rbacPodKeysPolicy    = "spillway-controller-pod-keys"
	rbacDeletionCost     = "controller.kubernetes.io/pod-deletion-cost"
)

// rbacControllerClient authenticates with the controller's ServiceAccount
// token, from the kubeconfig the demo wrote for the controller process.
func rbacControllerClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(cluster.Dir(), "spillway-controller.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// rbacNamespace creates a namespace for one test and deletes it afterwards.
func rbacNamespace(t *testing.T, name string) string {
	t.Helper()
	_, err := cluster.Client().CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cluster.Client().CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// rbacPod creates (as cluster admin) a CPU-only pod. running: bound to the
// on-prem kwok node, and waited for until Running; otherwise it carries a
// scheduling gate and stays Pending on no node, as a pod re-placement
// deletes does.
func rbacPod(t *testing.T, ns, name string, running bool) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := testobjects.Pod(testobjects.PodOptions{Name: name, Namespace: ns, Labels: map[string]string{"app": name}}, func(p *corev1.Pod) {
		p.Spec.TerminationGracePeriodSeconds = ptr.To(int64(0))
		p.Spec.Containers = []corev1.Container{{Name: "predictor", Image: "vllm/vllm-openai:v0.9.0"}}
	})
	if running {
		pod.Spec.NodeName = demo.OnPremPool + "-0"
	} else {
		pod.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/hold"}}
	}
	created, err := cluster.Client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() {
		_ = cluster.Client().CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	})
	if running {
		rbacWaitPhase(t, ns, name, corev1.PodRunning)
	}
	return created
}

func rbacWaitPhase(t *testing.T, ns, name string, phase corev1.PodPhase) {
	t.Helper()
	framework.Eventually(t, 2*time.Minute, 250*time.Millisecond, fmt.Sprintf("pod %s/%s %s", ns, name, phase), func(ctx context.Context) (bool, string) {
		p, err := cluster.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == phase, "phase " + string(p.Status.Phase)
	})
}

// rbacDenied requires err to be the named policy's denial, with want in
// its message.
func rbacDenied(t *testing.T, what string, err error, policy, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: allowed; want it denied by ValidatingAdmissionPolicy %s (%q)", what, policy, want)
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Errorf("%s: %v; want a denial by ValidatingAdmissionPolicy %s", what, err, policy)
	case !strings.Contains(err.Error(), "'"+policy+"'") || !strings.Contains(err.Error(), want):
		t.Errorf("%s: %v; want a denial by ValidatingAdmissionPolicy %s containing %q", what, err, policy, want)
	default:
		t.Logf("%s: denied: %v", what, err)
	}
}

// rbacWaitEnforced waits until probe (a dry run) is refused by policy: the
// API server loads new policies and bindings asynchronously. Without the
// policy this never happens and the test fails here.
func rbacWaitEnforced(t *testing.T, policy string, probe func(ctx context.Context) error) {
	t.Helper()
	framework.Eventually(t, time.Minute, 250*time.Millisecond, "ValidatingAdmissionPolicy "+policy+" enforced", func(ctx context.Context) (bool, string) {
		err := probe(ctx)
		if err == nil {
			return false, "the probe was allowed"
		}
		return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "'"+policy+"'"), err.Error()
	})
}

// rbacTypeChecked waits until the API server has type-checked the policy
// against the pod and HPA schemas and requires no warnings: an expression
// that refers to a field wrongly would otherwise only fail at admission.
func rbacTypeChecked(t *testing.T, policy string) {
	t.Helper()
	framework.Eventually(t, time.Minute, 250*time.Millisecond, "ValidatingAdmissionPolicy "+policy+" type-checked", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, policy, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.ObservedGeneration == p.Generation && p.Status.TypeChecking != nil, fmt.Sprintf("status %+v", p.Status)
	})
	p, err := cluster.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(context.Background(), policy, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range p.Status.TypeChecking.ExpressionWarnings {
		t.Errorf("policy %s: %s: %s", policy, w.FieldRef, w.Warning)
	}
}

func rbacMergePatch(format string, args ...any) []byte { return fmt.Appendf(nil, format, args...) }

var rbacDryRun = metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}

// TestControllerTokenCannotChangeWhatAPodRuns: with spillway-controller's
// token, replacing a Running pod's image (the attack, also as a
// server-side dry run), changing its other labels or deleting it is refused,
// in a tenant's namespace and in kube-system, while what the controller
// does passes: the deletion cost and spillway.dev/ keys of a pod, and the
// deletion of a pod no node runs (re-placement).
func TestControllerTokenCannotChangeWhatAPodRuns(t *testing.T) {
	spillway(t)
	ctl := rbacControllerClient(t)
	victim := rbacNamespace(t, "victim-controller-pods")
	ctx := context.Background()

	rbacTypeChecked(t, rbacControllerPolicy)
	probe := rbacPod(t, victim, "probe", false)
	rbacWaitEnforced(t, rbacControllerPolicy, func(ctx context.Context) error {
		_, err := ctl.CoreV1().Pods(victim).Patch(ctx, probe.Name, types.MergePatchType, rbacMergePatch(`{"metadata":{"labels":{"app":"probe2"}}}`), rbacDryRun)
		return err
	})

	for _, ns := range []string{victim, metav1.NamespaceSystem} {
		t.Run(ns, func(t *testing.T) {
			pod := rbacPod(t, ns, "victim-predictor", true)
			pods := ctl.CoreV1().Pods(ns)

			image := rbacMergePatch(`{"spec":{"containers":[{"name":"predictor","image":"mallory/miner:latest"}]}}`)
			_, err := pods.Patch(ctx, pod.Name, types.StrategicMergePatchType, image, rbacDryRun)
			rbacDenied(t, "image patch (dry run)", err, rbacControllerPolicy, "may not change a pod's spec")
			_, err = pods.Patch(ctx, pod.Name, types.StrategicMergePatchType, image, metav1.PatchOptions{})
			rbacDenied(t, "image patch", err, rbacControllerPolicy, "may not change a pod's spec")
			_, err = pods.Patch(ctx, pod.Name, types.JSONPatchType,
				[]byte(`[{"op":"replace","path":"/spec/containers/0/image","value":"mallory/miner:latest"}]`), metav1.PatchOptions{})
			rbacDenied(t, "image JSON patch", err, rbacControllerPolicy, "may not change a pod's spec")
			_, err = pods.Patch(ctx, pod.Name, types.MergePatchType, rbacMergePatch(`{"metadata":{"labels":{"app":"someone-else"}}}`), metav1.PatchOptions{})
			rbacDenied(t, "label patch", err, rbacControllerPolicy, "may change only spillway.dev/ labels of a pod, not: app")
			_, err = pods.Patch(ctx, pod.Name, types.MergePatchType, rbacMergePatch(`{"metadata":{"annotations":{"sidecar.example.com/inject":"true"}}}`), metav1.PatchOptions{})
			rbacDenied(t, "annotation patch", err, rbacControllerPolicy, "not: sidecar.example.com/inject")
			_, err = pods.Patch(ctx, pod.Name, types.MergePatchType,
				rbacMergePatch(`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Node","name":"onprem-0","uid":"00000000-0000-0000-0000-000000000001"}]}}`), metav1.PatchOptions{})
			rbacDenied(t, "owner patch", err, rbacControllerPolicy, "may not change a pod's owner references")

			err = pods.Delete(ctx, pod.Name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
			rbacDenied(t, "deleting a Running pod (dry run)", err, rbacControllerPolicy, "may delete only pods no node runs")
			err = pods.Delete(ctx, pod.Name, metav1.DeleteOptions{})
			rbacDenied(t, "deleting a Running pod", err, rbacControllerPolicy, "is Running on node "+pod.Spec.NodeName)

			// What the controller does: the deletion cost, and spillway's keys.
			if _, err := pods.Patch(ctx, pod.Name, types.MergePatchType,
				rbacMergePatch(`{"metadata":{"annotations":{%q:"1000000"},"labels":{"spillway.dev/unit":"onprem"}}}`, rbacDeletionCost), metav1.PatchOptions{}); err != nil {
				t.Errorf("patching the deletion cost and spillway.dev/unit: %v", err)
			}
			got, err := cluster.Client().CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if img := got.Spec.Containers[0].Image; img != pod.Spec.Containers[0].Image {
				t.Errorf("the pod now runs %s", img)
			}
			if got.DeletionTimestamp != nil {
				t.Error("the Running pod is being deleted")
			}
			if got.Annotations[rbacDeletionCost] != "1000000" || got.Labels["spillway.dev/unit"] != "onprem" || got.Labels["app"] != pod.Labels["app"] {
				t.Errorf("labels %v annotations %v after the allowed patch", got.Labels, got.Annotations)
			}

			// Re-placement deletes pods that no node runs.
			pending := rbacPod(t, ns, "unplaced-predictor", false)
			if err := pods.Delete(ctx, pending.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pending.UID}}); err != nil {
				t.Errorf("deleting a pod no node runs: %v", err)
			}
		})
	}
}

// TestControllerTokenWritesOnlyInferenceScalerHPAs: the controller's token
// can create and patch only HPAs an InferenceScaler controls, and cannot
// take over anyone else's, while an InferenceScaler still gets its HPA.
func TestControllerTokenWritesOnlyInferenceScalerHPAs(t *testing.T) {
	spillway(t)
	ctl := rbacControllerClient(t)
	ns := rbacNamespace(t, "victim-controller-hpas")
	ctx := context.Background()
	hpas := ctl.AutoscalingV2().HorizontalPodAutoscalers(ns)

	hpa := func(name string, owners ...metav1.OwnerReference) *autoscalingv2.HorizontalPodAutoscaler {
		return testobjects.HPA(testobjects.HPAOptions{Name: name, Namespace: ns, Deployment: "predictor", MinReplicas: ptr.To(int32(1)), MaxReplicas: 3},
			func(h *autoscalingv2.HorizontalPodAutoscaler) { h.OwnerReferences = owners })
	}
	scalerRef := metav1.OwnerReference{
		APIVersion: v1alpha1.GroupVersion.String(), Kind: "InferenceScaler", Name: "chat",
		UID: "00000000-0000-0000-0000-000000000002", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}
	dryCreate := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	rbacWaitEnforced(t, rbacControllerPolicy, func(ctx context.Context) error {
		_, err := hpas.Create(ctx, hpa("probe"), dryCreate)
		return err
	})

	const want = "may write only HPAs an InferenceScaler controls"
	_, err := hpas.Create(ctx, hpa("free-replicas"), metav1.CreateOptions{})
	rbacDenied(t, "creating an HPA without owner", err, rbacControllerPolicy, want)
	_, err = hpas.Create(ctx, hpa("deployment-owned", metav1.OwnerReference{
		APIVersion: "apps/v1", Kind: "Deployment", Name: "predictor", UID: "00000000-0000-0000-0000-000000000003", Controller: ptr.To(true),
	}), metav1.CreateOptions{})
	rbacDenied(t, "creating an HPA owned by a Deployment", err, rbacControllerPolicy, want)
	notController := scalerRef
	notController.Controller = nil
	_, err = hpas.Create(ctx, hpa("scaler-not-controller", notController), metav1.CreateOptions{})
	rbacDenied(t, "creating an HPA an InferenceScaler owns but does not control", err, rbacControllerPolicy, want)
	if _, err := hpas.Create(ctx, hpa("chat", scalerRef), dryCreate); err != nil {
		t.Errorf("creating an HPA an InferenceScaler controls (dry run): %v", err)
	}

	// Someone else's HPA: neither patched nor adopted.
	if _, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa("team-hpa"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = hpas.Patch(ctx, "team-hpa", types.MergePatchType, []byte(`{"spec":{"maxReplicas":100}}`), metav1.PatchOptions{})
	rbacDenied(t, "patching a team's HPA", err, rbacControllerPolicy, want)
	adopt := rbacMergePatch(`{"metadata":{"ownerReferences":[{"apiVersion":%q,"kind":"InferenceScaler","name":"chat","uid":%q,"controller":true}]},"spec":{"maxReplicas":100}}`,
		scalerRef.APIVersion, scalerRef.UID)
	_, err = hpas.Patch(ctx, "team-hpa", types.MergePatchType, adopt, metav1.PatchOptions{})
	rbacDenied(t, "adopting a team's HPA", err, rbacControllerPolicy, "may not take over an HPA")

	// The controller's own writes: an InferenceScaler's HPA is created
	// and then patched under the policy.
	scheme, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	kc, err := client.New(cluster.RESTConfig(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	is := &v1alpha1.InferenceScaler{
		ObjectMeta: metav1.ObjectMeta{Name: "chat", Namespace: ns},
		Spec: v1alpha1.InferenceScalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetRef{APIVersion: v1alpha1.DeploymentAPIVersion, Kind: v1alpha1.DeploymentKind, Name: "chat-predictor"},
			MinReplicas:    ptr.To(int32(1)),
			MaxReplicas:    3,
		},
	}
	if err := kc.Create(ctx, is); err != nil {
		t.Fatal(err)
	}
	waitMax := func(want int32) {
		framework.Eventually(t, time.Minute, 250*time.Millisecond, fmt.Sprintf("HPA chat with maxReplicas %d", want), func(ctx context.Context) (bool, string) {
			h, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "chat", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return h.Spec.MaxReplicas == want, fmt.Sprintf("maxReplicas %d", h.Spec.MaxReplicas)
		})
	}
	waitMax(3)
	if err := kc.Patch(ctx, is, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"maxReplicas":4}}`))); err != nil {
		t.Fatal(err)
	}
	waitMax(4)
}

// TestControllerTokenRBACIsNarrow asks the API server, with the
// controller's own token (kubectl auth can-i), what it may do in
// kube-system. Reading and patching and deleting pods stay allowed by RBAC
// (the controller's work needs them in every namespace; the admission
// policy narrows them, see above); everything it never does is refused.
func TestControllerTokenRBACIsNarrow(t *testing.T) {
	spillway(t)
	ctl := rbacControllerClient(t)
	ctx := context.Background()
	can := func(verb, group, resource, sub string) bool {
		t.Helper()
		r, err := ctl.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: metav1.NamespaceSystem, Verb: verb, Group: group, Resource: resource, Subresource: sub,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status.Allowed
	}
	for _, a := range []struct{ verb, group, resource, sub string }{
		{"get", "", "pods", ""}, {"patch", "", "pods", ""}, {"delete", "", "pods", ""},
	} {
		if !can(a.verb, a.group, a.resource, a.sub) {
			t.Errorf("the controller may not %s %s/%s in kube-system; its work needs it", a.verb, a.resource, a.sub)
		}
	}
	for _, a := range []struct{ verb, group, resource, sub string }{
		{"create", "", "pods", ""},
		{"update", "", "pods", ""},
		{"deletecollection", "", "pods", ""},
		{"update", "", "pods", "status"},
		{"patch", "", "pods", "ephemeralcontainers"},
		{"create", "", "pods", "exec"},
		{"create", "", "pods", "attach"},
		{"create", "", "pods", "eviction"},
		{"get", "", "secrets", ""},
		{"list", "", "configmaps", ""},
		{"create", "", "serviceaccounts", "token"},
		{"create", "", "events", ""},
		{"list", "apps", "replicasets", ""},
		{"patch", "apps", "deployments", ""},
		{"patch", "apps", "deployments", "scale"},
		{"update", "apps", "daemonsets", ""},
		{"update", "autoscaling", "horizontalpodautoscalers", ""},
		{"delete", "autoscaling", "horizontalpodautoscalers", ""},
		{"update", "autoscaling", "horizontalpodautoscalers", "status"},
		{"update", "rbac.authorization.k8s.io", "rolebindings", ""},
		{"delete", "admissionregistration.k8s.io", "validatingadmissionpolicies", ""},
		{"update", "admissionregistration.k8s.io", "validatingadmissionpolicybindings", ""},
	} {
		if can(a.verb, a.group, a.resource, a.sub) {
			t.Errorf("the controller may %s %s.%s/%s in kube-system; it must not", a.verb, a.resource, a.group, a.sub)
		}
	}
}

// TestTenantCannotForgeSpillwayPodKeys: a tenant with the built-in edit
// role in its namespace can relabel its pods, but not add, change or remove
// the spillway.dev/ labels and annotations spillway placed them with, which
// capacity accounting and re-placement trust. Spillway's own writes, the
// scheduler's binding and the node's status updates of such a pod pass.
func TestTenantCannotForgeSpillwayPodKeys(t *testing.T) {
	spillway(t)
	ctx := context.Background()
	ns := rbacNamespace(t, "mallory-pod-keys")
	admin := cluster.Client()

	// mallory: a ServiceAccount of the namespace with the edit role there,
	// authenticating with its own token.
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "dev"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "dev-edit"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "dev", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "dev", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(cluster.RESTConfig())
	cfg.BearerToken = tr.Status.Token
	mallory, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, 250*time.Millisecond, "mallory may patch pods in "+ns, func(ctx context.Context) (bool, string) {
		r, err := mallory.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "patch", Resource: "pods"}},
		}, metav1.CreateOptions{})
		if err != nil {
			return false, err.Error()
		}
		return r.Status.Allowed, "not allowed: " + r.Status.Reason
	})

	// A pod as spillway placed it: the controller writes its keys (the
	// webhook does at creation).
	pod := rbacPod(t, ns, "predictor", false)
	ctl := rbacControllerClient(t)
	if _, err := ctl.CoreV1().Pods(ns).Patch(ctx, pod.Name, types.MergePatchType, []byte(
		`{"metadata":{"labels":{"spillway.dev/policy":"chat","spillway.dev/unit":"onprem"},"annotations":{"spillway.dev/reserved-node":"onprem-0"}}}`),
		metav1.PatchOptions{}); err != nil {
		t.Fatalf("the controller writing spillway's keys: %v", err)
	}
	pods := mallory.CoreV1().Pods(ns)
	rbacTypeChecked(t, rbacPodKeysPolicy)
	rbacWaitEnforced(t, rbacPodKeysPolicy, func(ctx context.Context) error {
		_, err := pods.Patch(ctx, pod.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"spillway.dev/unit":"elastic"}}}`), rbacDryRun)
		return err
	})

	const labels, annotations = "spillway.dev/ labels of a pod are written only by spillway", "spillway.dev/ annotations of a pod are written only by spillway"
	for _, tt := range []struct{ name, patch, want string }{
		{"change spillway.dev/unit", `{"metadata":{"labels":{"spillway.dev/unit":"elastic"}}}`, labels + "; they may not be added, changed or removed: spillway.dev/unit"},
		{"remove spillway.dev/policy", `{"metadata":{"labels":{"spillway.dev/policy":null}}}`, labels + "; they may not be added, changed or removed: spillway.dev/policy"},
		{"add a spillway.dev/ label", `{"metadata":{"labels":{"spillway.dev/placement-id":"forged"}}}`, labels},
		{"add a label of a spillway.dev subdomain", `{"metadata":{"labels":{"placement.spillway.dev/unit":"onprem"}}}`, labels},
		{"move the reservation", `{"metadata":{"annotations":{"spillway.dev/reserved-node":"cloud-1"}}}`, annotations},
		{"remove the reservation", `{"metadata":{"annotations":{"spillway.dev/reserved-node":null}}}`, annotations},
		{"add a signature", `{"metadata":{"annotations":{"spillway.dev/placement-signature":"forged"}}}`, annotations},
	} {
		_, err := pods.Patch(ctx, pod.Name, types.MergePatchType, []byte(tt.patch), metav1.PatchOptions{})
		rbacDenied(t, "mallory: "+tt.name, err, rbacPodKeysPolicy, tt.want)
	}

	// The tenant's own labels, and spillway.dev/workload (which users set
	// for the simulated GPUs), stay theirs; a full update that keeps
	// spillway's keys passes too.
	if _, err := pods.Patch(ctx, pod.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"ml","spillway.dev/workload":"chat"}}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("mallory relabelling its own pod: %v", err)
	}
	cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Annotations["note"] = "kept"
	if _, err := pods.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Errorf("mallory updating its pod with spillway's keys as they are: %v", err)
	}

	// The scheduler binds the pod (pods/binding) and the node reports it
	// Running (pods/status) with spillway's keys on it; lifting the gate is
	// an update by someone other than the controller that keeps them.
	if _, err := admin.CoreV1().Pods(ns).Patch(ctx, pod.Name, types.JSONPatchType, []byte(`[{"op":"remove","path":"/spec/schedulingGates"}]`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("lifting the scheduling gate: %v", err)
	}
	rbacWaitPhase(t, ns, pod.Name, corev1.PodRunning)
	got, err := admin.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["spillway.dev/unit"] != "onprem" || got.Labels["spillway.dev/policy"] != "chat" || got.Annotations["spillway.dev/reserved-node"] != "onprem-0" ||
		got.Labels["team"] != "ml" || got.Annotations["note"] != "kept" {
		t.Errorf("labels %v annotations %v", got.Labels, got.Annotations)
	}
}
