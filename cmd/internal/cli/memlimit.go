package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
)

// CgroupRoot is where a container sees its own cgroup (cgroup namespaces,
// the default for containers on cgroup v2).
const CgroupRoot = "/sys/fs/cgroup"

// memoryLimitShare is the part of the container's memory limit the Go
// runtime aims to stay under. The rest is room for what the runtime does not
// count (thread stacks, cgo, page-level fragmentation) so the kernel's OOM
// killer is not the first thing to act when a refresh or an informer resync
// briefly doubles the live heap.
const memoryLimitShare = 0.9

// MemoryLimit makes the Go runtime collect before the container's memory
// limit rather than at GOGC's default of twice the live heap, which for a
// spike (the adapter building its next snapshot beside the current one) can
// cross the limit while most of it is garbage. It reads the cgroup limit of
// the process (v2 memory.max, else v1 memory.limit_in_bytes, under
// cgroupRoot, normally /sys/fs/cgroup) and sets the runtime's soft limit to
// 90 % of it. An explicit GOMEMLIMIT wins, and no limit or an unreadable
// cgroup leaves the runtime as it is: this only ever adds a limit. It logs
// what it decided.
func MemoryLimit(logger logr.Logger, cgroupRoot string) {
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		logger.V(1).Info("Go memory limit from GOMEMLIMIT", "GOMEMLIMIT", v)
		return
	}
	limit, err := cgroupMemoryLimit(cgroupRoot)
	switch {
	case err != nil:
		logger.V(1).Info("no Go memory limit: the cgroup's memory limit is unreadable", "err", err)
	case limit == 0:
		logger.V(1).Info("no Go memory limit: the cgroup has none")
	default:
		soft := int64(float64(limit) * memoryLimitShare)
		debug.SetMemoryLimit(soft)
		logger.Info("Go memory limit set below the container's", "containerLimitBytes", limit, "goMemoryLimitBytes", soft)
	}
}

// cgroupMemoryLimit is the memory limit of the cgroup the process sees at
// root (inside a container, its own), in bytes; 0 when unlimited.
func cgroupMemoryLimit(root string) (int64, error) {
	for _, f := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return parseMemoryLimit(f, string(b))
	}
	return 0, fmt.Errorf("neither memory.max nor memory/memory.limit_in_bytes under %s", root)
}

// parseMemoryLimit reads one cgroup limit file: "max" (v2) and v1's
// page-rounded maximum mean no limit.
func parseMemoryLimit(file, s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive byte count", file, s)
	}
	// cgroup v1 reports "no limit" as the largest page-aligned int64.
	if n >= math.MaxInt64-(1<<20) {
		return 0, nil
	}
	return n, nil
}
