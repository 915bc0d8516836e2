package sim

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
)

// PodUtilization is the simulator's whole model: a workload's requests per
// second are spread evenly over its Ready replicas, and one replica reaches
// 100 % SM utilization at capacityRPS. A replica that is not Ready gets no
// traffic and reads 0; nonsense inputs (negative, NaN) read 0 as well.
func PodUtilization(rps float64, readyReplicas int, capacityRPS float64, ready bool) float64 {
	if !ready || readyReplicas <= 0 || !(capacityRPS > 0) || !(rps > 0) || math.IsInf(capacityRPS, 1) {
		return 0
	}
	return min(100, rps/float64(readyReplicas)/capacityRPS*100)
}

// WithNoise adds seeded noise, uniform in [-amplitude, +amplitude]
// percentage points, and keeps the result in [0, 100]. The draw depends only
// on (seed, key, step), so a run is reproducible: the same pod at the same
// collection step always gets the same noise, whatever else is running.
func WithNoise(util, amplitude float64, seed uint64, key string, step uint64) float64 {
	if !(amplitude > 0) {
		return util
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	r := rand.New(rand.NewPCG(seed, h.Sum64()^step))
	util += (r.Float64()*2 - 1) * amplitude
	return max(0, min(100, util))
}

// FakePID is a stable PID for one container of one pod: the same pod keeps
// the same PID across collections and exporter restarts. It stays within
// Linux's default pid_max and above the range of early boot processes.
func FakePID(podUID, container string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(podUID))
	h.Write([]byte{'/'})
	h.Write([]byte(container))
	return fakePIDBase + h.Sum32()%(fakePIDMax-fakePIDBase)
}

const (
	fakePIDBase = 1000
	fakePIDMax  = 4194304 // Linux pid_max on 64-bit
)
