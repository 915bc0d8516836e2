package podmap

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"sync"
)

// Mapper maps host PIDs to pod identities over a /proc tree, caching each
// answer by PID. The kernel reuses PIDs, so every entry remembers the
// process's start time and a lookup whose start time differs re-reads the
// cgroup: a recycled PID cannot inherit the previous owner's labels.
type Mapper struct {
	root fs.FS

	mu    sync.Mutex
	gen   uint64
	cache map[int]entry
}

type entry struct {
	start uint64
	id    Identity
	gen   uint64
}

// NewMapper returns a mapper over root, a /proc tree (os.DirFS("/proc"), or
// the host's /proc mounted elsewhere).
func NewMapper(root fs.FS) *Mapper {
	return &Mapper{root: root, cache: map[int]entry{}}
}

// Lookup returns the identity of pid. An error means the process could not
// be read (it exited, or /proc is not the host's); the caller must not
// treat it as a host process.
func (m *Mapper) Lookup(pid int) (Identity, error) {
	if pid <= 0 {
		return Identity{}, fmt.Errorf("pid %d: not a process ID", pid)
	}
	dir := strconv.Itoa(pid)
	start, err := m.startTime(dir)
	if err != nil {
		return Identity{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.cache[pid]; ok && e.start == start {
		e.gen = m.gen
		m.cache[pid] = e
		return e.id, nil
	}
	data, err := fs.ReadFile(m.root, dir+"/cgroup")
	if err != nil {
		return Identity{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	id, err := ParseCgroup(data)
	if err != nil {
		return Identity{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	// The PID may have been recycled between the two reads; the cgroup
	// belongs to the process we timed only if the start time still matches.
	again, err := m.startTime(dir)
	if err != nil {
		return Identity{}, err
	}
	if again != start {
		return Identity{}, fmt.Errorf("pid %d: process replaced while it was read", pid)
	}
	m.cache[pid] = entry{start: start, id: id, gen: m.gen}
	return id, nil
}

// Sweep drops every entry not looked up since the previous Sweep. The
// exporter calls it once per collection so the cache holds only live GPU
// processes.
func (m *Mapper) Sweep() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for pid, e := range m.cache {
		if e.gen != m.gen {
			delete(m.cache, pid)
		}
	}
	m.gen++
}

// Len is the number of cached PIDs.
func (m *Mapper) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.cache)
}

// PIDs lists the process directories of the /proc tree in ascending order.
func (m *Mapper) PIDs() ([]int, error) {
	ents, err := fs.ReadDir(m.root, ".")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue // self, sys, cpuinfo, ...
		}
		pids = append(pids, pid)
	}
	slices.SortFunc(pids, cmp.Compare)
	return pids, nil
}

func (m *Mapper) startTime(dir string) (uint64, error) {
	stat, err := fs.ReadFile(m.root, dir+"/stat")
	if err != nil {
		return 0, fmt.Errorf("pid %s: %w", dir, err)
	}
	start, err := StartTime(stat)
	if err != nil {
		return 0, fmt.Errorf("pid %s: %w", dir, err)
	}
	return start, nil
}

// StartTime returns field 22 of /proc/<pid>/stat: the process's start time
// in clock ticks after boot. The second field (the command name) is in
// parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func StartTime(stat []byte) (uint64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, errors.New("stat: no command name")
	}
	// Field 3 (state) is the first after the name; starttime is field 22.
	fields := bytes.Fields(stat[end+1:])
	const idx = 22 - 3
	if len(fields) <= idx {
		return 0, fmt.Errorf("stat: %d fields after the command name, want more than %d", len(fields), idx)
	}
	v, err := strconv.ParseUint(string(fields[idx]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: starttime: %w", err)
	}
	return v, nil
}
