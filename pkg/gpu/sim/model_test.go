package sim

import (
	"math"
	"testing"
)

func TestPodUtilization(t *testing.T) {
	tests := []struct {
		name     string
		rps      float64
		ready    int
		capacity float64
		podReady bool
		want     float64
	}{
		{"one replica at half capacity", 5, 1, 10, true, 50},
		{"load split over replicas", 30, 4, 10, true, 75},
		{"capped at 100", 50, 2, 10, true, 100},
		{"exactly at capacity", 20, 2, 10, true, 100},
		{"no load", 0, 3, 10, true, 0},
		{"pod not ready gets no traffic", 30, 3, 10, false, 0},
		{"no ready replicas", 30, 0, 10, true, 0},
		{"negative rps", -5, 1, 10, true, 0},
		{"NaN rps", math.NaN(), 1, 10, true, 0},
		{"zero capacity", 5, 1, 0, true, 0},
		{"infinite capacity", 5, 1, math.Inf(1), true, 0},
		{"fractional", 1, 3, 1, true, 100.0 / 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PodUtilization(tt.rps, tt.ready, tt.capacity, tt.podReady)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("PodUtilization(%g, %d, %g, %v) = %g, want %g", tt.rps, tt.ready, tt.capacity, tt.podReady, got, tt.want)
			}
		})
	}
}

func TestWithNoise(t *testing.T) {
	if got := WithNoise(40, 0, 1, "k", 0); got != 40 {
		t.Errorf("zero amplitude changed the value: %g", got)
	}
	varied := false
	for step := range uint64(200) {
		a := WithNoise(50, 5, 7, "pod/ctr", step)
		if a < 45 || a > 55 {
			t.Fatalf("step %d: %g outside 50±5", step, a)
		}
		if b := WithNoise(50, 5, 7, "pod/ctr", step); a != b {
			t.Fatalf("step %d: not reproducible: %g then %g", step, a, b)
		}
		if a != WithNoise(50, 5, 8, "pod/ctr", step) {
			varied = true
		}
		for _, edge := range []float64{0, 100} {
			if v := WithNoise(edge, 5, 7, "pod/ctr", step); v < 0 || v > 100 {
				t.Fatalf("noise left [0,100]: %g", v)
			}
		}
	}
	if !varied {
		t.Errorf("the seed has no effect on the noise")
	}
}

func TestFakePID(t *testing.T) {
	a := FakePID("uid-a", "vllm")
	if a != FakePID("uid-a", "vllm") {
		t.Errorf("not stable")
	}
	if a == FakePID("uid-b", "vllm") || a == FakePID("uid-a", "other") {
		t.Errorf("different containers share PID %d", a)
	}
	for _, uid := range []string{"", "x", "a-very-long-uid-0000000000000000000000000"} {
		if p := FakePID(uid, "c"); p < fakePIDBase || p >= fakePIDMax {
			t.Errorf("FakePID(%q) = %d outside [%d, %d)", uid, p, fakePIDBase, fakePIDMax)
		}
	}
}
