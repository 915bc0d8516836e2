//go:build cgo

package exporter

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/common/expfmt"

	"github.com/spillway-dev/spillway/pkg/gpu"
	gpunvml "github.com/spillway-dev/spillway/pkg/gpu/nvml"
	"github.com/spillway-dev/spillway/pkg/podmap"
)

// BenchmarkCollectRender measures one background collection (NVML sample
// through go-nvml's DGX H100 mock, PID -> pod through a /proc tree, render)
// plus one scrape of the /metrics handler in the text format (as Prometheus
// asks, without gzip), in steady state (PID cache warm), for 64
// processes (8 per GPU) and for 512 (64 per GPU). The collect and scrape
// sub-benchmarks time each half alone; scrape-gzip is a scrape as
// Prometheus sends it, compressed.
func BenchmarkCollectRender(b *testing.B) {
	for _, perGPU := range []int{8, 64} {
		for _, mode := range []string{"collect+scrape", "collect", "scrape", "scrape-gzip"} {
			b.Run(fmt.Sprintf("8gpu_x_%dproc/%s", 8*perGPU, mode), func(b *testing.B) {
				benchCollectRender(b, perGPU, strings.HasPrefix(mode, "collect"), mode != "collect", mode == "scrape-gzip")
			})
		}
	}
}

func benchCollectRender(b *testing.B, perGPU int, collect, render, gzip bool) {
	srv := dgxh100.New()
	procfs := fstest.MapFS{}
	resolver := fakeResolver{}
	for i, d := range srv.Devices {
		sd := d.(*server.Device)
		sd.UUID = fmt.Sprintf("GPU-%08d-0000-0000-0000-000000000000", i)
		var running []gonvml.ProcessInfo
		var util []gonvml.ProcessUtilizationSample
		for j := range perGPU {
			pid := uint32(10000 + i*perGPU + j)
			uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, j)
			cid := fmt.Sprintf("%064x", pid)
			running = append(running, gonvml.ProcessInfo{Pid: pid, UsedGpuMemory: uint64(j+1) << 30})
			util = append(util, gonvml.ProcessUtilizationSample{Pid: pid, TimeStamp: uint64(pid), SmUtil: uint32(j % 101), MemUtil: 5})
			dir := fmt.Sprint(pid)
			procfs[dir+"/stat"] = &fstest.MapFile{Data: fmt.Appendf(nil, "%d (python3) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", pid, 5000+pid)}
			procfs[dir+"/cgroup"] = &fstest.MapFile{Data: fmt.Appendf(nil,
				"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/cri-containerd-%s.scope\n",
				underscores(uid), cid)}
			resolver[uid+"/"+cid] = gpu.PodRef{UID: uid, Namespace: "inference", Name: fmt.Sprintf("llm-%d-%d", i, j), Container: "vllm"}
		}
		sd.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { return running, gonvml.SUCCESS }
		sd.GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) { return util, gonvml.SUCCESS }
	}
	sampler := gpunvml.New(srv, gpunvml.DefaultLibrary)
	if err := sampler.Start(); err != nil {
		b.Fatal(err)
	}
	e, err := New(Config{Hostname: "node", Backend: "nvml", Interval: 5 * time.Second}, sampler, podmap.NewMapper(procfs), resolver)
	if err != nil {
		b.Fatal(err)
	}
	metrics, err := e.Handler(nil)
	if err != nil {
		b.Fatal(err)
	}
	// What Prometheus scrapes, minus gzip: the text format.
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	w := &discardWriter{h: http.Header{}}
	ctx := context.Background()
	// Warm the PID cache, and check the work is real: 5 series per process.
	if err := e.CollectOnce(ctx); err != nil {
		b.Fatal(err)
	}
	if snap := e.snap.Load(); snap.mapped != 8*perGPU || len(snap.samples) != 8*perGPU {
		b.Fatalf("mapped %d, processes exported %d", snap.mapped, len(snap.samples))
	}
	rec := httptest.NewRecorder()
	metrics.ServeHTTP(rec, req)
	if n := strings.Count(rec.Body.String(), "\nDCGM_CUSTOM_PROCESS_"); n != 5*8*perGPU {
		b.Fatalf("scrape has %d process series, want %d", n, 5*8*perGPU)
	}
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if collect {
			if err := e.CollectOnce(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if render {
			clear(w.h)
			metrics.ServeHTTP(w, req)
		}
	}
}

// discardWriter is an http.ResponseWriter that keeps nothing but headers.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

func underscores(uid string) string { return strings.ReplaceAll(uid, "-", "_") }
