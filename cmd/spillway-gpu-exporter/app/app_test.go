package app

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const fixtureProc = "../../../pkg/podmap/testdata/proc"

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = Run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"--backend", "--node-name", "--proc-root", "--collect-interval", "--listen-address", "--kubeconfig", "--sim-all-nodes", "--sim-pods", "--sim-trace", "--sim-load-address", "--sim-replica-capacity"}},
		{[]string{"serve", "--help"}, []string{"--backend"}},
		{[]string{"help"}, []string{"--backend"}},
		{[]string{"podmap", "--help"}, []string{"--proc-root", "--pid", "podUID"}},
		{[]string{"--version"}, []string{"spillway-gpu-exporter v"}},
		{[]string{"podmap", "--version"}, []string{"spillway-gpu-exporter v"}},
	}
	for _, tt := range tests {
		out, _, err := run(t, tt.args...)
		if err != nil {
			t.Errorf("%v: %v", tt.args, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v output lacks %q", tt.args, w)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // empty: valid
	}{
		{"nvml defaults with a node", []string{"--node-name=n"}, nil},
		{"sim on all nodes needs no node", []string{"--backend=sim", "--sim-all-nodes"}, nil},
		{"sim with a pods file", []string{"--backend=sim", "--node-name=n", "--sim-pods=x.yaml", "--sim-load=demo/llm=3"}, nil},
		{"no node", []string{}, []string{"--node-name"}},
		{"all nodes is a sim flag", []string{"--sim-all-nodes"}, []string{"--node-name", "--sim-all-nodes only apply with --backend=sim"}},
		{"everything wrong at once", []string{"--backend=gpu", "--listen-address=nope", "--collect-interval=1ms", "--proc-root=", "--log-level=loud"},
			[]string{`--backend "gpu"`, "--node-name", "--listen-address", "--collect-interval", "--proc-root", "--log-level"}},
		{"bad sim values", []string{"--backend=sim", "--node-name=n", "--sim-trace-speed=0", "--sim-replica-capacity=-1", "--sim-noise=101",
			"--sim-gpus-per-node=0", "--sim-memory-mib=-1", "--sim-resource=", "--sim-load-address=x", "--sim-load=bad", "--sim-load=a/b=-1"},
			[]string{"--sim-trace-speed", "--sim-replica-capacity", "--sim-noise", "--sim-gpus-per-node", "--sim-memory-mib", "--sim-resource", "--sim-load-address", `--sim-load "bad"`, `--sim-load "a/b=-1"`}},
		{"standalone is for nvml without a cluster", []string{"--node-name=n", "--standalone", "--kubeconfig=k"}, []string{"--standalone applies"}},
		{"standalone nvml", []string{"--node-name=n", "--standalone"}, nil},
		{"pods file replaces the cluster", []string{"--backend=sim", "--node-name=n", "--sim-pods=p", "--kubeconfig=k"}, []string{"exclude each other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewOptions()
			o.NodeName = "" // ignore $NODE_NAME of the machine running the test
			fs, sf := o.flags()
			fs.AddFlagSet(sf)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, lacks %q", err, w)
				}
			}
		})
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"--node-name=n", "extra"}, {"--no-such-flag"}, {"podmap", "extra"}, {"podmap", "--pid=-1"}} {
		if _, _, err := run(t, args...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestPodmapFixtureTree maps every process of podmap's fixture /proc tree;
// host processes print with empty pod and container.
func TestPodmapFixtureTree(t *testing.T) {
	out, stderr, err := run(t, "podmap", "--proc-root", fixtureProc)
	if err != nil {
		t.Fatal(err)
	}
	if stderr != "" {
		t.Errorf("stderr: %s", stderr)
	}
	golden := filepath.Join("testdata", "podmap.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if out != string(want) {
		t.Errorf("podmap output differs from %s:\n got:\n%s", golden, out)
	}
}

func TestPodmapOnePID(t *testing.T) {
	tests := []struct {
		pid, want string
	}{
		{"150", `{"pid":150,"podUID":"8b8b8b8b-2323-4545-8676-989810102020","containerID":"3b9aa142fefa44aab83ab1c0909f6929fd53656b895ec2fc0e47d412ea62ba54"}` + "\n"},
		{"201", `{"pid":201,"podUID":"","containerID":""}` + "\n"},
	}
	for _, tt := range tests {
		out, _, err := run(t, "podmap", "--proc-root", fixtureProc, "--pid", tt.pid)
		if err != nil || out != tt.want {
			t.Errorf("podmap --pid %s = %q, %v; want %q", tt.pid, out, err, tt.want)
		}
	}
	if _, _, err := run(t, "podmap", "--proc-root", fixtureProc, "--pid", "999"); err == nil || !strings.Contains(err.Error(), "pid 999") {
		t.Errorf("missing PID: %v", err)
	}
}

func TestPodmapSkipsUnreadable(t *testing.T) {
	root := t.TempDir()
	for pid, cg := range map[string]string{"10": "0::/\n", "11": "garbage\n"} {
		err := errors.Join(
			os.MkdirAll(filepath.Join(root, pid), 0o755),
			os.WriteFile(filepath.Join(root, pid, "cgroup"), []byte(cg), 0o644),
			os.WriteFile(filepath.Join(root, pid, "stat"), []byte(pid+" (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0\n"), 0o644),
		)
		if err != nil {
			t.Fatal(err)
		}
	}
	out, stderr, err := run(t, "podmap", "--proc-root", root)
	if err != nil || out != `{"pid":10,"podUID":"","containerID":""}`+"\n" || !strings.Contains(stderr, "pid 11") {
		t.Errorf("out %q stderr %q err %v", out, stderr, err)
	}
}

func TestNVMLBackendStartupErrors(t *testing.T) {
	_, _, err := run(t, "--node-name=n", "--proc-root", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "does not look like the host's /proc") {
		t.Errorf("empty proc root: %v", err)
	}
	_, _, err = run(t, "--node-name=n", "--proc-root", fixtureProc, "--nvml-library", "/nonexistent/libnvidia-ml.so.1", "--listen-address=127.0.0.1:0")
	want := "CGO_ENABLED=0"
	if cgoBuild {
		want = "cannot load /nonexistent/libnvidia-ml.so.1"
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("missing library: %v, want it to say %q", err, want)
	}
}

// TestServeSim runs the exporter in sim mode from a pods file (no cluster),
// scrapes it, changes the load over the load endpoint and sees the values
// follow.
func TestServeSim(t *testing.T) {
	ports, err := localcluster.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr, loadAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{
			"--backend=sim", "--node-name=gpu-0", "--sim-pods=testdata/pods.yaml",
			"--sim-replica-capacity=10", "--sim-load=demo/llm=15",
			"--listen-address=" + metricsAddr, "--sim-load-address=" + loadAddr,
			"--collect-interval=100ms", "--log-level=error",
		}, io.Discard, io.Discard)
	}()

	// Wait for readiness; the test's deadline bounds the wait.
	for {
		resp, err := http.Get("http://" + metricsAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("exporter stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// 15 rps over 3 Ready replicas at 10 rps each: 50 % per pod. Only
	// gpu-0's two pods are this node's.
	want := map[string]float64{"llm-0": 50, "llm-1": 50}
	if got := smUtil(t, metricsAddr); !equal(got, want) {
		t.Errorf("SM util by pod = %v, want %v", got, want)
	}

	req, _ := http.NewRequest(http.MethodPut, "http://"+loadAddr+"/load?workload=demo/llm&rps=60", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT /load: %v %v", resp, err)
	}
	resp.Body.Close()
	// The next collection applies it: 60/3/10 = 200 %, capped at 100.
	want = map[string]float64{"llm-0": 100, "llm-1": 100}
	for !equal(smUtil(t, metricsAddr), want) {
		time.Sleep(20 * time.Millisecond)
	}

	for _, path := range []string{"/healthz", "/"} {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("GET %s: %v %v", path, resp, err)
		} else {
			resp.Body.Close()
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v after cancel", err)
	}
}

func smUtil(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	mf := mfs[metricnames.ProcessSMUtil]
	if mf == nil {
		return out
	}
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, lp := range m.Label {
			labels[lp.GetName()] = lp.GetValue()
		}
		if labels[metricnames.LabelPod] != labels[metricnames.LabelACKPod] || labels[metricnames.LabelHostname] != "gpu-0" ||
			!regexp.MustCompile(`^[0-9]+$`).MatchString(labels[metricnames.LabelPID]) {
			t.Errorf("labels %v", labels)
		}
		out[labels[metricnames.LabelPod]] = m.GetGauge().GetValue()
	}
	return out
}

func equal(a, b map[string]float64) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestDeprecatedLogLevel: --log-level keeps its meaning on top of the -v
// logging all binaries share.
func TestDeprecatedLogLevel(t *testing.T) {
	tests := []struct {
		args       []string
		verbosity  int
		errorsOnly bool
	}{
		{args: nil},
		{args: []string{"--log-level=info"}},
		{args: []string{"--log-level=debug"}, verbosity: 2},
		{args: []string{"--log-level=debug", "-v=5"}, verbosity: 5},
		{args: []string{"--log-level=warn"}, errorsOnly: true},
		{args: []string{"--log-level=error"}, errorsOnly: true},
		{args: []string{"-v=3"}, verbosity: 3},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o := NewOptions()
			own, _ := o.flags()
			if err := own.Parse(append([]string{"--node-name=n"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			if err := o.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if o.Logging.Verbosity != tt.verbosity || o.Logging.ErrorsOnly != tt.errorsOnly {
				t.Errorf("logging = %+v, want verbosity %d, errors only %v", o.Logging, tt.verbosity, tt.errorsOnly)
			}
		})
	}
}
