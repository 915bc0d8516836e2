package provider

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/spillway-dev/spillway/pkg/metrictable"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// value is one pod's value of one metric. A zero ts means "no series".
type value struct {
	v  float64
	ts time.Time
}

// snapshot is immutable once published; refreshes build a new one and swap
// the pointer, so readers never lock.
type snapshot struct {
	// observedAt is the adapter's clock when the query that built the
	// snapshot was sent.
	observedAt time.Time
	pods       map[types.NamespacedName][]value
	series     int
	skipped    promquery.Skipped
}

// tagged is a sample with the index of the spec it feeds.
type tagged struct {
	spec int
	promquery.Sample
}

type gpuKey struct {
	pod    types.NamespacedName
	metric int
	gpu    string
}

type gpuSum struct {
	sum float64
	ts  time.Time
}

// podAcc accumulates one pod's value of one metric.
type podAcc struct {
	sum, max float64
	n        int
	ts       time.Time
	seen     bool
}

func (a *podAcc) add(v float64, ts time.Time) {
	a.sum += v
	if !a.seen || v > a.max {
		a.max = v
	}
	a.n++
	if !a.seen || ts.Before(a.ts) {
		a.ts = ts
	}
	a.seen = true
}

// buildSnapshot turns validated samples into per-pod values, each by its
// row's Combine. Per-GPU rows sum processes per GPU (capped at 100 for
// MeanOfCappedGPUs, since one GPU cannot be more than fully busy), then take
// the mean (MeanOfCappedGPUs) or the sum (SumOfGPUs) over the pod's GPUs;
// other rows take the sum or the max of the pod's series. A value's
// timestamp is the oldest of the samples behind it, and never later than
// observedAt, so a Prometheus clock running ahead of ours cannot extend a
// value's life.
func buildSnapshot(samples []tagged, specs []metricSpec, observedAt time.Time) *snapshot {
	gpus := make(map[gpuKey]*gpuSum, len(samples))
	accs := make(map[types.NamespacedName][]podAcc)
	acc := func(pod types.NamespacedName, metric int) *podAcc {
		a := accs[pod]
		if a == nil {
			a = make([]podAcc, len(specs))
			accs[pod] = a
		}
		return &a[metric]
	}
	for _, s := range samples {
		ts := s.Timestamp
		if ts.After(observedAt) {
			ts = observedAt
		}
		pod := types.NamespacedName{Namespace: s.Namespace, Name: s.Pod}
		if !specs[s.spec].row.Combine.PerGPU() {
			acc(pod, s.spec).add(s.Value, ts)
			continue
		}
		k := gpuKey{pod, s.spec, s.GPU}
		g := gpus[k]
		if g == nil {
			g = &gpuSum{ts: ts}
			gpus[k] = g
		}
		g.sum += s.Value
		if ts.Before(g.ts) {
			g.ts = ts
		}
	}
	for k, g := range gpus {
		v := g.sum
		if specs[k.metric].row.Combine == metrictable.MeanOfCappedGPUs && v > 100 {
			v = 100
		}
		acc(k.pod, k.metric).add(v, g.ts)
	}

	snap := &snapshot{
		observedAt: observedAt,
		pods:       make(map[types.NamespacedName][]value, len(accs)),
		series:     len(samples),
	}
	for pod, acc := range accs {
		vals := make([]value, len(specs))
		for i, a := range acc {
			if !a.seen {
				continue
			}
			v := a.sum
			switch specs[i].row.Combine {
			case metrictable.MeanOfCappedGPUs:
				v /= float64(a.n)
			case metrictable.Max:
				v = a.max
			}
			vals[i] = value{v: v, ts: a.ts}
		}
		snap.pods[pod] = vals
	}
	return snap
}

// lookup returns a pod's value and whether it is fresh at now.
func (s *snapshot) lookup(pod types.NamespacedName, metric int, now time.Time, maxStaleness time.Duration) (value, bool) {
	vals, ok := s.pods[pod]
	if !ok {
		return value{}, false
	}
	v := vals[metric]
	if v.ts.IsZero() || now.Sub(v.ts) > maxStaleness {
		return value{}, false
	}
	return v, true
}
