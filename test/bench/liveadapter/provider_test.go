package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/metrictable"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/pkg/provider"
)

const (
	sm       = metricnames.ProcessSMUtil
	maxStale = 30 * time.Second
	app      = "isvc.qwen-chat-predictor"
)

// newLive serves three pods of app (qwen-1 at 80, qwen-2 at 30 as the mean
// of two GPUs, qwen-3 without data) and one other pod, all on the node the
// fake series name, through the production InformerPods.
func newLive(t *testing.T) (*liveProvider, *promquery.Fake) {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		cache.NamespaceIndex:   cache.MetaNamespaceIndexFunc,
		provider.PodLabelIndex: provider.PodLabelIndexFunc,
	})
	for name, a := range map[string]string{"qwen-1": app, "qwen-2": app, "qwen-3": app, "other": "other"} {
		if err := idx.Add(provider.NewCachedPod(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "llm", Name: name, Labels: map[string]string{"app": a}},
			Spec:       corev1.PodSpec{NodeName: "node-1"},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		})); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := provider.NewInformerPods(idx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	prom := &promquery.Fake{}
	prom.Set(model.Vector{
		promquery.Series(sm, "llm", "qwen-1", "GPU-1", "1", 80, now),
		promquery.Series(sm, "llm", "qwen-2", "GPU-2", "1", 40, now),
		promquery.Series(sm, "llm", "qwen-2", "GPU-3", "1", 20, now),
		promquery.Series(sm, "llm", "other", "GPU-4", "1", 100, now),
	}, nil)
	l, err := newLiveProvider(liveConfig{Source: prom, Pods: pods, MaxStaleness: maxStale, MinPodDataShare: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	return l, prom
}

func podInfo(metric string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "pods"}, Namespaced: true, Metric: metric}
}

// TestLiveQuery: every request runs its own query for exactly the selected
// pods (names from the informer, never from the request's selector) and is
// answered by the adapter's rules; a failing Prometheus fails the request
// at once.
func TestLiveQuery(t *testing.T) {
	l, prom := newLive(t)
	ctx := context.Background()
	list, err := l.GetExternalMetric(ctx, "llm",
		labels.SelectorFromSet(labels.Set{"app": app, provider.AggregateKey: provider.AggregateMax}), cmprovider.ExternalMetricInfo{Metric: sm})
	if err != nil {
		t.Fatalf("external: %v", err)
	}
	if len(list.Items) != 1 || list.Items[0].Value.MilliValue() != 80000 {
		t.Errorf("external items = %+v", list.Items)
	}
	mv, err := l.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "qwen-2"}, podInfo(sm), labels.Everything())
	if err != nil || mv.Value.MilliValue() != 30000 {
		t.Fatalf("by name = %v, %v", mv, err)
	}
	vals, err := l.GetMetricBySelector(ctx, "llm", labels.SelectorFromSet(labels.Set{"app": app}), podInfo(sm), labels.Everything())
	if err != nil || len(vals.Items) != 2 {
		t.Fatalf("by selector = %+v, %v", vals, err)
	}

	want := []promquery.Query{
		{Metrics: []string{sm}, Namespace: "llm", Pods: []string{"qwen-1", "qwen-2", "qwen-3"}, LookbackDelta: maxStale},
		{Metrics: []string{sm}, Namespace: "llm", Pods: []string{"qwen-2"}, LookbackDelta: maxStale},
		{Metrics: []string{sm}, Namespace: "llm", Pods: []string{"qwen-1", "qwen-2", "qwen-3"}, LookbackDelta: maxStale},
	}
	qs := prom.Queries()
	if len(qs) != len(want) {
		t.Fatalf("got %d queries %+v, want %d", len(qs), qs, len(want))
	}
	for i := range want {
		if !slices.Equal(qs[i].Metrics, want[i].Metrics) || qs[i].Namespace != want[i].Namespace ||
			!slices.Equal(qs[i].Pods, want[i].Pods) || qs[i].LookbackDelta != want[i].LookbackDelta {
			t.Errorf("query %d = %+v, want %+v", i, qs[i], want[i])
		}
	}

	if n := len(l.ListAllMetrics()); n == 0 {
		t.Error("ListAllMetrics lists nothing")
	}

	prom.Set(nil, errors.New("connection refused"))
	_, err = l.GetMetricBySelector(ctx, "llm", labels.SelectorFromSet(labels.Set{"app": "other"}), podInfo(sm), labels.Everything())
	wantStatus(t, err, http.StatusServiceUnavailable, "connection refused")
}

// TestLiveRefusals: what the live server does not query answers as the
// adapter would, and request values that are no Kubernetes name never
// reach Prometheus.
func TestLiveRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(*liveProvider) error
		code int32
		msg  string
	}{
		{
			name: "unknown metric",
			call: func(l *liveProvider) error {
				_, err := l.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: "qwen-1"}, podInfo("nope"), labels.Everything())
				return err
			},
			code: http.StatusNotFound, msg: `does not serve metric "nope"`,
		},
		{
			name: "a pod's own metric has no snapshot",
			call: func(l *liveProvider) error {
				_, err := l.GetMetricBySelector(ctx, "llm", labels.SelectorFromSet(labels.Set{"app": app}), podInfo(metricnames.VLLMRequestsWaiting), labels.Everything())
				return err
			},
			code: http.StatusServiceUnavailable, msg: "no GPU metrics loaded",
		},
		{
			name: "aggregate key alone",
			call: func(l *liveProvider) error {
				_, err := l.GetExternalMetric(ctx, "llm", labels.SelectorFromSet(labels.Set{provider.AggregateKey: provider.AggregateAvg}), cmprovider.ExternalMetricInfo{Metric: sm})
				return err
			},
			code: http.StatusBadRequest, msg: "at least one label",
		},
		{
			name: "no pods selected",
			call: func(l *liveProvider) error {
				_, err := l.GetMetricBySelector(ctx, "llm", labels.SelectorFromValidatedSet(labels.Set{"app": `x"}`}), podInfo(sm), labels.Everything())
				return err
			},
			code: http.StatusNotFound, msg: "no pods in namespace llm",
		},
		{
			name: "hostile pod name",
			call: func(l *liveProvider) error {
				_, err := l.GetMetricByName(ctx, types.NamespacedName{Namespace: "llm", Name: `x",pod=~".+`}, podInfo(sm), labels.Everything())
				return err
			},
			code: http.StatusBadRequest, msg: "invalid pod name",
		},
		{
			name: "hostile namespace",
			call: func(l *liveProvider) error {
				_, err := l.GetMetricByName(ctx, types.NamespacedName{Namespace: `"} or vector(100) or {"`, Name: "qwen-1"}, podInfo(sm), labels.Everything())
				return err
			},
			code: http.StatusBadRequest, msg: "invalid namespace",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, prom := newLive(t)
			wantStatus(t, tt.call(l), tt.code, tt.msg)
			if qs := prom.Queries(); len(qs) != 0 {
				t.Errorf("reached Prometheus: %+v", qs)
			}
		})
	}
}

func wantStatus(t *testing.T, err error, code int32, msg string) {
	t.Helper()
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a Kubernetes status error", err, err)
	}
	if got := se.Status().Code; got != code {
		t.Errorf("status code = %d, want %d: %v", got, code, err)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q lacks %q", err, msg)
	}
}

// BenchmarkPerRequestProvider is what the live server adds to each request
// besides the query: building the Provider the query loads.
func BenchmarkPerRequestProvider(b *testing.B) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		cache.NamespaceIndex:   cache.MetaNamespaceIndexFunc,
		provider.PodLabelIndex: provider.PodLabelIndexFunc,
	})
	pods, err := provider.NewInformerPods(idx)
	if err != nil {
		b.Fatal(err)
	}
	l, err := newLiveProvider(liveConfig{Source: &promquery.Fake{}, Pods: pods, MaxStaleness: maxStale, MinPodDataShare: 0.5})
	if err != nil {
		b.Fatal(err)
	}
	row, _ := l.row(sm)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.provider([]metrictable.Row{row}, "llm", []string{"a", "b"}); err != nil {
			b.Fatal(err)
		}
	}
}
