package chart

// Variant is a set of values that turns optional features of the chart on
// (or default ones off). The chart's tests lint and render every variant;
// the install test applies each to a real API server with a dry run.
type Variant struct {
	Name string
	Set  []string
}

// testCABundle is a base64 placeholder for adapter.tls.caBundle; the API
// server only checks that caBundle is base64 when it is stored.
const testCABundle = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="

// Variants lists the default values and each optional feature.
func Variants() []Variant {
	return []Variant{
		{Name: "defaults"},
		{Name: "cert-manager", Set: []string{"certManager.enabled=true"}},
		{Name: "cert-manager-external-issuer", Set: []string{
			"certManager.enabled=true", "certManager.issuerRef.name=corp-ca", "certManager.issuerRef.kind=ClusterIssuer",
		}},
		{Name: "prometheus-operator", Set: []string{
			"metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
			"metrics.prometheusRule.enabled=true", "grafana.dashboards.enabled=true",
		}},
		{Name: "podmonitor-no-annotations", Set: []string{
			"metrics.podMonitor.enabled=true", "metrics.scrapeAnnotations=false", "metrics.prometheusRule.enabled=true",
		}},
		{Name: "exporter-hostproc-sim", Set: []string{
			"exporter.procAccess=hostProc", "exporter.backend=sim", "exporter.runtimeClassName=nvidia",
			"exporter.priorityClassName=system-node-critical", "exporter.exportHostProcesses=true",
			"exporter.nvmlLibrary=/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "exporter.logLevel=debug",
		}},
		{Name: "keda-owns-external-metrics", Set: []string{"adapter.apiServices.externalMetrics.enabled=false"}},
		{Name: "adapter-metric-table", Set: []string{
			"adapter.metrics[0].name=my_server_queue", "adapter.metrics[0].combine=Sum",
			"adapter.metrics[0].podLabels[0]=kubernetes_pod_name", "adapter.metrics[0].namespaceLabels[0]=kubernetes_namespace",
			`adapter.podSeriesSelector=job="kubernetes-pods"`,
		}},
		{Name: "prometheus-adapter-owns-all-metrics-apis", Set: []string{
			"adapter.apiServices.customMetrics.enabled=false", "adapter.apiServices.externalMetrics.enabled=false",
		}},
		{Name: "adapter-tls-secret", Set: []string{
			"adapter.tls.mode=secret", "adapter.tls.secretName=spillway-adapter-tls", "adapter.tls.caBundle=" + testCABundle,
		}},
		{Name: "adapter-tls-insecure-dev", Set: []string{"adapter.tls.mode=insecureSelfSigned"}},
		{Name: "adapter-secured-prometheus", Set: []string{
			"adapter.prometheus.url=https://thanos-query.monitoring.svc:9090", "adapter.prometheus.secretName=thanos-client",
			"adapter.prometheus.bearerTokenFile=/etc/spillway/prometheus/token", "adapter.prometheus.tls.caFile=/etc/spillway/prometheus/ca.crt",
			"adapter.prometheus.tls.certFile=/etc/spillway/prometheus/tls.crt", "adapter.prometheus.tls.keyFile=/etc/spillway/prometheus/tls.key",
			"adapter.prometheus.headers.X-Scope-OrgID=tenant-a|tenant-b", "adapter.prometheus.headerFiles.X-Api-Key=/etc/spillway/prometheus/api-key",
		}},
		{Name: "exporter-root-device-group", Set: []string{"exporter.runAsUser=0", "exporter.supplementalGroups={44}"}},
		{Name: "single-replicas-hard-anti-affinity", Set: []string{
			"adapter.replicas=1", "controller.replicas=1", "controller.leaderElection.enabled=false",
			"adapter.podAntiAffinity=hard", "controller.podAntiAffinity=hard",
			"controller.webhook.excludeNamespaces={monitoring,cert-manager}", "controller.webhook.failurePolicy=Fail",
		}},
		{Name: "webhook-client-auth", Set: []string{
			"controller.webhook.clientAuth.caConfigMap=kube-apiserver-webhook-client-ca",
			"controller.webhook.clientAuth.names={kube-apiserver-webhook-client}",
		}},
		{Name: "dev-components-outside-cluster", Set: []string{
			"controller.webhook.externalAddress=localhost:9443", "adapter.external.host=localhost", "adapter.external.port=6443",
		}},
		{Name: "only-exporter", Set: []string{"adapter.enabled=false", "controller.enabled=false", "metrics.prometheusRule.enabled=true"}},
	}
}
