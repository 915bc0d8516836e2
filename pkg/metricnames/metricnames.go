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
