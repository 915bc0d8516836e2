package provider

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

const (
	sm           = metricnames.ProcessSMUtil
	mem          = metricnames.ProcessMemUsed
	testRefresh  = 5 * time.Second
	testMaxStale = 30 * time.Second
)

// fakeClock is advanced by hand; nothing in these tests sleeps.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time                  { return c.t }
func (c *fakeClock) Since(t time.Time) time.Duration { return c.t.Sub(t) }
func (c *fakeClock) advance(d time.Duration)         { c.t = c.t.Add(d) }

type pod struct {
	ns, name string
	labels   map[string]string
	phase    corev1.PodPhase
	// node is spec.nodeName; "" means testNode, the Hostname of
	// promquery.Series. unscheduled leaves it empty.
	node        string
	unscheduled bool
	// started is status.startTime (unset when zero); deleting sets a
	// deletion timestamp.
	started  time.Time
	deleting bool
	// ip is status.podIP ("" leaves it unset).
	ip string
}

const testNode = "node-1"

// podLister is the production InformerPods over a real client-go indexer
// with the indexes the app registers on its pod informer.
func podLister(t testing.TB, pods []pod) PodLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		cache.NamespaceIndex: cache.MetaNamespaceIndexFunc,
		PodLabelIndex:        PodLabelIndexFunc,
	})
	for _, p := range pods {
		phase := p.phase
		if phase == "" {
			phase = corev1.PodRunning
		}
		node := p.node
		if node == "" && !p.unscheduled {
			node = testNode
		}
		obj := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: p.labels},
			Spec:       corev1.PodSpec{NodeName: node},
			Status:     corev1.PodStatus{Phase: phase, PodIP: p.ip},
		}
		if !p.started.IsZero() {
			obj.Status.StartTime = &metav1.Time{Time: p.started}
		}
		if p.deleting {
			obj.DeletionTimestamp = &metav1.Time{Time: t0}
		}
		if err := idx.Add(NewCachedPod(obj)); err != nil {
			t.Fatalf("adding pod: %v", err)
		}
	}
	l, err := NewInformerPods(idx)
	if err != nil {
		t.Fatalf("NewInformerPods: %v", err)
	}
	return l
}

type env struct {
	p     *Provider
	prom  *promquery.Fake
	clock *fakeClock
	reg   *prometheus.Registry
}

func newEnv(t testing.TB, pods []pod, vec model.Vector) *env {
	t.Helper()
	return newEnvSynced(t, pods, vec, nil)
}

// newEnvSynced is newEnv with the pod informer's HasSynced.
func newEnvSynced(t testing.TB, pods []pod, vec model.Vector, synced func() bool) *env {
	t.Helper()
	return newEnvConfig(t, pods, vec, synced, 0)
}

// newEnvConfig is newEnvSynced with a minimum share of pods with data.
func newEnvConfig(t testing.TB, pods []pod, vec model.Vector, synced func() bool, minShare float64) *env {
	t.Helper()
	e := &env{prom: &promquery.Fake{}, clock: &fakeClock{t: t0}, reg: prometheus.NewRegistry()}
	e.prom.Set(vec, nil)
	p, err := New(Config{
		Source:          e.prom,
		Pods:            podLister(t, pods),
		PodsSynced:      synced,
		Registry:        e.reg,
		RefreshInterval: testRefresh,
		MaxStaleness:    testMaxStale,
		MinPodDataShare: minShare,
		Clock:           e.clock,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.p = p
	return e
}

func (e *env) refresh(t testing.TB) {
	t.Helper()
	if err := e.p.Refresh(context.Background()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
}

func podInfo(metric string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: metric}
}

func sel(t testing.TB, s string) labels.Selector {
	t.Helper()
	out, err := labels.Parse(s)
	if err != nil {
		t.Fatalf("parse selector %q: %v", s, err)
	}
	return out
}

// wantStatus checks err is a Kubernetes status error with code and a
// message containing every fragment.
func wantStatus(t *testing.T, err error, code int32, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want HTTP %d", code)
	}
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a Kubernetes status error", err, err)
	}
	if got := se.Status().Code; got != code {
		t.Errorf("status code = %d (%s), want %d (%s): %v", got, http.StatusText(int(got)), code, http.StatusText(int(code)), err)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q lacks %q", err, f)
		}
	}
}

func series(metric, ns, podName, gpu, pid string, v float64, ts time.Time) *model.Sample {
	return promquery.Series(metric, ns, podName, gpu, pid, v, ts)
}
