package grafana

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"k8s.io/utils/ptr"

	mn "github.com/spillway-dev/spillway/pkg/metricnames"
)

// File is one dashboard and the file name it is provisioned under.
type File struct {
	Name      string
	Dashboard Dashboard
}

// All returns every dashboard, in a fixed order.
func All() ([]File, error) {
	var files []File
	for _, f := range []struct {
		name  string
		build func() (Dashboard, error)
	}{
		{"spillway-fleet.json", Fleet},
		{"spillway-components.json", Components},
	} {
		d, err := f.build()
		if err != nil {
			return nil, err
		}
		files = append(files, File{Name: f.name, Dashboard: d})
	}
	return files, nil
}

// Selectors shared by the fleet panels. GPU series are filtered on the ACK
// spellings NamespaceName/PodName: they carry the workload's namespace and
// pod even when a scrape job without honor_labels renamed namespace/pod to
// exported_namespace/exported_pod (the adapter filters the same way).
var (
	gpuSel = fmt.Sprintf(`{%s=~"$namespace", %s=~"$node"}`, mn.LabelACKNamespace, mn.LabelHostname)
)

// perGPU is the adapter's per-GPU value of a utilization metric: the sum of
// a pod's processes on each GPU, capped at 100.
func perGPU(metric, by string) string {
	return fmt.Sprintf(`clamp_max(sum by (%s) (%s%s), 100)`, by, metric, gpuSel)
}

// Fleet is the operator's view: where GPU time goes, how replicas split
// between on-prem and elastic units, and what the HPAs decide.
func Fleet() (Dashboard, error) {
	podBy := fmt.Sprintf("%s, %s", mn.LabelACKNamespace, mn.LabelACKPod)
	podLegend := fmt.Sprintf("{{%s}}/{{%s}}", mn.LabelACKNamespace, mn.LabelACKPod)
	gpuBy := fmt.Sprintf("%s, %s, %s, %s", mn.LabelHostname, mn.LabelGPU, mn.LabelUUID, mn.LabelModelName)

	l := &layout{}
	l.row("GPU utilization")
	l.add(6, 4, statPanel("GPUs in use", "GPUs with at least one process that reports utilization.", "short",
		target(fmt.Sprintf(`count(count by (%s) (%s%s))`, mn.LabelUUID, mn.ProcessSMUtil, gpuSel), "")))
	l.add(6, 4, statPanel("GPU pods reporting", "Pods with a fresh SM utilization value: the pods the HPA can see.", "short",
		target(fmt.Sprintf(`count(count by (%s) (%s%s))`, podBy, mn.ProcessSMUtil, gpuSel), "")))
	l.add(6, 4, statPanel("Mean SM utilization (GPUs in use)", "Mean over GPUs in use of the summed SM utilization of their processes.", "percent",
		target(fmt.Sprintf(`avg(%s)`, perGPU(mn.ProcessSMUtil, mn.LabelUUID)), ""),
		step("blue", nil), step("green", ptr.To(30.0)), step("orange", ptr.To(85.0))))
	l.add(6, 4, statPanel("GPU memory in use", "Memory used by GPU processes in pods, summed.", "decmbytes",
		target(fmt.Sprintf(`sum(%s%s)`, mn.ProcessMemUsed, gpuSel), "")))

	l.add(12, 9, percent0to100(timeseriesPanel("SM utilization by pod",
		"What the metrics adapter serves for DCGM_CUSTOM_PROCESS_SM_UTIL: per GPU the sum of the pod's processes (capped at 100), then the mean over the pod's GPUs.",
		"percent",
		target(fmt.Sprintf(`avg by (%s) (%s)`, podBy, perGPU(mn.ProcessSMUtil, podBy+", "+mn.LabelUUID)), podLegend))))
	l.add(12, 9, percent0to100(timeseriesPanel("SM utilization by GPU",
		"Summed SM utilization of the processes on each GPU, capped at 100. Idle GPUs (no process) have no series.",
		"percent",
		target(perGPU(mn.ProcessSMUtil, gpuBy), fmt.Sprintf("{{%s}} GPU {{%s}} ({{%s}})", mn.LabelHostname, mn.LabelGPU, mn.LabelModelName)))))
	l.add(12, 8, percent0to100(timeseriesPanel("SM utilization by node",
		"Mean over each node's GPUs in use.",
		"percent",
		target(fmt.Sprintf(`avg by (%s) (%s)`, mn.LabelHostname, perGPU(mn.ProcessSMUtil, mn.LabelHostname+", "+mn.LabelUUID)), fmt.Sprintf("{{%s}}", mn.LabelHostname)))))
	l.add(12, 8, timeseriesPanel("GPU memory used by pod", "Sum over the pod's processes and GPUs.", "decmbytes",
		target(fmt.Sprintf(`sum by (%s) (%s%s)`, podBy, mn.ProcessMemUsed, gpuSel), podLegend)))

	// LLM servers' own gauges, as pod discovery labels them (namespace, pod):
	// the queue signal the adapter serves next to SM utilization.
	llmSel := `{namespace=~"$namespace"}`
	l.row("LLM servers: queue and KV cache")
	l.add(8, 8, timeseriesPanel("Requests waiting by pod",
		fmt.Sprintf("%s: requests queued for a batch slot, summed over the pod's series (what the adapter serves). Past a replica's capacity SM utilization stays near 100 %% while this keeps growing.", mn.VLLMRequestsWaiting),
		"short", target(fmt.Sprintf(`sum by (namespace, pod) (%s%s)`, mn.VLLMRequestsWaiting, llmSel), "{{namespace}}/{{pod}}")))
	l.add(8, 8, timeseriesPanel("Requests running by pod",
		fmt.Sprintf("%s: requests in the running batch.", mn.VLLMRequestsRunning),
		"short", target(fmt.Sprintf(`sum by (namespace, pod) (%s%s)`, mn.VLLMRequestsRunning, llmSel), "{{namespace}}/{{pod}}")))
	kv := timeseriesPanel("KV-cache usage by pod",
		fmt.Sprintf("%s (a fraction despite its name), the fullest of the pod's series: near 1 a replica is about to queue.", mn.VLLMKVCacheUsage),
		"percentunit", target(fmt.Sprintf(`max by (namespace, pod) (%s%s)`, mn.VLLMKVCacheUsage, llmSel), "{{namespace}}/{{pod}}"))
	kv.Min(0).Max(1)
	l.add(8, 8, kv)

	// Placement: spillway-controller counts the pods of each policy's
	// units by phase (fleetmetrics), so no kube-state-metrics is needed.
	// Every replica exports the same counts: max by, never sum.
	policySel := fmt.Sprintf(`%s=~"$namespace", %s=~"$policy"`, mn.LabelNamespace, mn.LabelPolicy)
	inPhase := func(phase string) string {
		return fmt.Sprintf(`max by (%s, %s, %s) (%s{%s, %s=%q})`, mn.LabelNamespace, mn.LabelPolicy, mn.LabelUnit,
			mn.ResourcePolicyUnitPods, policySel, mn.LabelPhase, phase)
	}
	// zeroPer is 0 for every existing policy (and unit, when by includes
	// it): the fallback of a per-policy counter, which has no series
	// before its first event although 0 is the truth.
	zeroPer := func(by string) string {
		return fmt.Sprintf(`0 * max by (%s) (%s{%s})`, by, mn.ResourcePolicyUnitPods, policySel)
	}
	byUnit := fmt.Sprintf("%s, %s, %s", mn.LabelNamespace, mn.LabelPolicy, mn.LabelUnit)
	byPolicy := fmt.Sprintf("%s, %s", mn.LabelNamespace, mn.LabelPolicy)
	unitLegend := "{{namespace}}/{{policy}}: {{unit}}"
	l.row("Placement: replicas by unit (on-prem first, then elastic)")
	l.add(12, 9, stacked("Running replicas by unit",
		"Running pods of each ResourcePolicy by the unit the placement webhook put them on (pod label spillway.dev/unit; none: outside every unit). Units are tried in order: on-prem first, the elastic pool last.",
		"short", target(inPhase("Running"), unitLegend)))
	l.add(12, 9, stacked("Pending replicas by unit",
		"Placed pods not yet running. Pending on an on-prem unit past the policy's grace gets the pod re-placed; pending on the elastic unit means the node autoscaler is adding (or cannot add) a node.",
		"short", target(inPhase("Pending"), unitLegend)))
	l.add(8, 8, timeseriesPanel("Placements per minute by unit", "Pods the webhook admitted, by the unit it chose (none: outside every unit, prefer strategy).", "short",
		target(fmt.Sprintf(`sum by (%s) (rate(%s{%s}[$__rate_interval])) * 60 or %s`, byUnit, mn.PlacementPods, policySel, zeroPer(byUnit)), unitLegend)))
	l.add(8, 8, timeseriesPanel("Re-placements and refusals per minute",
		"Re-placed: pods deleted after staying unschedulable on their unit past the grace, so their replacement goes further down the list. Refused: required-strategy pods refused because every unit was at its max.",
		"short",
		target(fmt.Sprintf(`sum by (%s) (rate(%s{%s}[$__rate_interval])) * 60 or %s`, byUnit, mn.PlacementReplacements, policySel, zeroPer(byUnit)), "re-placed from {{unit}} ({{namespace}}/{{policy}})"),
		target(fmt.Sprintf(`sum by (%s) (rate(%s{%s}[$__rate_interval])) * 60 or %s`, byPolicy, mn.PlacementDenied, policySel, zeroPer(byPolicy)), "refused ({{namespace}}/{{policy}})")))
	l.add(8, 8, timeseriesPanel("Pods that bypassed the webhook",
		"Selected pods created while no controller replica answered the webhook (failurePolicy Ignore): in no unit by design. See the controller's availability.",
		"short",
		target(fmt.Sprintf(`max by (%s) (%s{%s})`, byPolicy, mn.PlacementUnplacedPods, policySel), "{{namespace}}/{{policy}}")))

	// Autoscaling: the HPA each InferenceScaler owns, as spillway-controller
	// reads it (fleetmetrics); the HPA bears the scaler's name.
	l.row("Autoscaling")
	scalerSel := fmt.Sprintf(`{%s=~"$namespace", %s=~"$inferencescaler"}`, mn.LabelNamespace, mn.LabelInferenceScaler)
	byScaler := fmt.Sprintf("%s, %s", mn.LabelNamespace, mn.LabelInferenceScaler)
	scalerGauge := func(name string) string { return fmt.Sprintf(`max by (%s) (%s%s)`, byScaler, name, scalerSel) }
	l.add(16, 9, timeseriesPanel("HPA desired vs current replicas",
		"The HPA each InferenceScaler owns: desired replicas (what the HPA computed from spillway's metric) against current replicas, with the max as the ceiling.",
		"short",
		target(scalerGauge(mn.InferenceScalerHPADesiredReplicas), "{{namespace}}/{{inferencescaler}} desired"),
		target(scalerGauge(mn.InferenceScalerHPACurrentReplicas), "{{namespace}}/{{inferencescaler}} current"),
		target(scalerGauge(mn.InferenceScalerHPAMaxReplicas), "{{namespace}}/{{inferencescaler}} max")))
	l.add(8, 9, statPanel("HPAs at their max", "HPAs whose current replicas reached spec.maxReplicas: demand beyond what they may scale to.", "short",
		target(fmt.Sprintf(`count(%s >= on (%s) %s) or vector(0)`, scalerGauge(mn.InferenceScalerHPACurrentReplicas), byScaler, scalerGauge(mn.InferenceScalerHPAMaxReplicas)), ""),
		step("green", nil), step("orange", ptr.To(1.0))))
	byMetric := fmt.Sprintf("%s, %s, %s", byScaler, mn.LabelMetricName, mn.LabelMetricTargetType)
	l.add(24, 8, timeseriesPanel("HPA metric: current vs target",
		fmt.Sprintf("The value each owned HPA last read for each of its metrics (%s or the model servers' queue, per pod or external, from spillway's metrics API) and its target.", mn.ProcessSMUtil),
		"short",
		target(fmt.Sprintf(`max by (%s) (%s%s)`, byMetric, mn.InferenceScalerHPAMetricValue, scalerSel), "{{namespace}}/{{inferencescaler}} {{metric_name}} current ({{metric_target_type}})"),
		target(fmt.Sprintf(`max by (%s) (%s%s)`, byMetric, mn.InferenceScalerHPAMetricTarget, scalerSel), "{{namespace}}/{{inferencescaler}} {{metric_name}} target ({{metric_target_type}})")))

	vars := []cog.Builder[dashboard.VariableModel]{
		queryVar("namespace", "Namespace", fmt.Sprintf("label_values(%s, %s)", mn.ProcessSMUtil, mn.LabelACKNamespace), "Workload namespace."),
		queryVar("node", "Node", fmt.Sprintf(`label_values(%s{%s=~"$namespace"}, %s)`, mn.ProcessSMUtil, mn.LabelACKNamespace, mn.LabelHostname), "GPU node (the exporter's Hostname label)."),
		queryVar("policy", "ResourcePolicy", fmt.Sprintf(`label_values(%s{%s=~"$namespace"}, %s)`, mn.ResourcePolicyUnitPods, mn.LabelNamespace, mn.LabelPolicy), "ResourcePolicy."),
		queryVar("inferencescaler", "InferenceScaler", fmt.Sprintf(`label_values(%s{%s=~"$namespace"}, %s)`, mn.InferenceScalerHPAMaxReplicas, mn.LabelNamespace, mn.LabelInferenceScaler), "InferenceScaler (its HPA bears its name)."),
	}
	return newDashboard("spillway-fleet", "Spillway / GPU fleet",
		"GPU utilization by pod, GPU and node; replicas by placement unit; HPA decisions.", vars, l)
}

// Components is the on-call view of spillway itself: is the data fresh, how
// fast is the adapter, are the exporters collecting, is the webhook healthy.
func Components() (Dashboard, error) {
	l := &layout{}
	l.row("Metrics adapter: freshness and latency")
	l.add(8, 8, timeseriesPanel("Snapshot age",
		"Age of the data each adapter replica serves. Past --max-staleness (default 30s) the adapter answers every request with an error and the HPAs hold their scale.",
		"s",
		target(fmt.Sprintf(`max by (instance) (%s{job=~"$adapter_job"})`, mn.AdapterSnapshotAge), "{{instance}}")))
	l.add(8, 8, timeseriesPanel("Refresh duration (p50, p99) and errors",
		"The one Prometheus query per --refresh-interval that fills the snapshot.",
		"s",
		target(fmt.Sprintf(`histogram_quantile(0.5, sum by (le) (rate(%s_bucket{job=~"$adapter_job"}[$__rate_interval])))`, mn.AdapterRefreshDuration), "p50"),
		target(fmt.Sprintf(`histogram_quantile(0.99, sum by (le) (rate(%s_bucket{job=~"$adapter_job"}[$__rate_interval])))`, mn.AdapterRefreshDuration), "p99"),
		target(fmt.Sprintf(`sum by (instance) (rate(%s{job=~"$adapter_job"}[$__rate_interval]))`, mn.AdapterRefreshErrors), "errors/s {{instance}}")))
	l.add(8, 8, timeseriesPanel("Snapshot contents",
		"Pods with a value and per-process series in the current snapshot, and series skipped by reason.",
		"short",
		target(fmt.Sprintf(`max by (instance) (%s{job=~"$adapter_job"})`, mn.AdapterSnapshotPods), "pods {{instance}}"),
		target(fmt.Sprintf(`max by (instance) (%s{job=~"$adapter_job"})`, mn.AdapterSnapshotSeries), "series {{instance}}"),
		target(fmt.Sprintf(`sum by (reason) (%s{job=~"$adapter_job"})`, mn.AdapterSnapshotSkippedSeries), "skipped: {{reason}}")))
	l.add(12, 8, timeseriesPanel("Request latency by API (p50, p99)",
		"Time in the provider per metrics request (custom or external API), answered from memory.",
		"s",
		target(fmt.Sprintf(`histogram_quantile(0.5, sum by (le, api) (rate(%s_bucket{job=~"$adapter_job"}[$__rate_interval])))`, mn.AdapterRequestDuration), "p50 {{api}}"),
		target(fmt.Sprintf(`histogram_quantile(0.99, sum by (le, api) (rate(%s_bucket{job=~"$adapter_job"}[$__rate_interval])))`, mn.AdapterRequestDuration), "p99 {{api}}")))
	l.add(12, 8, timeseriesPanel("Requests by API and outcome",
		"OK, or the Kubernetes status reason of the error (NotFound: no selected pod has a fresh value).",
		"reqps",
		target(fmt.Sprintf(`sum by (api, outcome) (rate(%s{job=~"$adapter_job"}[$__rate_interval]))`, mn.AdapterRequests), "{{api}} {{outcome}}")))

	l.row("GPU exporter: collection health")
	l.add(6, 4, statPanel("Exporters reporting", "Exporter targets with a successful collection.", "short",
		target(fmt.Sprintf(`count(%s{job=~"$exporter_job"})`, mn.ExporterDevices), "")))
	l.add(6, 4, statPanel("GPUs seen", "Devices in the exporters' last collections.", "short",
		target(fmt.Sprintf(`sum(%s{job=~"$exporter_job"})`, mn.ExporterDevices), "")))
	l.add(6, 4, statPanel("Oldest collection", "Age of the oldest last successful collection across exporters.", "s",
		target(fmt.Sprintf(`max(%s{job=~"$exporter_job"})`, mn.ExporterLastSuccessAge), ""),
		step("green", nil), step("orange", ptr.To(15.0)), step("red", ptr.To(60.0))))
	l.add(6, 4, statPanel("Processes not mapped to a pod", "GPU processes of the last collections that no pod owns (host daemons, pods not yet in the watch, unreadable /proc).", "short",
		target(fmt.Sprintf(`sum(%s{job=~"$exporter_job"})`, mn.ExporterProcessesUnmapped), "")))
	l.add(8, 8, timeseriesPanel("Collections by result", "Background collections per second, successful and failed.", "ops",
		target(fmt.Sprintf(`sum by (%s) (rate(%s{job=~"$exporter_job"}[$__rate_interval]))`, mn.LabelExporterResult, mn.ExporterCollections), "{{result}}")))
	l.add(8, 8, timeseriesPanel("Collection duration (p99) by exporter", "One NVML sample of every GPU plus the PID-to-pod mapping.", "s",
		target(fmt.Sprintf(`histogram_quantile(0.99, sum by (le, instance) (rate(%s_bucket{job=~"$exporter_job"}[$__rate_interval])))`, mn.ExporterCollectionDuration), "{{instance}}")))
	l.add(8, 8, timeseriesPanel("Last successful collection age", "Per exporter. Series drop, and /healthz fails, past three collection intervals.", "s",
		target(fmt.Sprintf(`max by (instance) (%s{job=~"$exporter_job"})`, mn.ExporterLastSuccessAge), "{{instance}}")))
	l.add(8, 8, timeseriesPanel("GPU processes: mapped vs not", "Processes of the last collections: mapped to a pod, and not mapped by reason.", "short",
		target(fmt.Sprintf(`sum(%s{job=~"$exporter_job"})`, mn.ExporterProcessesMapped), "mapped"),
		target(fmt.Sprintf(`sum by (%s) (%s{job=~"$exporter_job"})`, mn.LabelExporterReason, mn.ExporterProcessesUnmapped), "not mapped: {{reason}}")))
	l.add(8, 8, timeseriesPanel("NVML errors by operation", "Failed NVML calls per second by operation and return code.", "ops",
		target(fmt.Sprintf(`sum by (%s, %s) (rate(%s{job=~"$exporter_job"}[$__rate_interval]))`, mn.LabelExporterOperation, mn.LabelExporterReturnCode, mn.ExporterNVMLErrors), "{{operation}}: {{return_code}}")))
	l.add(8, 8, timeseriesPanel("Memory-only GPUs", "GPUs whose processes report memory but no utilization (MIG, or per-process utilization not supported): invisible to utilization HPAs.", "short",
		target(fmt.Sprintf(`sum by (%s) (%s{job=~"$exporter_job"})`, mn.LabelExporterReason, mn.ExporterMemoryOnlyDevices), "{{reason}}")))

	l.row("Controller: webhook and reconcilers")
	l.add(8, 8, timeseriesPanel("Placement webhook latency (p50, p99)", "Time to answer one pod admission. The API server gives up after the webhook's timeoutSeconds (5s) and admits the pod unplaced.", "s",
		target(fmt.Sprintf(`histogram_quantile(0.5, sum by (le) (rate(%s_bucket[$__rate_interval])))`, mn.PlacementWebhookDuration), "p50"),
		target(fmt.Sprintf(`histogram_quantile(0.99, sum by (le) (rate(%s_bucket[$__rate_interval])))`, mn.PlacementWebhookDuration), "p99")))
	l.add(8, 8, timeseriesPanel("Webhook errors by reason", "Admissions answered without a placement because something failed.", "ops",
		target(fmt.Sprintf(`sum by (reason) (rate(%s[$__rate_interval]))`, mn.PlacementWebhookErrors), "{{reason}}")))
	l.add(8, 8, timeseriesPanel("Deletion-cost patches by result", "pod-deletion-cost annotations written so scale-in removes elastic pods first.", "ops",
		// Labelled by namespace and policy too, so nothing can export it at
		// 0 beforehand: no series means no patch, shown as ok at 0.
		target(fmt.Sprintf(`sum by (%[1]s) (rate(%[2]s[$__rate_interval])) or label_replace(vector(0), "%[1]s", "ok", "", "")`, mn.LabelResult, mn.DeletionCostPatches), "{{result}}")))
	l.add(12, 8, timeseriesPanel("InferenceScaler reconciles by result", "", "ops",
		target(fmt.Sprintf(`sum by (%s) (rate(%s[$__rate_interval]))`, mn.LabelResult, mn.InferenceScalerReconciles), "{{result}}")))
	// Counted per scaler, so exported only after a first activation; every
	// existing scaler (its HPA's gauges) stands at 0 until then.
	byScaler := fmt.Sprintf("%s, %s", mn.LabelNamespace, mn.LabelInferenceScaler)
	zeroPerScaler := fmt.Sprintf(`0 * max by (%s) (%s)`, byScaler, mn.InferenceScalerHPAMaxReplicas)
	l.add(12, 8, timeseriesPanel("InferenceScaler schedule and fallback activations", "Schedule windows opening and fallback floors applied, per hour.", "short",
		target(fmt.Sprintf(`sum by (%s, %s) (increase(%s[1h])) or on (%s) %s`, byScaler, mn.LabelSchedule, mn.InferenceScalerScheduleActivations, byScaler, zeroPerScaler), "schedule {{schedule}} ({{namespace}}/{{inferencescaler}})"),
		target(fmt.Sprintf(`sum by (%s) (increase(%s[1h])) or %s`, byScaler, mn.InferenceScalerFallbackActivations, zeroPerScaler), "fallback ({{namespace}}/{{inferencescaler}})")))

	vars := []cog.Builder[dashboard.VariableModel]{
		queryVar("adapter_job", "Adapter job", fmt.Sprintf(`label_values(%s, job)`, mn.AdapterSnapshotAge), "Scrape job(s) of spillway-metrics-adapter."),
		queryVar("exporter_job", "Exporter job", fmt.Sprintf("label_values(%s, job)", mn.ExporterDevices), "Scrape job(s) of spillway-gpu-exporter."),
	}
	return newDashboard("spillway-components", "Spillway / Components",
		"Health of spillway itself: adapter freshness and latency, exporter collections, placement webhook and controllers.", vars, l)
}

// ExpectedEmpty names, by panel title, the panels whose queries may
// legitimately return nothing on a cluster running spillway and Prometheus
// only (the demo, the e2e test), and why. Every other query returns data
// there: counters with a known, finite label set are exported at 0 by the
// component that owns them, and per-object counters fall back to 0 per
// existing object (see the queries).
var ExpectedEmpty = map[string]string{
	"NVML errors by operation": "NVML only: the simulated GPU backend makes no NVML calls, and with NVML a series appears at the first failed call (its operation and return code are not known before).",
}

// OutputDirs are where the rendered dashboards live, relative to the
// repository root: file provisioning, and the chart's copy for the sidecar.
var OutputDirs = []string{"grafana/dashboards", "deploy/helm/spillway/dashboards"}
