// Package gpu holds the device and process samples a GPU backend produces and
// the one small interface the exporter consumes. It knows nothing of NVML,
// Prometheus or Kubernetes, so both backends (NVML and the simulator) and the
// exporter can share it without pulling each other in.
package gpu

import "context"

// Sampler is one GPU backend. The exporter's background loop is its only
// caller, so implementations need not be safe for concurrent Sample calls.
type Sampler interface {
	// Sample reads every device and every process using one. An error means
	// nothing usable was read; a partial read (one device failing) is a
	// Sample with Errors instead, so the healthy devices keep reporting.
	Sample(ctx context.Context) (Sample, error)
}

// Sample is one collection across all devices.
type Sample struct {
	Devices   []Device
	Processes []Process
	// Errors lists the backend calls that failed in this collection, for the
	// exporter's error counters. Expected outcomes (no new utilization
	// samples, MIG not supported on a GPU) are not errors.
	Errors []Error
}

// Device is one physical GPU.
type Device struct {
	// Index is the backend's device index (nvidia-smi order for NVML).
	Index int
	UUID  string
	Model string
	// MIG is true when the GPU runs in MIG mode. The driver does not report
	// per-process utilization for MIG GPUs, so their processes carry memory
	// only.
	MIG bool
	// UtilUnsupported is true when a non-MIG GPU refused per-process
	// utilization (old architectures, some vGPU profiles).
	UtilUnsupported bool
	// Host is the node the device belongs to when a backend serves several
	// nodes (the simulator with all nodes); empty means this node.
	Host string
}

// Process is one process on one device.
type Process struct {
	PID uint32
	// Device indexes Sample.Devices (not Device.Index), so a sample that
	// spans several nodes stays unambiguous.
	Device int
	// UtilValid is false when the device cannot report utilization for the
	// process (MIG, unsupported); the util fields are then meaningless and
	// must not be exported.
	UtilValid bool
	// SMUtil, MemCopyUtil, EncUtil and DecUtil are percentages in [0, 100]
	// over the last collection interval.
	SMUtil      float64
	MemCopyUtil float64
	EncUtil     float64
	DecUtil     float64
	// MemValid is false when the driver did not report the process's memory
	// (no running-process entry, or "not available").
	MemValid   bool
	MemUsedMiB float64
	// Pod is set by backends that already know the owning pod (the
	// simulator). When nil, the exporter maps PID to pod through /proc.
	Pod *PodRef
}

// PodRef names the pod and container a process runs in.
type PodRef struct {
	UID       string
	Namespace string
	Name      string
	Container string
}

// Error is one failed backend call.
type Error struct {
	// Device indexes Sample.Devices, or is -1 for library-level calls.
	Device int
	// Op is the call that failed, e.g. "GetProcessUtilization".
	Op string
	// Code is the backend's stable name for the failure, e.g.
	// "ERROR_GPU_IS_LOST".
	Code string
}
