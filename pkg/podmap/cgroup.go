// Package podmap finds the pod and container a host PID runs in, from
// /proc/<pid>/cgroup. NVML reports host PIDs; the kubelet puts every
// container in a cgroup whose path names the pod UID and the container ID, so
// the cgroup path is the one place that links the two without asking the
// container runtime.
//
// Forms recognised (cgroup v1 and v2 alike, any QoS class):
//
//	cgroupfs driver:  /kubepods[/burstable|/besteffort]/pod<uid>/[<runtime>-]<container-id>
//	systemd driver:   /kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_with_underscores>.slice/<runtime>-<container-id>.scope
//	systemd notation: …/kubepods[-<qos>]-pod<uid_with_underscores>.slice:<runtime>:<container-id>
//	legacy (kubelet 1.5 --experimental-cgroups-per-qos):
//	                  /BestEffort|Burstable/pod<uid>/<id>, /BestEffort.slice/BestEffort-pod<uid>.slice/<id>
//
// where <runtime> is cri-containerd, crio or docker. The systemd notation is
// the "<slice>:<prefix>:<name>" cgroupsPath that containerd (and CRI-O and
// dockerd) hand to runc for a systemd-driven kubelet; a runc configured for
// cgroupfs (containerd's SystemdCgroup = false) takes it literally, so it
// lands in the file verbatim, relative to the runtime's own cgroup on some
// hierarchies and to the root on others. Prefixes above the kubepods level
// (kind's /kubelet.slice/kubelet-kubepods..., /docker/<node>/kubepods/...)
// and paths relative to a private cgroup namespace (/../../kubepods-...) work
// because the parser keys on the pod component wherever it appears, and takes
// the container ID from the component right below it.
//
// The parser never guesses: a file whose lines name two different pods, or a
// path whose pod lies above the reader's cgroup namespace root, is an error
// wrapping ErrAmbiguous, and a component that is not exactly one of the forms
// above names no pod.
package podmap

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// ErrAmbiguous marks a cgroup file that names a container but not exactly
// one pod. Such a process is left unmapped: any pod picked for it could be
// the wrong one.
var ErrAmbiguous = errors.New("cgroup does not name exactly one pod")

// Identity is what a cgroup path says about a process. Both fields are empty
// for processes outside any pod (host daemons, the MPS server, kernel
// threads); ContainerID is empty for pod-level processes that are not a
// container (CRI-O's conmon) and where the path names no container ID of a
// known form.
type Identity struct {
	PodUID string `json:"podUID"`
	// ContainerID is the runtime's ID without a runtime prefix, as in
	// status.containerStatuses[].containerID after "containerd://".
	ContainerID string `json:"containerID"`
}

// InPod reports whether the process belongs to a pod.
func (id Identity) InPod() bool { return id.PodUID != "" }

// ParseCgroup reads the contents of /proc/<pid>/cgroup. Each line is
// "hierarchy-ID:controller-list:path". On cgroup v1 every hierarchy has its
// own line; they normally agree, some may sit at "/", and lines may differ in
// the prefix above the pod (see the package comment). Every line that names
// a pod must name the same one, else the file is ambiguous; the container
// comes from the lines that name one, and is left empty if they disagree. A
// process in no pod gets the zero Identity and no error.
func ParseCgroup(data []byte) (Identity, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Identity{}, errors.New("empty cgroup file")
	}
	var (
		id           Identity
		podLine      int
		containerMix bool // lines named different containers of the pod
	)
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
		got, err := ParsePath(string(path))
		if err != nil {
			return Identity{}, fmt.Errorf("cgroup line %d: %w", n, err)
		}
		switch {
		case !got.InPod():
		case id.PodUID == "":
			id, podLine = got, n
		case got.PodUID != id.PodUID:
			return Identity{}, fmt.Errorf("cgroup lines %d and %d name pods %s and %s: %w", podLine, n, id.PodUID, got.PodUID, ErrAmbiguous)
		case got.ContainerID == "" || containerMix:
		case id.ContainerID == "":
			id.ContainerID = got.ContainerID
		case got.ContainerID != id.ContainerID:
			// Same pod, two containers: the pod is certain, the
			// container is not.
			id.ContainerID, containerMix = "", true
		}
	}
	return id, nil
}

// ParsePath extracts the pod UID and container ID from one cgroup path. The
// first (outermost) pod component wins: when a node runs a nested cluster
// inside one of its pods (kind or k3s in a CI pod), the outer pod is the one
// the node's kubelet runs, and the inner UID would be unknown to it anyway.
// A path relative to a private cgroup namespace whose first component below
// the "/.." steps is a container has its pod above the namespace root, out of
// sight: that is an error wrapping ErrAmbiguous, not a host process.
func ParsePath(path string) (Identity, error) {
	comps := strings.Split(path, "/")
	for i, comp := range comps {
		if slice, rest, ok := strings.Cut(comp, ":"); ok {
			// "<slice>:<prefix>:<name>" taken literally by runc.
			if uid := sliceUID(slice); uid != "" {
				return Identity{PodUID: uid, ContainerID: notationContainerID(rest)}, nil
			}
			continue
		}
		if uid := podUID(comp); uid != "" {
			id := Identity{PodUID: uid}
			if i+1 < len(comps) {
				id.ContainerID = containerID(comps[i+1])
			}
			return id, nil
		}
	}
	if hidesPod(comps) {
		return Identity{}, fmt.Errorf("path %q: a container whose pod is above this cgroup namespace: %w", path, ErrAmbiguous)
	}
	return Identity{}, nil
}

// hidesPod reports whether a split path climbs out of the reader's cgroup
// namespace ("", "..", "..", ...) and then goes straight into a container:
// the container's parent, which would name the pod, is not in the path. This
// is what a process in the reader's own pod looks like from a private
// cgroup namespace ("/../cri-containerd-<id>.scope").
func hidesPod(comps []string) bool {
	i := 1 // comps[0] is "" before the leading '/'
	for i < len(comps) && comps[i] == ".." {
		i++
	}
	return i > 1 && i < len(comps) && (containerID(comps[i]) != "" || isConmon(comps[i]))
}

// podUID returns the pod UID a path component names, or "".
// cgroupfs: "pod<uid>" with the UID as the API writes it; systemd: see
// sliceUID.
func podUID(comp string) string {
	if strings.HasSuffix(comp, ".slice") {
		return sliceUID(comp)
	}
	if rest, ok := strings.CutPrefix(comp, "pod"); ok && validUID(rest) {
		return rest
	}
	return ""
}

// sliceUID returns the pod UID a systemd slice name names, or "". The
// kubelet names a pod slice "<parent>-pod<uid>.slice", where <parent> is
// kubepods[-besteffort|-burstable] (under any prefix, e.g. kind's
// "kubelet-"), or BestEffort/Burstable for kubelet 1.5. It writes the UID's
// dashes as underscores, because a dash is systemd's slice separator; a slice
// spelled with dashes is one that systemd expands into one level per dash
// (kubepods-besteffort-pod5f4f98db.slice/…/kubepods-besteffort-pod5f4f98db-9888-11e7-….slice),
// whose last level carries the whole UID. A mix of both is no form anyone
// writes.
func sliceUID(comp string) string {
	name, ok := strings.CutSuffix(comp, ".slice")
	if !ok {
		return ""
	}
	i := strings.LastIndex(name, "-pod")
	if i < 0 || !kubeletQoSParent(name[:i]) {
		return ""
	}
	raw := name[i+len("-pod"):]
	if strings.Contains(raw, "_") {
		if strings.Contains(raw, "-") {
			return ""
		}
		raw = strings.ReplaceAll(raw, "_", "-")
	}
	if !validUID(raw) {
		return ""
	}
	return raw
}

// kubeletQoSParent reports whether a slice name is one the kubelet puts pod
// slices in: "kubepods" (guaranteed pods), "kubepods-besteffort",
// "kubepods-burstable", any of these under a prefix, or the capitalised QoS
// slices of kubelet 1.5.
func kubeletQoSParent(name string) bool {
	segs := strings.Split(name, "-")
	last := segs[len(segs)-1]
	switch last {
	case "kubepods", "BestEffort", "Burstable":
		return true
	case "besteffort", "burstable":
		return len(segs) >= 2 && segs[len(segs)-2] == "kubepods"
	}
	return false
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

// runtimePrefixes are the names containerd, CRI-O and dockerd give their
// containers' scopes ("<prefix>-<id>.scope") and pass as the <prefix> of
// the systemd notation.
var runtimePrefixes = [...]string{"cri-containerd", "crio", "docker"}

// containerID returns the container ID a path component names, or "".
// cgroupfs uses the bare ID (CRI-O: "crio-<id>"); systemd wraps it as
// "<runtime>-<id>.scope".
func containerID(comp string) string {
	if isConmon(comp) {
		return ""
	}
	name := strings.TrimSuffix(comp, ".scope")
	for _, p := range runtimePrefixes {
		if rest, ok := strings.CutPrefix(name, p+"-"); ok {
			name = rest
			break
		}
	}
	return fullID(name)
}

// isConmon reports whether a component is CRI-O's container monitor,
// "crio-conmon-<id>[.scope]" (conmon_cgroup = "pod"): it lives in the pod
// but is not the container, and its ID is the container's, so it must not
// be taken for it.
func isConmon(comp string) bool {
	return strings.HasPrefix(comp, "crio-conmon-")
}

// notationContainerID returns the container ID of the "<prefix>:<name>" part
// of the systemd notation, or "" for an unknown prefix or a name that is not
// a full container ID.
func notationContainerID(rest string) string {
	prefix, name, ok := strings.Cut(rest, ":")
	if !ok {
		return ""
	}
	for _, p := range runtimePrefixes {
		if prefix == p {
			return fullID(name)
		}
	}
	return ""
}

// fullID returns s if it is a full container ID (64 lowercase hex digits, as
// containerd, CRI-O and docker report them), else "".
func fullID(s string) string {
	if len(s) != 64 || !isHex(s) {
		return ""
	}
	return s
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
