package chart

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func decodeInto(t *testing.T, o *unstructured.Unstructured, into any) {
	t.Helper()
	raw, err := o.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
}

// policies decodes the rendered ValidatingAdmissionPolicies by name and
// checks that each has a Deny binding.
func policies(t *testing.T, objs []*unstructured.Unstructured) map[string]admissionregistrationv1.ValidatingAdmissionPolicy {
	t.Helper()
	out := map[string]admissionregistrationv1.ValidatingAdmissionPolicy{}
	for _, o := range Find(objs, "ValidatingAdmissionPolicy") {
		var p admissionregistrationv1.ValidatingAdmissionPolicy
		decodeInto(t, o, &p)
		out[p.Name] = p
	}
	bound := map[string]bool{}
	for _, o := range Find(objs, "ValidatingAdmissionPolicyBinding") {
		var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
		decodeInto(t, o, &b)
		if !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
			t.Errorf("binding %s: validationActions %v, want [Deny]", b.Name, b.Spec.ValidationActions)
		}
		if b.Spec.MatchResources != nil || b.Spec.ParamRef != nil {
			t.Errorf("binding %s narrows its policy (%+v, %+v); it must apply to every namespace", b.Name, b.Spec.MatchResources, b.Spec.ParamRef)
		}
		bound[b.Spec.PolicyName] = true
	}
	for name := range out {
		if !bound[name] {
			t.Errorf("policy %s has no binding", name)
		}
	}
	if len(bound) != len(out) {
		t.Errorf("%d bindings for %d policies", len(bound), len(out))
	}
	return out
}

// TestAdmissionPoliciesBindTheControllersServiceAccount: by default the
// chart ships both policies, failing closed, and their match conditions name
// the ServiceAccount the controller Deployment runs as, whatever the release,
// namespace and ServiceAccount name.
func TestAdmissionPoliciesBindTheControllersServiceAccount(t *testing.T) {
	tests := []struct {
		name, release, namespace string
		set                      []string
		user                     string
	}{
		{"defaults", "spillway", "spillway-system", nil, "system:serviceaccount:spillway-system:spillway-controller"},
		{"release name", "gpu", "infra", nil, "system:serviceaccount:infra:gpu-spillway-controller"},
		{"named service account", "spillway", "spillway-system", []string{"controller.serviceAccount.name=ctl"}, "system:serviceaccount:spillway-system:ctl"},
		{"existing default service account", "spillway", "ops", []string{"controller.serviceAccount.create=false"}, "system:serviceaccount:ops:default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Render(context.Background(), Release{Name: tt.release, Namespace: tt.namespace, Set: tt.set})
			if err != nil {
				t.Fatal(err)
			}
			var dep struct {
				Spec struct {
					Template struct {
						Spec struct {
							ServiceAccountName string `json:"serviceAccountName"`
						} `json:"spec"`
					} `json:"template"`
				} `json:"spec"`
			}
			for _, d := range Find(objs, "Deployment") {
				if strings.HasSuffix(d.GetName(), "-controller") {
					decodeInto(t, d, &dep)
				}
			}
			if sa := dep.Spec.Template.Spec.ServiceAccountName; "system:serviceaccount:"+tt.namespace+":"+sa != tt.user {
				t.Fatalf("controller runs as ServiceAccount %q; the test expects %s", sa, tt.user)
			}
			ps := policies(t, objs)
			if len(ps) != 2 {
				t.Fatalf("%d policies rendered, want 2 (the controller's and the pod keys')", len(ps))
			}
			for name, p := range ps {
				if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionregistrationv1.Fail {
					t.Errorf("policy %s: failurePolicy %v, want Fail", name, p.Spec.FailurePolicy)
				}
				if len(p.Spec.MatchConditions) != 1 {
					t.Fatalf("policy %s: %d match conditions, want 1", name, len(p.Spec.MatchConditions))
				}
				expr := p.Spec.MatchConditions[0].Expression
				if !strings.Contains(expr, `"`+tt.user+`"`) {
					t.Errorf("policy %s: match condition %q does not name %s", name, expr, tt.user)
				}
				for _, v := range p.Spec.Validations {
					if v.Message == "" && v.MessageExpression == "" {
						t.Errorf("policy %s: validation %q has no message", name, v.Expression)
					}
				}
			}
		})
	}
}

// TestAdmissionPoliciesCanBeTurnedOff: off by value, with the controller,
// and on clusters without ValidatingAdmissionPolicy v1 the render fails
// with a message naming the value instead of installing nothing silently.
func TestAdmissionPoliciesCanBeTurnedOff(t *testing.T) {
	for _, set := range [][]string{{"controller.admissionPolicy.enabled=false"}, {"controller.enabled=false"}} {
		if n := len(Find(render(t, set...), "ValidatingAdmissionPolicy")) + len(Find(render(t, set...), "ValidatingAdmissionPolicyBinding")); n != 0 {
			t.Errorf("%v: %d policy objects rendered", set, n)
		}
	}
	_, err := run(context.Background(), "template", testRelease, Dir(), "--namespace", testNamespace, "--kube-version", "v1.29.4")
	if err == nil || !strings.Contains(err.Error(), "controller.admissionPolicy.enabled=false") {
		t.Errorf("rendering for Kubernetes 1.29: error %v, want one naming controller.admissionPolicy.enabled=false", err)
	}
	if _, err := run(context.Background(), "template", testRelease, Dir(), "--namespace", testNamespace,
		"--kube-version", "v1.29.4", "--set", "controller.admissionPolicy.enabled=false"); err != nil {
		t.Errorf("rendering for Kubernetes 1.29 without the policies: %v", err)
	}
}

// operationsFor lists the operations a policy's rules match on a resource.
func operationsFor(p admissionregistrationv1.ValidatingAdmissionPolicy, group, resource string) []string {
	var ops []string
	if p.Spec.MatchConstraints == nil {
		return nil
	}
	for _, r := range p.Spec.MatchConstraints.ResourceRules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) {
			for _, op := range r.Operations {
				ops = append(ops, string(op))
			}
		}
	}
	return ops
}

// TestControllerPolicyCoversEveryWriteTheClusterRoleGrants: every write
// verb the controller's ClusterRole grants cluster-wide is one the
// controller's policy checks, so a grant added later without a matching
// admission rule fails here. Server-side apply and patch are UPDATEs (or
// CREATEs of a missing object) to admission.
func TestControllerPolicyCoversEveryWriteTheClusterRoleGrants(t *testing.T) {
	objs := render(t)
	p, ok := policies(t, objs)["spillway-controller"]
	if !ok {
		t.Fatal("no ValidatingAdmissionPolicy spillway-controller")
	}
	opsOf := map[string][]string{"create": {"CREATE"}, "update": {"UPDATE"}, "patch": {"UPDATE", "CREATE"}, "delete": {"DELETE"}}
	// Writes the policy leaves to RBAC alone: spillway's own objects'
	// status, the owner's finalizers (needed for blockOwnerDeletion) and
	// events.
	unchecked := map[string]bool{
		"spillway.dev/resourcepolicies/status": true, "spillway.dev/inferencescalers/status": true,
		"spillway.dev/inferencescalers/finalizers": true, "events.k8s.io/events": true,
	}
	var role rbacv1.ClusterRole
	for _, o := range Find(objs, "ClusterRole") {
		if o.GetName() == "spillway-controller" {
			decodeInto(t, o, &role)
		}
	}
	if len(role.Rules) == 0 {
		t.Fatal("no ClusterRole spillway-controller")
	}
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					want, write := opsOf[v]
					if !write {
						continue
					}
					if unchecked[g+"/"+res] {
						continue
					}
					if v == "patch" && g == "" && res == "pods" {
						// A pod patch never creates a pod.
						want = []string{"UPDATE"}
					}
					got := operationsFor(p, g, res)
					for _, op := range want {
						if !slices.Contains(got, op) {
							t.Errorf("the ClusterRole grants %s on %s/%s, but the policy does not check %s there (it checks %v)", v, g, res, op, got)
						}
					}
				}
			}
		}
	}
}

// ruleSet flattens rules into "group/resource:verb", ignoring resourceNames
// (the chart narrows some generated rules to one object).
func ruleSet(rules []rbacv1.PolicyRule) map[string]bool {
	out := map[string]bool{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out[g+"/"+res+":"+v] = true
				}
			}
		}
	}
	return out
}

// TestControllerClusterRoleIsTheGeneratedOne: the chart's cluster-wide
// grants to the controller are exactly those controller-gen derives from the
// +kubebuilder:rbac markers beside the code that uses them (config/rbac),
// so neither can grow without the other. The webhook configuration rule is
// the chart's separate, name-scoped ClusterRole and is left out here.
func TestControllerClusterRoleIsTheGeneratedOne(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(Root(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatalf("%v (run make generate)", err)
	}
	docs, err := Objects(data)
	if err != nil {
		t.Fatal(err)
	}
	separate := func(rule string) bool {
		return strings.HasPrefix(rule, "admissionregistration.k8s.io/mutatingwebhookconfigurations:")
	}
	generated := map[string]bool{}
	for _, d := range docs {
		if d.GetKind() != "ClusterRole" {
			continue
		}
		var role rbacv1.ClusterRole
		decodeInto(t, d, &role)
		for r := range ruleSet(role.Rules) {
			if !separate(r) {
				generated[r] = true
			}
		}
	}
	var chartRole rbacv1.ClusterRole
	for _, o := range Find(render(t), "ClusterRole") {
		if o.GetName() == "spillway-controller" {
			decodeInto(t, o, &chartRole)
		}
	}
	inChart := ruleSet(chartRole.Rules)
	for r := range inChart {
		if !generated[r] {
			t.Errorf("the chart grants %s, which no +kubebuilder:rbac marker asks for", r)
		}
	}
	for r := range generated {
		if !inChart[r] {
			t.Errorf("a +kubebuilder:rbac marker asks for %s, which the chart's ClusterRole does not grant", r)
		}
	}
}
