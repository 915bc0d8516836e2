package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/placement"
	"github.com/spillway-dev/spillway/test/framework"
)

// apiserverWebhookHist is kube-apiserver's admission webhook latency
// histogram; the chart's webhook is named webhookName.
const (
	apiserverWebhookHist = "apiserver_admission_webhook_admission_duration_seconds"
	webhookName          = "placement.spillway.dev"
)

type controllerBin struct {
	name, dir string
	profile   bool // run it with --pprof-bind-address and profile it
}

// controllerRun is one controller binary's figures.
type controllerRun struct {
	name string
	// ready is from starting the process to /readyz and the CA bundle
	// written; settled from ready to the controller idling (0 when it did
	// not within --settle).
	ready, settled time.Duration
	// After settling: VmRSS, the peak so far (VmHWM), the Go heap in use
	// and the runtime's total from the OS.
	rssSettled, hwmSettled, heapSettled, sysSettled float64
	// Over the whole run (bursts included): the largest VmRSS sampled and
	// VmHWM at the end, the Go heap in use after the bursts.
	rssMax, hwmEnd, heapEnd float64
	bursts                  []burstResult
	// Tops of the heap profile after the bursts and of the CPU profile of
	// the first burst, with --profile.
	profile, cpuProfile string
}

type burstResult struct {
	mode              string
	namespace, policy string
	pods, placed      int
	onPrem, cloud     int
	wall              time.Duration
	own, apiserver    histogram
	client            []time.Duration // sorted
	cpu               float64         // controller CPU seconds
	err               error           // why the burst failed, if it did
}

// measure starts the controller from cb, reads its memory once settled,
// runs the bursts against it and stops it.
func (b *bench) measure(ctx context.Context, cb controllerBin, idx int) (r controllerRun, err error) {
	r.name = cb.name
	// As the chart runs it: its default verbosity (at --v=1 the test
	// framework's controllers log every placement, CPU the chart does not
	// spend) and the memory limit the binary reads from its cgroup.
	extra := []string{"--v=0"}
	if b.o.memoryLimitMiB > 0 {
		// The controller inherits the environment; nothing else starts
		// while it is set.
		limit := fmt.Sprintf("%dMiB", b.o.memoryLimitMiB*9/10)
		if err := os.Setenv("GOMEMLIMIT", limit); err != nil {
			return r, err
		}
		defer os.Unsetenv("GOMEMLIMIT")
	}
	pprofAddr := ""
	if cb.profile {
		port, err := localcluster.FreePort()
		if err != nil {
			return r, err
		}
		pprofAddr = fmt.Sprintf("127.0.0.1:%d", port)
		extra = append(extra, "--pprof-bind-address="+pprofAddr)
	}
	b.logf("starting %s's controller on %d pods", cb.name, b.o.pods)
	start := time.Now()
	ctl, err := framework.StartController(ctx, b.c, cb.dir, extra)
	if err != nil {
		return r, err
	}
	r.ready = time.Since(start)
	defer func() {
		if serr := ctl.Proc.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	sampler := newRSSSampler(ctl.Proc.PID())
	sctx, stopSampler := context.WithCancel(ctx)
	defer stopSampler()
	go sampler.run(sctx, 250*time.Millisecond)
	b.logf("  ready in %s; waiting for its work queues to stay empty (at most %s)", r.ready.Round(time.Millisecond), b.o.settle)

	settleStart := time.Now()
	r.settled, err = b.waitSettled(ctx, ctl.MetricsAddr)
	if err != nil {
		return r, err
	}
	if r.settled > 0 {
		b.logf("  settled %s after ready", r.settled.Round(time.Second))
	} else {
		b.logf("  work queues still busy after %s; measuring anyway", time.Since(settleStart).Round(time.Second))
	}
	m, err := scrapeController(ctx, ctl.MetricsAddr)
	if err != nil {
		return r, err
	}
	st, err := readStatus(ctl.Proc.PID())
	if err != nil {
		return r, err
	}
	r.rssSettled, r.hwmSettled = st.rss, st.hwm
	r.heapSettled, r.sysSettled = m["go_memstats_heap_inuse_bytes"], m["go_memstats_sys_bytes"]
	b.logf("  settled: RSS %s (peak %s), heap in use %s", mib(r.rssSettled), mib(r.hwmSettled), mib(r.heapSettled))

	for i := range len(b.o.burstModes) * b.o.bursts {
		mode := b.o.burstModes[i/b.o.bursts]
		var cpuProfile chan profileResult
		if pprofAddr != "" && i == 0 {
			// The first burst's CPU profile, over profileSeconds from its
			// start (a burst at full size takes about that long).
			cpuProfile = make(chan profileResult, 1)
			go func() {
				path := filepath.Join(b.o.outDir, fmt.Sprintf("cpu-%d.pprof", idx))
				top, err := b.profile(ctx, pprofAddr, fmt.Sprintf("profile?seconds=%d", profileSeconds), path, "")
				cpuProfile <- profileResult{top, err}
			}()
			time.Sleep(100 * time.Millisecond)
		}
		br, err := b.burst(ctx, ctl, mode, idx*len(b.o.burstModes)*b.o.bursts+i)
		if cpuProfile != nil {
			pr := <-cpuProfile
			if pr.err != nil {
				return r, pr.err
			}
			r.cpuProfile = pr.top
		}
		if err != nil {
			// Reported, not fatal: the memory figures and the other
			// bursts still stand.
			br.err = err
			b.logf("  burst %d (%s) failed: %v", i, mode, err)
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
		} else {
			b.logf("  burst %d (%s): %s", i, mode, br.summary())
		}
		r.bursts = append(r.bursts, br)
	}
	if m, err = scrapeController(ctx, ctl.MetricsAddr); err != nil {
		return r, err
	}
	r.heapEnd = m["go_memstats_heap_inuse_bytes"]
	if st, err = readStatus(ctl.Proc.PID()); err != nil {
		return r, err
	}
	r.hwmEnd = st.hwm
	r.rssMax = max(sampler.max(), st.rss)
	if pprofAddr != "" {
		path := filepath.Join(b.o.outDir, fmt.Sprintf("heap-%d.pprof", idx))
		if r.profile, err = b.profile(ctx, pprofAddr, "heap?gc=1", path, "-sample_index=inuse_space"); err != nil {
			return r, err
		}
	}
	return r, nil
}

// waitSettled waits until the controller is idle, using under a tenth of
// a core over three 2 s intervals in a row (its startup reconciles done),
// and returns how long that took, or 0 when it was not within --settle.
// (Its work queues are no sign: the priority queue counts items waiting
// for a RequeueAfter in its depth.)
func (b *bench) waitSettled(ctx context.Context, addr string) (time.Duration, error) {
	const interval = 2 * time.Second
	start := time.Now()
	quiet, prev := 0, -1.0
	for time.Since(start) < b.o.settle {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(interval):
		}
		m, err := scrapeController(ctx, addr)
		if err != nil {
			return 0, err
		}
		cpu := m["process_cpu_seconds_total"]
		if prev >= 0 && cpu-prev < 0.1*interval.Seconds() {
			quiet++
		} else {
			quiet = 0
		}
		prev = cpu
		if quiet == 3 {
			return time.Since(start), nil
		}
	}
	return 0, nil
}

// burst creates b.o.burst pods selected by one policy and reads the
// webhook's latency over them; then it deletes them. In mode client the
// benchmark creates them, --concurrency at once; in mode deployment
// kube-controller-manager's ReplicaSet controller does, for a Deployment of
// that many replicas (its slow-start batches under its client's default
// rate limit, 20 requests/s: how a scale-up reaches the webhook).
func (b *bench) burst(ctx context.Context, ctl *framework.Controller, mode string, n int) (burstResult, error) {
	nsIdx := (17 + 131*n) % b.o.namespaces
	ns := nsName(nsIdx)
	br := burstResult{mode: mode, namespace: ns, policy: policyName(0), pods: b.o.burst}
	ownBefore, err := scrapeController(ctx, ctl.MetricsAddr)
	if err != nil {
		return br, err
	}
	apiBefore, err := b.scrapeAPIServer(ctx)
	if err != nil {
		return br, err
	}
	sel := burstLabel + "=" + strconv.Itoa(n)
	var counts placedCounts
	start := time.Now()
	switch mode {
	case burstClient:
		br.client, err = b.clientBurst(ctx, ns, n, &counts)
	case burstDeployment:
		err = b.deploymentBurst(ctx, ns, n, sel, &counts)
	default:
		err = fmt.Errorf("unknown burst mode %q", mode)
	}
	br.wall = time.Since(start)
	if err != nil {
		return br, err
	}
	br.placed, br.onPrem, br.cloud = counts.total(), int(counts.onPrem.Load()), int(counts.cloud.Load())
	ownAfter, err := scrapeController(ctx, ctl.MetricsAddr)
	if err != nil {
		return br, err
	}
	apiAfter, err := b.scrapeAPIServer(ctx)
	if err != nil {
		return br, err
	}
	own := func(series string) bool { return true }
	api := func(series string) bool {
		return strings.Contains(series, `name="`+webhookName+`"`) && strings.Contains(series, `type="admit"`)
	}
	br.own = histogramOf(ownAfter, metricnames.PlacementWebhookDuration, own).minus(histogramOf(ownBefore, metricnames.PlacementWebhookDuration, own))
	br.apiserver = histogramOf(apiAfter, apiserverWebhookHist, api).minus(histogramOf(apiBefore, apiserverWebhookHist, api))
	br.cpu = ownAfter["process_cpu_seconds_total"] - ownBefore["process_cpu_seconds_total"]

	if mode == burstDeployment {
		if err := b.cs.AppsV1().Deployments(ns).Delete(ctx, burstName(n), metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
			return br, fmt.Errorf("deleting the burst's Deployment: %w", err)
		}
	}
	if err := b.cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}, metav1.ListOptions{LabelSelector: sel}); err != nil {
		return br, fmt.Errorf("deleting the burst's pods: %w", err)
	}
	if err := framework.Poll(ctx, 5*time.Minute, time.Second, func(ctx context.Context) (bool, string) {
		list, err := b.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err.Error()
		}
		return len(list.Items) == 0, fmt.Sprintf("%d burst pods left", len(list.Items))
	}); err != nil {
		return br, err
	}
	select {
	case <-ctx.Done():
		return br, ctx.Err()
	case <-time.After(b.o.burstGap):
	}
	return br, nil
}

// Burst modes.
const (
	burstClient     = "client"
	burstDeployment = "deployment"
)

func burstName(n int) string { return fmt.Sprintf("burst-%d", n) }

// placedCounts counts a burst's pods by the unit the webhook gave them.
type placedCounts struct{ onPrem, cloud atomic.Int64 }

func (c *placedCounts) add(unit string) {
	switch unit {
	case "onprem":
		c.onPrem.Add(1)
	case "cloud":
		c.cloud.Add(1)
	}
}

func (c *placedCounts) total() int { return int(c.onPrem.Load() + c.cloud.Load()) }

// clientBurst creates the burst's pods itself and returns each create's
// latency, sorted.
func (b *bench) clientBurst(ctx context.Context, ns string, n int, counts *placedCounts) ([]time.Duration, error) {
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.o.burst)
	err := parallel(ctx, b.o.burst, b.o.concurrency, func(ctx context.Context, i int) error {
		pod := predictorPod(ns, 0, fmt.Sprintf("%s-%04d", burstName(n), i))
		pod.Labels[burstLabel] = strconv.Itoa(n)
		t := time.Now()
		created, err := b.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		d := time.Since(t)
		if err != nil {
			return fmt.Errorf("creating pod %s/%s: %w", ns, pod.Name, err)
		}
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		counts.add(created.Labels[placement.LabelUnit])
		return nil
	})
	slices.Sort(lat)
	return lat, err
}

// deploymentBurst creates a Deployment of b.o.burst replicas and waits
// until all its pods exist.
func (b *bench) deploymentBurst(ctx context.Context, ns string, n int, sel string, counts *placedCounts) error {
	tmpl := predictorPod(ns, 0, "")
	tmpl.Labels[burstLabel] = strconv.Itoa(n)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: burstName(n), Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(b.o.burst)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": appName(0), burstLabel: strconv.Itoa(n)}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: tmpl.Labels, Annotations: tmpl.Annotations}, Spec: tmpl.Spec},
		},
	}
	if _, err := b.cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Deployment %s/%s: %w", ns, d.Name, err)
	}
	var pods []corev1.Pod
	err := framework.Poll(ctx, 10*time.Minute, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		list, err := b.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
		if err != nil {
			return false, err.Error()
		}
		pods = list.Items
		return len(pods) >= b.o.burst, fmt.Sprintf("%d of %d pods created", len(pods), b.o.burst)
	})
	for i := range pods {
		counts.add(pods[i].Labels[placement.LabelUnit])
	}
	return err
}

func (br burstResult) summary() string {
	return fmt.Sprintf("%d pods in %s, %d placed (%d on-prem, %d cloud); webhook p99 %s (own), %s (apiserver), create p99 %s",
		br.pods, br.wall.Round(time.Millisecond), br.placed, br.onPrem, br.cloud,
		msq(br.own.quantile(0.99)), msq(br.apiserver.quantile(0.99)), ms(quantile(br.client, 0.99)))
}

// quantile is the q-quantile of sorted samples (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func scrapeController(ctx context.Context, addr string) (map[string]float64, error) {
	m := map[string]float64{}
	err := framework.ScrapeMetrics(ctx, addr, func(series string, v float64) { m[series] = v })
	if err != nil {
		return nil, fmt.Errorf("scraping the controller's metrics: %w", err)
	}
	return m, nil
}

// scrapeAPIServer reads kube-apiserver's /metrics, only the admission
// webhook histogram's series.
func (b *bench) scrapeAPIServer(ctx context.Context) (map[string]float64, error) {
	raw, err := b.c.Client().Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scraping kube-apiserver's metrics: %w", err)
	}
	m := map[string]float64{}
	err = framework.ParseExposition(bytes.NewReader(raw), func(series string, v float64) {
		if strings.HasPrefix(series, apiserverWebhookHist) {
			m[series] = v
		}
	})
	return m, err
}

// procStatus is what /proc/<pid>/status says of memory, in bytes.
type procStatus struct{ rss, hwm float64 }

func readStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	return parseStatus(b)
}

func parseStatus(b []byte) (procStatus, error) {
	var st procStatus
	var seen int
	for line := range strings.SplitSeq(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return st, fmt.Errorf("unexpected %s line %q", key, line)
		}
		kb, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return st, fmt.Errorf("%s: %w", key, err)
		}
		if key == "VmRSS" {
			st.rss = kb * 1024
		} else {
			st.hwm = kb * 1024
		}
		seen++
	}
	if seen != 2 {
		return st, fmt.Errorf("no VmRSS and VmHWM in /proc status")
	}
	return st, nil
}

// rssSampler records the largest VmRSS seen.
type rssSampler struct {
	pid  int
	mu   sync.Mutex
	peak float64
}

func newRSSSampler(pid int) *rssSampler { return &rssSampler{pid: pid} }

func (s *rssSampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if st, err := readStatus(s.pid); err == nil {
			s.mu.Lock()
			s.peak = max(s.peak, st.rss)
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *rssSampler) max() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// profileSeconds is how long the CPU profile of the first burst runs.
const profileSeconds = 5

type profileResult struct {
	top string
	err error
}

// profile saves one of the controller's pprof profiles (what is the path
// under /debug/pprof/) to path and returns the top of `go tool pprof -top`
// (with sampleIndex when not empty).
func (b *bench) profile(ctx context.Context, addr, what, path, sampleIndex string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/"+what, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("reading the %s profile: %w", what, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s profile: HTTP %d", what, resp.StatusCode)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		return "", err
	}
	args := []string{"tool", "pprof", "-top", "-nodecount=25"}
	if sampleIndex != "" {
		args = append(args, sampleIndex)
	}
	out, err := exec.CommandContext(ctx, "go", append(args, path)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	b.logf("  profile saved to %s", path)
	return string(out), nil
}
