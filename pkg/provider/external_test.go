package provider

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/labels"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

var qwenPods = []pod{
	{ns: "llm", name: "qwen-1", labels: map[string]string{"app": "isvc.qwen-chat-predictor"}},
	{ns: "llm", name: "qwen-2", labels: map[string]string{"app": "isvc.qwen-chat-predictor"}},
	{ns: "llm", name: "qwen-3", labels: map[string]string{"app": "isvc.qwen-chat-predictor"}},
	{ns: "llm", name: "other", labels: map[string]string{"app": "other"}},
}

var qwenSeries = model.Vector{
	series(sm, "llm", "qwen-1", "GPU-1", "1", 80, t0),
	series(sm, "llm", "qwen-2", "GPU-2", "1", 40, t0),
	series(sm, "llm", "qwen-2", "GPU-3", "1", 20, t0), // pod mean 30
	// qwen-3 has no series yet.
	series(sm, "llm", "other", "GPU-4", "1", 100, t0),
}

type item struct {
	labels map[string]string
	milli  int64
}

func TestExternalMetric(t *testing.T) {
	tests := []struct {
		name      string
		selector  string
		wantItems []item
		wantCode  int32
		wantMsg   []string
	}{
		{
			name:     "one item per selected pod with a fresh value",
			selector: "app=isvc.qwen-chat-predictor",
			wantItems: []item{
				{labels: map[string]string{"pod": "qwen-1"}, milli: 80000},
				{labels: map[string]string{"pod": "qwen-2"}, milli: 30000},
			},
		},
		{
			name:     "avg over pods with a value",
			selector: "app=isvc.qwen-chat-predictor," + AggregateKey + "=avg",
			wantItems: []item{{labels: map[string]string{
				AggregateKey: "avg", itemLabelPodsUsed: "2", itemLabelPodsSelected: "3",
			}, milli: 55000}},
		},
		{
			name:      "max",
			selector:  AggregateKey + "==max,app=isvc.qwen-chat-predictor",
			wantItems: []item{{labels: map[string]string{AggregateKey: "max", itemLabelPodsUsed: "2", itemLabelPodsSelected: "3"}, milli: 80000}},
		},
		{
			name:      "sum, written as a one-value set",
			selector:  "app=isvc.qwen-chat-predictor," + AggregateKey + " in (sum)",
			wantItems: []item{{labels: map[string]string{AggregateKey: "sum", itemLabelPodsUsed: "2", itemLabelPodsSelected: "3"}, milli: 110000}},
		},
		{
			name:     "the aggregate key is stripped before matching pods",
			selector: "app=other," + AggregateKey + "=max",
			wantItems: []item{{labels: map[string]string{
				AggregateKey: "max", itemLabelPodsUsed: "1", itemLabelPodsSelected: "1",
			}, milli: 100000}},
		},
		{
			name: "unknown aggregate", selector: "app=other," + AggregateKey + "=median",
			wantCode: http.StatusBadRequest, wantMsg: []string{`"median"`, "avg, max or sum"},
		},
		{
			name: "aggregate with two values", selector: "app=other," + AggregateKey + " in (avg,max)",
			wantCode: http.StatusBadRequest, wantMsg: []string{"exactly one value"},
		},
		{
			name: "aggregate with !=", selector: "app=other," + AggregateKey + "!=avg",
			wantCode: http.StatusBadRequest, wantMsg: []string{"exactly one value"},
		},
		{
			name: "aggregate as exists", selector: "app=other," + AggregateKey,
			wantCode: http.StatusBadRequest, wantMsg: []string{"exactly one value"},
		},
		{
			name: "aggregate alone selects no pods", selector: AggregateKey + "=avg",
			wantCode: http.StatusBadRequest, wantMsg: []string{"at least one label"},
		},
		{
			name: "empty selector is refused rather than taking the whole namespace", selector: "",
			wantCode: http.StatusBadRequest, wantMsg: []string{"at least one label"},
		},
		{
			name: "selected pods without values", selector: "app=isvc.qwen-chat-predictor,statefulset.kubernetes.io/pod-name=qwen-3",
			wantCode: http.StatusNotFound, wantMsg: []string{"none of the 1 pods"},
		},
		{
			name: "nothing selected", selector: "app=absent,spillway.dev/aggregate=sum",
			wantCode: http.StatusNotFound, wantMsg: []string{"no pods in namespace llm"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withLabel(qwenPods, "qwen-3", "statefulset.kubernetes.io/pod-name", "qwen-3"), qwenSeries)
			e.refresh(t)
			list, err := e.p.GetExternalMetric(context.Background(), "llm", sel(t, tt.selector), cmprovider.ExternalMetricInfo{Metric: sm})
			if tt.wantCode != 0 {
				wantStatus(t, err, tt.wantCode, tt.wantMsg...)
				return
			}
			if err != nil {
				t.Fatalf("GetExternalMetric: %v", err)
			}
			if len(list.Items) != len(tt.wantItems) {
				t.Fatalf("got %d items %+v, want %d", len(list.Items), list.Items, len(tt.wantItems))
			}
			for i, it := range list.Items {
				want := tt.wantItems[i]
				if it.MetricName != sm {
					t.Errorf("item %d metric = %q", i, it.MetricName)
				}
				if it.Value.MilliValue() != want.milli {
					t.Errorf("item %d value = %s, want %dm", i, it.Value.String(), want.milli)
				}
				if len(it.MetricLabels) != len(want.labels) {
					t.Errorf("item %d labels = %v, want %v", i, it.MetricLabels, want.labels)
				}
				for k, v := range want.labels {
					if it.MetricLabels[k] != v {
						t.Errorf("item %d label %s = %q, want %q", i, k, it.MetricLabels[k], v)
					}
				}
				if !it.Timestamp.Time.Equal(t0) {
					t.Errorf("item %d timestamp = %s", i, it.Timestamp.Time)
				}
			}
		})
	}
}

func TestExternalUnknownMetricAndNamespace(t *testing.T) {
	e := newEnv(t, qwenPods, qwenSeries)
	e.refresh(t)
	_, err := e.p.GetExternalMetric(context.Background(), "llm", sel(t, "app=other"), cmprovider.ExternalMetricInfo{Metric: "http_requests"})
	wantStatus(t, err, http.StatusNotFound, `"http_requests"`)
	_, err = e.p.GetExternalMetric(context.Background(), "", sel(t, "app=other"), cmprovider.ExternalMetricInfo{Metric: sm})
	wantStatus(t, err, http.StatusBadRequest, "namespaced")
	_, err = e.p.GetExternalMetric(context.Background(), "llm", labels.Nothing(), cmprovider.ExternalMetricInfo{Metric: sm})
	wantStatus(t, err, http.StatusBadRequest, "never match")
}

func TestPodListerFailureIsAnError(t *testing.T) {
	e := newEnv(t, nil, qwenSeries)
	e.p.pods = failingLister{}
	e.refresh(t)
	_, err := e.p.GetExternalMetric(context.Background(), "llm", sel(t, "app=x"), cmprovider.ExternalMetricInfo{Metric: sm})
	wantStatus(t, err, http.StatusServiceUnavailable, "listing pods", "cache not synced")
}

type failingLister struct{}

func (failingLister) SelectPods(string, labels.Selector) ([]SelectedPod, error) {
	return nil, errors.New("cache not synced")
}

func (failingLister) PodAddress(string, string) (string, string, bool) { return "", "", false }

func withLabel(pods []pod, name, k, v string) []pod {
	out := make([]pod, len(pods))
	for i, p := range pods {
		l := make(map[string]string, len(p.labels)+1)
		for a, b := range p.labels {
			l[a] = b
		}
		if p.name == name {
			l[k] = v
		}
		p.labels = l
		out[i] = p
	}
	return out
}
