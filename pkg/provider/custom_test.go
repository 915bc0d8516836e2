package provider

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/metrictable"
)

func TestPodValueAggregation(t *testing.T) {
	tests := []struct {
		name   string
		metric string
		vec    model.Vector
		want   float64
	}{
		{
			name:   "one process on one GPU",
			metric: sm,
			vec:    model.Vector{series(sm, "ns", "p", "GPU-a", "1", 42.5, t0)},
			want:   42.5,
		},
		{
			name:   "a real zero is served as zero",
			metric: sm,
			vec:    model.Vector{series(sm, "ns", "p", "GPU-a", "1", 0, t0)},
			want:   0,
		},
		{
			name:   "processes on one GPU are summed",
			metric: sm,
			vec: model.Vector{
				series(sm, "ns", "p", "GPU-a", "1", 30, t0),
				series(sm, "ns", "p", "GPU-a", "2", 25, t0),
			},
			want: 55,
		},
		{
			name:   "a GPU's sum is capped at 100",
			metric: sm,
			vec: model.Vector{
				series(sm, "ns", "p", "GPU-a", "1", 70, t0),
				series(sm, "ns", "p", "GPU-a", "2", 60, t0),
			},
			want: 100,
		},
		{
			name:   "GPUs are averaged",
			metric: sm,
			vec: model.Vector{
				series(sm, "ns", "p", "GPU-a", "1", 80, t0),
				series(sm, "ns", "p", "GPU-b", "1", 20, t0),
			},
			want: 50,
		},
		{
			name:   "cap per GPU before the mean across GPUs",
			metric: sm,
			vec: model.Vector{
				series(sm, "ns", "p", "GPU-a", "1", 90, t0),
				series(sm, "ns", "p", "GPU-a", "2", 50, t0),
				series(sm, "ns", "p", "GPU-b", "3", 10, t0),
			},
			want: 55,
		},
		{
			name:   "other pods and other metrics do not mix in",
			metric: sm,
			vec: model.Vector{
				series(sm, "ns", "p", "GPU-a", "1", 40, t0),
				series(sm, "ns", "other", "GPU-a", "2", 50, t0),
				series(sm, "other-ns", "p", "GPU-a", "3", 60, t0),
				series(metricnames.ProcessEncUtil, "ns", "p", "GPU-a", "1", 70, t0),
			},
			want: 40,
		},
		{
			name:   "invalid samples are skipped, not counted as zero",
			metric: sm,
			vec: model.Vector{
				series(sm, "ns", "p", "GPU-a", "1", 60, t0),
				series(sm, "ns", "p", "GPU-b", "2", math.NaN(), t0),
				series(sm, "ns", "p", "GPU-c", "3", -1, t0),
			},
			want: 60,
		},
		{
			name:   "memory is summed over processes and GPUs, never capped",
			metric: mem,
			vec: model.Vector{
				series(mem, "ns", "p", "GPU-a", "1", 1000, t0),
				series(mem, "ns", "p", "GPU-a", "2", 500, t0),
				series(mem, "ns", "p", "GPU-b", "3", 2000, t0),
			},
			want: 3500,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, []pod{{ns: "ns", name: "p"}}, tt.vec)
			e.refresh(t)
			mv, err := e.p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "ns", Name: "p"}, podInfo(tt.metric), labels.Everything())
			if err != nil {
				t.Fatalf("GetMetricByName: %v", err)
			}
			if got := float64(mv.Value.MilliValue()) / 1000; got != tt.want {
				t.Errorf("value = %v, want %v", got, tt.want)
			}
			if mv.DescribedObject.Kind != "Pod" || mv.DescribedObject.APIVersion != "v1" ||
				mv.DescribedObject.Namespace != "ns" || mv.DescribedObject.Name != "p" {
				t.Errorf("described object = %+v", mv.DescribedObject)
			}
			if mv.Metric.Name != tt.metric {
				t.Errorf("metric name = %q, want %q", mv.Metric.Name, tt.metric)
			}
			if !mv.Timestamp.Time.Equal(t0) {
				t.Errorf("timestamp = %s, want the sample time %s", mv.Timestamp.Time, t0)
			}
		})
	}
}

func TestPodsBySelector(t *testing.T) {
	pods := []pod{
		{ns: "ns", name: "web-b", labels: map[string]string{"app": "web"}},
		{ns: "ns", name: "web-a", labels: map[string]string{"app": "web"}},
		{ns: "ns", name: "web-nodata", labels: map[string]string{"app": "web"}},
		{ns: "ns", name: "web-done", labels: map[string]string{"app": "web"}, phase: corev1.PodSucceeded},
		{ns: "ns", name: "batch", labels: map[string]string{"app": "batch"}},
		{ns: "other", name: "web-x", labels: map[string]string{"app": "web"}},
	}
	vec := model.Vector{
		series(sm, "ns", "web-a", "GPU-1", "1", 10, t0),
		series(sm, "ns", "web-b", "GPU-2", "1", 20, t0),
		series(sm, "ns", "web-done", "GPU-3", "1", 99, t0),
		series(sm, "other", "web-x", "GPU-4", "1", 30, t0),
	}
	tests := []struct {
		name      string
		namespace string
		selector  string
		wantPods  []string
		wantCode  int32
		wantMsg   []string
	}{
		{name: "pods without a value are left out, finished pods ignored", namespace: "ns", selector: "app=web", wantPods: []string{"web-a", "web-b"}},
		{name: "set-based selector", namespace: "ns", selector: "app in (web,batch),app!=batch", wantPods: []string{"web-a", "web-b"}},
		{name: "other namespace", namespace: "other", selector: "app=web", wantPods: []string{"web-x"}},
		{
			name:      "selected pods without values are an error, never an empty list",
			namespace: "ns", selector: "app=batch",
			wantCode: http.StatusNotFound, wantMsg: []string{"none of the 1 pods", `"app=batch"`},
		},
		{
			name:      "no matching pods is an error",
			namespace: "ns", selector: "app=nothing",
			wantCode: http.StatusNotFound, wantMsg: []string{"no pods in namespace ns match"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, pods, vec)
			e.refresh(t)
			list, err := e.p.GetMetricBySelector(context.Background(), tt.namespace, sel(t, tt.selector), podInfo(sm), labels.Everything())
			if tt.wantCode != 0 {
				wantStatus(t, err, tt.wantCode, tt.wantMsg...)
				return
			}
			if err != nil {
				t.Fatalf("GetMetricBySelector: %v", err)
			}
			var got []string
			for _, it := range list.Items {
				got = append(got, it.DescribedObject.Name)
				if it.DescribedObject.Namespace != tt.namespace {
					t.Errorf("item namespace = %q", it.DescribedObject.Namespace)
				}
			}
			if !slices.Equal(got, tt.wantPods) {
				t.Errorf("pods = %v, want %v", got, tt.wantPods)
			}
			if n, want := len(e.prom.Queries()), len(e.p.refreshQueries); n != want {
				t.Errorf("cache mode sent %d queries, want only the refresh's %d", n, want)
			}
		})
	}
}

func TestCustomRequestValidation(t *testing.T) {
	pods := []pod{{ns: "ns", name: "p", labels: map[string]string{"app": "x"}}}
	vec := model.Vector{series(sm, "ns", "p", "GPU-1", "1", 10, t0)}
	name := types.NamespacedName{Namespace: "ns", Name: "p"}
	tests := []struct {
		name     string
		nn       types.NamespacedName
		metSel   labels.Selector
		wantCode int32
		wantMsg  []string
	}{
		{name: "metric name case does not matter", nn: name},
		{name: "not pods", nn: name, wantCode: http.StatusNotFound, wantMsg: []string{"pods only"}},
		{name: "unknown metric", nn: name, wantCode: http.StatusNotFound, wantMsg: []string{`"DCGM_FI_DEV_GPU_UTIL"`, sm}},
		{name: "metric selector rejected", nn: name, metSel: labels.SelectorFromSet(labels.Set{"gpu": "0"}), wantCode: http.StatusBadRequest, wantMsg: []string{`"gpu=0"`}},
		{name: "root scoped rejected", nn: types.NamespacedName{Name: "p"}, wantCode: http.StatusBadRequest, wantMsg: []string{"namespaced"}},
		{name: "unknown pod", nn: types.NamespacedName{Namespace: "ns", Name: "q"}, wantCode: http.StatusNotFound, wantMsg: []string{"pod ns/q"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, pods, vec)
			e.refresh(t)
			info := podInfo("dcgm_custom_process_sm_util")
			switch tt.name {
			case "not pods":
				info.GroupResource = schema.GroupResource{Group: "apps", Resource: "deployments"}
			case "unknown metric":
				info.Metric = "DCGM_FI_DEV_GPU_UTIL"
			}
			metSel := tt.metSel
			if metSel == nil {
				metSel = labels.Everything()
			}
			mv, err := e.p.GetMetricByName(context.Background(), tt.nn, info, metSel)
			if tt.wantCode != 0 {
				wantStatus(t, err, tt.wantCode, tt.wantMsg...)
				return
			}
			if err != nil {
				t.Fatalf("GetMetricByName: %v", err)
			}
			if mv.Metric.Name != sm || mv.Value.MilliValue() != 10000 {
				t.Errorf("got %s = %s", mv.Metric.Name, mv.Value.String())
			}
		})
	}
}

func TestDiscoveryIsFixed(t *testing.T) {
	e := newEnv(t, nil, nil)
	check := func(stage string) {
		cm := e.p.ListAllMetrics()
		em := e.p.ListAllExternalMetrics()
		rows := metrictable.Defaults()
		if len(cm) != len(rows) || len(em) != len(rows) {
			t.Fatalf("%s: %d custom, %d external metrics, want %d each", stage, len(cm), len(em), len(rows))
		}
		for i, row := range rows {
			name := row.Name
			if cm[i].Metric != name || cm[i].GroupResource != podsResource || !cm[i].Namespaced {
				t.Errorf("%s: custom metric %d = %+v", stage, i, cm[i])
			}
			if em[i].Metric != name {
				t.Errorf("%s: external metric %d = %+v", stage, i, em[i])
			}
		}
	}
	check("before any refresh")
	e.prom.Set(model.Vector{series("DCGM_CUSTOM_PROCESS_SM_UTIL", "ns", "p", "GPU-1", "1", 5, t0)}, nil)
	e.refresh(t)
	check("after a refresh")
}

func TestQuantity(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want string
	}{
		{0, "0"}, {50, "50"}, {50.125, "50125m"}, {33.3333, "33333m"}, {1e16, "10P"},
	} {
		q := quantity(tt.in)
		if got := q.String(); got != tt.want {
			t.Errorf("quantity(%v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestSortedByName(t *testing.T) {
	for _, n := range []int{0, 1, 2, 7, 64, 65, 300} {
		var pods []SelectedPod
		for i := 0; i < n; i++ {
			// A fixed shuffle: i*37 mod n visits every index when n is not a multiple of 37.
			pods = append(pods, SelectedPod{Name: fmt.Sprintf("pod-%04d", (i*37+11)%max(n, 1)), RunningSince: time.Unix(int64(i), 0)})
		}
		want := slices.Clone(pods)
		slices.SortFunc(want, func(a, b SelectedPod) int { return strings.Compare(a.Name, b.Name) })
		got := sortedByName(pods)
		if !slices.Equal(got, want) {
			t.Errorf("n=%d: sortedByName = %v, want %v", n, got, want)
		}
	}
}
