// Package metricnames is the single source of every metric and label name
// spillway exports or reads. The exporter renders them, the adapter queries
// them and the dashboard test checks panels against them, so a rename is one
// edit here. The DCGM_CUSTOM_* names and the CamelCase labels are the ones
// Alibaba ACK uses, kept so dashboards and HPAs written for ACK keep working.
package metricnames

// Per-process GPU metrics exported by spillway-gpu-exporter.
const (
	ProcessSMUtil      = "DCGM_CUSTOM_PROCESS_SM_UTIL"
	ProcessMemUsed     = "DCGM_CUSTOM_PROCESS_MEM_USED"
	ProcessEncUtil     = "DCGM_CUSTOM_PROCESS_ENC_UTIL"
	ProcessDecUtil     = "DCGM_CUSTOM_PROCESS_DEC_UTIL"
	ProcessMemCopyUtil = "DCGM_CUSTOM_PROCESS_MEM_COPY_UTIL"
)

// ProcessMetrics lists the per-process metrics in a fixed order; the adapter
// serves exactly these (discovery never relists series).
var ProcessMetrics = []string{ProcessSMUtil, ProcessMemUsed, ProcessEncUtil, ProcessDecUtil, ProcessMemCopyUtil}

// Model-server gauges the adapter serves by default, as the servers name
// them (vLLM, SGLang and Hugging Face TGI). vLLM's cache usage is a
// fraction in [0, 1] despite its name; gpu_cache_usage_perc is the name
// older vLLM releases gave it.
const (
	VLLMRequestsWaiting   = "vllm:num_requests_waiting"
	VLLMRequestsRunning   = "vllm:num_requests_running"
	VLLMKVCacheUsage      = "vllm:kv_cache_usage_perc"
	VLLMGPUCacheUsage     = "vllm:gpu_cache_usage_perc"
	SGLangQueueRequests   = "sglang:num_queue_reqs"
	SGLangRunningRequests = "sglang:num_running_reqs"
	TGIQueueSize          = "tgi_queue_size"
	TGIBatchCurrentSize   = "tgi_batch_current_size"
)

// LabelInstance is the target address Prometheus adds to every series it
// scrapes (host:port); for a pod target, the pod's IP.
const LabelInstance = "instance"

// Labels on every per-process series.
const (
	LabelHostname  = "Hostname"
	LabelGPU       = "gpu"
	LabelUUID      = "UUID"
	LabelModelName = "modelName"
	LabelNamespace = "namespace"
	LabelPod       = "pod"
	LabelContainer = "container"
	LabelPID       = "pid"
	// ACK spellings, carrying the same values as namespace/pod/container.
	LabelACKNamespace = "NamespaceName"
	LabelACKPod       = "PodName"
	LabelACKContainer = "ContainerName"
)

// ProcessLabels is the label order of every per-process series.
var ProcessLabels = []string{
	LabelHostname, LabelGPU, LabelUUID, LabelModelName,
	LabelNamespace, LabelPod, LabelContainer, LabelPID,
	LabelACKNamespace, LabelACKPod, LabelACKContainer,
}

// InferenceScaler controller metrics (spillway-controller).
const (
	// InferenceScalerReconciles counts reconciles by LabelResult.
	InferenceScalerReconciles = "spillway_inferencescaler_reconciles_total"
	// InferenceScalerScheduleActivations counts schedule windows opening,
	// by LabelNamespace, LabelInferenceScaler and LabelSchedule.
	InferenceScalerScheduleActivations = "spillway_inferencescaler_schedule_activations_total"
	// InferenceScalerFallbackActivations counts fallback floors applied,
	// by LabelNamespace and LabelInferenceScaler.
	InferenceScalerFallbackActivations = "spillway_inferencescaler_fallback_activations_total"

	LabelResult          = "result"
	LabelInferenceScaler = "inferencescaler"
	LabelSchedule        = "schedule"
)

// ---------------------------------------------------------------------------
// spillway-gpu-exporter self-metrics: the exporter's own health. Nothing
// outside the exporter, its docs and dashboards reads these.
// ---------------------------------------------------------------------------

// Exporter self-metric names.
const (
	// ExporterCollectionDuration is a histogram of background collection
	// time, by backend.
	ExporterCollectionDuration = "spillway_gpu_exporter_collection_duration_seconds"
	// ExporterCollections counts collections by backend and result
	// (success or failure).
	ExporterCollections = "spillway_gpu_exporter_collections_total"
	// ExporterLastSuccessAge is the age of the last successful collection;
	// absent until the first one.
	ExporterLastSuccessAge = "spillway_gpu_exporter_last_success_age_seconds"
	// ExporterDevices counts the devices of the last collection.
	ExporterDevices = "spillway_gpu_exporter_devices"
	// ExporterMemoryOnlyDevices counts devices that report per-process
	// memory but no utilization, by reason (mig, not_supported).
	ExporterMemoryOnlyDevices = "spillway_gpu_exporter_memory_only_devices"
	// ExporterProcessesSeen, ...Mapped and ...Unmapped count the processes
	// of the last collection: all of them, those mapped to a pod, and those
	// not mapped, by reason (host, unknown_pod, proc_unreadable).
	ExporterProcessesSeen     = "spillway_gpu_exporter_processes_seen"
	ExporterProcessesMapped   = "spillway_gpu_exporter_processes_mapped"
	ExporterProcessesUnmapped = "spillway_gpu_exporter_processes_unmapped"
	// ExporterNVMLErrors counts failed NVML calls by operation and return
	// code.
	ExporterNVMLErrors = "spillway_gpu_exporter_nvml_errors_total"
)

// Exporter self-metric labels.
const (
	LabelExporterBackend    = "backend"
	LabelExporterResult     = "result"
	LabelExporterReason     = "reason"
	LabelExporterOperation  = "operation"
	LabelExporterReturnCode = "return_code"
)

// ---------------------------------------------------------------------------
// spillway-metrics-adapter self-metrics (added for the dashboards and alerts
// of issue 8; pkg/provider registers these names). The adapter's own health:
// snapshot freshness, refresh cost, request latency and outcomes.
// ---------------------------------------------------------------------------

// Adapter self-metric names.
const (
	// AdapterRefreshDuration is a histogram of the time to query Prometheus
	// and build a snapshot, failed refreshes included.
	AdapterRefreshDuration = "spillway_metrics_adapter_refresh_duration_seconds"
	// AdapterRefreshErrors counts failed refreshes, by LabelAdapterReason
	// (the RefreshFailed* values).
	AdapterRefreshErrors = "spillway_metrics_adapter_refresh_errors_total"
	// AdapterPartialDataRefusals counts requests refused because fewer than
	// the minimum share of the selected pods that should report had data.
	AdapterPartialDataRefusals = "spillway_metrics_adapter_partial_data_refusals_total"
	// AdapterSnapshotSeries and AdapterSnapshotPods size the current
	// snapshot: per-process series read, pods with a value.
	AdapterSnapshotSeries = "spillway_metrics_adapter_snapshot_series"
	AdapterSnapshotPods   = "spillway_metrics_adapter_snapshot_pods"
	// AdapterSnapshotSkippedSeries counts series of the last refresh not
	// used, by LabelAdapterReason.
	AdapterSnapshotSkippedSeries = "spillway_metrics_adapter_snapshot_skipped_series"
	// AdapterSnapshotAge is the age of the served snapshot (time since start
	// while none was loaded).
	AdapterSnapshotAge = "spillway_metrics_adapter_snapshot_age_seconds"
	// AdapterRequests counts metric requests by LabelAdapterAPI and
	// LabelAdapterOutcome.
	AdapterRequests = "spillway_metrics_adapter_requests_total"
	// AdapterRequestDuration is a histogram of the time in the provider per
	// request, by LabelAdapterAPI.
	AdapterRequestDuration = "spillway_metrics_adapter_request_duration_seconds"
	// AdapterSeriesRejected counts series that matched the series selector
	// but were dropped because their provenance did not check out, by
	// LabelAdapterReason (the Rejected* values), once per refresh that read
	// them.
	AdapterSeriesRejected = "spillway_metrics_adapter_series_rejected_total"
)

// Reasons of AdapterSeriesRejected.
const (
	// RejectedMissingHostname: the series has no Hostname label.
	RejectedMissingHostname = "missing_hostname"
	// RejectedUnknownPod: no pod of that namespace and name is known (yet,
	// or any more).
	RejectedUnknownPod = "unknown_pod"
	// RejectedUnscheduledPod: the pod is not bound to a node, so no
	// exporter can have seen it run.
	RejectedUnscheduledPod = "unscheduled_pod"
	// RejectedHostnameMismatch: Hostname is not the node the pod is bound
	// to.
	RejectedHostnameMismatch = "hostname_mismatch"
	// RejectedMissingInstance: a pod's own series has no instance label.
	RejectedMissingInstance = "missing_instance"
	// RejectedNoPodIP: the pod has no IP yet, so no scrape of it can be
	// told apart from a forgery.
	RejectedNoPodIP = "no_pod_ip"
	// RejectedInstanceMismatch: the instance's host is not the pod's IP:
	// another target speaks for the pod.
	RejectedInstanceMismatch = "instance_mismatch"
)

// RejectedReasons lists every AdapterSeriesRejected reason.
var RejectedReasons = []string{RejectedMissingHostname, RejectedUnknownPod, RejectedUnscheduledPod, RejectedHostnameMismatch,
	RejectedMissingInstance, RejectedNoPodIP, RejectedInstanceMismatch}

// Reasons of AdapterRefreshErrors.
const (
	// RefreshFailedQuery: the query failed (Prometheus unreachable, an HTTP
	// or API error, a timeout, an answer that is not a vector).
	RefreshFailedQuery = "query"
	// RefreshFailedPartialResponse: Prometheus answered with warnings, e.g.
	// Thanos Query when a store or shard did not respond; the answer may
	// lack series and is not used.
	RefreshFailedPartialResponse = "partial_response"
	// RefreshFailedCredentials: a credential file of the adapter's
	// Prometheus client (bearer token, CA, client certificate, header file)
	// could not be read or used; nothing was sent.
	RefreshFailedCredentials = "credentials"
)

// RefreshFailureReasons lists every AdapterRefreshErrors reason.
var RefreshFailureReasons = []string{RefreshFailedQuery, RefreshFailedPartialResponse, RefreshFailedCredentials}

// ExporterJob is the scrape job the chart's ServiceMonitor/PodMonitor (for a
// release named spillway) and docs/install.md's scrape config give the
// exporter; the adapter's default --series-selector is
// LabelJob="ExporterJob".
const (
	ExporterJob = "spillway-gpu-exporter"
	LabelJob    = "job"
)

// Adapter self-metric labels.
const (
	LabelAdapterAPI     = "api"     // custom or external
	LabelAdapterOutcome = "outcome" // OK or the Kubernetes status reason
	LabelAdapterReason  = "reason"
)
