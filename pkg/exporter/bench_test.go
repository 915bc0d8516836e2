//go:build cgo

package exporter

import (
	"context"
	"fmt"
	"io"
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
// plus one scrape of the /metrics handler, in steady state (PID cache
// warm), for 64 processes (8 per GPU) and for 512 (64 per GPU).
//
//   - collect+scrape: a collection and a scrape in the text format, as
//     Prometheus asks for it, without gzip;
//   - collect+scrape-gzip: the same, compressed as Prometheus fetches it;
//   - collect, scrape, scrape-gzip: each half alone (the scrapes read the
//     same snapshot every time);
//   - scrape-http-gzip: a whole HTTP scrape over loopback with Prometheus
//     3's request headers (server, connection and the client reading the
//     compressed body, all in this process).
func BenchmarkCollectRender(b *testing.B) {
	modes := []benchMode{
		{name: "collect+scrape", collect: true, scrape: true},
		{name: "collect+scrape-gzip", collect: true, scrape: true, gzip: true},
		{name: "collect", collect: true},
		{name: "scrape", scrape: true},
		{name: "scrape-gzip", scrape: true, gzip: true},
		{name: "scrape-http-gzip", http: true},
	}
	for _, perGPU := range []int{8, 64} {
		for _, mode := range modes {
			b.Run(fmt.Sprintf("8gpu_x_%dproc/%s", 8*perGPU, mode.name), func(b *testing.B) {
				benchCollectRender(b, perGPU, mode)
			})
		}
	}
}

// benchMode is what one iteration of BenchmarkCollectRender does.
type benchMode struct {
	name            string
	collect, scrape bool
	gzip            bool // scrape with Accept-Encoding: gzip
	http            bool // scrape through an HTTP server over loopback, with gzip
}

func benchCollectRender(b *testing.B, perGPU int, mode benchMode) {
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
	if mode.gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	if mode.http {
		benchHTTPScrape(b, metrics)
		return
	}

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if mode.collect {
			if err := e.CollectOnce(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if mode.scrape {
			clear(w.h)
			metrics.ServeHTTP(w, req)
		}
	}
}

// benchHTTPScrape scrapes metrics through a loopback HTTP server as
// Prometheus 3 does: its Accept header, gzip, the compressed body read to
// the end. The client does not decompress (it set Accept-Encoding
// itself), as Prometheus decompresses while parsing, which is not the
// exporter's cost.
func benchHTTPScrape(b *testing.B, metrics http.Handler) {
	srv := httptest.NewServer(metrics)
	defer srv.Close()
	client := srv.Client()
	req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Accept", prom3Accept)
	req.Header.Set("Accept-Encoding", "gzip")
	scrape := func() int64 {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
			b.Fatalf("scrape: status %d, encoding %q, %d bytes, %v", resp.StatusCode, resp.Header.Get("Content-Encoding"), n, err)
		}
		return n
	}
	scrape() // open the connection
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		scrape()
	}
}

// discardWriter is an http.ResponseWriter that keeps nothing but headers.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

func underscores(uid string) string { return strings.ReplaceAll(uid, "-", "_") }
