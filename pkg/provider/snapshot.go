package provider

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

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

type gpuKey struct {
	pod    types.NamespacedName
	metric int
	gpu    string
}

type gpuSum struct {
	sum float64
	ts  time.Time
}

// buildSnapshot turns validated per-process samples into per-pod values.
// Per GPU the processes' values are summed (capped at 100 for percentages,
// since one GPU cannot be more than fully busy); a pod's percentage is the
// mean over its GPUs and its memory the sum. A value's timestamp is the
// oldest of the samples behind it, and never later than observedAt, so a
// Prometheus clock running ahead of ours cannot extend a value's life.
func buildSnapshot(samples []promquery.Sample, specs []metricSpec, index map[string]int, observedAt time.Time) *snapshot {
	gpus := make(map[gpuKey]*gpuSum, len(samples))
	used := 0
	for _, s := range samples {
		mi, ok := index[s.Metric]
		if !ok {
			continue
		}
		used++
		ts := s.Timestamp
		if ts.After(observedAt) {
			ts = observedAt
		}
		k := gpuKey{types.NamespacedName{Namespace: s.Namespace, Name: s.Pod}, mi, s.GPU}
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

	type podAcc struct {
		sum  float64
		n    int
		ts   time.Time
		seen bool
	}
	accs := make(map[types.NamespacedName][]podAcc)
	for k, g := range gpus {
		acc := accs[k.pod]
		if acc == nil {
			acc = make([]podAcc, len(specs))
			accs[k.pod] = acc
		}
		a := &acc[k.metric]
		v := g.sum
		if specs[k.metric].agg == meanOfCappedGPUs && v > 100 {
			v = 100
		}
		a.sum += v
		a.n++
		if !a.seen || g.ts.Before(a.ts) {
			a.ts = g.ts
		}
		a.seen = true
	}

	snap := &snapshot{
		observedAt: observedAt,
		pods:       make(map[types.NamespacedName][]value, len(accs)),
		series:     used,
	}
	for pod, acc := range accs {
		vals := make([]value, len(specs))
		for i, a := range acc {
			if !a.seen {
				continue
			}
			v := a.sum
			if specs[i].agg == meanOfCappedGPUs {
				v /= float64(a.n)
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
