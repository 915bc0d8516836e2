// Package podmap finds the pod and container a host PID runs in, from
// /proc/<pid>/cgroup. NVML reports host PIDs; the kubelet puts every
// container in a cgroup whose path names the pod UID and the container ID, so
// the cgroup path is the one place that links the two without asking the
// container runtime.
//
// Forms recognised (cgroup v1 and v2 alike, any QoS class):
//
//	cgroupfs driver:  /kubepods[/burstable|/besteffort]/pod<uid>/<container-id>
//	systemd driver:   /kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_with_underscores>.slice/<runtime>-<container-id>.scope
//
// where <runtime> is cri-containerd, crio or docker. Prefixes above the
// kubepods level (kind's /kubelet.slice/kubelet-kubepods..., or
// /docker/<node>/kubepods/...) and paths relative to a private cgroup
// namespace (/../../kubepods-...) work because the parser keys on the pod
// component wherever it appears, and takes the container ID from the
// component right below it.
package podmap

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Identity is what a cgroup path says about a process. Both fields are empty
// for processes outside any pod (host daemons, the MPS server, kernel
// threads); ContainerID is empty for pod-level processes that are not a
// container (CRI-O's conmon).
type Identity struct {
	PodUID string `json:"podUID"`
	// ContainerID is the runtime's ID without a runtime prefix, as in
	// status.containerStatuses[].containerID after "containerd://".
	ContainerID string `json:"containerID"`
}

// InPod reports whether the process belongs to a pod.
func (id Identity) InPod() bool { return id.PodUID != "" }

// ParseCgroup reads the contents of /proc/<pid>/cgroup. Each line is
// "hierarchy-ID:controller-list:path"; the first line whose path names a pod
// wins (on cgroup v1 every controller normally agrees, and some hierarchies
// may sit at "/"). A process in no pod gets the zero Identity and no error.
func ParseCgroup(data []byte) (Identity, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Identity{}, errors.New("empty cgroup file")
	}
	n := 0
	for line := range bytes.Lines(data) {
		n++
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			continue
		}
		first := bytes.IndexByte(line, ':')
		if first < 0 {
			return Identity{}, fmt.Errorf("cgroup line %d: want hierarchy-ID:controllers:path, got %q", n, line)
		}
		second := bytes.IndexByte(line[first+1:], ':')
		if second < 0 {
			return Identity{}, fmt.Errorf("cgroup line %d: want hierarchy-ID:controllers:path, got %q", n, line)
		}
		path := line[first+1+second+1:]
		if len(path) == 0 || path[0] != '/' {
			return Identity{}, fmt.Errorf("cgroup line %d: path %q is not absolute", n, path)
		}
		if id := ParsePath(string(path)); id.InPod() {
			return id, nil
		}
	}
	return Identity{}, nil
}

// ParsePath extracts the pod UID and container ID from one cgroup path.
func ParsePath(path string) Identity {
	var id Identity
	for comp := range strings.SplitSeq(path, "/") {
		if id.PodUID != "" {
			id.ContainerID = containerID(comp)
			return id
		}
		id.PodUID = podUID(comp)
	}
	return id
}

// podUID returns the pod UID a path component names, or "".
// cgroupfs: "pod<uid>"; systemd: "kubepods[-<qos>]-pod<uid>.slice" with the
// UID's dashes written as underscores (a dash is systemd's slice separator).
func podUID(comp string) string {
	name, slice := strings.CutSuffix(comp, ".slice")
	var cand string
	switch {
	case !slice && strings.HasPrefix(name, "pod"):
		cand = name[len("pod"):]
	case slice:
		i := strings.LastIndex(name, "-pod")
		if i < 0 || !strings.Contains(name[:i], "kubepods") {
			return ""
		}
		raw := name[i+len("-pod"):]
		if strings.Contains(raw, "-") {
			return "" // a dash here would be a slice separator, not part of the UID
		}
		cand = strings.ReplaceAll(raw, "_", "-")
	default:
		return ""
	}
	if !validUID(cand) {
		return ""
	}
	return cand
}

// validUID accepts the two forms the kubelet uses: an RFC 4122 UUID for API
// pods and 32 hex digits (a hash of the manifest) for static pods.
func validUID(s string) bool {
	switch len(s) {
	case 32:
		return isHex(s)
	case 36:
		for i := range len(s) {
			c := s[i]
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if c != '-' {
					return false
				}
			} else if !isHexByte(c) {
				return false
			}
		}
		return true
	}
	return false
}

// containerID returns the container ID a path component names, or "".
// cgroupfs uses the bare ID; systemd wraps it as "<runtime>-<id>.scope".
// CRI-O's monitor lives in "crio-conmon-<id>.scope": it is in the pod but is
// not the container, so it gets no container ID.
func containerID(comp string) string {
	name := strings.TrimSuffix(comp, ".scope")
	// The systemd scope prefixes of containerd, CRI-O and docker.
	for _, p := range [...]string{"cri-containerd-", "crio-", "docker-"} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			name = rest
			break
		}
	}
	if len(name) != 64 || !isHex(name) {
		return ""
	}
	return name
}

func isHex(s string) bool {
	for i := range len(s) {
		if !isHexByte(s[i]) {
			return false
		}
	}
	return true
}

func isHexByte(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f')
}
