package scenario

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sample is one observation of the running system.
type Sample struct {
	Elapsed   time.Duration // real time since the trace started
	DayMinute float64       // where in the compressed day this is
	DemandRPS float64
	// PodUtil is each predictor pod's SM utilization as the metrics API
	// served it; pods without a fresh value are absent (never 0).
	PodUtil      map[string]float64
	Desired      int // HPA desired replicas
	Ready        int // Deployment ready replicas
	PodsOnPrem   int // Running predictor pods on on-prem nodes
	PodsElastic  int // Running predictor pods on elastic nodes
	PodsPending  int
	NodesOnPrem  int
	NodesElastic int
	ElasticGPUs  int // GPUs of elastic nodes that exist (what the cloud bills)
	// ElasticPodGPUs are the GPUs Running predictor pods hold on elastic
	// nodes: the cloud time the autoscaling decisions asked for, without
	// the time nodes take to appear and to go.
	ElasticPodGPUs int
	// QueueSeconds is how long a request arriving now waits for a batch
	// slot, on average over the requests arriving (the model servers'
	// queue times weighted by their arrival rates); NaN when unknown.
	QueueSeconds float64
}

// MeanUtil is the mean served utilization, or NaN when none was served.
func (s Sample) MeanUtil() float64 {
	if len(s.PodUtil) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, v := range s.PodUtil {
		sum += v
	}
	return sum / float64(len(s.PodUtil))
}

// Why a predictor pod went away.
const (
	ReasonScaleIn = "scale-in"
	ReasonRestart = "restart"
	// ReasonNodeRemoved: the pod's node was being removed under it (Karpenter
	// consolidation evicts pods off a node it judges underused), so a
	// serving pod was evicted rather than scaled in.
	ReasonNodeRemoved = "evicted: node removed"
)

// Removal is a predictor pod that went away during the run.
type Removal struct {
	Elapsed   time.Duration
	DayMinute float64
	Pod       string
	Pool      string // "on-prem" or "elastic"
	Reason    string // one of the Reason constants
}

// Timeline is everything a run recorded.
type Timeline struct {
	Samples  []Sample
	Removals []Removal
	// FirstElasticRunning is when the first predictor pod ran on an elastic
	// node, or zero if none did.
	FirstElasticRunning time.Duration
}

// Figures summarize a run (or the oracle) for comparison.
type Figures struct {
	CloudGPUMinutes float64 // GPU-minutes of elastic nodes, in day minutes
	// CloudPodGPUMinutes are the GPU-minutes predictor pods held on
	// elastic nodes; CloudGPUMinutes minus this is node lag (idle nodes).
	CloudPodGPUMinutes float64
	OnPremUtilization  float64 // mean SM utilization of the on-prem GPUs, percent
	MinutesOverTarget  float64 // day minutes with mean utilization above target
	ScaleEvents        int     // changes of the desired replica count
	// TimeToElastic is real time from the first over-target sample to the
	// first elastic pod Running; negative when it never happened.
	TimeToElastic   time.Duration
	OnPremRemovals  int
	ElasticRemovals int
	// Evictions are removals whose node was being removed under the pod.
	Evictions int
	// MinutesOverSLO are day minutes whose QueueSeconds exceeded the SLO;
	// QueueP95 is the 95th percentile of QueueSeconds over day minutes.
	// Both are NaN when no sample had a queue reading.
	MinutesOverSLO float64
	QueueP95       float64
}

// Compute derives the figures from a timeline. Each sample's state is held
// until the next sample (left Riemann sum over day minutes). slo is the
// time in queue above which a minute counts as over the SLO.
func (tl *Timeline) Compute(target float64, onPremGPUs int, slo time.Duration) Figures {
	f := Figures{TimeToElastic: -1, MinutesOverSLO: math.NaN(), QueueP95: math.NaN()}
	type weighted struct{ q, dt float64 }
	var queue []weighted
	var busy, total float64
	firstOver := time.Duration(-1)
	for i, s := range tl.Samples {
		if i > 0 && s.Desired != tl.Samples[i-1].Desired {
			f.ScaleEvents++
		}
		mean := s.MeanUtil()
		if !math.IsNaN(mean) && mean > target && firstOver < 0 {
			firstOver = s.Elapsed
		}
		if i+1 == len(tl.Samples) {
			break
		}
		dt := tl.Samples[i+1].DayMinute - s.DayMinute
		if dt <= 0 {
			continue
		}
		f.CloudGPUMinutes += float64(s.ElasticGPUs) * dt
		f.CloudPodGPUMinutes += float64(s.ElasticPodGPUs) * dt
		if !math.IsNaN(mean) && mean > target {
			f.MinutesOverTarget += dt
		}
		if !math.IsNaN(s.QueueSeconds) {
			queue = append(queue, weighted{s.QueueSeconds, dt})
		}
		if onPremGPUs > 0 {
			total += float64(onPremGPUs) * dt
			if !math.IsNaN(mean) {
				busy += float64(min(s.PodsOnPrem, onPremGPUs)) * mean / 100 * dt
			}
		}
	}
	if total > 0 {
		f.OnPremUtilization = busy / total * 100
	}
	if len(queue) > 0 {
		f.MinutesOverSLO = 0
		var all float64
		for _, w := range queue {
			all += w.dt
			if w.q > slo.Seconds() {
				f.MinutesOverSLO += w.dt
			}
		}
		sort.Slice(queue, func(i, j int) bool { return queue[i].q < queue[j].q })
		var acc float64
		for _, w := range queue {
			acc += w.dt
			if acc >= 0.95*all {
				f.QueueP95 = w.q
				break
			}
		}
	}
	if firstOver >= 0 && tl.FirstElasticRunning > 0 {
		f.TimeToElastic = max(0, tl.FirstElasticRunning-firstOver)
	}
	for _, r := range tl.Removals {
		switch r.Pool {
		case "on-prem":
			f.OnPremRemovals++
		case "elastic":
			f.ElasticRemovals++
		}
		if r.Reason == ReasonNodeRemoved {
			f.Evictions++
		}
	}
	return f
}

// WriteCSV writes one row per sample.
func (tl *Timeline) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"elapsed_s", "day_minute", "day_time", "demand_rps", "mean_util", "pod_utils",
		"desired", "ready", "pods_onprem", "pods_elastic", "pods_pending", "nodes_onprem", "nodes_elastic", "elastic_gpus", "elastic_pod_gpus", "queue_s"}); err != nil {
		return err
	}
	for _, s := range tl.Samples {
		mean := ""
		if m := s.MeanUtil(); !math.IsNaN(m) {
			mean = strconv.FormatFloat(m, 'f', 1, 64)
		}
		queue := ""
		if !math.IsNaN(s.QueueSeconds) {
			queue = strconv.FormatFloat(s.QueueSeconds, 'f', 2, 64)
		}
		if err := cw.Write([]string{
			strconv.FormatFloat(s.Elapsed.Seconds(), 'f', 1, 64),
			strconv.FormatFloat(s.DayMinute, 'f', 1, 64),
			DayClock(s.DayMinute),
			strconv.FormatFloat(s.DemandRPS, 'f', 2, 64),
			mean,
			PodUtils(s.PodUtil),
			strconv.Itoa(s.Desired), strconv.Itoa(s.Ready),
			strconv.Itoa(s.PodsOnPrem), strconv.Itoa(s.PodsElastic), strconv.Itoa(s.PodsPending),
			strconv.Itoa(s.NodesOnPrem), strconv.Itoa(s.NodesElastic), strconv.Itoa(s.ElasticGPUs), strconv.Itoa(s.ElasticPodGPUs), queue,
		}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// DayClock renders a minute of the day as HH:MM.
func DayClock(minute float64) string {
	m := int(minute) % 1440
	return fmt.Sprintf("%02d:%02d", m/60, m%60)
}

// PodUtils renders per-pod utilization compactly and in a stable order.
func PodUtils(u map[string]float64) string {
	if len(u) == 0 {
		return "-"
	}
	names := make([]string, 0, len(u))
	for n := range u {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s=%.0f", shortPod(n), u[n]))
	}
	return strings.Join(parts, " ")
}

// shortPod keeps the random suffix of a ReplicaSet pod name, which is what
// tells pods apart in a table.
func shortPod(name string) string {
	if i := strings.LastIndex(name, "-"); i >= 0 && i+1 < len(name) {
		return name[i+1:]
	}
	return name
}
