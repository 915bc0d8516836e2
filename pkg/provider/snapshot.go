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
	// pods holds each pod's values of the metrics it has, few per pod (a
	// GPU pod has the exporter's, a model server the queue gauges), so a
	// linear scan beats an index sized by the whole table.
	pods    map[types.NamespacedName][]metricValue
	series  int
	skipped promquery.Skipped
}

type metricValue struct {
	metric int
	value
}

// tagged is a sample with the index of the spec it feeds. It points into
// the query result instead of copying it: a refresh reads tens of
// thousands of samples.
type tagged struct {
	spec int
	*promquery.Sample
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
	metric   int
	sum, max float64
	n        int
	ts       time.Time
}

func (a *podAcc) add(v float64, ts time.Time) {
	if a.n == 0 || v > a.max {
		a.max = v
	}
	if a.n == 0 || ts.Before(a.ts) {
		a.ts = ts
	}
	a.sum += v
	a.n++
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
	add := func(pod types.NamespacedName, metric int, v float64, ts time.Time) {
		list := accs[pod]
		for i := range list {
			if list[i].metric == metric {
				list[i].add(v, ts)
				return
			}
		}
		if list == nil {
			// Room for the usual pair (SM utilization and memory, or a
			// queue and its cache), so most pods allocate once.
			list = make([]podAcc, 0, 2)
		}
		a := podAcc{metric: metric}
		a.add(v, ts)
		accs[pod] = append(list, a)
	}
	for _, s := range samples {
		ts := s.Timestamp
		if ts.After(observedAt) {
			ts = observedAt
		}
		pod := types.NamespacedName{Namespace: s.Namespace, Name: s.Pod}
		if !specs[s.spec].row.Combine.PerGPU() {
			add(pod, s.spec, s.Value, ts)
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
		add(k.pod, k.metric, v, g.ts)
	}

	snap := &snapshot{
		observedAt: observedAt,
		pods:       make(map[types.NamespacedName][]metricValue, len(accs)),
		series:     len(samples),
	}
	for pod, list := range accs {
		vals := make([]metricValue, len(list))
		for i, a := range list {
			v := a.sum
			switch specs[a.metric].row.Combine {
			case metrictable.MeanOfCappedGPUs:
				v /= float64(a.n)
			case metrictable.Max:
				v = a.max
			}
			vals[i] = metricValue{metric: a.metric, value: value{v: v, ts: a.ts}}
		}
		snap.pods[pod] = vals
	}
	return snap
}

// lookup returns a pod's value and whether it is fresh at now.
func (s *snapshot) lookup(pod types.NamespacedName, metric int, now time.Time, maxStaleness time.Duration) (value, bool) {
	for _, mv := range s.pods[pod] {
		if mv.metric != metric {
			continue
		}
		if mv.ts.IsZero() || now.Sub(mv.ts) > maxStaleness {
			return value{}, false
		}
		return mv.value, true
	}
	return value{}, false
}
