package chart

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// rendered wraps a render for the assertions below.
type rendered struct {
	t    *testing.T
	objs []*unstructured.Unstructured
}

func (r rendered) one(kind, name string) *unstructured.Unstructured {
	r.t.Helper()
	for _, o := range Find(r.objs, kind) {
		if o.GetName() == name {
			return o
		}
	}
	r.t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

func (r rendered) count(kind string) int { return len(Find(r.objs, kind)) }

func (r rendered) args(workload string) []string {
	r.t.Helper()
	cs, err := Containers(r.objs)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, c := range cs {
		if c.Workload == workload {
			return c.Args
		}
	}
	r.t.Fatalf("no workload %s", workload)
	return nil
}

// str is the value at path as text ("" when absent): strings as they are,
// numbers and booleans printed, anything else non-empty when present.
func str(o *unstructured.Unstructured, path ...string) string {
	v, found, _ := unstructured.NestedFieldNoCopy(o.Object, path...)
	if !found || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// roleRules flattens a Role or ClusterRole into "group/resource:verb[@name]".
func roleRules(o *unstructured.Unstructured) []string {
	rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
	var out []string
	for _, r := range rules {
		rm := r.(map[string]any)
		groups, _, _ := unstructured.NestedStringSlice(rm, "apiGroups")
		resources, _, _ := unstructured.NestedStringSlice(rm, "resources")
		verbs, _, _ := unstructured.NestedStringSlice(rm, "verbs")
		names, _, _ := unstructured.NestedStringSlice(rm, "resourceNames")
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range groups {
			for _, res := range resources {
				for _, v := range verbs {
					for _, n := range names {
						s := g + "/" + res + ":" + v
						if n != "" {
							s += "@" + n
						}
						out = append(out, s)
					}
				}
			}
		}
	}
	return out
}

func TestVariantsRenderWhatTheyPromise(t *testing.T) {
	tests := []struct {
		variant string
		check   func(t *testing.T, r rendered)
	}{
		{"defaults", func(t *testing.T, r rendered) {
			ds := r.one("DaemonSet", "spillway-gpu-exporter")
			if str(ds, "spec", "template", "spec", "hostPID") != "true" {
				t.Error("exporter: hostPID is not true")
			}
			if str(ds, "spec", "template", "spec", "nodeSelector", "nvidia.com/gpu.present") != "true" {
				t.Error("exporter: no nvidia.com/gpu.present node selector")
			}
			tol, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "tolerations")
			if len(tol) == 0 || tol[0].(map[string]any)["key"] != "nvidia.com/gpu" {
				t.Errorf("exporter: tolerations %v lack nvidia.com/gpu", tol)
			}
			checkExporterLeastPrivilege(t, ds)
			if !slices.Contains(r.args("DaemonSet/spillway-gpu-exporter"), "--proc-root=/proc") {
				t.Error("exporter: --proc-root=/proc missing with hostPID")
			}
			for _, d := range []string{"spillway-metrics-adapter", "spillway-controller"} {
				dep := r.one("Deployment", d)
				if got := str(dep, "spec", "replicas"); got != "2" {
					t.Errorf("%s replicas = %s, want 2", d, got)
				}
				if str(dep, "spec", "template", "spec", "affinity", "podAntiAffinity") == "" {
					t.Errorf("%s: no pod anti-affinity", d)
				}
				r.one("PodDisruptionBudget", d)
			}
			if !slices.Contains(r.args("Deployment/spillway-controller"), "--leader-elect=true") {
				t.Error("controller: leader election off")
			}
			if n := r.count("APIService"); n != 3 {
				t.Errorf("%d APIServices, want 3", n)
			}
			// TLS is verified by default: the adapter manages its CA and
			// writes it into exactly these APIServices.
			for _, name := range metricsAPIServices {
				a := r.one("APIService", name)
				if str(a, "spec", "insecureSkipTLSVerify") != "" || str(a, "spec", "caBundle") != "" || str(a, "spec", "service", "name") != "spillway-metrics-adapter" {
					t.Errorf("APIService %s: %v, want verification with the adapter's own CA bundle (written at run time)", name, a.Object["spec"])
				}
			}
			checkSelfManagedAdapterTLS(t, r, metricsAPIServices)
			mwc := r.one("MutatingWebhookConfiguration", "spillway-placement")
			hooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
			h := hooks[0].(map[string]any)
			if h["failurePolicy"] != "Ignore" || fmt.Sprint(h["timeoutSeconds"]) != "5" {
				t.Errorf("webhook failurePolicy %v timeout %v, want Ignore and 5", h["failurePolicy"], h["timeoutSeconds"])
			}
			ops, _, _ := unstructured.NestedSlice(h, "rules")
			if got := ops[0].(map[string]any); !slices.Equal(toStrings(got["operations"]), []string{"CREATE"}) || !slices.Equal(toStrings(got["resources"]), []string{"pods"}) {
				t.Errorf("webhook rules %v, want pods CREATE", got)
			}
			exprs, _, _ := unstructured.NestedSlice(h, "namespaceSelector", "matchExpressions")
			excluded := toStrings(exprs[0].(map[string]any)["values"])
			if !slices.Contains(excluded, "spillway-system") || !slices.Contains(excluded, "kube-system") {
				t.Errorf("webhook excludes %v, want the release namespace and kube-system", excluded)
			}
			role := roleRules(r.one("Role", "spillway-controller"))
			for _, want := range []string{"/secrets:get@spillway-webhook-cert", "coordination.k8s.io/leases:update@spillway-controller"} {
				if !slices.Contains(role, want) {
					t.Errorf("controller Role lacks %s: %v", want, role)
				}
			}
			// The controller watches its webhook configuration by name (a
			// field selector on metadata.name) and nothing else.
			if got := roleRules(r.one("ClusterRole", "spillway-controller-webhook-ca")); !slices.Equal(got, []string{
				"admissionregistration.k8s.io/mutatingwebhookconfigurations:get@spillway-placement",
				"admissionregistration.k8s.io/mutatingwebhookconfigurations:list@spillway-placement",
				"admissionregistration.k8s.io/mutatingwebhookconfigurations:watch@spillway-placement",
				"admissionregistration.k8s.io/mutatingwebhookconfigurations:update@spillway-placement",
				"admissionregistration.k8s.io/mutatingwebhookconfigurations:patch@spillway-placement",
			}) {
				t.Errorf("webhook CA ClusterRole rules %v", got)
			}
			if got := roleRules(r.one("ClusterRole", "spillway-gpu-exporter")); !slices.Equal(got, []string{"/pods:get", "/pods:list", "/pods:watch"}) {
				t.Errorf("exporter ClusterRole %v, want read-only pods", got)
			}
			// Prometheus without credentials: no flags, no mount.
			for _, a := range r.args("Deployment/spillway-metrics-adapter") {
				if strings.HasPrefix(a, "--prometheus-") && !strings.HasPrefix(a, "--prometheus-url=") && !strings.HasPrefix(a, "--prometheus-timeout=") {
					t.Errorf("adapter arg %s by default", a)
				}
			}
			if got := str(r.one("Deployment", "spillway-metrics-adapter"), "spec", "template", "spec", "volumes"); strings.Contains(got, "prometheus-credentials") {
				t.Errorf("adapter volumes %s: credentials mounted by default", got)
			}
			if n := r.count("ServiceMonitor") + r.count("PodMonitor") + r.count("PrometheusRule") + r.count("Certificate"); n != 0 {
				t.Errorf("%d optional objects rendered by default", n)
			}
			for _, kind := range []string{"DaemonSet", "Deployment"} {
				for _, o := range Find(r.objs, kind) {
					if str(o, "spec", "template", "metadata", "annotations", "prometheus.io/scrape") != "true" {
						t.Errorf("%s %s has no scrape annotations", kind, o.GetName())
					}
				}
			}
		}},
		{"cert-manager", func(t *testing.T, r rendered) {
			for _, a := range Find(r.objs, "APIService") {
				if str(a, "spec", "insecureSkipTLSVerify") != "" {
					t.Errorf("APIService %s skips TLS verification under cert-manager", a.GetName())
				}
				if str(a, "metadata", "annotations", "cert-manager.io/inject-ca-from") != "spillway-system/spillway-metrics-adapter-cert" {
					t.Errorf("APIService %s: no inject-ca-from", a.GetName())
				}
			}
			mwc := r.one("MutatingWebhookConfiguration", "spillway-placement")
			if str(mwc, "metadata", "annotations", "cert-manager.io/inject-ca-from") != "spillway-system/spillway-webhook-cert" {
				t.Error("webhook configuration: no inject-ca-from")
			}
			r.one("Certificate", "spillway-webhook-cert")
			r.one("Certificate", "spillway-metrics-adapter-cert")
			r.one("Issuer", "spillway-selfsigned")
			for _, rule := range roleRules(r.one("Role", "spillway-controller")) {
				if strings.Contains(rule, "secrets") {
					t.Errorf("controller may still touch Secrets under cert-manager: %s", rule)
				}
			}
			for _, cr := range Find(r.objs, "ClusterRole") {
				if cr.GetName() == "spillway-controller-webhook-ca" {
					t.Error("controller may still write its webhook configuration under cert-manager")
				}
			}
			args := r.args("Deployment/spillway-controller")
			if !slices.Contains(args, "--webhook-cert-dir=/var/run/webhook-cert") || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--webhook-cert-secret") }) {
				t.Errorf("controller args %q: want --webhook-cert-dir and no --webhook-cert-secret", args)
			}
			if !slices.Contains(r.args("Deployment/spillway-metrics-adapter"), "--tls-cert-file=/var/run/serving-cert/tls.crt") {
				t.Error("adapter does not serve the cert-manager certificate")
			}
			checkNoSelfManagedAdapterTLS(t, r)
		}},
		{"cert-manager-external-issuer", func(t *testing.T, r rendered) {
			if r.count("Issuer") != 0 {
				t.Error("an Issuer is rendered although issuerRef names one")
			}
			if got := str(r.one("Certificate", "spillway-webhook-cert"), "spec", "issuerRef", "kind"); got != "ClusterIssuer" {
				t.Errorf("issuerRef.kind = %q", got)
			}
		}},
		{"prometheus-operator", func(t *testing.T, r rendered) {
			if n := r.count("ServiceMonitor"); n != 3 {
				t.Errorf("%d ServiceMonitors, want 3", n)
			}
			sm := r.one("ServiceMonitor", "spillway-gpu-exporter")
			eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			if eps[0].(map[string]any)["honorLabels"] != true {
				t.Error("exporter ServiceMonitor does not honor labels: the workload's namespace/pod would be renamed")
			}
			if str(sm, "metadata", "labels", "release") != "kube-prometheus-stack" {
				t.Error("serviceMonitor.labels not applied")
			}
			r.one("Service", "spillway-gpu-exporter")
			r.one("PrometheusRule", "spillway")
			if n := r.count("ConfigMap"); n != 2 {
				t.Errorf("%d dashboard ConfigMaps, want 2", n)
			}
			for _, cm := range Find(r.objs, "ConfigMap") {
				if str(cm, "metadata", "labels", "grafana_dashboard") != "1" {
					t.Errorf("ConfigMap %s lacks the sidecar label", cm.GetName())
				}
			}
		}},
		{"podmonitor-no-annotations", func(t *testing.T, r rendered) {
			if n := r.count("PodMonitor"); n != 3 {
				t.Errorf("%d PodMonitors, want 3", n)
			}
			for _, kind := range []string{"DaemonSet", "Deployment"} {
				for _, o := range Find(r.objs, kind) {
					if str(o, "spec", "template", "metadata", "annotations", "prometheus.io/scrape") != "" {
						t.Errorf("%s %s still has scrape annotations", kind, o.GetName())
					}
				}
			}
		}},
		{"exporter-hostproc-sim", func(t *testing.T, r rendered) {
			ds := r.one("DaemonSet", "spillway-gpu-exporter")
			if str(ds, "spec", "template", "spec", "hostPID") != "" {
				t.Error("hostPID set with procAccess=hostProc")
			}
			if str(ds, "spec", "template", "spec", "runtimeClassName") != "nvidia" {
				t.Error("runtimeClassName not set")
			}
			vols, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "volumes")
			if len(vols) != 1 || str(&unstructured.Unstructured{Object: vols[0].(map[string]any)}, "hostPath", "path") != "/proc" {
				t.Errorf("volumes %v: want the host's /proc", vols)
			}
			cs, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
			mounts, _, _ := unstructured.NestedSlice(cs[0].(map[string]any), "volumeMounts")
			if len(mounts) != 1 || mounts[0].(map[string]any)["readOnly"] != true {
				t.Errorf("mounts %v: want /host/proc read-only", mounts)
			}
			args := r.args("DaemonSet/spillway-gpu-exporter")
			for _, want := range []string{"--proc-root=/host/proc", "--backend=sim", "--export-host-processes"} {
				if !slices.Contains(args, want) {
					t.Errorf("exporter args %q lack %s", args, want)
				}
			}
			if rules := roleRules(r.one("ClusterRole", "spillway-gpu-exporter")); !slices.Contains(rules, "apps/replicasets:list") {
				t.Errorf("sim exporter cannot list ReplicaSets: %v", rules)
			}
			if env := containerEnv(t, r, "DaemonSet/spillway-gpu-exporter"); env["NVIDIA_VISIBLE_DEVICES"] != nil {
				t.Error("NVIDIA runtime environment set for the sim backend")
			}
		}},
		{"keda-owns-external-metrics", func(t *testing.T, r rendered) {
			var names []string
			for _, a := range Find(r.objs, "APIService") {
				names = append(names, a.GetName())
			}
			if !slices.Equal(names, []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"}) {
				t.Errorf("APIServices %v, want only custom.metrics.k8s.io", names)
			}
			// KEDA's APIService is not the adapter's to write.
			checkSelfManagedAdapterTLS(t, r, names)
		}},
		{"adapter-metric-table", func(t *testing.T, r rendered) { checkAdapterMetricTable(t, r.objs) }},
		{"prometheus-adapter-owns-all-metrics-apis", func(t *testing.T, r rendered) {
			if n := r.count("APIService"); n != 0 {
				t.Errorf("%d APIServices rendered with both groups off", n)
			}
			r.one("Deployment", "spillway-metrics-adapter")
			// No names to scope to: an empty resourceNames would grant
			// every APIService, so the role must not exist at all.
			for _, cr := range Find(r.objs, "ClusterRole") {
				if strings.Contains(strings.Join(roleRules(cr), " "), "apiservices") {
					t.Errorf("ClusterRole %s grants APIServices although the adapter registers none: %v", cr.GetName(), roleRules(cr))
				}
			}
			if !slices.Contains(r.args("Deployment/spillway-metrics-adapter"), "--apiservices=") {
				t.Errorf("adapter args %q: want --apiservices= (none)", r.args("Deployment/spillway-metrics-adapter"))
			}
		}},
		{"adapter-tls-secret", func(t *testing.T, r rendered) {
			for _, a := range Find(r.objs, "APIService") {
				if str(a, "spec", "caBundle") != testCABundle || str(a, "spec", "insecureSkipTLSVerify") != "" {
					t.Errorf("APIService %s: want the caBundle and verification", a.GetName())
				}
			}
			if !slices.Contains(r.args("Deployment/spillway-metrics-adapter"), "--tls-private-key-file=/var/run/serving-cert/tls.key") {
				t.Error("adapter does not serve the Secret's certificate")
			}
			checkNoSelfManagedAdapterTLS(t, r)
		}},
		{"adapter-tls-insecure-dev", func(t *testing.T, r rendered) {
			for _, a := range Find(r.objs, "APIService") {
				if str(a, "spec", "insecureSkipTLSVerify") != "true" || str(a, "spec", "caBundle") != "" {
					t.Errorf("APIService %s: want insecureSkipTLSVerify only when asked for explicitly", a.GetName())
				}
			}
			checkNoSelfManagedAdapterTLS(t, r)
		}},
		{"adapter-secured-prometheus", func(t *testing.T, r rendered) {
			args := r.args("Deployment/spillway-metrics-adapter")
			for _, want := range []string{
				"--prometheus-url=https://thanos-query.monitoring.svc:9090",
				"--prometheus-bearer-token-file=/etc/spillway/prometheus/token",
				"--prometheus-ca-file=/etc/spillway/prometheus/ca.crt",
				"--prometheus-client-cert-file=/etc/spillway/prometheus/tls.crt",
				"--prometheus-client-key-file=/etc/spillway/prometheus/tls.key",
				"--prometheus-header=X-Scope-OrgID=tenant-a|tenant-b",
				"--prometheus-header-file=X-Api-Key=/etc/spillway/prometheus/api-key",
			} {
				if !slices.Contains(args, want) {
					t.Errorf("adapter args %q lack %s", args, want)
				}
			}
			pod := &unstructured.Unstructured{Object: r.one("Deployment", "spillway-metrics-adapter").Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)}
			if got := str(pod, "volumes"); !strings.Contains(got, "map[name:prometheus-credentials secret:map[secretName:thanos-client]]") {
				t.Errorf("adapter volumes %s: the credentials Secret is not mounted", got)
			}
			if got := str(pod, "containers"); !strings.Contains(got, "map[mountPath:/etc/spillway/prometheus name:prometheus-credentials readOnly:true]") {
				t.Errorf("adapter containers %s: the credentials are not mounted read-only at /etc/spillway/prometheus", got)
			}
		}},
		{"exporter-root-device-group", func(t *testing.T, r rendered) {
			pod := r.one("DaemonSet", "spillway-gpu-exporter").Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			psc := &unstructured.Unstructured{Object: pod["securityContext"].(map[string]any)}
			if str(psc, "runAsUser") != "0" || str(psc, "runAsNonRoot") != "false" || str(psc, "supplementalGroups") != "[44]" {
				t.Errorf("exporter pod securityContext %v: want root (opted into), not runAsNonRoot, supplementalGroups [44]", psc.Object)
			}
			c := pod["containers"].([]any)[0].(map[string]any)
			sc := &unstructured.Unstructured{Object: c["securityContext"].(map[string]any)}
			if str(sc, "capabilities", "drop") != "[ALL]" || str(sc, "readOnlyRootFilesystem") != "true" {
				t.Errorf("exporter container securityContext %v: root must still drop every capability", sc.Object)
			}
		}},
		{"webhook-client-auth", func(t *testing.T, r rendered) {
			args := r.args("Deployment/spillway-controller")
			for _, want := range []string{
				"--webhook-client-ca-file=/var/run/webhook-client-ca/ca.crt",
				"--webhook-client-names=kube-apiserver-webhook-client",
			} {
				if !slices.Contains(args, want) {
					t.Errorf("controller args %q lack %s", args, want)
				}
			}
			dep := r.one("Deployment", "spillway-controller")
			if got := str(dep, "spec", "template", "spec", "volumes"); !strings.Contains(got, "kube-apiserver-webhook-client-ca") {
				t.Errorf("controller volumes %s: the client CA ConfigMap is not mounted", got)
			}
		}},
		{"single-replicas-hard-anti-affinity", func(t *testing.T, r rendered) {
			if n := r.count("PodDisruptionBudget"); n != 0 {
				t.Errorf("%d PDBs with single replicas: they would block node drains", n)
			}
			dep := r.one("Deployment", "spillway-controller")
			if str(dep, "spec", "template", "spec", "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution") == "" {
				t.Error("hard anti-affinity not required")
			}
			hooks, _, _ := unstructured.NestedSlice(r.one("MutatingWebhookConfiguration", "spillway-placement").Object, "webhooks")
			exprs, _, _ := unstructured.NestedSlice(hooks[0].(map[string]any), "namespaceSelector", "matchExpressions")
			if got := toStrings(exprs[0].(map[string]any)["values"]); !slices.Equal(got, []string{"spillway-system", "kube-system", "monitoring", "cert-manager"}) {
				t.Errorf("excluded namespaces %v", got)
			}
		}},
		{"dev-components-outside-cluster", func(t *testing.T, r rendered) {
			// The adapter and the controller run elsewhere: no workloads of
			// theirs; the exporter is untouched.
			if n := r.count("Deployment") + r.count("PodDisruptionBudget"); n != 0 {
				t.Errorf("%d Deployments/PDBs rendered for components running outside the cluster", n)
			}
			r.one("DaemonSet", "spillway-gpu-exporter")
			// The APIServices reach the adapter through an ExternalName
			// Service on the given port, verified with the CA the adapter
			// writes (RBAC for that stays).
			svc := r.one("Service", "spillway-metrics-adapter")
			if str(svc, "spec", "type") != "ExternalName" || str(svc, "spec", "externalName") != "localhost" || str(svc, "spec", "selector") != "" {
				t.Errorf("adapter Service spec %v, want ExternalName localhost without a selector", svc.Object["spec"])
			}
			for _, name := range metricsAPIServices {
				a := r.one("APIService", name)
				if str(a, "spec", "service", "name") != "spillway-metrics-adapter" || str(a, "spec", "service", "port") != "6443" ||
					str(a, "spec", "caBundle") != "" || str(a, "spec", "insecureSkipTLSVerify") != "" {
					t.Errorf("APIService %s spec %v, want the adapter Service on port 6443, verified with the bundle written at run time", name, a.Object["spec"])
				}
			}
			if rules := roleRules(r.one("ClusterRole", "spillway-metrics-adapter-apiservice-ca")); !slices.Contains(rules, "apiregistration.k8s.io/apiservices:update@v1beta1.custom.metrics.k8s.io") {
				t.Errorf("the adapter may not write its APIServices' CA bundle: %v", rules)
			}
			// The webhook calls the URL, with the same policy as in the
			// cluster: Ignore, the system namespaces excluded, the CA bundle
			// left for the controller.
			for _, s := range Find(r.objs, "Service") {
				if s.GetName() == "spillway-controller" {
					t.Error("controller Service rendered for a controller running outside the cluster")
				}
			}
			hooks, _, _ := unstructured.NestedSlice(r.one("MutatingWebhookConfiguration", "spillway-placement").Object, "webhooks")
			h := &unstructured.Unstructured{Object: hooks[0].(map[string]any)}
			if got := str(h, "clientConfig", "url"); got != "https://localhost:9443/spillway/v1/pods/placement" {
				t.Errorf("webhook url %q", got)
			}
			if str(h, "clientConfig", "service") != "" || str(h, "clientConfig", "caBundle") != "" {
				t.Errorf("webhook clientConfig %v: want the url only", h.Object["clientConfig"])
			}
			exprs, _, _ := unstructured.NestedSlice(h.Object, "namespaceSelector", "matchExpressions")
			if str(h, "failurePolicy") != "Ignore" || len(exprs) != 1 ||
				!slices.Equal(toStrings(exprs[0].(map[string]any)["values"]), []string{"spillway-system", "kube-system"}) {
				t.Errorf("webhook failurePolicy %s, namespaceSelector %v: want Ignore, excluding spillway-system and kube-system", str(h, "failurePolicy"), exprs)
			}
		}},
		{"only-exporter", func(t *testing.T, r rendered) {
			if r.count("Deployment") != 0 || r.count("APIService") != 0 || r.count("MutatingWebhookConfiguration") != 0 {
				t.Error("adapter or controller objects rendered while disabled")
			}
			groups, _, _ := unstructured.NestedSlice(r.one("PrometheusRule", "spillway").Object, "spec", "groups")
			if len(groups) != 1 {
				t.Errorf("%d alert groups, want the exporter's only", len(groups))
			}
		}},
	}
	variants := map[string]Variant{}
	for _, v := range Variants() {
		variants[v.Name] = v
	}
	for _, tt := range tests {
		t.Run(tt.variant, func(t *testing.T) {
			v, ok := variants[tt.variant]
			if !ok {
				t.Fatalf("no variant %q", tt.variant)
			}
			tt.check(t, rendered{t: t, objs: render(t, v.Set...)})
		})
	}
	if len(tests) != len(variants) {
		t.Errorf("%d variants but %d have checks", len(variants), len(tests))
	}
}

// metricsAPIServices are the APIServices the chart registers by default.
var metricsAPIServices = []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"}

// checkSelfManagedAdapterTLS: the adapter manages its serving certificate
// and may write the caBundle of exactly the given APIServices and its own
// Secret, nothing else.
func checkSelfManagedAdapterTLS(t *testing.T, r rendered, apiServices []string) {
	t.Helper()
	args := r.args("Deployment/spillway-metrics-adapter")
	for _, want := range []string{
		"--self-managed-cert", "--namespace=spillway-system", "--cert-secret=spillway-metrics-adapter-cert",
		"--service-name=spillway-metrics-adapter", "--apiservices=" + strings.Join(apiServices, ","), "--cert-check-interval=10m",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("adapter args %q lack %s", args, want)
		}
	}
	if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--tls-cert-file") }) {
		t.Errorf("adapter args %q: --tls-cert-file beside a self-managed certificate", args)
	}
	var want []string
	for _, v := range []string{"get", "list", "watch", "update", "patch"} {
		for _, name := range apiServices {
			want = append(want, "apiregistration.k8s.io/apiservices:"+v+"@"+name)
		}
	}
	got := roleRules(r.one("ClusterRole", "spillway-metrics-adapter-apiservice-ca"))
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("adapter APIService ClusterRole %v, want %v", got, want)
	}
	if got := roleRules(r.one("Role", "spillway-metrics-adapter-cert")); !slices.Equal(got, []string{
		"/secrets:create",
		"/secrets:get@spillway-metrics-adapter-cert",
		"/secrets:update@spillway-metrics-adapter-cert",
		"/secrets:patch@spillway-metrics-adapter-cert",
	}) {
		t.Errorf("adapter Secret Role %v", got)
	}
	if r.one("Role", "spillway-metrics-adapter-cert").GetNamespace() != "spillway-system" {
		t.Error("the adapter's Secret Role is not in the release namespace")
	}
}

// checkNoSelfManagedAdapterTLS: with a certificate from elsewhere the
// adapter gets no access to Secrets or APIServices.
func checkNoSelfManagedAdapterTLS(t *testing.T, r rendered) {
	t.Helper()
	if args := r.args("Deployment/spillway-metrics-adapter"); slices.Contains(args, "--self-managed-cert") {
		t.Errorf("adapter args %q: a self-managed certificate although one is supplied", args)
	}
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, o := range Find(r.objs, kind) {
			if !strings.HasPrefix(o.GetName(), "spillway-metrics-adapter") {
				continue
			}
			for _, rule := range roleRules(o) {
				if strings.Contains(rule, "secrets") || strings.Contains(rule, "apiservices") {
					t.Errorf("%s %s still grants %s", kind, o.GetName(), rule)
				}
			}
		}
	}
}

// checkExporterLeastPrivilege: the exporter runs as a non-root UID with a
// read-only root filesystem, no capabilities, no privilege escalation and
// the runtime's default seccomp profile (issue 12).
func checkExporterLeastPrivilege(t *testing.T, ds *unstructured.Unstructured) {
	t.Helper()
	pod := &unstructured.Unstructured{Object: ds.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)}
	for path, want := range map[string]string{
		"runAsUser": "65532", "runAsGroup": "65532", "runAsNonRoot": "true", "seccompProfile.type": "RuntimeDefault",
	} {
		if got := str(pod, append([]string{"securityContext"}, strings.Split(path, ".")...)...); got != want {
			t.Errorf("exporter pod securityContext.%s = %q, want %q", path, got, want)
		}
	}
	if str(pod, "securityContext", "supplementalGroups") != "" {
		t.Error("exporter has supplementary groups by default")
	}
	cs, _, _ := unstructured.NestedSlice(pod.Object, "containers")
	for _, c := range cs {
		sc := &unstructured.Unstructured{Object: c.(map[string]any)}
		for path, want := range map[string]string{
			"readOnlyRootFilesystem": "true", "allowPrivilegeEscalation": "false", "privileged": "false", "capabilities.drop": "[ALL]",
		} {
			if got := str(sc, append([]string{"securityContext"}, strings.Split(path, ".")...)...); got != want {
				t.Errorf("exporter container %v securityContext.%s = %q, want %q", sc.Object["name"], path, got, want)
			}
		}
		if str(sc, "securityContext", "capabilities", "add") != "" || str(sc, "securityContext", "runAsUser") != "" {
			t.Errorf("exporter container %v adds capabilities or overrides the pod's user: %v", sc.Object["name"], sc.Object["securityContext"])
		}
	}
}

func containerEnv(t *testing.T, r rendered, workload string) map[string]any {
	cs, err := Containers(r.objs)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Workload == workload {
			return c.Env
		}
	}
	return nil
}

func toStrings(v any) []string {
	items, _ := v.([]any)
	var out []string
	for _, it := range items {
		s, _ := it.(string)
		out = append(out, s)
	}
	return out
}
