// Package sim is a deterministic GPU backend for tests and the demo. It
// reports one process per GPU-requesting container of every running GPU pod
// on its node (or on every node), whose SM utilization follows a load input:
//
//	util = min(100, rps(workload) / readyReplicas(workload) / capacityRPS * 100)
//
// plus optional seeded noise. rps comes from a trace file and/or live
// overrides over HTTP (see Load); readyReplicas counts the workload's Ready
// pods across the whole cluster, so per-node exporters agree. Pods that are
// running but not Ready read 0 (they get no traffic).
package sim

import (
	"cmp"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/spillway-dev/spillway/pkg/gpu"
)

// Config shapes the simulated node(s).
type Config struct {
	// Node is this exporter's node; pods elsewhere are ignored unless
	// AllNodes is set.
	Node string
	// AllNodes reports the pods of every node from one exporter (kwok
	// clusters, where nodes run no DaemonSet pods); each device then
	// carries its node as Host.
	AllNodes bool
	// GPUsPerNode is how many devices a simulated node has.
	GPUsPerNode int
	// Model is the devices' model name.
	Model string
	// CapacityRPS is the load one replica serves at 100 % SM utilization.
	CapacityRPS float64
	// NoiseAmplitude adds uniform noise in [-a, +a] percentage points to
	// Ready pods; 0 disables it.
	NoiseAmplitude float64
	// Seed makes the noise reproducible.
	Seed uint64
	// MemoryMiB is each process's memory on each of its GPUs.
	MemoryMiB float64
	// Clock is the real clock when nil.
	Clock clock.PassiveClock
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	if c.Node == "" && !c.AllNodes {
		errs = append(errs, errors.New("a node name is required unless all nodes are simulated"))
	}
	if c.GPUsPerNode <= 0 {
		errs = append(errs, fmt.Errorf("GPUs per node %d: must be > 0", c.GPUsPerNode))
	}
	if !(c.CapacityRPS > 0) {
		errs = append(errs, fmt.Errorf("per-replica capacity %g rps: must be > 0", c.CapacityRPS))
	}
	if !(c.NoiseAmplitude >= 0 && c.NoiseAmplitude <= 100) {
		errs = append(errs, fmt.Errorf("noise amplitude %g: must be within [0, 100]", c.NoiseAmplitude))
	}
	if !(c.MemoryMiB >= 0) {
		errs = append(errs, fmt.Errorf("memory %g MiB: must be >= 0", c.MemoryMiB))
	}
	return errors.Join(errs...)
}

// LoadSource gives a workload's requests per second at a time, and where
// the figure came from. *Load implements it.
type LoadSource interface {
	RPS(workload string, now time.Time) (float64, string)
}

// WorkloadStatus is what the last collection computed for one workload.
type WorkloadStatus struct {
	Workload      string  `json:"workload"`
	RPS           float64 `json:"rps"`
	Source        string  `json:"source"`
	Replicas      int     `json:"replicas"`
	ReadyReplicas int     `json:"readyReplicas"`
	// PodUtil is the utilization of each Ready pod before noise.
	PodUtil float64 `json:"podUtil"`
}

// Sampler is the simulated backend.
type Sampler struct {
	cfg  Config
	pods PodSource
	load LoadSource

	step  uint64
	nodes map[string]*nodeGPUs

	mu     sync.Mutex
	status []WorkloadStatus
}

// New returns a simulated sampler.
func New(cfg Config, pods PodSource, load LoadSource) (*Sampler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Sampler{cfg: cfg, pods: pods, load: load, nodes: map[string]*nodeGPUs{}}, nil
}

// Status returns the per-workload view of the last collection.
func (s *Sampler) Status() []WorkloadStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.status)
}

// Sample computes one collection.
func (s *Sampler) Sample(ctx context.Context) (gpu.Sample, error) {
	pods, err := s.pods.Pods()
	if err != nil {
		return gpu.Sample{}, fmt.Errorf("listing GPU pods: %w", err)
	}
	now := s.cfg.Clock.Now()
	step := s.step
	s.step++

	// Workload totals span the whole pod list, not just this node.
	workloads := map[string]*WorkloadStatus{}
	for _, p := range pods {
		k := p.WorkloadKey()
		w := workloads[k]
		if w == nil {
			w = &WorkloadStatus{Workload: k}
			workloads[k] = w
		}
		if p.Running {
			w.Replicas++
		}
		if p.Running && p.Ready {
			w.ReadyReplicas++
		}
	}
	for k, w := range workloads {
		w.RPS, w.Source = s.load.RPS(k, now)
		w.PodUtil = PodUtilization(w.RPS, w.ReadyReplicas, s.cfg.CapacityRPS, true)
	}

	var local []Pod
	for _, p := range pods {
		if p.Running && (s.cfg.AllNodes || p.Node == s.cfg.Node) {
			local = append(local, p)
		}
	}
	slices.SortFunc(local, func(a, b Pod) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
	})

	var out gpu.Sample
	// Devices: every node with running GPU pods; this node always.
	devBase := map[string]int{}
	addNode := func(node string) {
		if _, ok := devBase[node]; ok {
			return
		}
		devBase[node] = len(out.Devices)
		host := ""
		if s.cfg.AllNodes {
			host = node
		}
		for i := range s.cfg.GPUsPerNode {
			out.Devices = append(out.Devices, gpu.Device{Index: i, UUID: deviceUUID(node, i), Model: s.cfg.Model, Host: host})
		}
	}
	if !s.cfg.AllNodes {
		addNode(s.cfg.Node)
	}

	// Free the GPUs of containers that are gone before handing out new
	// ones, so a newcomer can take them in this same collection.
	live := map[string]map[string]bool{} // node -> allocation keys
	for _, p := range local {
		if live[p.Node] == nil {
			live[p.Node] = map[string]bool{}
		}
		for _, c := range p.Containers {
			live[p.Node][p.UID+"/"+c.Name] = true
		}
	}
	for node, ng := range s.nodes {
		ng.release(live[node])
		if len(ng.byKey) == 0 {
			delete(s.nodes, node)
		}
	}

	usedPIDs := map[string]map[uint32]bool{}
	for _, p := range local {
		addNode(p.Node)
		ng := s.nodes[p.Node]
		if ng == nil {
			ng = newNodeGPUs(s.cfg.GPUsPerNode)
			s.nodes[p.Node] = ng
		}
		if usedPIDs[p.Node] == nil {
			usedPIDs[p.Node] = map[uint32]bool{}
		}
		w := workloads[p.WorkloadKey()]
		for _, c := range p.Containers {
			key := p.UID + "/" + c.Name
			util := 0.0
			if p.Ready {
				util = WithNoise(w.PodUtil, s.cfg.NoiseAmplitude, s.cfg.Seed, key, step)
			}
			pid := FakePID(p.UID, c.Name)
			for usedPIDs[p.Node][pid] {
				pid++ // two containers hashed alike: keep PIDs unique per node
			}
			usedPIDs[p.Node][pid] = true
			ref := &gpu.PodRef{UID: p.UID, Namespace: p.Namespace, Name: p.Name, Container: c.Name}
			for _, idx := range ng.assign(key, c.GPUs) {
				out.Processes = append(out.Processes, gpu.Process{
					PID:         pid,
					Device:      devBase[p.Node] + idx,
					UtilValid:   true,
					SMUtil:      util,
					MemCopyUtil: util / 2,
					MemValid:    true,
					MemUsedMiB:  s.cfg.MemoryMiB,
					Pod:         ref,
				})
			}
		}
	}
	s.mu.Lock()
	s.status = sortedStatus(workloads)
	s.mu.Unlock()
	return out, nil
}

// nodeGPUs remembers which GPUs each container holds, so a pod keeps its
// GPUs for its whole life and a new pod takes the lowest free ones, as the
// device plugin would hand them out.
type nodeGPUs struct {
	holders []int // per GPU index: how many containers hold it
	byKey   map[string][]int
}

func newNodeGPUs(n int) *nodeGPUs {
	return &nodeGPUs{holders: make([]int, n), byKey: map[string][]int{}}
}

func (g *nodeGPUs) assign(key string, n int) []int {
	n = min(n, len(g.holders))
	if idx, ok := g.byKey[key]; ok && len(idx) == n {
		return idx
	}
	if old, ok := g.byKey[key]; ok {
		for _, i := range old {
			g.holders[i]--
		}
	}
	// Lowest free GPUs first; if the node is oversubscribed (more GPUs
	// requested than simulated), share the least-held ones.
	idx := make([]int, 0, n)
	taken := make([]bool, len(g.holders))
	for len(idx) < n {
		best := -1
		for i, h := range g.holders {
			if !taken[i] && (best < 0 || h < g.holders[best]) {
				best = i
			}
		}
		taken[best] = true
		idx = append(idx, best)
	}
	slices.Sort(idx)
	for _, i := range idx {
		g.holders[i]++
	}
	g.byKey[key] = idx
	return idx
}

func (g *nodeGPUs) release(live map[string]bool) {
	for key, idx := range g.byKey {
		if live[key] {
			continue
		}
		for _, i := range idx {
			g.holders[i]--
		}
		delete(g.byKey, key)
	}
}

// deviceUUID is a stable, GPU-UUID-shaped identifier for a simulated device.
func deviceUUID(node string, index int) string {
	sum := sha1.Sum(fmt.Appendf(nil, "spillway-sim-gpu/%s/%d", node, index))
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}
