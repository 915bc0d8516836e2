package exporter

import (
	"context"
	"time"

	"k8s.io/klog/v2"

	"github.com/spillway-dev/spillway/pkg/gpu"
	"github.com/spillway-dev/spillway/pkg/podmap"
)

// PIDMapper finds the pod identity of a host PID (podmap.Mapper).
type PIDMapper interface {
	Lookup(pid int) (podmap.Identity, error)
	// Sweep forgets PIDs not looked up since the previous Sweep.
	Sweep()
}

// PodResolver names the pod and container of a pod UID and container ID
// (an informer-backed index in production).
type PodResolver interface {
	Resolve(podUID, containerID string) (gpu.PodRef, bool)
}

// snapshot is one successful collection. It is never modified after it is
// stored, so scrapes read it without locks; the series it points to are
// shared with later snapshots and are immutable too.
type snapshot struct {
	at time.Time
	// samples are the exported process entries in exposition order (by
	// label values, label names sorted), the order the registry would sort
	// them into, so the text fast path writes them as they are.
	samples  []sample
	devices  int
	memOnly  map[string]int
	seen     int
	mapped   int
	unmapped map[string]int
}

// sample is the values of one exported process entry in one collection.
type sample struct {
	s *series
	// util: SM, encoder, decoder and memory-copy utilization are known;
	// mem: memory used is known.
	util, mem bool
	v         [numProcessMetrics]float64
}

// has reports whether the sample carries process metric m.
func (p *sample) has(m int) bool {
	if m == memUsed {
		return p.mem
	}
	return p.util
}

// Run collects now and then every interval until ctx ends. Failures are
// logged and counted; the previous snapshot keeps being served until it is
// StaleAfter intervals old.
func (e *Exporter) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		if err := e.CollectOnce(ctx); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).Error(err, "collection failed", "backend", e.cfg.Backend)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CollectOnce samples the backend and, on success, replaces the snapshot.
// Concurrent calls run one after the other.
func (e *Exporter) CollectOnce(ctx context.Context) error {
	e.collectMu.Lock()
	defer e.collectMu.Unlock()
	e.log = klog.FromContext(ctx)
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Interval)
	defer cancel()
	s, err := e.sampler.Sample(ctx)
	for _, se := range s.Errors {
		e.self.nvmlError(se.Op, se.Code)
	}
	result := e.self.succeeded
	if err == nil {
		e.snap.Store(e.build(s, e.cfg.Clock.Now()))
	} else {
		result = e.self.failed
	}
	result.observe(time.Since(begin))
	return err
}

// owner is the result of mapping one PID, memoized per collection: a
// process on several GPUs is looked up once.
type owner struct {
	ref    gpu.PodRef
	reason string // "" when mapped
}

func (e *Exporter) ownerOf(p gpu.Process) owner {
	if p.Pod != nil {
		return owner{ref: *p.Pod}
	}
	if o, ok := e.memo[p.PID]; ok {
		return o
	}
	o := e.lookup(p.PID)
	e.memo[p.PID] = o
	return o
}

func (e *Exporter) lookup(pid uint32) owner {
	if e.mapper == nil {
		return owner{reason: ReasonProcUnreadable}
	}
	id, err := e.mapper.Lookup(int(pid))
	if err != nil {
		e.log.V(2).Info("cannot map PID", "pid", pid, "err", err)
		return owner{reason: ReasonProcUnreadable}
	}
	if !id.InPod() {
		return owner{reason: ReasonHost}
	}
	ref, ok := e.resolver.Resolve(id.PodUID, id.ContainerID)
	if !ok {
		return owner{reason: ReasonUnknownPod}
	}
	return owner{ref: ref}
}

// build turns a sample into a snapshot. Series whose labels did not change
// since the previous collection are reused from the cache, so a steady
// node allocates one slice of values per collection, not label sets.
func (e *Exporter) build(s gpu.Sample, at time.Time) *snapshot {
	snap := &snapshot{
		at:       at,
		devices:  len(s.Devices),
		memOnly:  map[string]int{MemoryOnlyMIG: 0, MemoryOnlyNotSupported: 0},
		unmapped: map[string]int{ReasonHost: 0, ReasonUnknownPod: 0, ReasonProcUnreadable: 0},
	}
	for _, d := range s.Devices {
		switch {
		case d.MIG:
			snap.memOnly[MemoryOnlyMIG]++
		case d.UtilUnsupported:
			snap.memOnly[MemoryOnlyNotSupported]++
		}
	}
	clear(e.memo)
	clear(e.emitted)
	e.cache.begin()
	samples := e.samples[:0]
	for _, p := range s.Processes {
		if p.Device < 0 || p.Device >= len(s.Devices) {
			continue
		}
		// One series per (device, PID): a backend listing a PID twice on
		// one GPU would otherwise make the whole scrape fail as a duplicate.
		key := uint64(p.Device)<<32 | uint64(p.PID)
		if e.emitted[key] {
			continue
		}
		e.emitted[key] = true
		snap.seen++
		o := e.ownerOf(p)
		if o.reason != "" {
			snap.unmapped[o.reason]++
			if o.reason != ReasonHost || !e.cfg.ExportHostProcesses {
				continue
			}
		} else {
			snap.mapped++
		}
		d := s.Devices[p.Device]
		host := d.Host
		if host == "" {
			host = e.cfg.Hostname
		}
		sr, dup, err := e.cache.use(&e.proc, seriesKey{
			host: host, gpu: d.Index, uuid: d.UUID, model: d.Model, pid: p.PID,
			namespace: o.ref.Namespace, pod: o.ref.Name, container: o.ref.Container,
		})
		if err != nil {
			// Only invalid UTF-8 (a corrupt model name) gets here; dropping
			// one process beats failing the whole scrape.
			e.log.Error(err, "dropping process series", "pid", p.PID)
			continue
		}
		if dup {
			// Two devices with the same labels: exporting both would be a
			// duplicate series, which fails the scrape.
			continue
		}
		smp := sample{s: sr, util: p.UtilValid, mem: p.MemValid}
		smp.v[smUtil], smp.v[encUtil], smp.v[decUtil], smp.v[memCopyUtil] = p.SMUtil, p.EncUtil, p.DecUtil, p.MemCopyUtil
		smp.v[memUsed] = p.MemUsedMiB
		samples = append(samples, smp)
	}
	e.cache.sweep()
	snap.samples = e.cache.order(samples)
	e.samples = samples
	if e.mapper != nil {
		e.mapper.Sweep()
	}
	return snap
}
