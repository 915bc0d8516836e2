package faults

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/test/framework"
)

// recovery logs one measured time in the line format docs/reliability.md
// is built from.
func recovery(t *testing.T, name string, d time.Duration) {
	t.Helper()
	t.Logf("RECOVERY %s %.1f", name, d.Seconds())
}

// resumeBound is how soon the HPA must act on fresh data once it is back:
// one scrape, one adapter refresh and one HPA sync, with as much again for
// a loaded 2-core machine.
const resumeBound = 2 * (interval + interval + hpaSync)

func setLoad(t *testing.T, h *demo.HA, rps float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.SetLoad(ctx, ns, demo.Predictor, rps); err != nil {
		t.Fatal(err)
	}
}

// state is one look at the workload.
type state struct {
	spec, desired, current, ready int32
	scalingActive                 corev1.ConditionStatus
	onPrem, elastic, other        []corev1.Pod // live pods by where they run
	pods                          []corev1.Pod // every live pod
	pool                          map[string]string
	// elasticNodes counts the elastic nodes not being removed.
	elasticNodes int
	// onLeaving counts live pods on a node being removed (deleted, or
	// tainted by Karpenter to drain it): they are about to be evicted.
	onLeaving int
}

func (s state) String() string {
	return fmt.Sprintf("deployment %d (ready %d), HPA desired %d current %d (ScalingActive %s), pods on-prem %d elastic %d pending/other %d (on a node being removed %d), elastic nodes %d",
		s.spec, s.ready, s.desired, s.current, s.scalingActive, len(s.onPrem), len(s.elastic), len(s.other), s.onLeaving, s.elasticNodes)
}

func look(ctx context.Context) (state, error) {
	var s state
	cs := cluster.Client()
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, demo.Predictor, metav1.GetOptions{})
	if err != nil {
		return s, err
	}
	s.spec, s.ready = ptr.Deref(d.Spec.Replicas, 0), d.Status.ReadyReplicas
	hpa, err := cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, hpaName, metav1.GetOptions{})
	if err != nil {
		return s, err
	}
	s.desired, s.current = hpa.Status.DesiredReplicas, hpa.Status.CurrentReplicas
	for _, c := range hpa.Status.Conditions {
		if c.Type == autoscalingv2.ScalingActive {
			s.scalingActive = c.Status
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, err
	}
	s.pool = map[string]string{}
	leaving := map[string]bool{}
	for _, n := range nodes.Items {
		s.pool[n.Name] = n.Labels[localcluster.PoolLabel]
		leaving[n.Name] = n.DeletionTimestamp != nil || slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == karpenterDisruptedTaint })
		if s.pool[n.Name] == demo.ElasticPool && !leaving[n.Name] {
			s.elasticNodes++
		}
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + demo.PredictorApp})
	if err != nil {
		return s, err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		s.pods = append(s.pods, p)
		if leaving[p.Spec.NodeName] {
			s.onLeaving++
		}
		running := p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != ""
		switch {
		case running && s.pool[p.Spec.NodeName] == demo.OnPremPool:
			s.onPrem = append(s.onPrem, p)
		case running && s.pool[p.Spec.NodeName] == demo.ElasticPool:
			s.elastic = append(s.elastic, p)
		default:
			s.other = append(s.other, p)
		}
	}
	return s, nil
}

// metricValues reads the predictor's per-pod utilization through the
// aggregated custom metrics API, as the HPA does: how many pods have a
// value, or the error the API answers.
func metricValues(ctx context.Context) (int, error) {
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/DCGM_CUSTOM_PROCESS_SM_UTIL", ns)
	raw, err := cluster.Client().Discovery().RESTClient().Get().AbsPath(path).Param("labelSelector", "app="+demo.PredictorApp).DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

// atPeak sets the peak load and waits for the steady peak: 3 replicas
// Running, 1 on-prem and 2 elastic, the HPA settled at 3, fresh values for
// all 3 through the metrics API, and every spillway replica ready. No
// elastic node may be left over from an earlier surge: Karpenter would
// consolidate a busy node's pod onto it in the middle of the next case.
// Nor may a pod run on a node being removed: when Karpenter consolidates
// the busy node rather than the empty one, that node stops counting the
// moment it is tainted, seconds before its pod is evicted.
func atPeak(t *testing.T, h *demo.HA) state {
	t.Helper()
	setLoad(t, h, peakRPS)
	var last state
	framework.Eventually(t, 6*time.Minute, time.Second, "the steady peak", func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		last = s
		if s.spec != peak || s.desired != peak || s.current != peak || s.ready != peak ||
			len(s.onPrem) != 1 || len(s.elastic) != 2 || len(s.other) != 0 || s.elasticNodes != 2 || s.onLeaving != 0 ||
			s.scalingActive != corev1.ConditionTrue {
			return false, s.String()
		}
		if n, err := metricValues(ctx); err != nil || n != peak {
			return false, fmt.Sprintf("metrics API: %d values, %v", n, err)
		}
		for _, r := range append(slices.Clone(h.Controllers), h.Adapters...) {
			if err := probe(ctx, r.ReadyURL); err != nil {
				return false, err.Error()
			}
		}
		return true, ""
	})
	return last
}

// insecure reads the replicas' readiness probes: the adapter serves its
// /readyz over TLS with a certificate for its Service name, which a probe
// does not verify either.
var insecure = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a readiness probe, as the kubelet's

func probe(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// watch samples, every second until end, the workload's replica counts and
// the readiness probes of the given replicas: what must hold while a fault
// lasts.
type watch struct {
	stop chan struct{}
	done chan struct{}

	mu              sync.Mutex
	samples         int
	minSpec         int32
	minDesired      int32
	maxDesired      int32
	scalingInactive int
	notReady        map[string]int
	firstNotReady   string
	lastErr         error
}

func startWatch(probes []*demo.Replica) *watch {
	w := &watch{stop: make(chan struct{}), done: make(chan struct{}), minSpec: 1 << 30, minDesired: 1 << 30, notReady: map[string]int{}}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := look(ctx)
			w.mu.Lock()
			if err == nil {
				w.samples++
				w.minSpec, w.minDesired, w.maxDesired = min(w.minSpec, s.spec), min(w.minDesired, s.desired), max(w.maxDesired, s.desired)
				if s.scalingActive == corev1.ConditionFalse {
					w.scalingInactive++
				}
			} else {
				w.lastErr = err
			}
			w.mu.Unlock()
			for _, r := range probes {
				if err := probe(ctx, r.ReadyURL); err != nil {
					w.mu.Lock()
					w.notReady[r.Addr]++
					if w.firstNotReady == "" {
						w.firstNotReady = err.Error()
					}
					w.mu.Unlock()
				}
			}
			cancel()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// end stops sampling and fails the test if replicas dropped below floor or
// a watched replica was ever unready.
func (w *watch) end(t *testing.T, floor int32) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.samples == 0 {
		t.Fatalf("no sample of the workload while the fault lasted (last error: %v)", w.lastErr)
	}
	t.Logf("while the fault lasted: %d samples, deployment replicas >= %d, HPA desired %d..%d, %d samples with ScalingActive False",
		w.samples, w.minSpec, w.minDesired, w.maxDesired, w.scalingInactive)
	if w.minSpec < floor || w.minDesired < floor {
		t.Errorf("replicas dropped while data was missing: deployment down to %d, HPA desired down to %d; want >= %d", w.minSpec, w.minDesired, floor)
	}
	for addr, n := range w.notReady {
		t.Errorf("replica %s was not ready in %d of %d samples (first: %s)", addr, n, w.samples, w.firstNotReady)
	}
}

// waitScaled waits until the HPA wants at least n replicas and returns the
// time since from.
func waitScaled(t *testing.T, from time.Time, n int32, timeout time.Duration, what string) time.Duration {
	t.Helper()
	framework.Eventually(t, timeout, 250*time.Millisecond, what, func(ctx context.Context) (bool, string) {
		s, err := look(ctx)
		if err != nil {
			return false, err.Error()
		}
		return s.desired >= n && s.spec >= n, s.String()
	})
	return time.Since(from)
}

// waitMetricsMissing waits until the metrics API answers an error for the
// predictor (the adapter's snapshot is older than --max-staleness): no
// data is served, stale or zero.
func waitMetricsMissing(t *testing.T) {
	t.Helper()
	framework.Eventually(t, maxStaleness+4*promTimeout+10*time.Second, time.Second, "the metrics API to refuse stale data", func(ctx context.Context) (bool, string) {
		n, err := metricValues(ctx)
		if err != nil {
			return true, ""
		}
		return false, fmt.Sprintf("still served %d values", n)
	})
}

// namespaceChurn creates a namespace with an object in it and deletes it,
// while a fault lasts, and reports on the channel how long it took to be
// gone (the namespace controller needs discovery of every API, aggregated
// ones included) or an error after a minute.
func namespaceChurn(name string) <-chan error {
	out := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
		defer cancel()
		cs := cluster.Client()
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			out <- err
			return
		}
		if _, err := cs.CoreV1().ConfigMaps(name).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Data: map[string]string{"a": "b"}}, metav1.CreateOptions{}); err != nil {
			out <- err
			return
		}
		start := time.Now()
		if err := cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			out <- err
			return
		}
		if err := localcluster.Poll(ctx, time.Second, "namespace "+name+" to go", func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}); err != nil {
			ns, _ := cs.CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
			msg := ""
			if ns != nil {
				for _, c := range ns.Status.Conditions {
					msg += fmt.Sprintf(" %s=%s (%s)", c.Type, c.Status, c.Message)
				}
			}
			out <- fmt.Errorf("namespace %s not gone a minute after its deletion:%s", name, msg)
			return
		}
		if d := time.Since(start); d > time.Minute {
			out <- fmt.Errorf("namespace %s took %s to go", name, d.Round(time.Second))
		} else {
			out <- nil
		}
	}()
	return out
}

// checkChurn fails the test with the namespace churn's error.
func checkChurn(t *testing.T, ch <-chan error) {
	t.Helper()
	if err := <-ch; err != nil {
		t.Error(err)
	}
}

// probePod is a bare pod the probe policy selects.
func probePod(name string) *corev1.Pod {
	return testobjects.Pod(testobjects.PodOptions{Name: name, Namespace: probeNS, Labels: map[string]string{"app": "probe"}}, func(p *corev1.Pod) {
		p.Spec.TerminationGracePeriodSeconds = ptr.To(int64(0))
		p.Spec.Containers = []corev1.Container{{
			Name: "probe", Image: "busybox",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}},
		}}
	})
}

// createProbe creates a probe pod and returns it as admitted.
func createProbe(ctx context.Context, name string) (*corev1.Pod, error) {
	return cluster.Client().CoreV1().Pods(probeNS).Create(ctx, probePod(name), metav1.CreateOptions{})
}

// cleanProbes deletes every probe pod when the test ends.
func cleanProbes(t *testing.T) {
	t.Cleanup(func() {
		_ = cluster.Client().CoreV1().Pods(probeNS).DeleteCollection(context.Background(), metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}, metav1.ListOptions{})
	})
}

func placed(p *corev1.Pod) bool {
	_, ok := p.Labels[labelPolicy]
	return ok
}

// costsRight reports whether every listed pod that a node runs carries its
// node's unit label and deletion cost; the message names the first that
// does not.
func costsRight(ctx context.Context, namespace, selector string) (bool, string) {
	cs := cluster.Client()
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return false, err.Error()
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, err.Error()
	}
	pool := map[string]string{}
	for _, n := range nodes.Items {
		pool[n.Name] = n.Labels[localcluster.PoolLabel]
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Spec.NodeName == "" {
			continue
		}
		unit, cost := demo.OnPremPool, costOnPrem
		if pool[p.Spec.NodeName] == demo.ElasticPool {
			unit, cost = demo.ElasticPool, costElastic
		}
		if p.Labels[labelUnit] != unit || p.Annotations[annotationCost] != cost || p.Labels[labelPolicy] == "" {
			return false, fmt.Sprintf("pod %s on %s: unit %q policy %q cost %q; want unit %q cost %q",
				p.Name, p.Spec.NodeName, p.Labels[labelUnit], p.Labels[labelPolicy], p.Annotations[annotationCost], unit, cost)
		}
	}
	return true, ""
}

// leader is the index of the controller replica that leads, by its
// leader_election_master_status gauge; -1 when none says so.
func leader(ctx context.Context, h *demo.HA) int {
	for i, r := range h.Controllers {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.MetricsAddr+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "leader_election_master_status{") && strings.Contains(line, `name="`+leaseName+`"`) && strings.HasSuffix(line, " 1") {
				resp.Body.Close()
				return i
			}
		}
		resp.Body.Close()
	}
	return -1
}

// leaseHolder is the holder of the controllers' Lease.
func leaseHolder(ctx context.Context) (string, error) {
	l, err := cluster.Client().CoordinationV1().Leases(framework.SystemNamespace).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return ptr.Deref(l.Spec.HolderIdentity, ""), nil
}

// startAll brings every replica back up (a test that took one down
// restores it, but a failed test may not have).
func startAll(t *testing.T, h *demo.HA) {
	t.Helper()
	for _, r := range append(slices.Clone(h.Controllers), h.Adapters...) {
		if exited, _ := r.Process().Exited(); exited {
			if err := r.Start(); err != nil {
				t.Logf("restarting %s: %v", r.Addr, err)
			}
		}
	}
}

// adapterRequests is the number of metric requests an adapter replica has
// answered, from its own /metrics (spillway_metrics_adapter_requests_total,
// every label combination).
func adapterRequests(ctx context.Context, r *demo.Replica) (float64, error) {
	var total float64
	err := framework.ScrapeMetrics(ctx, r.MetricsAddr, func(series string, v float64) {
		if strings.HasPrefix(series, "spillway_metrics_adapter_requests_total{") {
			total += v
		}
	})
	return total, err
}

// waitPlacing creates probe pods named <prefix>-<n>, one per interval,
// until one is placed and also (nil for none) holds.
func waitPlacing(t *testing.T, what, prefix string, interval time.Duration, also func() (bool, string)) {
	t.Helper()
	i := 0
	framework.Eventually(t, 30*time.Second, interval, what, func(ctx context.Context) (bool, string) {
		i++
		p, err := createProbe(ctx, fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			return false, err.Error()
		}
		if !placed(p) {
			return false, "admitted unplaced: " + p.Name
		}
		if also != nil {
			return also()
		}
		return true, ""
	})
}

// whyGone says what the cluster recorded about a pod that went away: every
// event in ns whose object or message names it (the ReplicaSet's
// SuccessfulDelete, Karpenter's eviction, spillway's Replaced), oldest
// first, and the HPA's events, so a failure names the deleter.
func whyGone(ctx context.Context, pod string) string {
	list, err := cluster.Client().CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "listing events: " + err.Error()
	}
	// Events written through events.k8s.io have an EventTime and a
	// reporting controller rather than a LastTimestamp and a source.
	at := func(e corev1.Event) time.Time {
		if !e.LastTimestamp.IsZero() {
			return e.LastTimestamp.Time
		}
		return e.EventTime.Time
	}
	evs := list.Items
	slices.SortFunc(evs, func(a, b corev1.Event) int { return at(a).Compare(at(b)) })
	var b strings.Builder
	for _, e := range evs {
		if e.InvolvedObject.Name != pod && !strings.Contains(e.Message, pod) && e.InvolvedObject.Kind != "HorizontalPodAutoscaler" {
			continue
		}
		fmt.Fprintf(&b, "\n  %s %s%s %s/%s %s: %s", at(e).UTC().Format("15:04:05"), e.Source.Component, e.ReportingController,
			e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
	if b.Len() == 0 {
		return "no event names it"
	}
	return b.String()
}
