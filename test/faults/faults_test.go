package faults

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/test/framework"
)

// prometheusOutage is the shape shared by the three Prometheus faults: at
// the steady peak, break Prometheus, raise the load (the HPA would want a
// 4th replica, if it could see it), check that the metrics API stops
// serving once its data is older than --max-staleness, that a namespace
// can still be created and deleted, then mend Prometheus and measure how
// soon the HPA scales out. All along, replicas never drop and every
// adapter replica stays ready.
func prometheusOutage(t *testing.T, name string, breakIt func(), holdFor time.Duration, mend func()) {
	h := faultEnv(t)
	startAll(t, h)
	atPeak(t, h)
	w := startWatch(h.Adapters)
	start := time.Now()
	breakIt()
	setLoad(t, h, surgeRPS)
	waitMetricsMissing(t)
	t.Logf("the metrics API refused stale data %.0f s after the fault", time.Since(start).Seconds())
	churn := namespaceChurn("faults-churn-" + name)
	// The fault's length is part of the fault: hold it, while the watch
	// samples.
	if rest := holdFor - time.Since(start); rest > 0 {
		time.Sleep(rest)
	}
	mended := time.Now()
	mend()
	d := waitScaled(t, mended, surge, resumeBound, "the HPA to scale out on fresh data")
	recovery(t, name, d)
	w.end(t, peak)
	checkChurn(t, churn)
}

// TestPrometheusHung: Prometheus stops answering for 60 s (SIGSTOP: its
// port accepts connections, nothing answers), then resumes.
func TestPrometheusHung(t *testing.T) {
	var prom interface{ Resume() error }
	prometheusOutage(t, "prometheus-hung",
		func() {
			p := faultEnv(t).Prometheus.Process()
			if err := p.Pause(); err != nil {
				t.Fatal(err)
			}
			prom = p
			t.Cleanup(func() { _ = p.Resume() })
		},
		60*time.Second,
		func() {
			if err := prom.Resume(); err != nil {
				t.Fatal(err)
			}
		})
}

// TestPrometheusRestartedEmpty: Prometheus is killed and comes back with an
// empty TSDB (no persistent volume): no history at all.
func TestPrometheusRestartedEmpty(t *testing.T) {
	h := faultEnv(t)
	t.Cleanup(func() {
		if exited, _ := h.Prometheus.Process().Exited(); exited {
			_ = h.Prometheus.Start(context.Background())
		}
	})
	prometheusOutage(t, "prometheus-restarted-empty",
		func() {
			if err := h.Prometheus.Process().Kill(); err != nil {
				t.Fatal(err)
			}
		},
		0, // back as soon as the adapter has refused stale data
		func() {
			if err := h.Prometheus.WipeData(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := h.Prometheus.Start(ctx); err != nil {
				t.Fatal(err)
			}
		})
}

// TestPrometheusSlow: Prometheus answers, but later than the adapter's
// --prometheus-timeout, so every refresh times out.
func TestPrometheusSlow(t *testing.T) {
	h := faultEnv(t)
	t.Cleanup(func() { h.PrometheusProxy.SetDelay(0) })
	prometheusOutage(t, "prometheus-slow",
		func() { h.PrometheusProxy.SetDelay(3 * promTimeout) },
		0,
		func() { h.PrometheusProxy.SetDelay(0) })
}

// TestAdapterKilled: one adapter replica of two is killed (the other serves
// and the HPA acts as usual), then the other too (no replica: the HPA
// holds), and one comes back (the HPA acts again).
func TestAdapterKilled(t *testing.T) {
	h := faultEnv(t)
	startAll(t, h)
	atPeak(t, h)
	first, second := h.Adapters[0], h.Adapters[1]
	t.Cleanup(func() { startAll(t, h) })

	// One of two.
	w := startWatch(h.Adapters[1:])
	servedBefore, err := adapterRequests(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	setLoad(t, h, surgeRPS)
	d := waitScaled(t, killed, surge, resumeBound+5*time.Second, "the HPA to scale out with one adapter replica left")
	recovery(t, "adapter-one-of-two-killed", d)
	w.end(t, peak)
	// The aggregator keeps its connections open, so count requests, not
	// connections.
	if served, err := adapterRequests(context.Background(), second); err != nil || served <= servedBefore {
		t.Errorf("the surviving adapter replica answered no request: %v -> %v (%v)", servedBefore, served, err)
	}
	if n, err := metricValues(context.Background()); err != nil || n < peak {
		t.Errorf("metrics API with one replica: %d values, %v", n, err)
	}

	// None of two, then one back.
	atPeakWithAdapters(t, h)
	w = startWatch(nil)
	if err := second.Kill(); err != nil {
		t.Fatal(err)
	}
	setLoad(t, h, surgeRPS)
	framework.Eventually(t, 30*time.Second, time.Second, "the metrics API to fail with no adapter", func(ctx context.Context) (bool, string) {
		n, err := metricValues(ctx)
		return err != nil, fmt.Sprintf("served %d values", n)
	})
	// Two HPA syncs without metrics: it must hold, neither scale down nor
	// (it cannot see the surge) out.
	holdUntil := time.Now().Add(2 * hpaSync)
	framework.Eventually(t, 3*hpaSync, time.Second, "two HPA syncs without an adapter", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		if s.desired != peak {
			t.Errorf("the HPA moved with no adapter serving: %s", s)
		}
		return time.Now().After(holdUntil), s.String()
	})
	restarted := time.Now()
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	d = waitScaled(t, restarted, surge, time.Minute, "the HPA to scale out once an adapter is back")
	recovery(t, "adapter-all-killed-one-restarted", d)
	w.end(t, peak)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
}

// atPeakWithAdapters is atPeak after the first adapter was killed: the
// surviving one must carry the workload back to the steady peak.
func atPeakWithAdapters(t *testing.T, h *demo.HA) {
	t.Helper()
	setLoad(t, h, peakRPS)
	framework.Eventually(t, 4*time.Minute, time.Second, "the steady peak on one adapter", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		return s.desired == peak && s.spec == peak && s.ready == peak && len(s.other) == 0, s.String()
	})
}

// failoverBound: a standby takes the lease once it has seen the record
// unchanged for the lease duration (controller-runtime's default, 15 s;
// the controller has no flag for it). It looks every retry period, 2 s
// stretched by up to 1.2x jitter (up to 4.4 s): it may see the last renewal
// up to one such period late and notice the expiry up to one period late,
// so a kill just after a renewal fails over in up to 15 + 2x4.4 s; 2 s of
// slack for a loaded machine.
const failoverBound = 15*time.Second + 2*4400*time.Millisecond + 2*time.Second

// TestControllerLeaderKilled: the leading controller replica is killed
// without warning (its lease is not released). The other keeps answering
// the webhook throughout, takes the lease once it expires, and every pod,
// including those created meanwhile, ends up with its deletion cost.
func TestControllerLeaderKilled(t *testing.T) {
	h := faultEnv(t)
	startAll(t, h)
	atPeak(t, h)
	cleanProbes(t)
	t.Cleanup(func() { startAll(t, h) })
	ctx := context.Background()
	var lead int
	framework.Eventually(t, time.Minute, time.Second, "a leader among the controller replicas", func(ctx context.Context) (bool, string) {
		lead = leader(ctx, h)
		return lead >= 0, "no replica reports leader_election_master_status 1"
	})
	holder, err := leaseHolder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other := 1 - lead

	// Pods keep coming while the leader is gone, one a second.
	stopProbes := make(chan struct{})
	probesDone := make(chan []probeResult)
	var killDone atomic.Bool
	go func() {
		var results []probeResult
		defer func() { probesDone <- results }()
		for i := 0; ; i++ {
			after := killDone.Load()
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			p, err := createProbe(pctx, fmt.Sprintf("failover-%d", i))
			cancel()
			r := probeResult{name: fmt.Sprintf("failover-%d", i), afterKill: after, err: err}
			if err == nil {
				r.placed = placed(p)
			}
			results = append(results, r)
			select {
			case <-stopProbes:
				return
			case <-time.After(time.Second):
			}
		}
	}()

	killed := time.Now()
	if err := h.Controllers[lead].Kill(); err != nil {
		t.Fatal(err)
	}
	killDone.Store(true)
	framework.Eventually(t, time.Minute, 250*time.Millisecond, "the other replica to take the lease", func(ctx context.Context) (bool, string) {
		now, err := leaseHolder(ctx)
		if err != nil {
			return false, err.Error()
		}
		return now != holder && now != "" && leader(ctx, h) == other, "holder " + now
	})
	failover := time.Since(killed)
	recovery(t, "controller-leader-failover", failover)
	if failover > failoverBound {
		t.Errorf("failover took %s; bound %s (issue 13's goal: under 15 s)", failover.Round(100*time.Millisecond), failoverBound)
	}
	// A few more pods under the new leader, then stop.
	time.Sleep(3 * time.Second)
	close(stopProbes)
	checkFailoverProbes(t, <-probesDone)
	// Every pod, any admitted unplaced included, ends up with its unit
	// and cost.
	framework.Eventually(t, 30*time.Second, time.Second, "every pod's deletion cost", func(ctx context.Context) (bool, string) {
		if ok, msg := costsRight(ctx, probeNS, "app=probe"); !ok {
			return false, msg
		}
		return costsRight(ctx, ns, "app="+demo.PredictorApp)
	})
	recovery(t, "controller-leader-costs-complete", time.Since(killed))
	if err := h.Controllers[lead].Start(); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, time.Second, "the killed replica ready again", func(ctx context.Context) (bool, string) {
		err := probe(ctx, h.Controllers[lead].ReadyURL)
		return err == nil, fmt.Sprint(err)
	})
}

// probeResult is one pod created around a controller kill.
type probeResult struct {
	name      string
	afterKill bool // its creation began after the kill had completed
	placed    bool
	err       error
}

// checkFailoverProbes: the webhook must keep placing while the leader is
// gone. A review in flight on a connection to the killed replica fails, and
// failurePolicy Ignore admits that pod unplaced (as killing a webhook pod
// does in any cluster); such a pod is adopted later. So a pod may be
// unplaced only until the first pod created after the kill is placed: from
// then on the survivor answers every review.
func checkFailoverProbes(t *testing.T, results []probeResult) {
	t.Helper()
	servedAfterKill, lost := false, 0
	for _, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("creating %s: %v", r.name, r.err)
		case r.placed && r.afterKill:
			servedAfterKill = true
		case !r.placed && servedAfterKill:
			t.Errorf("%s admitted unplaced after the surviving replica had placed a pod", r.name)
		case !r.placed:
			lost++
		}
	}
	if !servedAfterKill {
		t.Errorf("no pod created after the kill was placed: %+v", results)
	}
	t.Logf("%d pods created around the kill, %d admitted unplaced (review in flight to the killed replica)", len(results), lost)
}

// TestWebhookConfigurationDeleted: the MutatingWebhookConfiguration is
// deleted; pods are admitted unplaced until an installer applies it again
// (without a CA bundle, as the chart renders it); the controller restores
// the bundle within seconds, placement resumes, and the pods admitted
// meanwhile are adopted once bound.
func TestWebhookConfigurationDeleted(t *testing.T) {
	h := faultEnv(t)
	startAll(t, h)
	cleanProbes(t)
	ctx := context.Background()
	mwc := cluster.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	if err := mwc.Delete(ctx, framework.WebhookConfigName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = framework.ApplyWebhookConfig(context.Background(), cluster, h.ControllerProxy.Port())
	})
	i := 0
	var unplaced string
	framework.Eventually(t, 30*time.Second, time.Second, "a pod admitted unplaced without the configuration", func(ctx context.Context) (bool, string) {
		i++
		p, err := createProbe(ctx, fmt.Sprintf("no-webhook-%d", i))
		if err != nil {
			return false, err.Error()
		}
		unplaced = p.Name
		return !placed(p), "still placed: " + p.Name
	})

	applied := time.Now()
	if err := framework.ApplyWebhookConfig(ctx, cluster, h.ControllerProxy.Port()); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, 250*time.Millisecond, "the CA bundle restored", func(ctx context.Context) (bool, string) {
		c, err := mwc.Get(ctx, framework.WebhookConfigName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(c.Webhooks) > 0 && len(c.Webhooks[0].ClientConfig.CABundle) > 0, "no caBundle yet"
	})
	recovery(t, "webhook-config-ca-bundle", time.Since(applied))
	if d := time.Since(applied); d > 10*time.Second {
		t.Errorf("the CA bundle took %s to come back; it is watched and must be back within seconds", d.Round(100*time.Millisecond))
	}
	waitPlacing(t, "a pod placed again", "webhook-back", time.Second, nil)
	recovery(t, "webhook-config-placing", time.Since(applied))
	framework.Eventually(t, 30*time.Second, time.Second, "the unplaced pods adopted", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client().CoreV1().Pods(probeNS).Get(ctx, unplaced, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		// Unplaced, the scheduler may have bound it to either pool; adoption
		// labels it for the pool its node is in, which costsRight checks.
		if !placed(p) {
			return false, fmt.Sprintf("%s on %q not adopted yet: labels %v", p.Name, p.Spec.NodeName, p.Labels)
		}
		return costsRight(ctx, probeNS, "app=probe")
	})
}

// TestKarpenterDown: Karpenter is stopped while the surge spills to the
// elastic unit. The new pod waits Pending on that unit (the last one: no
// re-placement, past the grace) and runs once Karpenter is back.
func TestKarpenterDown(t *testing.T) {
	h := faultEnv(t)
	startAll(t, h)
	atPeak(t, h)
	if err := cluster.StopComponent("karpenter-kwok"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p := cluster.Component("karpenter-kwok"); p != nil {
			if exited, _ := p.Exited(); exited {
				_ = cluster.StartComponent(context.Background(), "karpenter-kwok")
			}
		}
	})
	setLoad(t, h, surgeRPS)
	var spilled corev1.Pod
	framework.Eventually(t, time.Minute, time.Second, "the surge pod placed on the elastic unit", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		if len(s.other) != 1 {
			return false, s.String()
		}
		spilled = s.other[0]
		return spilled.Labels[labelUnit] == demo.ElasticPool, fmt.Sprintf("%s unit %q", spilled.Name, spilled.Labels[labelUnit])
	})
	// It waits past the re-placement grace, where it is: the last unit.
	waitUntil := spilled.CreationTimestamp.Add(grace + 5*time.Second)
	framework.Eventually(t, grace+time.Minute, time.Second, "the spilled pod to wait past the grace", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client().CoreV1().Pods(ns).Get(ctx, spilled.Name, metav1.GetOptions{})
		if err != nil || p.UID != spilled.UID || p.DeletionTimestamp != nil || p.Spec.NodeName != "" || p.Labels[labelUnit] != demo.ElasticPool {
			t.Fatalf("the spilled pod did not wait on the elastic unit: %v %+v", err, p)
		}
		return time.Now().After(waitUntil), "Pending on " + p.Labels[labelUnit]
	})
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := cluster.StartComponent(ctx, "karpenter-kwok"); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 3*time.Minute, time.Second, "the spilled pod Running on a new elastic node", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range s.elastic {
			if p.UID == spilled.UID {
				return true, ""
			}
		}
		return false, s.String()
	})
	recovery(t, "karpenter-restarted-pod-running", time.Since(started))
}

// TestAPIServerRestarted: kube-apiserver stops and starts again on the same
// port and data. Every component reconnects: the HPA scales on fresh
// metrics, the webhook places, the leader sets deletion costs, the
// scheduler, Karpenter and kwok run the new pod; the InferenceScaler's HPA
// is the same one (no duplicate) and no pod lost an annotation or label.
func TestAPIServerRestarted(t *testing.T) {
	h := faultEnv(t)
	startAll(t, h)
	before := atPeak(t, h)
	cleanProbes(t)
	ctx := context.Background()
	hpas, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(hpas.Items) != 1 {
		t.Fatalf("HPAs before: %v, %v", hpas, err)
	}
	hpaUID := hpas.Items[0].UID
	restartsBefore := 0
	for _, r := range append(h.Controllers, h.Adapters...) {
		restartsBefore += r.Restarts()
	}

	stopped := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := cluster.RestartAPIServer(rctx); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	t.Logf("kube-apiserver down and back in %.1f s", up.Sub(stopped).Seconds())
	setLoad(t, h, surgeRPS)
	d := waitScaled(t, up, surge, time.Minute, "the HPA to scale out after the restart")
	recovery(t, "apiserver-restart-hpa", d)
	framework.Eventually(t, time.Minute, time.Second, "a new pod placed and given its cost", func(ctx context.Context) (bool, string) {
		p, err := createProbe(ctx, fmt.Sprintf("after-restart-%d", time.Now().UnixNano()))
		if err != nil {
			return false, err.Error()
		}
		if !placed(p) {
			return false, "admitted unplaced: " + p.Name
		}
		return true, ""
	})
	framework.Eventually(t, time.Minute, time.Second, "deletion costs of the new pods", func(ctx context.Context) (bool, string) {
		return costsRight(ctx, probeNS, "app=probe")
	})
	framework.Eventually(t, 3*time.Minute, time.Second, "the 4th replica Running and measured", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		if len(s.onPrem)+len(s.elastic) != surge {
			return false, s.String()
		}
		n, err := metricValues(ctx)
		return err == nil && n == surge, fmt.Sprintf("metrics API: %d values, %v", n, err)
	})
	recovery(t, "apiserver-restart-all-components", time.Since(up))

	hpas, err = cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hpas.Items) != 1 || hpas.Items[0].UID != hpaUID {
		t.Errorf("after the restart: %d HPAs (want the same 1, uid %s)", len(hpas.Items), hpaUID)
	}
	for _, p := range before.pods {
		now, err := cluster.Client().CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			t.Errorf("pod %s (on %s) is gone; events:%s", p.Name, p.Spec.NodeName, whyGone(ctx, p.Name))
			continue
		}
		if err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
			continue
		}
		for _, k := range []string{annotationCost, "spillway.dev/placement-id", "spillway.dev/placement-signature"} {
			if now.Annotations[k] != p.Annotations[k] {
				t.Errorf("pod %s: annotation %s %q -> %q", p.Name, k, p.Annotations[k], now.Annotations[k])
			}
		}
		for _, k := range []string{labelPolicy, labelUnit} {
			if now.Labels[k] != p.Labels[k] {
				t.Errorf("pod %s: label %s %q -> %q", p.Name, k, p.Labels[k], now.Labels[k])
			}
		}
	}
	restarts := -restartsBefore
	for _, r := range append(h.Controllers, h.Adapters...) {
		restarts += r.Restarts()
	}
	t.Logf("spillway replicas restarted by the supervisor during the restart: %d", restarts)
}

// TestControllerDownWhileScalingOut: every controller replica is down while
// the on-prem replica restarts and the HPA scales out, so the new pods are
// admitted unplaced (failurePolicy Ignore) and land wherever the scheduler
// puts them. When the controllers return, those pods get the unit label
// and deletion cost of their node, and scale-in still removes the elastic
// replicas first.
func TestControllerDownWhileScalingOut(t *testing.T) {
	h := faultEnv(t)
	startAll(t, h)
	before := atPeak(t, h)
	t.Cleanup(func() { startAll(t, h) })
	for _, r := range h.Controllers {
		if err := r.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	old := map[string]bool{}
	for _, p := range before.pods {
		old[p.Name] = true
	}
	if err := cluster.Client().CoreV1().Pods(ns).Delete(ctx, before.onPrem[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	setLoad(t, h, surgeRPS)
	var fresh []corev1.Pod
	framework.Eventually(t, 4*time.Minute, time.Second, "the replacement and the surge pod Running, unplaced", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		fresh = fresh[:0]
		for _, p := range append(append(s.onPrem, s.elastic...), s.other...) {
			if !old[p.Name] {
				fresh = append(fresh, p)
			}
		}
		return len(fresh) == 2 && len(s.onPrem) == 1 && len(s.elastic) == 3, s.String()
	})
	for _, p := range fresh {
		if placed(&p) || p.Annotations[annotationCost] != "" {
			t.Fatalf("pod %s was placed or ranked with no controller running: labels %v", p.Name, p.Labels)
		}
	}
	back := time.Now()
	for _, r := range h.Controllers {
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
	}
	// Both were killed, so their Lease was not released: a leader is
	// elected once it expires.
	framework.Eventually(t, time.Minute, 250*time.Millisecond, "a leader", func(ctx context.Context) (bool, string) {
		return leader(ctx, h) >= 0, "none yet"
	})
	recovery(t, "controller-down-leader-elected", time.Since(back))
	framework.Eventually(t, time.Minute, 250*time.Millisecond, "the unplaced pods adopted", func(ctx context.Context) (bool, string) {
		return costsRight(ctx, ns, "app="+demo.PredictorApp)
	})
	recovery(t, "controller-down-adoption", time.Since(back))
	s, err := look(ctx)
	if err != nil {
		t.Fatal(err)
	}
	onPrem := s.onPrem[0]
	if old[onPrem.Name] {
		t.Fatalf("the on-prem pod %s is not the replacement", onPrem.Name)
	}

	// Scale in to one: the elastic replicas leave first, and the adopted
	// on-prem one stays to the end.
	setLoad(t, h, 2)
	framework.Eventually(t, 3*time.Minute, time.Second, "scale-in to the on-prem replica", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		if len(s.onPrem) != 1 || s.onPrem[0].UID != onPrem.UID {
			t.Fatalf("scale-in removed the on-prem replica %s while elastic ones remained: %s", onPrem.Name, s)
		}
		return len(s.elastic) == 0 && len(s.other) == 0 && s.spec == 1, s.String()
	})
}

// minShareFlag finds the adapter's minimum-share-of-pods-with-data rule in
// its --help (a flag such as --min-pods-share or --min-share-of-pods).
var minShareFlag = regexp.MustCompile(`(?i)--min[a-z-]*share|share of (the )?pods`)

// TestExporterPartialData: the series of one node's pods go stale (its
// exporter died) while the other pods keep reporting. The HPA must not
// scale down because part of the data is missing: below the adapter's
// minimum share of pods with data, the request errors.
func TestExporterPartialData(t *testing.T) {
	out, err := exec.Command(binDir+"/spillway-metrics-adapter", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("spillway-metrics-adapter --help: %v\n%s", err, out)
	}
	if !minShareFlag.Match(out) {
		t.Skip("spillway-metrics-adapter has no minimum share of pods with data yet (issue 13, item 3): " +
			"a selector where only some pods have data is answered with what there is, so this case waits for that rule")
	}
	h := faultEnv(t)
	startAll(t, h)
	s := atPeak(t, h)
	t.Cleanup(func() { h.ExporterScrape.Drop() })
	w := startWatch(h.Adapters)
	// Two of three pods lose their data: the elastic nodes' exporters die.
	var dropped []string
	for _, p := range s.elastic {
		dropped = append(dropped, `Hostname="`+p.Spec.NodeName+`"`)
	}
	h.ExporterScrape.Drop(dropped...)
	// Load drops: the one pod still reporting reads low, which alone would
	// mean scale in.
	setLoad(t, h, 3)
	framework.Eventually(t, maxStaleness+time.Minute, time.Second, "the metrics API to refuse a selector with too few pods reporting", func(ctx context.Context) (bool, string) {
		n, err := metricValues(ctx)
		if err != nil {
			return true, ""
		}
		return false, fmt.Sprintf("served %d of %d pods", n, peak)
	})
	holdUntil := time.Now().Add(2 * hpaSync)
	framework.Eventually(t, 3*hpaSync, time.Second, "two HPA syncs with partial data", func(context.Context) (bool, string) {
		return time.Now().After(holdUntil), ""
	})
	w.end(t, peak)
	h.ExporterScrape.Drop()
	restored := time.Now()
	framework.Eventually(t, resumeBound+maxStaleness, time.Second, "the HPA to scale in once all pods report", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		return s.desired < peak, s.String()
	})
	recovery(t, "exporter-partial-data", time.Since(restored))
}
