package provider

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/promquery"
)

// hostileValues try to break out of a label value in PromQL or in a
// selector string.
var hostileValues = []string{
	`x"}`,
	`x",pod=~".+`,
	`"} or vector(100) or {"`,
	`{__name__=~".+"}`,
	"a\nb",
	`=~`,
	`a\`,
	`isvc.qwen-chat-predictor" or "1"="1`,
}

// TestHostileSelectors sends selector values no real pod label can have.
// They are matched in memory against pod labels, so they select nothing,
// and nothing of them reaches Prometheus in either mode.
func TestHostileSelectors(t *testing.T) {
	for _, live := range []bool{false, true} {
		mode := map[bool]string{false: "cache", true: "live"}[live]
		for _, v := range hostileValues {
			// SelectorFromValidatedSet skips validation, as if a client had
			// got an unvalidated selector past the API server.
			selector := labels.SelectorFromValidatedSet(labels.Set{"app": v})
			t.Run(mode+"/"+v, func(t *testing.T) {
				e := newEnv(t, live, qwenPods, qwenSeries)
				if !live {
					e.refresh(t)
				}
				before := len(e.prom.Queries())

				_, err := e.p.GetMetricBySelector(context.Background(), "llm", selector, podInfo(sm), labels.Everything())
				wantStatus(t, err, http.StatusNotFound, "no pods in namespace llm")
				_, err = e.p.GetExternalMetric(context.Background(), "llm", selector, cmprovider.ExternalMetricInfo{Metric: sm})
				wantStatus(t, err, http.StatusNotFound, "no pods in namespace llm")

				aggSel := labels.SelectorFromValidatedSet(labels.Set{"app": "isvc.qwen-chat-predictor", AggregateKey: v})
				_, err = e.p.GetExternalMetric(context.Background(), "llm", aggSel, cmprovider.ExternalMetricInfo{Metric: sm})
				wantStatus(t, err, http.StatusBadRequest, "unknown "+AggregateKey)
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("raw newline from the request echoed in %q", err)
				}

				_, err = e.p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: v}, podInfo(sm), labels.Everything())
				if live {
					wantStatus(t, err, http.StatusBadRequest, "invalid pod name")
				} else {
					wantStatus(t, err, http.StatusNotFound)
				}
				_, err = e.p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: v, Name: "qwen-1"}, podInfo(sm), labels.Everything())
				if live {
					wantStatus(t, err, http.StatusBadRequest, "invalid namespace")
				} else {
					wantStatus(t, err, http.StatusNotFound)
				}

				if got := e.prom.Queries()[before:]; len(got) != 0 {
					t.Errorf("hostile requests reached Prometheus: %+v", got)
				}
			})
		}
	}
}

// TestLiveQueryMode: every request runs its own query for exactly the
// selected pods (names from the informer, never from the request's
// selector), and a failing Prometheus fails the request at once.
func TestLiveQueryMode(t *testing.T) {
	e := newEnv(t, true, qwenPods, qwenSeries)
	if err := e.p.Ready(); err != nil {
		t.Errorf("live mode Ready() = %v", err)
	}
	list, err := e.p.GetExternalMetric(context.Background(), "llm",
		labels.SelectorFromSet(labels.Set{"app": "isvc.qwen-chat-predictor", AggregateKey: "max"}), cmprovider.ExternalMetricInfo{Metric: sm})
	if err != nil {
		t.Fatalf("live external: %v", err)
	}
	if len(list.Items) != 1 || list.Items[0].Value.MilliValue() != 80000 {
		t.Errorf("live external items = %+v", list.Items)
	}
	mv, err := e.p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "llm", Name: "qwen-2"}, podInfo(sm), labels.Everything())
	if err != nil || mv.Value.MilliValue() != 30000 {
		t.Fatalf("live by name = %v, %v", mv, err)
	}

	qs := e.prom.Queries()
	want := []promquery.Query{
		{Metrics: []string{sm}, Namespace: "llm", Pods: []string{"qwen-1", "qwen-2", "qwen-3"}, LookbackDelta: testMaxStale},
		{Metrics: []string{sm}, Namespace: "llm", Pods: []string{"qwen-2"}, LookbackDelta: testMaxStale},
	}
	if len(qs) != len(want) {
		t.Fatalf("got %d queries %+v, want %d", len(qs), qs, len(want))
	}
	for i := range want {
		if !slices.Equal(qs[i].Metrics, want[i].Metrics) || qs[i].Namespace != want[i].Namespace ||
			!slices.Equal(qs[i].Pods, want[i].Pods) || qs[i].LookbackDelta != want[i].LookbackDelta {
			t.Errorf("query %d = %+v, want %+v", i, qs[i], want[i])
		}
	}

	e.prom.Set(nil, errors.New("connection refused"))
	_, err = e.p.GetMetricBySelector(context.Background(), "llm", labels.SelectorFromSet(labels.Set{"app": "other"}), podInfo(sm), labels.Everything())
	wantStatus(t, err, http.StatusServiceUnavailable, "connection refused")
}
