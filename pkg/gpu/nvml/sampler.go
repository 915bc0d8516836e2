//go:build cgo

package nvml

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/spillway-dev/spillway/pkg/gpu"
)

// DefaultLibrary is the soname the driver installs; go-nvml dlopens it at Init.
const DefaultLibrary = "libnvidia-ml.so.1"

// Library is the part of go-nvml's Interface the sampler uses. go-nvml's
// real library and its mock (pkg/nvml/mock, mock/dgxh100) both satisfy it.
type Library interface {
	Init() gonvml.Return
	Shutdown() gonvml.Return
	DeviceGetCount() (int, gonvml.Return)
	DeviceGetHandleByIndex(index int) (gonvml.Device, gonvml.Return)
}

// ErrLibraryNotFound is wrapped by Start when libnvidia-ml cannot be loaded.
var ErrLibraryNotFound = errors.New("NVML library not found")

// Sampler reads devices and per-process utilization from NVML.
type Sampler struct {
	lib     Library
	libName string

	initialized bool
	// needInit is set when a call reports a lost or reset GPU: handles are
	// then invalid, so the next Sample shuts NVML down and starts over.
	needInit bool
	devices  []device
	// lastSeen is the newest process-utilization timestamp per GPU UUID.
	// Keyed by UUID rather than handle so it survives re-initialization
	// (the timestamps are host CPU time, valid across a reset).
	lastSeen map[string]uint64
}

type device struct {
	handle gonvml.Device
	index  int
	uuid   string
	model  string
}

// New returns a sampler over lib; libName only names the library in errors.
// Call Start before Sample.
func New(lib Library, libName string) *Sampler {
	return &Sampler{lib: lib, libName: libName, lastSeen: map[string]uint64{}}
}

// NewSystem returns a sampler over the driver's libnvidia-ml at path (empty
// means DefaultLibrary, resolved by the dynamic loader).
func NewSystem(path string) *Sampler {
	if path == "" {
		path = DefaultLibrary
	}
	return New(gonvml.New(gonvml.WithLibraryPath(path)), path)
}

// Start initializes NVML and lists the devices. A missing library or driver
// is one error that names it, so a misconfigured DaemonSet fails at startup
// with a message an operator can act on.
func (s *Sampler) Start() error {
	return s.init()
}

// Close shuts NVML down.
func (s *Sampler) Close() error {
	if !s.initialized {
		return nil
	}
	s.initialized = false
	if ret := s.lib.Shutdown(); ret != gonvml.SUCCESS {
		return fmt.Errorf("nvml Shutdown: %s", CodeName(ret))
	}
	return nil
}

func (s *Sampler) init() error {
	if s.initialized {
		// A lost GPU leaves NVML half-usable; a clean Shutdown/Init pair
		// is the documented way back. Its result does not matter: Init
		// below reports whether we recovered.
		_ = s.lib.Shutdown()
		s.initialized = false
	}
	s.devices = nil
	// Stays set until enumeration completes, so a half-finished init is
	// retried rather than sampled.
	s.needInit = true
	switch ret := s.lib.Init(); ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		return fmt.Errorf("%w: cannot load %s; install the NVIDIA driver on the node and make its libraries visible to the exporter (the NVIDIA container toolkit does this for pods that request it)", ErrLibraryNotFound, s.libName)
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return fmt.Errorf("nvml Init: the NVIDIA kernel driver is not loaded (%s)", CodeName(ret))
	default:
		return fmt.Errorf("nvml Init: %s", CodeName(ret))
	}
	s.initialized = true
	n, ret := s.lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return fmt.Errorf("nvml DeviceGetCount: %s", CodeName(ret))
	}
	devices := make([]device, 0, n)
	for i := range n {
		h, ret := s.lib.DeviceGetHandleByIndex(i)
		if ret != gonvml.SUCCESS {
			return fmt.Errorf("nvml DeviceGetHandleByIndex(%d): %s", i, CodeName(ret))
		}
		uuid, ret := h.GetUUID()
		if ret != gonvml.SUCCESS {
			return fmt.Errorf("nvml GetUUID(device %d): %s", i, CodeName(ret))
		}
		name, ret := h.GetName()
		if ret != gonvml.SUCCESS {
			return fmt.Errorf("nvml GetName(device %d): %s", i, CodeName(ret))
		}
		devices = append(devices, device{handle: h, index: i, uuid: uuid, model: name})
	}
	s.devices = devices
	s.needInit = false
	return nil
}

// Sample reads every device. A device that fails is left out of the sample
// (its series vanish rather than read 0) and its failure is listed in
// Sample.Errors; a lost GPU schedules re-initialization for the next call.
func (s *Sampler) Sample(ctx context.Context) (gpu.Sample, error) {
	var out gpu.Sample
	if !s.initialized || s.needInit {
		if err := s.init(); err != nil {
			out.Errors = append(out.Errors, gpu.Error{Device: -1, Op: "Init", Code: "REINIT_FAILED"})
			return out, fmt.Errorf("re-initializing NVML: %w", err)
		}
	}
	for i := range s.devices {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		s.sampleDevice(&s.devices[i], &out)
	}
	return out, nil
}

// sampleDevice appends one device and its processes to out.
func (s *Sampler) sampleDevice(d *device, out *gpu.Sample) {
	devIdx := len(out.Devices)
	info := gpu.Device{Index: d.index, UUID: d.uuid, Model: d.model}
	fail := func(op string, ret gonvml.Return) {
		out.Errors = append(out.Errors, gpu.Error{Device: devIdx, Op: op, Code: CodeName(ret)})
		if lost(ret) {
			s.needInit = true
		}
	}

	mode, _, ret := d.handle.GetMigMode()
	switch ret {
	case gonvml.SUCCESS:
		info.MIG = mode == gonvml.DEVICE_MIG_ENABLE
	case gonvml.ERROR_NOT_SUPPORTED:
		// GPUs without MIG support: not an error.
	default:
		fail("GetMigMode", ret)
		if lost(ret) {
			return
		}
	}

	running, ret := d.handle.GetComputeRunningProcesses()
	if ret != gonvml.SUCCESS {
		fail("GetComputeRunningProcesses", ret)
		if lost(ret) {
			return
		}
		running = nil
	}

	var utils map[uint32]utilSum
	utilValid := false
	if !info.MIG {
		samples, ret := d.handle.GetProcessUtilization(s.lastSeen[d.uuid])
		switch ret {
		case gonvml.SUCCESS:
			utilValid = true
			utils = make(map[uint32]utilSum, len(samples))
			last := s.lastSeen[d.uuid]
			for _, smp := range samples {
				u := utils[smp.Pid]
				u.add(smp)
				utils[smp.Pid] = u
				last = max(last, smp.TimeStamp)
			}
			s.lastSeen[d.uuid] = last
		case gonvml.ERROR_NOT_FOUND:
			// No sample newer than lastSeen: every listed process was idle
			// over the interval. They report 0 rather than vanish.
			utilValid = true
		case gonvml.ERROR_NOT_SUPPORTED:
			info.UtilUnsupported = true
		default:
			fail("GetProcessUtilization", ret)
			if lost(ret) {
				return
			}
		}
	}

	out.Devices = append(out.Devices, info)
	start := len(out.Processes)
	// A PID can be listed more than once: once per MIG instance it uses.
	// Its memory is the sum; one series per PID and GPU is exported.
	pos := make(map[uint32]int, len(running))
	for _, p := range running {
		i, seen := pos[p.Pid]
		if !seen {
			i = len(out.Processes)
			pos[p.Pid] = i
			proc := gpu.Process{PID: p.Pid, Device: devIdx, UtilValid: utilValid}
			if u, ok := utils[p.Pid]; ok {
				u.fill(&proc)
			}
			out.Processes = append(out.Processes, proc)
		}
		if p.UsedGpuMemory != notAvailable {
			out.Processes[i].MemValid = true
			out.Processes[i].MemUsedMiB += float64(p.UsedGpuMemory) / (1 << 20)
		}
	}
	// A process can show up in the utilization buffer after it left the
	// running list (it exited mid-interval): keep its utilization, with no
	// memory figure.
	for pid, u := range utils {
		if _, ok := pos[pid]; ok {
			continue
		}
		proc := gpu.Process{PID: pid, Device: devIdx, UtilValid: true}
		u.fill(&proc)
		out.Processes = append(out.Processes, proc)
	}
	slices.SortFunc(out.Processes[start:], func(a, b gpu.Process) int { return cmp.Compare(a.PID, b.PID) })
}

// notAvailable is NVML_VALUE_NOT_AVAILABLE as an unsigned long long, what
// the driver writes for memory it cannot attribute (no permission, WDDM).
const notAvailable = ^uint64(0)

// utilSum averages the samples the driver returned for one PID since the
// last collection. The driver normally returns one per process, but its
// buffer can hold several when the interval spans more than one of its
// sampling periods.
type utilSum struct {
	n                 uint32
	sm, mem, enc, dec uint64
}

func (u *utilSum) add(s gonvml.ProcessUtilizationSample) {
	u.n++
	u.sm += uint64(min(s.SmUtil, 100))
	u.mem += uint64(min(s.MemUtil, 100))
	u.enc += uint64(min(s.EncUtil, 100))
	u.dec += uint64(min(s.DecUtil, 100))
}

func (u utilSum) fill(p *gpu.Process) {
	if u.n == 0 {
		return
	}
	n := float64(u.n)
	p.SMUtil = float64(u.sm) / n
	p.MemCopyUtil = float64(u.mem) / n
	p.EncUtil = float64(u.enc) / n
	p.DecUtil = float64(u.dec) / n
}

// lost reports return codes after which the device handles are no longer
// trustworthy and NVML must be re-initialized.
func lost(ret gonvml.Return) bool {
	switch ret {
	case gonvml.ERROR_GPU_IS_LOST, gonvml.ERROR_RESET_REQUIRED, gonvml.ERROR_UNINITIALIZED, gonvml.ERROR_DRIVER_NOT_LOADED:
		return true
	}
	return false
}

// CodeName is a stable name for an NVML return code, used as a metric label.
// go-nvml's Return.Error switches to the driver's prose messages once the
// library is loaded, which would change label values at runtime.
func CodeName(ret gonvml.Return) string {
	switch ret {
	case gonvml.SUCCESS:
		return "SUCCESS"
	case gonvml.ERROR_UNINITIALIZED:
		return "ERROR_UNINITIALIZED"
	case gonvml.ERROR_INVALID_ARGUMENT:
		return "ERROR_INVALID_ARGUMENT"
	case gonvml.ERROR_NOT_SUPPORTED:
		return "ERROR_NOT_SUPPORTED"
	case gonvml.ERROR_NO_PERMISSION:
		return "ERROR_NO_PERMISSION"
	case gonvml.ERROR_ALREADY_INITIALIZED:
		return "ERROR_ALREADY_INITIALIZED"
	case gonvml.ERROR_NOT_FOUND:
		return "ERROR_NOT_FOUND"
	case gonvml.ERROR_INSUFFICIENT_SIZE:
		return "ERROR_INSUFFICIENT_SIZE"
	case gonvml.ERROR_INSUFFICIENT_POWER:
		return "ERROR_INSUFFICIENT_POWER"
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return "ERROR_DRIVER_NOT_LOADED"
	case gonvml.ERROR_TIMEOUT:
		return "ERROR_TIMEOUT"
	case gonvml.ERROR_IRQ_ISSUE:
		return "ERROR_IRQ_ISSUE"
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		return "ERROR_LIBRARY_NOT_FOUND"
	case gonvml.ERROR_FUNCTION_NOT_FOUND:
		return "ERROR_FUNCTION_NOT_FOUND"
	case gonvml.ERROR_CORRUPTED_INFOROM:
		return "ERROR_CORRUPTED_INFOROM"
	case gonvml.ERROR_GPU_IS_LOST:
		return "ERROR_GPU_IS_LOST"
	case gonvml.ERROR_RESET_REQUIRED:
		return "ERROR_RESET_REQUIRED"
	case gonvml.ERROR_OPERATING_SYSTEM:
		return "ERROR_OPERATING_SYSTEM"
	case gonvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return "ERROR_LIB_RM_VERSION_MISMATCH"
	case gonvml.ERROR_IN_USE:
		return "ERROR_IN_USE"
	case gonvml.ERROR_MEMORY:
		return "ERROR_MEMORY"
	case gonvml.ERROR_NO_DATA:
		return "ERROR_NO_DATA"
	case gonvml.ERROR_INSUFFICIENT_RESOURCES:
		return "ERROR_INSUFFICIENT_RESOURCES"
	case gonvml.ERROR_ARGUMENT_VERSION_MISMATCH:
		return "ERROR_ARGUMENT_VERSION_MISMATCH"
	case gonvml.ERROR_NOT_READY:
		return "ERROR_NOT_READY"
	case gonvml.ERROR_GPU_NOT_FOUND:
		return "ERROR_GPU_NOT_FOUND"
	case gonvml.ERROR_INVALID_STATE:
		return "ERROR_INVALID_STATE"
	case gonvml.ERROR_UNKNOWN:
		return "ERROR_UNKNOWN"
	}
	return fmt.Sprintf("NVML_RETURN_%d", int32(ret))
}
