//go:build cgo

package nvml

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/spillway-dev/spillway/pkg/gpu"
)

// fakeGPU scripts one mock device: what it lists as running and what its
// utilization buffer returns, and records the lastSeen values it was asked for.
type fakeGPU struct {
	running    []gonvml.ProcessInfo
	runningRet gonvml.Return
	util       []gonvml.ProcessUtilizationSample
	utilRet    gonvml.Return
	lastSeen   []uint64
}

// newServer returns an 8 x H100 mock with fixed UUIDs and every device
// scripted by the returned fakes (all idle by default).
func newServer(t *testing.T) (*server.Server, []*fakeGPU) {
	t.Helper()
	srv := dgxh100.New()
	fakes := make([]*fakeGPU, len(srv.Devices))
	for i, d := range srv.Devices {
		sd := d.(*server.Device)
		sd.UUID = fmt.Sprintf("GPU-00000000-0000-0000-0000-00000000000%d", i)
		f := &fakeGPU{runningRet: gonvml.SUCCESS, utilRet: gonvml.ERROR_NOT_FOUND}
		fakes[i] = f
		sd.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
			return f.running, f.runningRet
		}
		sd.GetProcessUtilizationFunc = func(lastSeen uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
			f.lastSeen = append(f.lastSeen, lastSeen)
			return f.util, f.utilRet
		}
	}
	return srv, fakes
}

func started(t *testing.T, lib Library) *Sampler {
	t.Helper()
	s := New(lib, DefaultLibrary)
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s
}

func sample(t *testing.T, s *Sampler) gpu.Sample {
	t.Helper()
	out, err := s.Sample(context.Background())
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	return out
}

func procsOn(out gpu.Sample, uuid string) []gpu.Process {
	var ps []gpu.Process
	for _, p := range out.Processes {
		if out.Devices[p.Device].UUID == uuid {
			ps = append(ps, p)
		}
	}
	return ps
}

const mib = 1 << 20

func TestSampleDevices(t *testing.T) {
	srv, _ := newServer(t)
	out := sample(t, started(t, srv))
	if len(out.Devices) != 8 {
		t.Fatalf("got %d devices, want 8", len(out.Devices))
	}
	for i, d := range out.Devices {
		want := gpu.Device{Index: i, UUID: fmt.Sprintf("GPU-00000000-0000-0000-0000-00000000000%d", i), Model: "NVIDIA H100 80GB HBM3"}
		if d != want {
			t.Errorf("device %d = %+v, want %+v", i, d, want)
		}
	}
	if len(out.Processes) != 0 || len(out.Errors) != 0 {
		t.Errorf("idle mock: got processes %v errors %v", out.Processes, out.Errors)
	}
}

func TestSampleProcessUtilization(t *testing.T) {
	notAvail := notAvailable
	tests := []struct {
		name    string
		running []gonvml.ProcessInfo
		util    []gonvml.ProcessUtilizationSample
		utilRet gonvml.Return
		want    []gpu.Process
		wantDev gpu.Device
	}{
		{
			name:    "samples matched to running processes",
			running: []gonvml.ProcessInfo{{Pid: 200, UsedGpuMemory: 2048 * mib}, {Pid: 100, UsedGpuMemory: 512 * mib}},
			util: []gonvml.ProcessUtilizationSample{
				{Pid: 100, TimeStamp: 10, SmUtil: 40, MemUtil: 10, EncUtil: 1, DecUtil: 2},
				{Pid: 200, TimeStamp: 11, SmUtil: 75, MemUtil: 30},
			},
			utilRet: gonvml.SUCCESS,
			want: []gpu.Process{
				{PID: 100, UtilValid: true, SMUtil: 40, MemCopyUtil: 10, EncUtil: 1, DecUtil: 2, MemValid: true, MemUsedMiB: 512},
				{PID: 200, UtilValid: true, SMUtil: 75, MemCopyUtil: 30, MemValid: true, MemUsedMiB: 2048},
			},
		},
		{
			name:    "NOT_FOUND means no new samples: listed processes read 0, not vanish",
			running: []gonvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 512 * mib}},
			utilRet: gonvml.ERROR_NOT_FOUND,
			want:    []gpu.Process{{PID: 100, UtilValid: true, MemValid: true, MemUsedMiB: 512}},
		},
		{
			name:    "running process without a sample was idle",
			running: []gonvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 512 * mib}, {Pid: 101, UsedGpuMemory: mib}},
			util:    []gonvml.ProcessUtilizationSample{{Pid: 100, TimeStamp: 5, SmUtil: 9}},
			utilRet: gonvml.SUCCESS,
			want: []gpu.Process{
				{PID: 100, UtilValid: true, SMUtil: 9, MemValid: true, MemUsedMiB: 512},
				{PID: 101, UtilValid: true, MemValid: true, MemUsedMiB: 1},
			},
		},
		{
			name:    "several samples of one PID are averaged",
			running: []gonvml.ProcessInfo{{Pid: 100, UsedGpuMemory: mib}},
			util: []gonvml.ProcessUtilizationSample{
				{Pid: 100, TimeStamp: 1, SmUtil: 20}, {Pid: 100, TimeStamp: 2, SmUtil: 60}, {Pid: 100, TimeStamp: 3, SmUtil: 250},
			},
			utilRet: gonvml.SUCCESS,
			want:    []gpu.Process{{PID: 100, UtilValid: true, SMUtil: 60, MemValid: true, MemUsedMiB: 1}},
		},
		{
			name:    "sampled process that left the running list keeps util, has no memory",
			util:    []gonvml.ProcessUtilizationSample{{Pid: 300, TimeStamp: 1, SmUtil: 12}},
			utilRet: gonvml.SUCCESS,
			want:    []gpu.Process{{PID: 300, UtilValid: true, SMUtil: 12}},
		},
		{
			name:    "memory not available is not 0",
			running: []gonvml.ProcessInfo{{Pid: 100, UsedGpuMemory: notAvail}},
			utilRet: gonvml.ERROR_NOT_FOUND,
			want:    []gpu.Process{{PID: 100, UtilValid: true}},
		},
		{
			name:    "NOT_SUPPORTED exports memory only",
			running: []gonvml.ProcessInfo{{Pid: 100, UsedGpuMemory: mib}},
			utilRet: gonvml.ERROR_NOT_SUPPORTED,
			want:    []gpu.Process{{PID: 100, MemValid: true, MemUsedMiB: 1}},
			wantDev: gpu.Device{UtilUnsupported: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, fakes := newServer(t)
			fakes[2].running, fakes[2].util, fakes[2].utilRet = tt.running, tt.util, tt.utilRet
			out := sample(t, started(t, srv))
			if len(out.Errors) != 0 {
				t.Fatalf("unexpected errors %v", out.Errors)
			}
			got := procsOn(out, out.Devices[2].UUID)
			for i := range tt.want {
				tt.want[i].Device = 2
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("processes\n got %+v\nwant %+v", got, tt.want)
			}
			if out.Devices[2].UtilUnsupported != tt.wantDev.UtilUnsupported {
				t.Errorf("UtilUnsupported = %v, want %v", out.Devices[2].UtilUnsupported, tt.wantDev.UtilUnsupported)
			}
			if len(out.Processes) != len(got) {
				t.Errorf("processes leaked onto other devices: %v", out.Processes)
			}
		})
	}
}

func TestLastSeenCarried(t *testing.T) {
	srv, fakes := newServer(t)
	f := fakes[0]
	f.running = []gonvml.ProcessInfo{{Pid: 7, UsedGpuMemory: mib}}
	s := started(t, srv)

	f.util, f.utilRet = []gonvml.ProcessUtilizationSample{{Pid: 7, TimeStamp: 1000, SmUtil: 5}, {Pid: 7, TimeStamp: 1500, SmUtil: 7}}, gonvml.SUCCESS
	sample(t, s)
	f.util, f.utilRet = nil, gonvml.ERROR_NOT_FOUND
	sample(t, s)
	f.util, f.utilRet = []gonvml.ProcessUtilizationSample{{Pid: 7, TimeStamp: 2100, SmUtil: 9}}, gonvml.SUCCESS
	sample(t, s)
	sample(t, s)

	want := []uint64{0, 1500, 1500, 2100}
	if fmt.Sprint(f.lastSeen) != fmt.Sprint(want) {
		t.Errorf("lastSeen passed to the driver = %v, want %v (0 only on the first call)", f.lastSeen, want)
	}
}

func TestMIGExportsMemoryOnly(t *testing.T) {
	srv, fakes := newServer(t)
	srv.Devices[1].(*server.Device).MigMode = gonvml.DEVICE_MIG_ENABLE
	srv.Devices[1].(*server.Device).GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		t.Error("GetProcessUtilization called on a MIG GPU")
		return nil, gonvml.ERROR_NOT_SUPPORTED
	}
	// The same PID on two GPU instances: one series, memory summed.
	fakes[1].running = []gonvml.ProcessInfo{
		{Pid: 50, UsedGpuMemory: 100 * mib, GpuInstanceId: 1},
		{Pid: 51, UsedGpuMemory: 10 * mib, GpuInstanceId: 2},
		{Pid: 50, UsedGpuMemory: 200 * mib, GpuInstanceId: 3},
	}
	out := sample(t, started(t, srv))
	if !out.Devices[1].MIG {
		t.Fatalf("device 1 not reported as MIG")
	}
	want := []gpu.Process{
		{PID: 50, Device: 1, MemValid: true, MemUsedMiB: 300},
		{PID: 51, Device: 1, MemValid: true, MemUsedMiB: 10},
	}
	if got := procsOn(out, out.Devices[1].UUID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("MIG processes\n got %+v\nwant %+v", got, want)
	}
}

func TestLostGPUReinitializes(t *testing.T) {
	srv, fakes := newServer(t)
	var inits, shutdowns int
	srv.InitFunc = func() gonvml.Return { inits++; return gonvml.SUCCESS }
	srv.ShutdownFunc = func() gonvml.Return { shutdowns++; return gonvml.SUCCESS }
	fakes[3].running = []gonvml.ProcessInfo{{Pid: 9, UsedGpuMemory: mib}}
	s := started(t, srv)

	fakes[3].runningRet = gonvml.ERROR_GPU_IS_LOST
	out := sample(t, s)
	if len(out.Devices) != 7 {
		t.Errorf("lost GPU still reported: %d devices", len(out.Devices))
	}
	for _, d := range out.Devices {
		if d.Index == 3 {
			t.Errorf("lost GPU 3 still in the sample")
		}
	}
	wantErr := []gpu.Error{{Device: 3, Op: "GetComputeRunningProcesses", Code: "ERROR_GPU_IS_LOST"}}
	if fmt.Sprint(out.Errors) != fmt.Sprint(wantErr) {
		t.Errorf("errors = %v, want %v", out.Errors, wantErr)
	}
	if inits != 1 || shutdowns != 0 {
		t.Fatalf("before recovery: inits=%d shutdowns=%d", inits, shutdowns)
	}

	fakes[3].runningRet = gonvml.SUCCESS
	out = sample(t, s)
	if inits != 2 || shutdowns != 1 {
		t.Errorf("after a lost GPU: inits=%d shutdowns=%d, want 2 and 1", inits, shutdowns)
	}
	if len(out.Devices) != 8 || len(procsOn(out, out.Devices[3].UUID)) != 1 {
		t.Errorf("GPU 3 not back after re-init: %+v", out)
	}
}

func TestReinitFailureIsAnError(t *testing.T) {
	srv, fakes := newServer(t)
	s := started(t, srv)
	fakes[0].utilRet = gonvml.ERROR_GPU_IS_LOST
	sample(t, s)
	srv.InitFunc = func() gonvml.Return { return gonvml.ERROR_DRIVER_NOT_LOADED }
	if _, err := s.Sample(context.Background()); err == nil || !strings.Contains(err.Error(), "driver is not loaded") {
		t.Errorf("Sample after failed re-init: err = %v", err)
	}
	// It keeps trying on later calls and recovers once the driver is back.
	srv.InitFunc = func() gonvml.Return { return gonvml.SUCCESS }
	fakes[0].utilRet = gonvml.ERROR_NOT_FOUND
	if out := sample(t, s); len(out.Devices) != 8 {
		t.Errorf("not recovered: %d devices", len(out.Devices))
	}
}

func TestOtherErrorsAreCountedNotFatal(t *testing.T) {
	srv, fakes := newServer(t)
	fakes[5].running = []gonvml.ProcessInfo{{Pid: 1, UsedGpuMemory: mib}}
	fakes[5].utilRet = gonvml.ERROR_NO_PERMISSION
	out := sample(t, started(t, srv))
	want := []gpu.Error{{Device: 5, Op: "GetProcessUtilization", Code: "ERROR_NO_PERMISSION"}}
	if fmt.Sprint(out.Errors) != fmt.Sprint(want) {
		t.Errorf("errors = %v, want %v", out.Errors, want)
	}
	// Memory is still known; utilization is not, so it must not read 0.
	got := procsOn(out, out.Devices[5].UUID)
	if len(got) != 1 || got[0].UtilValid || !got[0].MemValid {
		t.Errorf("process after util error = %+v", got)
	}
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		name    string
		ret     gonvml.Return
		wantIs  error
		wantSub string
	}{
		{"library missing names it", gonvml.ERROR_LIBRARY_NOT_FOUND, ErrLibraryNotFound, "libnvidia-ml.so.1"},
		{"driver not loaded", gonvml.ERROR_DRIVER_NOT_LOADED, nil, "kernel driver is not loaded"},
		{"other", gonvml.ERROR_NO_PERMISSION, nil, "ERROR_NO_PERMISSION"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := &mock.Interface{InitFunc: func() gonvml.Return { return tt.ret }}
			err := New(lib, DefaultLibrary).Start()
			if err == nil || !strings.Contains(err.Error(), tt.wantSub) {
				t.Fatalf("Start() = %v, want error containing %q", err, tt.wantSub)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Start() = %v, want errors.Is %v", err, tt.wantIs)
			}
		})
	}
}

func TestCodeName(t *testing.T) {
	tests := map[gonvml.Return]string{
		gonvml.ERROR_GPU_IS_LOST: "ERROR_GPU_IS_LOST",
		gonvml.ERROR_NOT_FOUND:   "ERROR_NOT_FOUND",
		gonvml.Return(12345):     "NVML_RETURN_12345",
	}
	for ret, want := range tests {
		if got := CodeName(ret); got != want {
			t.Errorf("CodeName(%d) = %q, want %q", ret, got, want)
		}
	}
}
