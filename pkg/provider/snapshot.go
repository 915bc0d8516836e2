package provider

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spillway-dev/spillway/pkg/metricnames"
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
	// pods holds each pod's values of the metrics it has.
	pods    map[types.NamespacedName]*podValues
	series  int
	skipped promquery.Skipped
}

// podValues is one pod's entry in a snapshot, with what the metrics APIs
// serve for it built once per snapshot instead of once per answer: an
// answer copies these parts, and neither they nor anything they point to
// is ever written after the snapshot is published.
type podValues struct {
	// values are the pod's values of the metrics it has, few per pod (a GPU
	// pod has the exporter's, a model server the queue gauges), so a linear
	// scan beats an index sized by the whole table.
	values []metricValue
	// podLabel is the MetricLabels of the pod's per-pod external items,
	// {pod: <name>}. Answers share it (the library's conversion to v1beta1
	// and its JSON encoder only read it), and a new snapshot carries it
	// over from the previous one, so neither requests nor refreshes
	// allocate one per pod.
	podLabel map[string]string
}

type metricValue struct {
	metric int
	value
	// quantity is v as served, with its string form cached
	// (Quantity.String): Quantity.MarshalJSON then copies the string
	// instead of formatting the number for every item of every answer.
	quantity resource.Quantity
}

// tagged is a sample with the index of the spec it feeds. It points into
// the query result instead of copying it: a refresh reads tens of
// thousands of samples.
type tagged struct {
	spec int
	*promquery.Sample
}

// gpuSum accumulates one pod's processes on one GPU for one metric.
type gpuSum struct {
	metric int
	gpu    string
	sum    float64
	ts     time.Time
}

// podBuild is one pod's sums while a snapshot is built. A pod has few
// GPUs and metrics, so lists scanned in order beat maps keyed by them.
type podBuild struct {
	pod  types.NamespacedName
	accs []podAcc
	gpus []gpuSum
}

func (b *podBuild) add(metric int, v float64, ts time.Time) {
	for i := range b.accs {
		if b.accs[i].metric == metric {
			b.accs[i].add(v, ts)
			return
		}
	}
	if b.accs == nil {
		// Room for the usual pair (SM utilization and memory, or a
		// queue and its cache), so most pods allocate once.
		b.accs = make([]podAcc, 0, 2)
	}
	a := podAcc{metric: metric}
	a.add(v, ts)
	b.accs = append(b.accs, a)
}

func (b *podBuild) addGPU(metric int, gpu string, v float64, ts time.Time) {
	for i := range b.gpus {
		if g := &b.gpus[i]; g.metric == metric && g.gpu == gpu {
			g.sum += v
			if ts.Before(g.ts) {
				g.ts = ts
			}
			return
		}
	}
	if b.gpus == nil {
		// Room for two GPUs, a common count, so most pods allocate once.
		b.gpus = make([]gpuSum, 0, 2)
	}
	b.gpus = append(b.gpus, gpuSum{metric: metric, gpu: gpu, sum: v, ts: ts})
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
// value's life. prev, the snapshot being replaced (nil for the first), only
// lends its pods' podLabel maps.
func buildSnapshot(samples []tagged, specs []metricSpec, observedAt time.Time, prev *snapshot) *snapshot {
	hint := 0
	if prev != nil {
		hint = len(prev.pods)
	}
	index := make(map[types.NamespacedName]int, hint)
	builds := make([]podBuild, 0, hint)
	for _, s := range samples {
		ts := s.Timestamp
		if ts.After(observedAt) {
			ts = observedAt
		}
		pod := types.NamespacedName{Namespace: s.Namespace, Name: s.Pod}
		i, ok := index[pod]
		if !ok {
			i = len(builds)
			index[pod] = i
			builds = append(builds, podBuild{pod: pod})
		}
		b := &builds[i]
		if specs[s.spec].row.Combine.PerGPU() {
			b.addGPU(s.spec, s.GPU, s.Value, ts)
		} else {
			b.add(s.spec, s.Value, ts)
		}
	}
	for i := range builds {
		b := &builds[i]
		for _, g := range b.gpus {
			v := g.sum
			if specs[g.metric].row.Combine == metrictable.MeanOfCappedGPUs && v > 100 {
				v = 100
			}
			b.add(g.metric, v, g.ts)
		}
	}

	snap := &snapshot{
		observedAt: observedAt,
		pods:       make(map[types.NamespacedName]*podValues, len(builds)),
		series:     len(samples),
	}
	// One backing array for all entries: a refresh then allocates per pod
	// only its values.
	entries := make([]podValues, len(builds))
	for i := range builds {
		pod, list := builds[i].pod, builds[i].accs
		old := prev.entry(pod)
		vals := make([]metricValue, len(list))
		for i, a := range list {
			v := a.sum
			switch specs[a.metric].row.Combine {
			case metrictable.MeanOfCappedGPUs:
				v /= float64(a.n)
			case metrictable.Max:
				v = a.max
			}
			vals[i] = metricValue{metric: a.metric, value: value{v: v, ts: a.ts}, quantity: old.quantity(a.metric, v)}
		}
		e := &entries[len(snap.pods)]
		e.values = vals
		if old != nil {
			e.podLabel = old.podLabel
		} else {
			e.podLabel = map[string]string{metricnames.LabelPod: pod.Name}
		}
		snap.pods[pod] = e
	}
	return snap
}

// quantity is v as served, with its string form cached; when e (the pod's
// previous entry, possibly nil) had the same value, its quantity is reused,
// string included: steady values cost a refresh nothing.
func (e *podValues) quantity(metric int, v float64) resource.Quantity {
	if e != nil {
		for i := range e.values {
			if mv := &e.values[i]; mv.metric == metric && mv.v == v {
				return mv.quantity
			}
		}
	}
	q := quantity(v)
	_ = q.String() // caches the string form in q
	return q
}

// entry is a pod's entry, or nil; s may be nil.
func (s *snapshot) entry(pod types.NamespacedName) *podValues {
	if s == nil {
		return nil
	}
	return s.pods[pod]
}

// lookup returns a pod's entry and its value of metric, if that value is
// fresh at now. Both point into the snapshot: read only.
func (s *snapshot) lookup(pod types.NamespacedName, metric int, now time.Time, maxStaleness time.Duration) (*podValues, *metricValue, bool) {
	e := s.pods[pod]
	if e == nil {
		return nil, nil, false
	}
	for i := range e.values {
		mv := &e.values[i]
		if mv.metric != metric {
			continue
		}
		if mv.ts.IsZero() || now.Sub(mv.ts) > maxStaleness {
			return nil, nil, false
		}
		return e, mv, true
	}
	return nil, nil, false
}
