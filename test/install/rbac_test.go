package install

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spillway-dev/spillway/deploy/chart"
	"github.com/spillway-dev/spillway/test/framework"
)

// access is one request a ServiceAccount may or may not make.
type access struct {
	verb, group, resource, subresource, namespace, name string
}

func (a access) String() string {
	s := a.verb + " " + a.resource
	if a.group != "" {
		s += "." + a.group
	}
	if a.subresource != "" {
		s += "/" + a.subresource
	}
	if a.name != "" {
		s += " " + a.name
	}
	if a.namespace != "" {
		s += " in " + a.namespace
	} else {
		s += " (cluster-wide)"
	}
	return s
}

// allowed asks the API server's authorizers (RBAC here) whether the
// ServiceAccount may make the request, exactly as for its own token.
func allowed(ctx context.Context, namespace, sa string, a access) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + namespace + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource,
			Namespace: a.namespace, Name: a.name,
		},
	}}
	res, err := cluster.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return res.Status.Allowed, nil
}

// installRBAC renders a release and applies its ServiceAccounts, roles and
// bindings for real (nothing else: no workload may start).
func installRBAC(t *testing.T, ctx context.Context, release, namespace string, set ...string) {
	t.Helper()
	ensureNamespace(t, ctx, namespace)
	objs, err := chart.Render(ctx, chart.Release{Name: release, Namespace: namespace, Set: set})
	if err != nil {
		t.Fatal(err)
	}
	a := newApplier(t)
	n := 0
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := a.apply(ctx, o, false); err != nil {
				t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
			}
			n++
			t.Cleanup(func() { deleteObject(ctx, a, o) })
		}
	}
	if n == 0 {
		t.Fatal("no RBAC objects rendered")
	}
}

func deleteObject(ctx context.Context, a *applier, o *unstructured.Unstructured) {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return
	}
	if ns := o.GetNamespace(); ns != "" {
		_ = a.dyn.Resource(m.Resource).Namespace(ns).Delete(ctx, o.GetName(), metav1.DeleteOptions{})
		return
	}
	_ = a.dyn.Resource(m.Resource).Delete(ctx, o.GetName(), metav1.DeleteOptions{})
}

// narrowedByName are generated permissions the chart grants only on the one
// object the controller uses (resourceNames): requests for them are asked
// with that object's name. Verbs a name cannot scope (create) stay as they
// are. list and watch of these are not granted at all, except where
// watchedByName says so: the controller gets and updates its own Lease and
// Secret by name (its certs package and controller-runtime's LeaseLock).
var narrowedByName = map[string]func(release string) string{
	"leases":                        func(r string) string { return r + "-spillway-controller" },
	"secrets":                       func(r string) string { return r + "-spillway-webhook-cert" },
	"mutatingwebhookconfigurations": func(r string) string { return r + "-spillway-placement" },
}

// watchedByName are resources the controller also lists and watches, with
// the field selector metadata.name=<its object>, which the API server
// authorizes as a request for that name: the certs package watches its
// webhook configuration to restore a tampered CA bundle within seconds.
var watchedByName = map[string]bool{"mutatingwebhookconfigurations": true}

// generatedControllerAccess expands config/rbac/role.yaml (generated from the
// controllers' +kubebuilder:rbac markers: a ClusterRole, and a Role for the
// controller's own namespace) into requests the chart's controller must be
// allowed, in namespace ns for the Role's rules.
func generatedControllerAccess(t *testing.T, release, ns string) []access {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chart.Root(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatalf("%v (run make generate)", err)
	}
	docs, err := chart.Objects(data)
	if err != nil {
		t.Fatal(err)
	}
	var out []access
	for _, d := range docs {
		raw, err := d.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var role rbacv1.ClusterRole // a Role has the same rules field
		if err := json.Unmarshal(raw, &role); err != nil {
			t.Fatal(err)
		}
		namespace := "some-team"
		if d.GetKind() == "Role" {
			namespace = ns
		}
		for _, r := range role.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					resource, sub, _ := strings.Cut(res, "/")
					for _, v := range r.Verbs {
						a := access{verb: v, group: g, resource: resource, subresource: sub, namespace: namespace}
						if name, ok := narrowedByName[resource]; ok {
							if (v == "list" || v == "watch") && !watchedByName[resource] {
								continue
							}
							if v != "create" {
								a.name = name(release)
							}
						}
						out = append(out, a)
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("config/rbac/role.yaml has no rules")
	}
	return out
}

// checkAccess waits until every allowed request is granted (the RBAC
// authorizer's cache catches up with the new bindings), then requires every
// denied one to be refused.
func checkAccess(t *testing.T, ctx context.Context, namespace, sa string, allow, deny []access) {
	t.Helper()
	framework.Eventually(t, time.Minute, 500*time.Millisecond, sa+"'s permissions", func(ctx context.Context) (bool, string) {
		var missing []string
		for _, a := range allow {
			ok, err := allowed(ctx, namespace, sa, a)
			if err != nil {
				return false, err.Error()
			}
			if !ok {
				missing = append(missing, a.String())
			}
		}
		return len(missing) == 0, fmt.Sprintf("%s may not: %s", sa, strings.Join(missing, "; "))
	})
	for _, a := range deny {
		ok, err := allowed(ctx, namespace, sa, a)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			t.Errorf("%s may %s; it must not", sa, a)
		}
	}
}

func TestComponentRBACIsLeastPrivilege(t *testing.T) {
	ctx := context.Background()
	const ns, release = "spillway-rbac", "rbac"
	installRBAC(t, ctx, release, ns)
	name := func(component string) string { return release + "-spillway-" + component }

	t.Run("exporter", func(t *testing.T) {
		checkAccess(t, ctx, ns, name("gpu-exporter"),
			[]access{
				{verb: "list", resource: "pods"},
				{verb: "watch", resource: "pods"},
				{verb: "get", resource: "pods", namespace: "some-team", name: "predictor-0"},
			},
			[]access{
				{verb: "list", resource: "secrets"},
				{verb: "get", resource: "secrets", namespace: ns, name: name("webhook-cert")},
				{verb: "patch", resource: "pods", namespace: "some-team"},
				{verb: "delete", resource: "pods", namespace: "some-team"},
				{verb: "list", resource: "nodes"},
				{verb: "list", group: "apps", resource: "replicasets"},
				{verb: "get", resource: "configmaps", namespace: "kube-system", name: "extension-apiserver-authentication"},
				{verb: "create", resource: "tokenreviews", group: "authentication.k8s.io"},
			})
	})

	t.Run("adapter", func(t *testing.T) {
		checkAccess(t, ctx, ns, name("metrics-adapter"),
			[]access{
				{verb: "list", resource: "pods"},
				{verb: "watch", resource: "pods"},
				{verb: "create", resource: "tokenreviews", group: "authentication.k8s.io"},
				{verb: "create", resource: "subjectaccessreviews", group: "authorization.k8s.io"},
				{verb: "get", resource: "configmaps", namespace: "kube-system", name: "extension-apiserver-authentication"},
				{verb: "watch", resource: "configmaps", namespace: "kube-system", name: "extension-apiserver-authentication"},
				// Self-managed TLS (the default): its own Secret, and the
				// caBundle of its own APIServices, watched by name.
				{verb: "create", resource: "secrets", namespace: ns},
				{verb: "get", resource: "secrets", namespace: ns, name: name("metrics-adapter-cert")},
				{verb: "update", resource: "secrets", namespace: ns, name: name("metrics-adapter-cert")},
				{verb: "get", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1beta1.custom.metrics.k8s.io"},
				{verb: "list", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1beta2.custom.metrics.k8s.io"},
				{verb: "watch", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1beta1.external.metrics.k8s.io"},
				{verb: "update", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1beta1.custom.metrics.k8s.io"},
				{verb: "update", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1beta2.custom.metrics.k8s.io"},
				{verb: "update", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1beta1.external.metrics.k8s.io"},
			},
			[]access{
				{verb: "patch", resource: "pods", namespace: "some-team"},
				{verb: "delete", resource: "pods", namespace: "some-team"},
				{verb: "create", resource: "pods", namespace: "some-team"},
				{verb: "list", resource: "secrets"},
				{verb: "get", resource: "secrets", namespace: "kube-system", name: "any"},
				{verb: "get", resource: "configmaps", namespace: "default", name: "kube-root-ca.crt"},
				{verb: "get", resource: "secrets", namespace: ns, name: name("webhook-cert")},
				{verb: "update", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1beta1.metrics.k8s.io"},
				{verb: "update", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1.apps"},
				{verb: "list", resource: "apiservices", group: "apiregistration.k8s.io"},
				{verb: "create", resource: "apiservices", group: "apiregistration.k8s.io"},
				{verb: "delete", resource: "apiservices", group: "apiregistration.k8s.io", name: "v1beta1.custom.metrics.k8s.io"},
				{verb: "list", resource: "nodes"},
			})
	})

	t.Run("controller", func(t *testing.T) {
		sa := name("controller")
		allow := append(generatedControllerAccess(t, release, ns),
			access{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: ns},
			access{verb: "get", group: "coordination.k8s.io", resource: "leases", namespace: ns, name: sa},
			access{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: ns, name: sa},
			access{verb: "create", resource: "secrets", namespace: ns},
			access{verb: "get", resource: "secrets", namespace: ns, name: name("webhook-cert")},
			access{verb: "update", resource: "secrets", namespace: ns, name: name("webhook-cert")},
			access{verb: "get", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: name("placement")},
			access{verb: "update", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: name("placement")},
			access{verb: "patch", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: name("placement")},
			access{verb: "create", resource: "events", namespace: ns},
			access{verb: "create", group: "events.k8s.io", resource: "events", namespace: "some-team"},
			access{verb: "watch", group: "apps", resource: "deployments"},
			access{verb: "patch", group: "autoscaling", resource: "horizontalpodautoscalers", namespace: "some-team"},
			access{verb: "update", group: "spillway.dev", resource: "inferencescalers", subresource: "finalizers", namespace: "some-team"},
		)
		checkAccess(t, ctx, ns, sa, allow, []access{
			{verb: "list", resource: "secrets", namespace: ns},
			{verb: "get", resource: "secrets", namespace: ns, name: "someone-elses-secret"},
			{verb: "get", resource: "secrets", namespace: "kube-system", name: name("webhook-cert")},
			{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: ns, name: "another-controllers-lease"},
			{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: "kube-system", name: "kube-controller-manager"},
			{verb: "update", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: "another-webhook"},
			{verb: "list", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations"},
			{verb: "update", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", name: name("placement")},
			{verb: "create", resource: "pods", namespace: "some-team"},
			{verb: "update", resource: "pods", namespace: "some-team"},
			{verb: "update", resource: "nodes", name: "gpu-node-1"},
			{verb: "delete", group: "apps", resource: "deployments", namespace: "some-team"},
			{verb: "patch", group: "apps", resource: "deployments", subresource: "scale", namespace: "some-team"},
			{verb: "delete", group: "spillway.dev", resource: "resourcepolicies", namespace: "some-team"},
			{verb: "update", group: "spillway.dev", resource: "resourcepolicies", namespace: "some-team"},
			// Grants the code does not use (issue 12): no controller reads
			// ReplicaSets, HPAs are server-side applied (patch), never
			// updated or deleted, and core Events are only leader
			// election's, on its Lease.
			{verb: "list", group: "apps", resource: "replicasets"},
			{verb: "get", group: "apps", resource: "replicasets", namespace: "some-team"},
			{verb: "update", group: "autoscaling", resource: "horizontalpodautoscalers", namespace: "some-team"},
			{verb: "delete", group: "autoscaling", resource: "horizontalpodautoscalers", namespace: "some-team"},
			{verb: "update", group: "autoscaling", resource: "horizontalpodautoscalers", subresource: "status", namespace: "some-team"},
			{verb: "create", resource: "events", namespace: "some-team"},
			{verb: "create", resource: "events", namespace: "kube-system"},
			{verb: "deletecollection", resource: "pods", namespace: "some-team"},
			{verb: "update", resource: "pods", subresource: "status", namespace: "some-team"},
			{verb: "patch", resource: "pods", subresource: "ephemeralcontainers", namespace: "some-team"},
			{verb: "create", resource: "pods", subresource: "exec", namespace: "some-team"},
			{verb: "create", resource: "pods", subresource: "eviction", namespace: "some-team"},
		})
	})
}

// With cert-manager the controller needs neither Secrets nor its webhook
// configuration: the chart must not grant them.
func TestCertManagerVariantDropsCertificatePermissions(t *testing.T) {
	ctx := context.Background()
	const ns, release = "spillway-rbac-cm", "rbaccm"
	installRBAC(t, ctx, release, ns, "certManager.enabled=true")
	sa := release + "-spillway-controller"
	checkAccess(t, ctx, ns, sa,
		[]access{
			{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: ns, name: sa},
			{verb: "patch", resource: "pods", namespace: "some-team"},
		},
		[]access{
			{verb: "create", resource: "secrets", namespace: ns},
			{verb: "get", resource: "secrets", namespace: ns, name: release + "-spillway-webhook-cert"},
			{verb: "update", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: release + "-spillway-placement"},
		})
	// Nor does the adapter: the cainjector writes its APIServices' caBundle.
	checkAccess(t, ctx, ns, release+"-spillway-metrics-adapter",
		[]access{{verb: "list", resource: "pods"}},
		[]access{
			{verb: "create", resource: "secrets", namespace: ns},
			{verb: "get", resource: "secrets", namespace: ns, name: release + "-spillway-metrics-adapter-cert"},
			{verb: "update", group: "apiregistration.k8s.io", resource: "apiservices", name: "v1beta1.custom.metrics.k8s.io"},
		})
}
