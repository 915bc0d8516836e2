package podmap

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// formCases is every fixture of testdata/cgroup: a cgroup file seen in the
// wild (or built from a named source's description), preceded by "#"
// comment lines that name the source and the form. want is what the file
// says; unmapped, for a process the parser must not map to a pod, says why.
// ambiguous files must fail with ErrAmbiguous.
var formCases = []struct {
	file      string
	want      Identity
	unmapped  string
	ambiguous bool
}{
	// The systemd notation, "<pod slice>:<runtime>:<id>", taken literally.
	{file: "notation-containerd-v1-otel-java-4507.txt", want: Identity{"0125ec2f-b64a-4868-8f5b-94b56cbab864", "ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459"}},
	{file: "notation-containerd-v1-elastic-apm-nodejs-3550.txt", want: Identity{"ff49d0be-16b7-4a49-bb9e-8ec1f1f4e27f", "0f99ad5f45163ed14ab8eaf92ed34bb4a631d007f8755a7d79be614bcb0df0ef"}},
	{file: "notation-containerd-static-pod-k8s-106515.txt", want: Identity{"36b6d6be73b1065af369b3985edafa09", "79fedb3bd23ca77c9d9ccb41909038316f713df22b54b7d942b71d3812e7c74e"}},
	{file: "notation-containerd-v2-falco.txt", want: Identity{"bd12dd3393227d950605a2444b13c27a", "d52db56a9c80d536a91354c0951c061187ca46249e64865a12703003d8f42366"}},
	{file: "notation-crio-v2.txt", want: Identity{"9da3b2a14682e1fb23be3c2492753207", "fe018d944f87b227b3b7f86226962639020e99eac8991463bf7126ef8e929589"}},
	{file: "notation-docker-v1-constructed.txt", want: Identity{"3c0e1f52-9b7d-4e1a-8c55-0d6b2f4a7e91", "7f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f"}},
	{file: "notation-unknown-prefix.txt", want: Identity{PodUID: "5a6b7c8d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"}},

	// kubelet 1.5's capitalised QoS cgroups.
	{file: "legacy-besteffort-slice-k8s-36807.txt", want: Identity{"0d33f94b-ab1a-11e6-9e1a-68f7281d8004", "0c34bcd7d02f321d0df7aa6ea703285b02abebc9096c5128c14091fc43ea1f3b"}},
	{file: "legacy-burstable-slice-kubelet-1.5.txt", want: Identity{"7e2b9a40-1c3d-11e7-93ae-92361f002671", "4b8e2c1d9f0a7e6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b"}},
	{file: "legacy-burstable-cgroupfs-kubelet-1.5.txt", want: Identity{"7e2b9a40-1c3d-11e7-93ae-92361f002671", "4b8e2c1d9f0a7e6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b"}},

	// The common forms, from real files.
	{file: "systemd-crio-v1-runc-4620.txt", want: Identity{"a5c1f8d5-1919-434d-add7-4afaafdaef89", "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c"}},
	{file: "systemd-containerd-v1-vcuda-19.txt", want: Identity{"019c1fe8-0d92-4aa0-b61c-4df58bdde71c", "9e073649debeec6d511391c9ec7627ee67ce3a3fb508b0fa0437a97f8e58ba98"}},
	{file: "systemd-docker-v1-elastic-apm-openshift.txt", want: Identity{"22949dce-fd8b-11ea-8ede-98f2b32c645c", "b15a5bdedd2e7645c3be271364324321b908314e4c77857bbfd32a041148c07f"}},
	{file: "systemd-crio-v1-elastic-apm-underscores.txt", want: Identity{"90d81341-92de-11e7-8cf2-507b9d4141fa", "2227daf62df6694645fee5df53c1f91271546a9560e8600a525690ae252b7f63"}},
	{file: "systemd-containerd-v2-k3s-cryptnono-47.txt", want: Identity{"7fda01c4-0ece-403d-88b4-c371d66d132a", "e58a24d4a722c99712cff74ef69d93311089584eb32617b3890e0dcb996133f1"}},
	{file: "cgroupfs-crio-falco.txt", want: Identity{"63b3ebfc-2890-11e9-8154-16bf8ef8d9dc", "73bfe475650de66df8e2affdc98d440dcbe84f8df83b6f75a68a82eb7026136a"}},

	// Nesting.
	{file: "nested-minikube-crio-11280.txt", want: Identity{"2ca4a155-3599-498d-bb9d-4446693fa3ea", "358607a37e7ada357032e7f5729c9ae6a3efdb7962acbcbe47ff6a3c5506cb1c"}},
	{file: "nested-pod-in-pod-test-infra-37440.txt", want: Identity{"1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b", "6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b"}},
	{file: "dashed-uid-nested-slices-rktlet-44.txt", want: Identity{PodUID: "5f4f98db-9888-11e7-baf6-c85b763781a4"}},

	// In the pod, not a container.
	{file: "crio-conmon-cgroupfs-crio-5511.txt", want: Identity{PodUID: "44e2e33e-776b-4284-a647-4bd959899c91"}},

	// Not a pod process.
	{file: "host-notation-docker-moby-24424.txt", unmapped: "a plain docker container in dockerd's notation: system.slice is no pod slice"},
	{file: "host-buildkit-notation-moby-45796.txt", unmapped: "a docker build step"},
	{file: "host-buildkit-no-cgroupns-buildkit-6368.txt", unmapped: "started by a pod, but its cgroup names none"},
	{file: "host-vte-uuid-elastic-apm.txt", unmapped: "a UUID in a desktop scope is not a pod slice"},
	{file: "host-ecs-elastic-apm.txt", unmapped: "an ECS task"},
	{file: "host-crio-double-encoded-crio-842.txt", unmapped: "a broken encoding no kubelet writes: the UID is not read from it"},

	// In some pod, but the file does not say which.
	{file: "ambiguous-own-pod-cgroupns-beyla-468.txt", ambiguous: true},
}

// readForm returns a fixture's cgroup content without its comment lines, and
// the comment lines. No line of a real cgroup file starts with '#' (each
// starts with a hierarchy ID), so the comments cannot hide data.
func readForm(t testing.TB, file string) (data []byte, comments []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "cgroup", file))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for line := range bytes.Lines(raw) {
		if bytes.HasPrefix(line, []byte("#")) {
			comments = append(comments, string(line))
			continue
		}
		out.Write(line)
	}
	return out.Bytes(), comments
}

func TestParseCgroupForms(t *testing.T) {
	for _, tc := range formCases {
		t.Run(strings.TrimSuffix(tc.file, ".txt"), func(t *testing.T) {
			data, comments := readForm(t, tc.file)
			if !slices.ContainsFunc(comments, func(c string) bool { return strings.HasPrefix(c, "# Source: ") }) {
				t.Errorf("%s has no \"# Source: \" comment naming where the form comes from", tc.file)
			}
			if len(bytes.TrimSpace(data)) == 0 {
				t.Fatalf("%s has no cgroup lines", tc.file)
			}
			got, err := ParseCgroup(data)
			switch {
			case tc.ambiguous:
				if !errors.Is(err, ErrAmbiguous) || got != (Identity{}) {
					t.Errorf("ParseCgroup = %+v, %v; want ErrAmbiguous and no identity", got, err)
				}
				return
			case err != nil:
				t.Fatalf("ParseCgroup: %v", err)
			}
			if got != tc.want {
				t.Errorf("ParseCgroup = %+v, want %+v", got, tc.want)
			}
			if tc.unmapped != "" && got.InPod() {
				t.Errorf("mapped to pod %s, want no pod: %s", got.PodUID, tc.unmapped)
			}
			if tc.unmapped == "" && !got.InPod() {
				t.Errorf("not mapped to a pod, and the table gives no reason")
			}
		})
	}
}

// TestFormFixturesListed keeps testdata/cgroup and formCases in step: a
// fixture nobody checks proves nothing.
func TestFormFixturesListed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "cgroup", "*"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, tc := range formCases {
		if listed[tc.file] {
			t.Errorf("%s listed twice", tc.file)
		}
		listed[tc.file] = true
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not in formCases", f)
		}
	}
	if len(files) != len(listed) {
		t.Errorf("%d fixture files, %d listed", len(files), len(listed))
	}
}
