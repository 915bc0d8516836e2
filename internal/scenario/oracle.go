package scenario

import "math"

// Sizing is what turns demand into replicas: each replica serves
// CapacityRPS at 100 % SM utilization and the autoscaler aims at
// TargetUtil percent.
type Sizing struct {
	CapacityRPS    float64
	TargetUtil     float64
	MinReplicas    int
	MaxReplicas    int
	OnPremSlots    int // predictor replicas the on-prem pool holds
	GPUsPerReplica int
}

// Replicas is the exact replica count the demand needs: the fewest replicas
// whose per-replica utilization stays at or under the target, clamped to
// [min, max].
func (s Sizing) Replicas(rps float64) int {
	per := s.CapacityRPS * s.TargetUtil / 100
	// Clamp before converting: a demand beyond int range (a trace may say
	// 1e30) would otherwise convert to an arbitrary int, on amd64 the
	// most negative one, and read as the minimum.
	n := math.Ceil(rps/per - 1e-9)
	return int(min(max(n, float64(s.MinReplicas)), float64(s.MaxReplicas)))
}

// Util is the per-replica SM utilization for a demand and replica count,
// capped at 100 like the simulated GPUs.
func (s Sizing) Util(rps float64, replicas int) float64 {
	if replicas <= 0 {
		return 0
	}
	return math.Min(100, rps/float64(replicas)/s.CapacityRPS*100)
}

// Oracle plays the trace minute by minute with perfect knowledge: exact
// replicas, on-prem first, cloud nodes that appear and vanish instantly.
func Oracle(t *Trace, s Sizing) Figures {
	first, last := t.Span()
	// The oracle is never over target, so it has no time to elastic; its
	// replicas never pass capacity, so nothing ever queues.
	f := Figures{TimeToElastic: -1}
	var onPremBusy, onPremTotal float64
	prev := -1
	for m := first; m <= last; m++ {
		rps := t.At(float64(m))
		n := s.Replicas(rps)
		cloud := max(0, n-s.OnPremSlots)
		f.CloudGPUMinutes += float64(cloud * s.GPUsPerReplica)
		onPrem := min(n, s.OnPremSlots)
		onPremBusy += float64(onPrem) * s.Util(rps, n) / 100
		onPremTotal += float64(s.OnPremSlots)
		if s.Util(rps, n) > s.TargetUtil+1e-9 {
			f.MinutesOverTarget++
		}
		if prev >= 0 && n != prev {
			f.ScaleEvents++
		}
		prev = n
	}
	f.CloudPodGPUMinutes = f.CloudGPUMinutes // its nodes come and go with their pods
	if onPremTotal > 0 {
		f.OnPremUtilization = onPremBusy / onPremTotal * 100
	}
	return f
}

// Seed is the seed scenario's sizing: one replica serves 10 req/s at 100 %
// SM utilization, the HPA targets 50 %, 1..3 replicas of 1 GPU, and the
// on-prem pool has one GPU.
var Seed = Sizing{CapacityRPS: 10, TargetUtil: 50, MinReplicas: 1, MaxReplicas: 3, OnPremSlots: 1, GPUsPerReplica: 1}
