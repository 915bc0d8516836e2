package exporter

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/spillway-dev/spillway/pkg/gpu"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/podmap"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fakeSampler returns a scripted sample and counts its calls.
type fakeSampler struct {
	sample gpu.Sample
	err    error
	calls  int
}

func (f *fakeSampler) Sample(context.Context) (gpu.Sample, error) {
	f.calls++
	return f.sample, f.err
}

type lookupResult struct {
	id  podmap.Identity
	err error
}

type fakeMapper struct {
	byPID   map[int]lookupResult
	lookups map[int]int
	sweeps  int
}

func (f *fakeMapper) Lookup(pid int) (podmap.Identity, error) {
	f.lookups[pid]++
	r, ok := f.byPID[pid]
	if !ok {
		return podmap.Identity{}, errors.New("no such process")
	}
	return r.id, r.err
}

func (f *fakeMapper) Sweep() { f.sweeps++ }

type fakeResolver map[string]gpu.PodRef

func (f fakeResolver) Resolve(uid, cid string) (gpu.PodRef, bool) {
	r, ok := f[uid+"/"+cid]
	return r, ok
}

// fakeClock is set by hand (clock.PassiveClock).
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time                  { return c.t }
func (c *fakeClock) Since(t time.Time) time.Duration { return c.t.Sub(t) }

const (
	uidLLM0 = "0a1b2c3d-4e5f-4789-8bcd-ef0123456789"
	uidMIG  = "11111111-2222-4333-8444-555555555555"
	uidGone = "99999999-2222-4333-8444-555555555555"
	cidLLM0 = "57d59e28722dfd55524b8d4faf279bd38f0a3f33106f9e54dfe9239fa2d0dfbf"
	cidMIG  = "8f4375ec65c2c4092a1cc21e76712472eae0de999384e8327c495957121db9c2"
)

// fixture covers every path through render: a pod process on a normal GPU
// and on a memory-only GPU (one lookup for both), a MIG process, a host
// process, a process in an unknown pod, an unreadable one, a duplicate
// entry, a process whose memory is unknown, a simulator process on another
// node, and an entry pointing at no device.
func fixture() (*fakeSampler, *fakeMapper, fakeResolver) {
	s := &fakeSampler{sample: gpu.Sample{
		Devices: []gpu.Device{
			{Index: 0, UUID: "GPU-00000000-0000-0000-0000-000000000000", Model: "NVIDIA H100 80GB HBM3"},
			{Index: 1, UUID: "GPU-11111111-0000-0000-0000-000000000000", Model: "NVIDIA H100 80GB HBM3", MIG: true},
			{Index: 2, UUID: "GPU-22222222-0000-0000-0000-000000000000", Model: "Tesla K80", UtilUnsupported: true},
			{Index: 0, UUID: "GPU-33333333-0000-0000-0000-000000000000", Model: "NVIDIA H200", Host: "kwok-gpu-b"},
		},
		Processes: []gpu.Process{
			{PID: 100, Device: 0, UtilValid: true, SMUtil: 42.5, MemCopyUtil: 10, EncUtil: 1, DecUtil: 2, MemValid: true, MemUsedMiB: 1024},
			{PID: 100, Device: 0, UtilValid: true, SMUtil: 99, MemValid: true, MemUsedMiB: 1},
			{PID: 100, Device: 2, MemValid: true, MemUsedMiB: 512},
			{PID: 200, Device: 0, UtilValid: true, SMUtil: 7, MemValid: true, MemUsedMiB: 300},
			{PID: 300, Device: 0, UtilValid: true, SMUtil: 8, MemValid: true, MemUsedMiB: 300},
			{PID: 400, Device: 0, UtilValid: true, SMUtil: 9, MemValid: true, MemUsedMiB: 300},
			{PID: 500, Device: 1, MemValid: true, MemUsedMiB: 2048},
			{PID: 700, Device: 0, UtilValid: true, SMUtil: 0},
			{PID: 600, Device: 3, UtilValid: true, SMUtil: 100, MemCopyUtil: 50, MemValid: true, MemUsedMiB: 16384,
				Pod: &gpu.PodRef{UID: "sim-uid", Namespace: "demo", Name: "llm-1", Container: "vllm"}},
			{PID: 800, Device: 9, UtilValid: true, SMUtil: 1},
		},
		Errors: []gpu.Error{
			{Device: 2, Op: "GetComputeRunningProcesses", Code: "ERROR_NO_PERMISSION"},
			{Device: 2, Op: "GetComputeRunningProcesses", Code: "ERROR_NO_PERMISSION"},
			{Device: -1, Op: "Init", Code: "ERROR_UNKNOWN"},
		},
	}}
	m := &fakeMapper{lookups: map[int]int{}, byPID: map[int]lookupResult{
		100: {id: podmap.Identity{PodUID: uidLLM0, ContainerID: cidLLM0}},
		200: {id: podmap.Identity{}},
		300: {id: podmap.Identity{PodUID: uidGone, ContainerID: cidLLM0}},
		400: {err: errors.New("open /proc/400/stat: no such file")},
		500: {id: podmap.Identity{PodUID: uidMIG, ContainerID: cidMIG}},
		700: {id: podmap.Identity{PodUID: uidLLM0, ContainerID: cidLLM0}},
	}}
	r := fakeResolver{
		uidLLM0 + "/" + cidLLM0: {UID: uidLLM0, Namespace: "demo", Name: "llm-0", Container: "vllm"},
		uidMIG + "/" + cidMIG:   {UID: uidMIG, Namespace: "batch", Name: "mig-job", Container: "train"},
	}
	return s, m, r
}

// goldenNames is every metric except the duration histogram, whose values
// depend on the machine.
var goldenNames = append(append([]string{}, metricnames.ProcessMetrics...),
	metricnames.ExporterCollections, metricnames.ExporterLastSuccessAge, metricnames.ExporterDevices,
	metricnames.ExporterMemoryOnlyDevices, metricnames.ExporterProcessesSeen, metricnames.ExporterProcessesMapped,
	metricnames.ExporterProcessesUnmapped, metricnames.ExporterNVMLErrors)

func newTestExporter(t *testing.T, c *fakeClock, hostProcs bool) (*Exporter, *fakeSampler, *fakeMapper) {
	t.Helper()
	s, m, r := fixture()
	e, err := New(Config{Hostname: "gpu-node-a", Backend: "nvml", Interval: 5 * time.Second, ExportHostProcesses: hostProcs, Clock: c}, s, m, r)
	if err != nil {
		t.Fatal(err)
	}
	return e, s, m
}

func checkGolden(t *testing.T, e *Exporter, name string) {
	t.Helper()
	got, err := testutil.CollectAndFormat(e, expfmt.TypeTextPlain, goldenNames...)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("exposition differs from %s (rerun with -update if intended):\n%s", path, diffLines(string(want), string(got)))
	}
}

func diffLines(want, got string) string {
	w, g := map[string]bool{}, map[string]bool{}
	for _, l := range strings.Split(want, "\n") {
		w[l] = true
	}
	for _, l := range strings.Split(got, "\n") {
		g[l] = true
	}
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

func TestGoldenExposition(t *testing.T) {
	tests := []struct {
		name      string
		hostProcs bool
		// after is how long after the collection the scrape happens.
		after time.Duration
	}{
		{name: "fresh", after: 2 * time.Second},
		{name: "host-processes", hostProcs: true},
		// Exactly StaleAfter intervals old is still served; one tick more is not.
		{name: "at-stale-limit", after: StaleAfter * 5 * time.Second},
		{name: "stale", after: StaleAfter*5*time.Second + time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			e, _, _ := newTestExporter(t, c, tt.hostProcs)
			if err := e.CollectOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			c.t = c.t.Add(tt.after)
			checkGolden(t, e, tt.name)
		})
	}
}

func TestBeforeFirstCollection(t *testing.T) {
	c := &fakeClock{t: time.Unix(0, 0)}
	e, _, _ := newTestExporter(t, c, false)
	checkGolden(t, e, "empty")
}

func TestScrapeNeverSamples(t *testing.T) {
	c := &fakeClock{t: time.Unix(0, 0)}
	e, s, m := newTestExporter(t, c, false)
	if err := e.CollectOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.calls != 1 {
		t.Fatalf("sampler calls after one collection: %d", s.calls)
	}
	for range 5 {
		if n := testutil.CollectAndCount(e, metricnames.ProcessSMUtil); n == 0 {
			t.Fatal("no SM util series")
		}
	}
	if s.calls != 1 {
		t.Errorf("scrapes called the sampler: %d calls", s.calls)
	}
	// PID 100 appears on two GPUs (and once more as a duplicate): one lookup.
	if m.lookups[100] != 1 {
		t.Errorf("PID 100 looked up %d times in one collection, want 1", m.lookups[100])
	}
	if m.sweeps != 1 {
		t.Errorf("mapper swept %d times, want once per collection", m.sweeps)
	}
	if m.lookups[600] != 0 {
		t.Errorf("a process with a PodRef went through /proc")
	}
}

func TestFailureKeepsSnapshotUntilStale(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	e, s, _ := newTestExporter(t, c, false)
	if err := e.CollectOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.err = errors.New("driver wedged")
	for i := range 4 {
		c.t = c.t.Add(5 * time.Second)
		if err := e.CollectOnce(context.Background()); err == nil {
			t.Fatal("failure not returned")
		}
		n := testutil.CollectAndCount(e, metricnames.ProcessSMUtil)
		stale := i == 3 // 20 s after the last success > 3 x 5 s
		if (n == 0) != stale {
			t.Errorf("after %d failures: %d SM series, stale=%v", i+1, n, stale)
		}
	}
	if got := testutil.ToFloat64(e.self.collections.WithLabelValues("failure")); got != 4 {
		t.Errorf("failures counted: %g, want 4", got)
	}
	if got := testutil.ToFloat64(e.self.collections.WithLabelValues("success")); got != 1 {
		t.Errorf("successes counted: %g, want 1", got)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	e, s, _ := newTestExporter(t, c, false)
	code := func(h http.HandlerFunc) int {
		rec := httptest.NewRecorder()
		h(rec, httptest.NewRequest("GET", "/", nil))
		return rec.Code
	}
	steps := []struct {
		name               string
		advance            time.Duration
		collect            bool
		fail               bool
		wantHealth, wantRd int
	}{
		{name: "just started", wantHealth: 200, wantRd: 503},
		{name: "slow first collection, within grace", advance: 15 * time.Second, wantHealth: 200, wantRd: 503},
		{name: "no collection for too long", advance: time.Second, wantHealth: 503, wantRd: 503},
		{name: "first success", collect: true, wantHealth: 200, wantRd: 200},
		{name: "failing but recent", advance: 10 * time.Second, collect: true, fail: true, wantHealth: 200, wantRd: 200},
		{name: "failing for more than 3 intervals", advance: 6 * time.Second, collect: true, fail: true, wantHealth: 503, wantRd: 200},
		{name: "recovered", collect: true, wantHealth: 200, wantRd: 200},
	}
	for _, st := range steps {
		c.t = c.t.Add(st.advance)
		if st.fail {
			s.err = errors.New("boom")
		} else {
			s.err = nil
		}
		if st.collect {
			if err := e.CollectOnce(context.Background()); (err != nil) != st.fail {
				t.Fatalf("%s: CollectOnce() = %v", st.name, err)
			}
		}
		if h, r := code(e.Healthz), code(e.Readyz); h != st.wantHealth || r != st.wantRd {
			t.Errorf("%s: healthz %d readyz %d, want %d %d", st.name, h, r, st.wantHealth, st.wantRd)
		}
	}
}

func TestRunCollectsUntilCancelled(t *testing.T) {
	s, _, _ := fixture()
	e, err := New(Config{Backend: "sim", Interval: time.Hour}, s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	// Run collects at once; wait for that, then stop it.
	for e.snap.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if s.calls != 1 {
		t.Errorf("sampler calls = %d, want 1 (one immediate collection, no tick in an hour)", s.calls)
	}
	// Without a mapper only processes that name their pod are mapped.
	if snap := e.snap.Load(); snap.mapped != 1 || snap.unmapped[ReasonProcUnreadable] != 7 {
		t.Errorf("mapped %d, unreadable %d", snap.mapped, snap.unmapped[ReasonProcUnreadable])
	}
}

func TestNewValidates(t *testing.T) {
	_, m, _ := fixture()
	_, err := New(Config{}, nil, m, nil)
	for _, want := range []string{"no sampler", "interval", "backend name", "PID mapper needs a pod resolver"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New error %v lacks %q", err, want)
		}
	}
}

// TestCollectionResults: both results' counters are exported from the
// start, a result's duration histogram only once a collection had it.
func TestCollectionResults(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	e, s, _ := newTestExporter(t, c, false)
	count := func(result string) (counters, histograms int) {
		t.Helper()
		mfs, err := testutil.CollectAndFormat(e, expfmt.TypeTextPlain, metricnames.ExporterCollections, metricnames.ExporterCollectionDuration)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(mfs), "\n") {
			if !strings.Contains(line, `result="`+result+`"`) {
				continue
			}
			switch {
			case strings.HasPrefix(line, metricnames.ExporterCollections):
				counters++
			case strings.HasPrefix(line, metricnames.ExporterCollectionDuration+"_count"):
				histograms++
			}
		}
		return counters, histograms
	}
	if err := e.CollectOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cs, hs := count("success"); cs != 1 || hs != 1 {
		t.Errorf("success: %d counters, %d histograms; want 1, 1", cs, hs)
	}
	if cs, hs := count("failure"); cs != 1 || hs != 0 {
		t.Errorf("failure before one: %d counters, %d histograms; want 1, 0", cs, hs)
	}
	s.err = errors.New("driver wedged")
	_ = e.CollectOnce(context.Background())
	if cs, hs := count("failure"); cs != 1 || hs != 1 {
		t.Errorf("failure after one: %d counters, %d histograms; want 1, 1", cs, hs)
	}
}
