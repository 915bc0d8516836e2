package provider

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
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
// and nothing of them reaches Prometheus.
func TestHostileSelectors(t *testing.T) {
	for _, v := range hostileValues {
		// SelectorFromValidatedSet skips validation, as if a client had
		// got an unvalidated selector past the API server.
		selector := labels.SelectorFromValidatedSet(labels.Set{"app": v})
		t.Run(v, func(t *testing.T) {
			e := newEnv(t, qwenPods, qwenSeries)
			e.refresh(t)
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
			wantStatus(t, err, http.StatusNotFound)
			_, err = e.p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: v, Name: "qwen-1"}, podInfo(sm), labels.Everything())
			wantStatus(t, err, http.StatusNotFound)

			if got := e.prom.Queries()[before:]; len(got) != 0 {
				t.Errorf("hostile requests reached Prometheus: %+v", got)
			}
		})
	}
}
