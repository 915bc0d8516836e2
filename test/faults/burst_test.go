package faults

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/test/framework"
)

const (
	// burstNS holds the burst's pods and their capped policy.
	burstNS = "faults-burst"
	// burstPods are created at once against caps that admit
	// burstCapOnPrem + burstCapElastic of them.
	burstPods       = 12
	burstCapOnPrem  = 3
	burstCapElastic = 2
	// webhookSecret holds the controllers' self-issued webhook chain.
	webhookSecret = "spillway-webhook-cert"
)

// TestMaxHoldsAcrossWebhookReplicas: a burst of pod creations against a
// required policy with a max on each unit is split request by request
// across both controllers' webhooks. Each replica decides on the shared
// reservations in the policy's status, so together they admit no more
// than the caps allow, and every admitted pod is placed.
func TestMaxHoldsAcrossWebhookReplicas(t *testing.T) {
	h := faultEnv(t)
	startAll(t, h)
	ctx := context.Background()
	cs := cluster.Client()
	if err := cluster.Apply(ctx, []byte(burstPolicy())); err != nil {
		t.Fatal(err)
	}
	clean := func() {
		_ = cs.CoreV1().Pods(burstNS).DeleteCollection(context.Background(),
			metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}, metav1.ListOptions{})
	}
	t.Cleanup(clean)
	// The caps must start empty (a pod left from an earlier run counts).
	clean()
	framework.Eventually(t, time.Minute, 250*time.Millisecond, "no pod or reservation left in "+burstNS, func(ctx context.Context) (bool, string) {
		pods, err := cs.CoreV1().Pods(burstNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		if len(pods.Items) > 0 {
			return false, fmt.Sprintf("%d pods", len(pods.Items))
		}
		// Reservations outlive their pods until they expire.
		raw, err := cs.Discovery().RESTClient().Get().AbsPath("/apis/spillway.dev/v1alpha1/namespaces", burstNS, "resourcepolicies", "burst").DoRaw(ctx)
		if err != nil {
			return false, err.Error()
		}
		var rp v1alpha1.ResourcePolicy
		if err := json.Unmarshal(raw, &rp); err != nil {
			return false, err.Error()
		}
		for _, r := range rp.Status.Reservations {
			if time.Now().Before(r.Expires.Time) {
				return false, "reservation " + r.ID + " held until " + r.Expires.String()
			}
		}
		return true, ""
	})

	// The webhook configuration points at a proxy that balances requests,
	// not connections: the API server keeps one connection to a webhook,
	// which a Service (or TCPProxy) would pin to one replica.
	bal := startBalancer(t, h)
	if err := framework.ApplyWebhookConfig(ctx, cluster, bal.Port()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restoreWebhookConfig(t, h) })
	cleanProbes(t)
	waitPlacing(t, "placement through the request balancer, by every replica", "balanced", 250*time.Millisecond, func() (bool, string) {
		return len(bal.Served()) == len(h.Controllers), fmt.Sprintf("served %v", bal.Served())
	})

	before := make([]webhookCounts, len(h.Controllers))
	for j, r := range h.Controllers {
		c, err := scrapeWebhook(ctx, r.MetricsAddr)
		if err != nil {
			t.Fatal(err)
		}
		before[j] = c
	}
	servedBefore := bal.Served()

	results := burst(ctx, burstPods)
	var created, refused, unplaced int
	units := map[string]int{}
	for _, r := range results {
		switch {
		case r.err != nil:
			refused++
			if !strings.Contains(r.err.Error(), "max") {
				t.Errorf("creation refused for another reason than the caps: %v", r.err)
			}
		case !placed(r.pod):
			unplaced++
			t.Errorf("%s admitted unplaced: a review failed (see the controllers' logs)", r.pod.Name)
		default:
			created++
			units[r.pod.Labels[labelUnit]]++
		}
	}
	t.Logf("burst of %d: %d created (%v), %d refused, %d unplaced; reviews served per replica %v", burstPods, created, units, refused, unplaced, delta(bal.Served(), servedBefore))
	if units[demo.OnPremPool] > burstCapOnPrem || units[demo.ElasticPool] > burstCapElastic {
		t.Errorf("caps exceeded: %v, want at most %d on %s and %d on %s", units, burstCapOnPrem, demo.OnPremPool, burstCapElastic, demo.ElasticPool)
	}
	if other := created - units[demo.OnPremPool] - units[demo.ElasticPool]; other > 0 {
		t.Errorf("%d pods placed outside the units of a required policy: %v", other, units)
	}
	// Both replicas decided part of the burst, from their own counters.
	var placedByReplicas, fallbacks float64
	durations := map[string]float64{}
	for j, r := range h.Controllers {
		after, err := scrapeWebhook(ctx, r.MetricsAddr)
		if err != nil {
			t.Fatal(err)
		}
		placedN, deniedN := after.placed-before[j].placed, after.denied-before[j].denied
		placedByReplicas += placedN
		fallbacks += after.fallbacks - before[j].fallbacks
		t.Logf("replica %d (%s): placed %.0f, denied %.0f of the burst, %.0f without the shared reservations",
			j, r.Addr, placedN, deniedN, after.fallbacks-before[j].fallbacks)
		if placedN+deniedN == 0 {
			t.Errorf("replica %d decided none of the burst: it was not split", j)
		}
		for le, n := range after.duration {
			durations[le] += n - before[j].duration[le]
		}
	}
	// A review that cannot reach the shared state within its second
	// refuses rather than over-admits: safe, but it may refuse a pod that
	// had room, so the caps must be filled exactly only when none did. (On
	// this machine none did once the shared client had its own rate
	// limit; a loaded CI machine may still see one.)
	if fallbacks > 0 {
		t.Logf("%.0f reviews could not use the shared reservations in time and counted every capped unit as full", fallbacks)
	} else if created != burstCapOnPrem+burstCapElastic {
		t.Errorf("%d pods admitted with no review falling back, want the caps filled exactly (%d)", created, burstCapOnPrem+burstCapElastic)
	}
	if int(placedByReplicas) != created {
		t.Errorf("replicas counted %.0f placements, %d pods were created", placedByReplicas, created)
	}
	t.Logf("webhook latency over the burst (both replicas, shared reservations included): p50 ≤ %s, p99 ≤ %s",
		quantileBound(durations, 0.5), quantileBound(durations, 0.99))
}

func burstPolicy() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: spillway.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: burst
  namespace: %[1]s
spec:
  selector: {app: burst}
  strategy: required
  units:
  - {resource: onprem, name: onprem, max: %[2]d, nodeSelector: {%[4]s: %[5]s}}
  - {resource: elastic, name: elastic, max: %[3]d, nodeSelector: {%[4]s: %[6]s}}
`, burstNS, burstCapOnPrem, burstCapElastic, localcluster.PoolLabel, demo.OnPremPool, demo.ElasticPool)
}

// startBalancer serves the controllers' webhook chain (from its Secret,
// which the API server trusts through the CA bundle) and forwards each
// review with the API server's client certificate.
func startBalancer(t *testing.T, h *demo.HA) *localcluster.RequestBalancer {
	t.Helper()
	var sec *corev1.Secret
	framework.Eventually(t, 30*time.Second, time.Second, "the webhook chain's Secret", func(ctx context.Context) (bool, string) {
		s, err := cluster.Client().CoreV1().Secrets(framework.SystemNamespace).Get(ctx, webhookSecret, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		sec = s
		return true, ""
	})
	serving, err := tls.X509KeyPair(sec.Data["tls.crt"], sec.Data["tls.key"])
	if err != nil {
		t.Fatalf("webhook chain: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(sec.Data["ca.crt"]) {
		t.Fatal("webhook chain's Secret has no CA certificate")
	}
	client, err := cluster.WebhookClientCert()
	if err != nil {
		t.Fatal(err)
	}
	var backends []string
	for _, r := range h.Controllers {
		backends = append(backends, r.Addr)
	}
	bal, err := localcluster.StartRequestBalancer(serving, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS12}, backends...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bal.Close() })
	return bal
}

// restoreWebhookConfig points the configuration at the TCP proxy again and
// waits until pods are placed through it.
func restoreWebhookConfig(t *testing.T, h *demo.HA) {
	ctx := context.Background()
	if err := framework.ApplyWebhookConfig(ctx, cluster, h.ControllerProxy.Port()); err != nil {
		t.Errorf("restoring the webhook configuration: %v", err)
		return
	}
	waitPlacing(t, "placement through the TCP proxy again", "restored", 250*time.Millisecond, nil)
}

type burstResult struct {
	pod *corev1.Pod
	err error
}

// burst creates n selected pods at once.
func burst(ctx context.Context, n int) []burstResult {
	out := make([]burstResult, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			p := testobjects.Pod(testobjects.PodOptions{Name: fmt.Sprintf("burst-%d", i), Namespace: burstNS, Labels: map[string]string{"app": "burst"}},
				func(p *corev1.Pod) {
					p.Spec.TerminationGracePeriodSeconds = ptr.To(int64(0))
					p.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox"}}
				})
			out[i].pod, out[i].err = cluster.Client().CoreV1().Pods(burstNS).Create(ctx, p, metav1.CreateOptions{})
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// webhookCounts are one replica's webhook counters for burstNS and its
// latency histogram (cumulative counts by upper bound).
type webhookCounts struct {
	placed, denied float64
	// fallbacks are reviews that could not read or write the shared
	// reservations and treated every unit with a max as full.
	fallbacks float64
	duration  map[string]float64
}

func scrapeWebhook(ctx context.Context, addr string) (webhookCounts, error) {
	c := webhookCounts{duration: map[string]float64{}}
	ns := `namespace="` + burstNS + `"`
	err := framework.ScrapeMetrics(ctx, addr, func(series string, v float64) {
		switch {
		case strings.HasPrefix(series, "spillway_placement_pods_total{") && strings.Contains(series, ns):
			c.placed += v
		case strings.HasPrefix(series, "spillway_placement_denied_total{") && strings.Contains(series, ns):
			c.denied += v
		case strings.HasPrefix(series, "spillway_placement_webhook_errors_total{") && strings.Contains(series, `reason="shared-reservation"`):
			c.fallbacks += v
		case strings.HasPrefix(series, `spillway_placement_webhook_duration_seconds_bucket{le="`):
			le := strings.TrimSuffix(strings.TrimPrefix(series, `spillway_placement_webhook_duration_seconds_bucket{le="`), `"}`)
			c.duration[le] = v
		}
	})
	return c, err
}

// quantileBound is the smallest histogram bound below which at least q of
// the observations fell.
func quantileBound(cumulative map[string]float64, q float64) string {
	type bucket struct {
		le    float64
		label string
		n     float64
	}
	var bs []bucket
	for label, n := range cumulative {
		le := math.Inf(1)
		if label != "+Inf" {
			v, err := strconv.ParseFloat(label, 64)
			if err != nil {
				continue
			}
			le = v
		}
		bs = append(bs, bucket{le, label, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return "(no observations)"
	}
	total := bs[len(bs)-1].n
	for _, b := range bs {
		if b.n >= q*total {
			if math.IsInf(b.le, 1) {
				return "+Inf"
			}
			return (time.Duration(b.le * float64(time.Second))).String()
		}
	}
	return "+Inf"
}

func delta(after, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}
