package podmap

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

// fixtureCases is every process of testdata/proc with the identity its
// cgroup file names (see the note for the form each one covers).
var fixtureCases = []struct {
	pid         int
	podUID      string
	containerID string
	note        string
}{
	{1, "", "", "host: systemd (v2)"},
	{2, "", "", "host: kernel thread"},
	{100, "0a1b2c3d-4e5f-4789-8bcd-ef0123456789", "57d59e28722dfd55524b8d4faf279bd38f0a3f33106f9e54dfe9239fa2d0dfbf", "v2 systemd containerd burstable"},
	{101, "11111111-2222-4333-8444-555555555555", "8f4375ec65c2c4092a1cc21e76712472eae0de999384e8327c495957121db9c2", "v2 systemd containerd besteffort"},
	{102, "9f8e7d6c-5b4a-4321-8fed-cba987654321", "e2253b73169d05ffd753a5885bfa10dceed8f26db48510410fd41fd24e84145b", "v2 systemd containerd guaranteed"},
	{110, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "c64064614423cb790e88b3e5492ff5ccf673b25ae823089f7a60c65cda24d809", "v2 systemd CRI-O burstable"},
	{111, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "", "v2 systemd CRI-O conmon: in the pod, not a container"},
	{120, "12345678-90ab-4cde-8f01-234567890abc", "a6d72562dd560843b909fcbb494fdcaa98c35b789743dbea37e943f9b49836b3", "v2 cgroupfs burstable"},
	{121, "fedcba98-7654-4321-8fed-cba987654321", "5ac6343df1967757cfa7da3c03523349a4b5fe9077bccb0e2fa7300f7586e28e", "v2 cgroupfs guaranteed"},
	{130, "c0ffee00-1234-4567-89ab-cdef01234567", "3bfc269594ef649228e9a74bab00f042efc91d5acc6fbee31a382e80d42388fe", "v1 cgroupfs docker besteffort, all controllers"},
	{131, "d00dfeed-0000-4111-8222-333344445555", "005de771633e14b59c41b5428ce84a89c792c760beb7b4fae122717853dae819", "v1 systemd docker burstable"},
	{132, "beadfeed-6666-4777-8888-99990000aaaa", "a3e7552dd57be0b52b2dcb5bfd0f5518c56767c65f667bbb1015a573c0ee1937", "v1 systemd containerd guaranteed, some hierarchies at /"},
	{140, "5e5e5e5e-1111-4222-8333-444455556666", "0b27c158feb36ab18a10ff687909ec730ece6280581dd407e2672359be7725dd", "kind (v2, systemd) nested under kubelet.slice"},
	{141, "6f6f6f6f-7777-4888-8999-aaaabbbbcccc", "a0f8b906cef5474717d8e998625380525c4a6a25b33e9d015e1dc3c4636cc296", "kind node container (cgroupfs) nested under /docker/<node>"},
	{142, "7a7a7a7a-1212-4343-8565-878798980000", "d0f78b3aac665b9e5727e43bbeb63d093cdeb4f133afa7661cccfc4e0aad233e", "kind v1 nested"},
	{150, "8b8b8b8b-2323-4545-8676-989810102020", "3b9aa142fefa44aab83ab1c0909f6929fd53656b895ec2fc0e47d412ea62ba54", "private cgroup namespace, systemd"},
	{151, "9c9c9c9c-3434-4646-8787-a9a9b0b0c0c0", "d656713a4f21149ea46583a9c8f7267891abc845968a01b997105ec5b2f476a8", "private cgroup namespace, cgroupfs"},
	{160, "6f1d5b0a4e2c3b7d8e9f0a1b2c3d4e5f", "2053dbbf6ec7135c4e994d3464c478db6f48d3ca21052c8f44915edc96e02c39", "static pod (hash UID)"},
	{170, "abcdef01-2345-4678-89ab-cdef01234567", "233562de1a0288b139c4fa40b7d189f806e906eeb048517aeb67f34ac0e2faf1", "sub-cgroup inside the container"},
	{200, "", "", "host: plain docker container, no pod"},
	{201, "", "", "host: MPS server"},
	{202, "", "", "host: login session"},
	{203, "", "", "host: looks pod-ish, is not"},
	{204, "", "", "host: the kubepods slice itself"},
	{205, "", "", "host: comm with spaces and parentheses"},
}

func TestMapperFixtureTree(t *testing.T) {
	m := NewMapper(os.DirFS("testdata/proc"))
	for _, tc := range fixtureCases {
		t.Run(tc.note, func(t *testing.T) {
			got, err := m.Lookup(tc.pid)
			if err != nil {
				t.Fatalf("Lookup(%d): %v", tc.pid, err)
			}
			want := Identity{PodUID: tc.podUID, ContainerID: tc.containerID}
			if got != want {
				t.Errorf("Lookup(%d) = %+v, want %+v", tc.pid, got, want)
			}
			if got.InPod() != (tc.podUID != "") {
				t.Errorf("InPod() = %v", got.InPod())
			}
		})
	}
}

func TestPIDs(t *testing.T) {
	m := NewMapper(os.DirFS("testdata/proc"))
	pids, err := m.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != len(fixtureCases) {
		t.Fatalf("PIDs() = %v, want the %d fixture processes", pids, len(fixtureCases))
	}
	for i, tc := range fixtureCases {
		if pids[i] != tc.pid {
			t.Errorf("PIDs()[%d] = %d, want %d (ascending, non-PID entries skipped)", i, pids[i], tc.pid)
		}
	}
}

func TestParsePath(t *testing.T) {
	const (
		uid = "0a1b2c3d-4e5f-4789-8bcd-ef0123456789"
		sd  = "0a1b2c3d_4e5f_4789_8bcd_ef0123456789"
		cid = "57d59e28722dfd55524b8d4faf279bd38f0a3f33106f9e54dfe9239fa2d0dfbf"
		in2 = "11111111_2222_4333_8444_555555555555"
		ci2 = "8f4375ec65c2c4092a1cc21e76712472eae0de999384e8327c495957121db9c2"
	)
	tests := []struct {
		path string
		want Identity
	}{
		{"/kubepods/pod" + uid + "/" + cid, Identity{uid, cid}},
		{"/kubepods/burstable/pod" + uid, Identity{uid, ""}},
		{"/kubepods/burstable/pod" + uid + "/", Identity{uid, ""}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + sd + ".slice/docker-" + cid + ".scope", Identity{uid, cid}},
		{"/kubepods.slice/kubepods-pod" + sd + ".slice/crio-" + cid + ".scope", Identity{uid, cid}},
		{"/kubepods.slice/kubepods-pod" + sd + ".slice/crio-conmon-" + cid + ".scope", Identity{uid, ""}},
		{"/kubepods/burstable/pod" + uid + "/crio-conmon-" + cid, Identity{uid, ""}},
		// CRI-O before cri-o/cri-o#4080 nested the container under its
		// conmon (cgroupfs): the pod is right, the container is not
		// claimed from the conmon level.
		{"/kubepods/burstable/pod" + uid + "/crio-conmon-" + cid + "/kubepods/burstable/pod" + uid + "/crio-" + cid, Identity{uid, ""}},
		// A container component that is not an ID: pod known, container not.
		{"/kubepods/pod" + uid + "/not-a-container", Identity{uid, ""}},
		{"/kubepods/pod" + uid + "/" + cid[:63], Identity{uid, ""}},
		{"/kubepods/pod" + uid + "/" + strings.ToUpper(cid), Identity{uid, ""}},
		{"/kubepods/pod" + uid + "/containerd-" + cid + ".scope", Identity{uid, ""}},
		// The systemd notation, every runtime prefix, any parent.
		{"/kubepods-burstable-pod" + sd + ".slice:cri-containerd:" + cid, Identity{uid, cid}},
		{"/system.slice/containerd.service/kubepods-pod" + sd + ".slice:cri-containerd:" + cid, Identity{uid, cid}},
		{"/system.slice/kubepods-besteffort-pod" + sd + ".slice:crio:" + cid, Identity{uid, cid}},
		{"/kubepods-besteffort-pod" + sd + ".slice:docker:" + cid, Identity{uid, cid}},
		{"/kubelet-kubepods-besteffort-pod" + sd + ".slice:cri-containerd:" + cid, Identity{uid, cid}},
		{"/BestEffort-pod" + sd + ".slice:docker:" + cid, Identity{uid, cid}},
		{"/kubepods-besteffort-pod" + sd + ".slice:cri-o:" + cid, Identity{uid, ""}},
		{"/kubepods-besteffort-pod" + sd + ".slice:cri-containerd:" + cid + ":x", Identity{uid, ""}},
		{"/kubepods-besteffort-pod" + sd + ".slice:cri-containerd", Identity{uid, ""}},
		{"/kubepods-besteffort-pod" + sd + ".slice:cri-containerd:" + cid[:12], Identity{uid, ""}},
		{"/kubepods-besteffort-pod" + sd + ".slice:cri-containerd:" + cid + "/sub", Identity{uid, cid}},
		{"/system.slice:docker:" + cid, Identity{}},
		{"/kubepods-besteffort-pod" + sd + ":cri-containerd:" + cid, Identity{}},
		// Legacy kubelet 1.5 QoS names.
		{"/BestEffort.slice/BestEffort-pod" + sd + ".slice/" + cid, Identity{uid, cid}},
		{"/docker.slice/docker-Burstable.slice/docker-Burstable-pod" + sd + ".slice/docker-" + cid + ".scope", Identity{uid, cid}},
		{"/BestEffort/pod" + uid + "/" + cid, Identity{uid, cid}},
		{"/pod" + uid + "/" + cid, Identity{uid, cid}},
		{"/Guaranteed.slice/Guaranteed-pod" + sd + ".slice/" + cid, Identity{}},
		{"/kubepods.slice/kubepods-BestEffort.slice/kubepods-BestEffort-pod" + sd + ".slice/" + cid, Identity{uid, cid}},
		// Dashed UIDs in slices: systemd's expansion of an unescaped name.
		{"/kubepods.slice/kubepods-pod0a1b2c3d.slice/kubepods-pod" + uid + ".slice/" + cid, Identity{uid, cid}},
		{"/kubepods-pod0a1b2c3d_4e5f-4789_8bcd_ef0123456789.slice/" + cid, Identity{}},
		// The first pod wins: the outer pod of a nested cluster.
		{"/kubepods/pod" + uid + "/" + cid + "/kubelet.slice/kubelet-kubepods-pod" + in2 + ".slice/cri-containerd-" + ci2 + ".scope", Identity{uid, cid}},
		// Slices must be the kubelet's QoS levels; "pod" names elsewhere are not pods.
		{"/user.slice/app-pod" + sd + ".slice/x.scope", Identity{}},
		{"/notkubepods-pod" + sd + ".slice/" + cid, Identity{}},
		{"/kubepods-guaranteed-pod" + sd + ".slice/" + cid, Identity{}},
		{"/foo-besteffort-pod" + sd + ".slice/" + cid, Identity{}},
		{"/kubepods-pod" + sd + "/" + cid, Identity{}}, // a slice name without ".slice"
		{"/kubepods/pod" + uid[:35], Identity{}},
		{"/kubepods/pod" + sd, Identity{}}, // underscores only in systemd names
		{"/kubepods/pod" + strings.ToUpper(uid), Identity{}},
		{"/kubepods/podxyz", Identity{}},
		// Private cgroup namespaces: a pod below the climb is visible...
		{"/../../kubepods-besteffort-pod" + sd + ".slice/cri-containerd-" + cid + ".scope", Identity{uid, cid}},
		// ...and the host is the host.
		{"/../../../system.slice/nvidia-persistenced.service", Identity{}},
		{"/..", Identity{}},
		{"/", Identity{}},
		{"", Identity{}},
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.path)
		if err != nil || got != tt.want {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
	}
}

// TestParsePathHiddenPod: a container straight below the "/.." climb out of
// a private cgroup namespace has its pod out of sight. Mapping it to no pod
// would call it a host process; it is an error instead.
func TestParsePathHiddenPod(t *testing.T) {
	const cid = "57d59e28722dfd55524b8d4faf279bd38f0a3f33106f9e54dfe9239fa2d0dfbf"
	for _, path := range []string{
		"/../cri-containerd-" + cid + ".scope",
		"/../../crio-" + cid + ".scope/init",
		"/../crio-conmon-" + cid + ".scope",
		"/../" + cid,
		"/../docker-" + cid + ".scope",
	} {
		got, err := ParsePath(path)
		if !errors.Is(err, ErrAmbiguous) || got != (Identity{}) {
			t.Errorf("ParsePath(%q) = %+v, %v; want ErrAmbiguous", path, got, err)
		}
	}
}

// TestParseCgroupLinesAgree: on cgroup v1 each hierarchy has its own line.
// Lines naming two pods make the file ambiguous; lines naming two containers
// of one pod leave the container unclaimed.
func TestParseCgroupLinesAgree(t *testing.T) {
	const (
		podA = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
		podB = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
		c1   = "1111111111111111111111111111111111111111111111111111111111111111"
		c2   = "2222222222222222222222222222222222222222222222222222222222222222"
	)
	sdA := strings.ReplaceAll(podA, "-", "_")
	tests := []struct {
		name, data string
		want       Identity
		ambiguous  bool
	}{
		{"two pods", "4:memory:/kubepods/pod" + podA + "/" + c1 + "\n3:cpu:/kubepods/pod" + podB + "/" + c1 + "\n", Identity{}, true},
		{"two pods, one in the notation", "4:memory:/kubepods-pod" + sdA + ".slice:cri-containerd:" + c1 + "\n3:cpu:/kubepods/pod" + podB + "\n", Identity{}, true},
		{"two containers", "4:memory:/kubepods/pod" + podA + "/" + c1 + "\n3:cpu:/kubepods/pod" + podA + "/" + c2 + "\n2:pids:/kubepods/pod" + podA + "/" + c1 + "\n", Identity{PodUID: podA}, false},
		{"container on a later line", "4:memory:/kubepods/pod" + podA + "\n3:cpu:/kubepods/pod" + podA + "/" + c1 + "\n", Identity{podA, c1}, false},
		{"host lines do not conflict", "5:rdma:/\n4:memory:/kubepods/pod" + podA + "/" + c1 + "\n1:name=systemd:/system.slice/containerd.service\n0::/\n", Identity{podA, c1}, false},
		{"same pod, two spellings", "4:memory:/kubepods.slice/kubepods-pod" + sdA + ".slice/cri-containerd-" + c1 + ".scope\n3:cpu:/kubepods-pod" + sdA + ".slice:cri-containerd:" + c1 + "\n", Identity{podA, c1}, false},
		{"hidden pod on one line", "4:memory:/kubepods/pod" + podA + "/" + c1 + "\n0::/../cri-containerd-" + c1 + ".scope\n", Identity{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCgroup([]byte(tt.data))
			if tt.ambiguous {
				if !errors.Is(err, ErrAmbiguous) || got != (Identity{}) {
					t.Errorf("ParseCgroup = %+v, %v; want ErrAmbiguous", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseCgroup = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseCgroupErrors(t *testing.T) {
	tests := []struct {
		name, data, wantSub string
	}{
		{"empty", "", "empty cgroup file"},
		{"blank", "\n\n", "empty cgroup file"},
		{"no colon", "garbage\n", "line 1"},
		{"one colon", "0::/\n1:/x\n", "line 2"},
		{"relative path", "0::kubepods\n", "not absolute"},
		{"empty path", "0::\n", "not absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCgroup([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("ParseCgroup(%q) error = %v, want containing %q", tt.data, err, tt.wantSub)
			}
		})
	}
}

func TestParseCgroupTolerates(t *testing.T) {
	const uid = "12345678-90ab-4cde-8f01-234567890abc"
	tests := []struct {
		name, data string
		want       Identity
	}{
		{"CRLF and no trailing newline", "0::/kubepods/pod" + uid + "\r\n1:cpu:/", Identity{PodUID: uid}},
		{"colon inside the path", "0::/kubepods/pod" + uid + "/a:b\n", Identity{PodUID: uid}},
		{"blank lines", "\n0::/kubepods/pod" + uid + "\n\n", Identity{PodUID: uid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCgroup([]byte(tt.data))
			if err != nil || got != tt.want {
				t.Errorf("ParseCgroup = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestStartTime(t *testing.T) {
	tests := []struct {
		stat    string
		want    uint64
		wantErr bool
	}{
		{"1 (systemd) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42 1000 10", 42, false},
		{"9 (a) b (c)) R 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0", 77, false},
		{"9 (short) S 1 2 3", 0, true},
		{"9 no parens S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77", 0, true},
		{"9 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5 0 0", 0, true},
	}
	for _, tt := range tests {
		got, err := StartTime([]byte(tt.stat))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("StartTime(%q) = %d, %v; want %d, err %v", tt.stat, got, err, tt.want, tt.wantErr)
		}
	}
}

func stat(pid string, start string) *fstest.MapFile {
	return &fstest.MapFile{Data: []byte(pid + " (p) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 " + start + " 0 0\n")}
}

func TestMapperPIDReuse(t *testing.T) {
	const (
		podA = "0::/kubepods/podaaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\n"
		podB = "0::/kubepods/podbbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb\n"
	)
	procfs := fstest.MapFS{
		"42/stat":   stat("42", "1000"),
		"42/cgroup": {Data: []byte(podA)},
	}
	m := NewMapper(procfs)
	id, err := m.Lookup(42)
	if err != nil || id.PodUID != "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa" {
		t.Fatalf("first lookup = %+v, %v", id, err)
	}

	// Same process, cgroup file changed under us: the cache answers, which
	// proves the cache is used while the start time is unchanged.
	procfs["42/cgroup"] = &fstest.MapFile{Data: []byte(podB)}
	if id, _ := m.Lookup(42); id.PodUID != "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa" {
		t.Errorf("cached lookup = %+v, want pod A", id)
	}

	// The PID is reused by a new process (new start time): pod B.
	procfs["42/stat"] = stat("42", "2000")
	if id, _ := m.Lookup(42); id.PodUID != "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb" {
		t.Errorf("lookup after PID reuse = %+v, want pod B", id)
	}
}

func TestMapperErrors(t *testing.T) {
	procfs := fstest.MapFS{
		"7/stat":   stat("7", "5"),
		"8/cgroup": {Data: []byte("0::/\n")},
		"9/stat":   stat("9", "5"),
		"9/cgroup": {Data: []byte("nonsense\n")},
	}
	m := NewMapper(procfs)
	for _, pid := range []int{0, -1, 7, 8, 9, 10} {
		if id, err := m.Lookup(pid); err == nil {
			t.Errorf("Lookup(%d) = %+v, want an error", pid, id)
		}
	}
	if _, err := m.Lookup(10); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup of a gone process: %v, want fs.ErrNotExist", err)
	}
	if m.Len() != 0 {
		t.Errorf("failed lookups were cached: %d entries", m.Len())
	}
}

func TestMapperSweep(t *testing.T) {
	procfs := fstest.MapFS{
		"1/stat": stat("1", "1"), "1/cgroup": {Data: []byte("0::/\n")},
		"2/stat": stat("2", "1"), "2/cgroup": {Data: []byte("0::/\n")},
	}
	m := NewMapper(procfs)
	lookup := func(pid int) {
		t.Helper()
		if _, err := m.Lookup(pid); err != nil {
			t.Fatal(err)
		}
	}
	lookup(1)
	lookup(2)
	m.Sweep()
	if m.Len() != 2 {
		t.Fatalf("after first round: %d entries, want 2", m.Len())
	}
	lookup(1)
	m.Sweep()
	if m.Len() != 1 {
		t.Errorf("after a round without PID 2: %d entries, want 1", m.Len())
	}
}

// FuzzParseCgroup checks the parser never panics and that whatever it
// returns is well formed and present in the input.
func FuzzParseCgroup(f *testing.F) {
	for _, tc := range fixtureCases {
		if data, err := os.ReadFile("testdata/proc/" + strconv.Itoa(tc.pid) + "/cgroup"); err == nil {
			f.Add(data)
		}
	}
	for _, tc := range formCases {
		data, _ := readForm(f, tc.file)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := ParseCgroup(data)
		if err != nil {
			if id != (Identity{}) {
				t.Fatalf("error %v with non-empty identity %+v", err, id)
			}
			return
		}
		if id.PodUID == "" && id.ContainerID != "" {
			t.Fatalf("container %q without a pod", id.ContainerID)
		}
		if id.PodUID != "" {
			if !validUID(id.PodUID) {
				t.Fatalf("invalid pod UID %q", id.PodUID)
			}
			// The UID is read from a "pod<uid>" name, never pieced together.
			s := string(data)
			if !strings.Contains(s, "pod"+id.PodUID) && !strings.Contains(s, "pod"+strings.ReplaceAll(id.PodUID, "-", "_")) {
				t.Fatalf("pod UID %q not in input as pod<uid>", id.PodUID)
			}
		}
		if id.ContainerID != "" && (len(id.ContainerID) != 64 || !isHex(id.ContainerID) || !strings.Contains(string(data), id.ContainerID)) {
			t.Fatalf("bad container ID %q", id.ContainerID)
		}
		again, err2 := ParseCgroup(data)
		if err2 != nil || again != id {
			t.Fatalf("not deterministic: %+v/%v then %+v/%v", id, err, again, err2)
		}
		// Hierarchy lines carry no order the answer may depend on.
		lines := slices.Collect(bytes.Lines(data))
		slices.Reverse(lines)
		var rev bytes.Buffer
		for _, l := range lines {
			rev.Write(l)
			if !bytes.HasSuffix(l, []byte("\n")) {
				rev.WriteByte('\n')
			}
		}
		if back, err3 := ParseCgroup(rev.Bytes()); err3 != nil || back != id {
			t.Fatalf("lines reversed: %+v/%v, want %+v", back, err3, id)
		}
	})
}
