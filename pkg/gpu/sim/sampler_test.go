package sim

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spillway-dev/spillway/pkg/gpu"
)

// mutablePods lets a test change the pod list between collections.
type mutablePods struct {
	pods []Pod
	err  error
}

func (m *mutablePods) Pods() ([]Pod, error) { return m.pods, m.err }

func config(node string) Config {
	return Config{Node: node, GPUsPerNode: 8, Model: "NVIDIA H100 80GB HBM3", CapacityRPS: 10, MemoryMiB: 1000,
		Clock: clocktesting.NewFakePassiveClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
}

func newLoad(t *testing.T, overrides map[string]float64) *Load {
	t.Helper()
	l, err := NewLoad(nil, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for w, rps := range overrides {
		if err := l.Set(w, rps); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func fixturePods(t *testing.T) []Pod {
	t.Helper()
	pods, err := ReadPodsFile("testdata/pods.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return pods
}

// row is a compact, comparable view of one simulated process.
type row struct {
	pod, container string
	node           string
	gpu            int
	util, mem      float64
}

func rows(s gpu.Sample) []row {
	var out []row
	for _, p := range s.Processes {
		d := s.Devices[p.Device]
		out = append(out, row{p.Pod.Name, p.Pod.Container, d.Host, d.Index, p.SMUtil, p.MemUsedMiB})
	}
	return out
}

func TestSampleLocalNode(t *testing.T) {
	pods := fixturePods(t)
	s, err := New(config("gpu-0"), StaticPods(pods), newLoad(t, map[string]float64{"demo/llm": 10}))
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Devices) != 8 {
		t.Fatalf("got %d devices, want 8 on this node", len(out.Devices))
	}
	for i, d := range out.Devices {
		if d.Index != i || d.Host != "" || d.Model != "NVIDIA H100 80GB HBM3" || !strings.HasPrefix(d.UUID, "GPU-") {
			t.Errorf("device %d = %+v", i, d)
		}
	}
	// demo/llm: 10 rps over 2 Ready replicas (llm-0 here, llm-1 on gpu-1) at
	// 10 rps capacity = 50 %; llm-2 is not Ready: 0. demo/big has no load.
	want := []row{
		{"big-0", "server", "", 0, 0, 1000},
		{"big-0", "server", "", 1, 0, 1000},
		{"big-0", "sidecar", "", 2, 0, 1000},
		{"llm-0", "vllm", "", 3, 50, 1000},
		{"llm-2", "vllm", "", 4, 0, 1000},
	}
	if got := rows(out); !reflect.DeepEqual(got, want) {
		t.Errorf("processes\n got %+v\nwant %+v", got, want)
	}
	for _, p := range out.Processes {
		if !p.UtilValid || !p.MemValid || p.MemCopyUtil != p.SMUtil/2 || p.PID != FakePID(p.Pod.UID, p.Pod.Container) {
			t.Errorf("process %+v", p)
		}
	}
	// One PID per container, shared by its GPUs.
	if out.Processes[0].PID != out.Processes[1].PID || out.Processes[0].PID == out.Processes[2].PID {
		t.Errorf("PIDs: %d %d %d", out.Processes[0].PID, out.Processes[1].PID, out.Processes[2].PID)
	}

	wantStatus := []WorkloadStatus{
		{Workload: "demo/big", Source: SourceNone, Replicas: 1, ReadyReplicas: 1},
		{Workload: "demo/llm", RPS: 10, Source: SourceOverride, Replicas: 3, ReadyReplicas: 2, PodUtil: 50},
	}
	if got := s.Status(); !reflect.DeepEqual(got, wantStatus) {
		t.Errorf("status\n got %+v\nwant %+v", got, wantStatus)
	}
}

func TestSampleAllNodes(t *testing.T) {
	cfg := config("")
	cfg.AllNodes = true
	s, err := New(cfg, StaticPods(fixturePods(t)), newLoad(t, map[string]float64{"demo/llm": 30}))
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Devices) != 16 {
		t.Fatalf("got %d devices, want 8 per node with GPU pods", len(out.Devices))
	}
	want := []row{
		{"big-0", "server", "gpu-0", 0, 0, 1000},
		{"big-0", "server", "gpu-0", 1, 0, 1000},
		{"big-0", "sidecar", "gpu-0", 2, 0, 1000},
		{"llm-0", "vllm", "gpu-0", 3, 100, 1000},
		{"llm-2", "vllm", "gpu-0", 4, 0, 1000},
		{"llm-1", "vllm", "gpu-1", 0, 100, 1000},
	}
	if got := rows(out); !reflect.DeepEqual(got, want) {
		t.Errorf("processes\n got %+v\nwant %+v", got, want)
	}
	if out.Devices[0].UUID == out.Devices[8].UUID {
		t.Errorf("nodes share device UUIDs")
	}
}

func TestGPUAssignmentIsStable(t *testing.T) {
	src := &mutablePods{pods: fixturePods(t)}
	s, err := New(config("gpu-0"), src, newLoad(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	gpuOf := func(out gpu.Sample) map[string][]int {
		m := map[string][]int{}
		for _, r := range rows(out) {
			m[r.pod+"/"+r.container] = append(m[r.pod+"/"+r.container], r.gpu)
		}
		return m
	}
	first, _ := s.Sample(context.Background())
	before := gpuOf(first)

	// big-0 leaves; a new pod arrives that sorts before llm-0. Survivors keep
	// their GPUs; the newcomer takes the lowest free ones.
	var next []Pod
	for _, p := range src.pods {
		if p.Name != "big-0" {
			next = append(next, p)
		}
	}
	next = append(next, Pod{UID: "new", Namespace: "demo", Name: "a-new", Node: "gpu-0", Workload: "llm", Running: true, Ready: true, Containers: []GPUContainer{{"vllm", 2}}})
	src.pods = next
	second, _ := s.Sample(context.Background())
	after := gpuOf(second)
	for _, k := range []string{"llm-0/vllm", "llm-2/vllm"} {
		if !reflect.DeepEqual(before[k], after[k]) {
			t.Errorf("%s moved from GPU %v to %v", k, before[k], after[k])
		}
	}
	if !reflect.DeepEqual(after["a-new/vllm"], []int{0, 1}) {
		t.Errorf("newcomer got GPUs %v, want the freed [0 1]", after["a-new/vllm"])
	}
}

func TestOversubscribedNodeShares(t *testing.T) {
	cfg := config("n")
	cfg.GPUsPerNode = 2
	pods := StaticPods{
		{UID: "a", Namespace: "d", Name: "a", Node: "n", Workload: "w", Running: true, Containers: []GPUContainer{{"c", 2}}},
		{UID: "b", Namespace: "d", Name: "b", Node: "n", Workload: "w", Running: true, Containers: []GPUContainer{{"c", 5}}},
	}
	s, err := New(cfg, pods, newLoad(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Processes) != 4 {
		t.Errorf("got %d processes, want 2 per pod (capped at the node's 2 GPUs)", len(out.Processes))
	}
}

func TestNoiseIsReproducible(t *testing.T) {
	run := func(seed uint64) []row {
		cfg := config("gpu-0")
		cfg.NoiseAmplitude, cfg.Seed = 10, seed
		s, err := New(cfg, StaticPods(fixturePods(t)), newLoad(t, map[string]float64{"demo/llm": 10, "demo/big": 4}))
		if err != nil {
			t.Fatal(err)
		}
		var all []row
		for range 5 {
			out, err := s.Sample(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, rows(out)...)
		}
		return all
	}
	a, b, c := run(1), run(1), run(2)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different runs")
	}
	if reflect.DeepEqual(a, c) {
		t.Errorf("different seeds, same noise")
	}
	for _, r := range a {
		if r.pod == "llm-2" && r.util != 0 {
			t.Errorf("noise on a pod that is not Ready: %+v", r)
		}
		if r.pod == "llm-0" && (r.util < 40 || r.util > 60) {
			t.Errorf("llm-0 util %g outside 50±10", r.util)
		}
	}
}

func TestTraceDrivesUtilization(t *testing.T) {
	tr, err := ParseTrace(strings.NewReader("0,demo/llm,0\n10,demo/llm,20\n"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	load, err := NewLoad(tr, start, 60)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakePassiveClock(start)
	cfg := config("gpu-1")
	cfg.Clock = clk
	s, err := New(cfg, StaticPods(fixturePods(t)), load)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{{0, 0}, {5 * time.Second, 50}, {10 * time.Second, 100}, {time.Hour, 100}} {
		clk.SetTime(start.Add(tc.at))
		out, err := s.Sample(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// llm-1 is the only process on gpu-1; 2 Ready replicas share the load.
		if len(out.Processes) != 1 || out.Processes[0].SMUtil != tc.want {
			t.Errorf("at %v: %+v, want one process at %g", tc.at, rows(out), tc.want)
		}
	}
}

func TestSampleErrorsAndConfig(t *testing.T) {
	s, err := New(config("n"), &mutablePods{err: errors.New("informer gone")}, newLoad(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sample(context.Background()); err == nil || !strings.Contains(err.Error(), "informer gone") {
		t.Errorf("pod source error not returned: %v", err)
	}
	bad := Config{GPUsPerNode: 0, CapacityRPS: -1, NoiseAmplitude: 200, MemoryMiB: -1}
	err = bad.Validate()
	for _, want := range []string{"node name is required", "GPUs per node 0", "capacity -1", "noise amplitude 200", "memory -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, lacks %q", err, want)
		}
	}
	if _, err := New(bad, StaticPods(nil), newLoad(t, nil)); err == nil {
		t.Errorf("New accepted a bad config")
	}
}

func ExamplePodUtilization() {
	// 45 rps shared by 3 Ready replicas that each saturate at 20 rps.
	fmt.Println(PodUtilization(45, 3, 20, true))
	// Output: 75
}
