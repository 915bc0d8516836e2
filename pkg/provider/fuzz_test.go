package provider

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// fuzzPod is one pod of the fuzz fixture. Pods with data have one series
// per metric on their node ("node-1", as promquery.Series labels it);
// "big" has two GPUs whose value is the fuzzed one. A young pod started
// a few seconds ago; the others have no start time (long running).
type fuzzPod struct {
	ns, name string
	labels   map[string]string
	phase    corev1.PodPhase
	data     bool
	young    bool
}

// fuzzMinShare is the fixture's minimum share of pods with data.
const fuzzMinShare = 0.6

const fuzzNS = "team"

var fuzzPods = []fuzzPod{
	{fuzzNS, "web-1", map[string]string{"app": "web", "tier": "gpu"}, corev1.PodRunning, true, false},
	{fuzzNS, "web-2", map[string]string{"app": "web", "tier": "cpu"}, corev1.PodRunning, true, false},
	{fuzzNS, "web-3", map[string]string{"app": "web", "tier": "gpu"}, corev1.PodFailed, true, false},
	{fuzzNS, "web-4", map[string]string{"app": "web", "tier": "gpu"}, corev1.PodPending, false, false},
	{fuzzNS, "web-5", map[string]string{"app": "web", "tier": "gpu"}, corev1.PodSucceeded, true, false},
	{fuzzNS, "db-1", map[string]string{"app": "db", "tier": "gpu"}, corev1.PodRunning, true, false},
	{fuzzNS, "bare", nil, corev1.PodRunning, true, false},
	{fuzzNS, "odd", map[string]string{"example.com/role": "x_y.z", "app": ""}, corev1.PodRunning, true, false},
	{fuzzNS, "sneaky", map[string]string{AggregateKey: AggregateAvg, "app": "web"}, corev1.PodRunning, true, false},
	{fuzzNS, "big", map[string]string{"app": "web", "size": "big"}, corev1.PodRunning, true, false},
	{fuzzNS, "silent", map[string]string{"app": "web", "tier": "gpu"}, corev1.PodRunning, false, false},
	{fuzzNS, "new", map[string]string{"app": "web", "tier": "cpu"}, corev1.PodRunning, false, true},
	{"other", "web-1", map[string]string{"app": "web", "tier": "gpu"}, corev1.PodRunning, true, false},
}

// fuzzEnv is a Provider over the production pod lister (a real client-go
// indexer with the app's indexes) and the fake Prometheus, which runs the
// real Decode.
type fuzzEnv struct {
	p    *Provider
	prom *promquery.Fake
}

var fuzzT0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func newFuzzEnv(f *testing.F) *fuzzEnv {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		cache.NamespaceIndex: cache.MetaNamespaceIndexFunc,
		PodLabelIndex:        PodLabelIndexFunc,
	})
	for _, fp := range fuzzPods {
		obj := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fp.ns, Name: fp.name, Labels: fp.labels},
			Spec:       corev1.PodSpec{NodeName: "node-1"},
			Status:     corev1.PodStatus{Phase: fp.phase},
		}
		if fp.young {
			obj.Status.StartTime = &metav1.Time{Time: fuzzT0.Add(-5 * time.Second)}
		}
		if err := idx.Add(NewCachedPod(obj)); err != nil {
			f.Fatal(err)
		}
	}
	pods, err := NewInformerPods(idx)
	if err != nil {
		f.Fatal(err)
	}
	e := &fuzzEnv{prom: &promquery.Fake{}}
	e.p, err = New(Config{
		Source:          e.prom,
		Pods:            pods,
		Registry:        prometheus.NewRegistry(),
		RefreshInterval: 5 * time.Second,
		MaxStaleness:    30 * time.Second,
		MinPodDataShare: fuzzMinShare,
		Clock:           clocktesting.NewFakePassiveClock(fuzzT0),
	})
	if err != nil {
		f.Fatal(err)
	}
	return e
}

// want is the value the provider must serve for a pod with data: the
// fixture's fixed values, or for "big" two GPUs at v.
func (fp fuzzPod) want(metric string, v float64) float64 {
	if fp.name != "big" {
		if metric == metricnames.ProcessMemUsed {
			return 1024
		}
		return 50
	}
	if metric == metricnames.ProcessMemUsed {
		return v + v
	}
	return min(v, 100)
}

func (e *fuzzEnv) load(t *testing.T, v float64) {
	t.Helper()
	var vec model.Vector
	for _, fp := range fuzzPods {
		if !fp.data {
			continue
		}
		for _, m := range []string{metricnames.ProcessSMUtil, metricnames.ProcessMemUsed} {
			if fp.name == "big" {
				vec = append(vec,
					promquery.Series(m, fp.ns, fp.name, "GPU-a", "1", v, fuzzT0),
					promquery.Series(m, fp.ns, fp.name, "GPU-b", "1", v, fuzzT0))
				continue
			}
			vec = append(vec, promquery.Series(m, fp.ns, fp.name, "GPU-1", "1", fp.want(m, 0), fuzzT0))
		}
	}
	e.prom.Set(vec, nil)
	if err := e.p.Refresh(context.Background()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
}

// FuzzSelector sends the provider the label selectors an HPA (or anyone
// allowed to read the metrics APIs) can put in a Pods or External metric
// request, parsed as the API server library parses them. The answer must
// be exactly the selected live pods of the namespace that have data, each
// with its true, non-negative value, or a Kubernetes status error when
// there is nothing to serve or too small a share of the pods that should
// report has data.
func FuzzSelector(f *testing.F) {
	for _, s := range []string{
		"app=web", "app==web,tier=gpu", "tier in (gpu),app!=db", "app in (web,db),tier=cpu", "app notin (web)",
		"!app", "tier", "", "app=nothing", "example.com/role", "example.com/role=x_y.z", "app=", "size=big",
		"app=web," + AggregateKey + "=avg", "app=web," + AggregateKey + "=max", "app=web," + AggregateKey + "=sum",
		AggregateKey + "=avg", "app=web," + AggregateKey + " in (avg,max)", "app=web," + AggregateKey + "!=avg",
		"app=web," + AggregateKey + "=avg," + AggregateKey + "=sum", "app=web," + AggregateKey + "=median",
		"app=web,!" + AggregateKey, "tier notin (cpu),app in (web)", "app=web,app=db", "app>1", "x,y,z",
	} {
		f.Add(s, false, uint8(0), 42.5)
		f.Add(s, true, uint8(1), 1e9)
	}
	f.Add("size=big", true, uint8(0), 250.0)
	f.Add("size=big", false, uint8(1), 0.0)
	// Large memory values, up to where a Quantity of whole units still
	// holds them: the mutator reaches the edge from here.
	f.Add("size=big", false, uint8(1), 1e18)
	f.Add("size=big,"+AggregateKey+"=sum", true, uint8(1), 2e18)
	// Beyond int64 (a sum can reach +Inf): once served as -9223372036854775808.
	f.Add("size=big", false, uint8(1), 1e19)
	f.Add("size=big,"+AggregateKey+"=sum", true, uint8(1), 1e308)
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, selector string, external bool, metric uint8, v float64) {
		sel, err := labels.Parse(selector)
		if err != nil {
			return // the metrics API server answers 400 before the provider is asked
		}
		e.load(t, v)
		name := []string{metricnames.ProcessSMUtil, metricnames.ProcessMemUsed}[metric%2]
		// Decode drops what is not a finite value >= 0; then big has no data.
		bigData := !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0

		// The external API strips its reserved key and selects pods with
		// the rest; the custom API has no reserved key.
		podSel, mode, aggErr := sel, "", error(nil)
		if external {
			podSel, mode, aggErr = expectSplit(sel)
		}
		var expect []fuzzPod
		selected, shouldReport := 0, 0
		if aggErr == nil {
			for _, fp := range fuzzPods {
				if fp.ns != fuzzNS || fp.phase == corev1.PodSucceeded || fp.phase == corev1.PodFailed || !podSel.Matches(labels.Set(fp.labels)) {
					continue
				}
				selected++
				switch {
				case fp.data && (fp.name != "big" || bigData):
					expect = append(expect, fp)
					shouldReport++
				case fp.phase == corev1.PodRunning && !fp.young:
					shouldReport++
				}
			}
		}
		// Too few of the pods that should report have data: refused.
		tooFew := float64(len(expect)) < math.Ceil(fuzzMinShare*float64(shouldReport))
		got := map[string]resource.Quantity{}
		var aggItem map[string]string
		var aggValue resource.Quantity
		if external {
			list, err := e.p.GetExternalMetric(context.Background(), fuzzNS, sel, cmprovider.ExternalMetricInfo{Metric: name})
			if err != nil {
				checkRefusal(t, err, selector, aggErr, len(expect), tooFew)
				return
			}
			if mode != "" {
				if len(list.Items) != 1 {
					t.Fatalf("%q: aggregate answered with %d items", selector, len(list.Items))
				}
				aggItem, aggValue = list.Items[0].MetricLabels, list.Items[0].Value
			} else {
				for _, it := range list.Items {
					pod := it.MetricLabels[metricnames.LabelPod]
					if _, dup := got[pod]; dup {
						t.Fatalf("%q: pod %s served twice", selector, pod)
					}
					got[pod] = it.Value
				}
			}
		} else {
			list, err := e.p.GetMetricBySelector(context.Background(), fuzzNS, sel, podInfoFuzz(name), labels.Everything())
			if err != nil {
				checkRefusal(t, err, selector, nil, len(expect), tooFew)
				return
			}
			for _, it := range list.Items {
				if it.DescribedObject.Namespace != fuzzNS {
					t.Fatalf("%q: item of namespace %q", selector, it.DescribedObject.Namespace)
				}
				if _, dup := got[it.DescribedObject.Name]; dup {
					t.Fatalf("%q: pod %s served twice", selector, it.DescribedObject.Name)
				}
				got[it.DescribedObject.Name] = it.Value
			}
		}
		if len(expect) == 0 {
			t.Fatalf("%q (external %v): served %v %v though no selected pod has data", selector, external, got, aggItem)
		}
		if tooFew {
			t.Fatalf("%q (external %v): served %v %v though only %d of %d pods that should report have data", selector, external, got, aggItem, len(expect), shouldReport)
		}
		if mode == "" {
			if len(got) != len(expect) {
				t.Fatalf("%q (external %v): served pods %v, want %d: %+v", selector, external, keys(got), len(expect), expect)
			}
			for _, fp := range expect {
				q, ok := got[fp.name]
				if !ok {
					t.Fatalf("%q (external %v): pod %s missing from %v", selector, external, fp.name, keys(got))
				}
				checkQuantity(t, selector, fp.name, q, fp.want(name, v))
			}
			return
		}
		if aggItem[AggregateKey] != mode || aggItem["spillway.dev/pods-with-value"] != strconv.Itoa(len(expect)) ||
			aggItem["spillway.dev/pods-selected"] != strconv.Itoa(selected) {
			t.Fatalf("%q: aggregate labels %v, want mode %s, %d with value of %d", selector, aggItem, mode, len(expect), selected)
		}
		var sum, hi float64
		for _, fp := range expect {
			w := fp.want(name, v)
			sum += w
			hi = max(hi, w)
		}
		want := map[string]float64{AggregateAvg: sum / float64(len(expect)), AggregateMax: hi, AggregateSum: sum}[mode]
		checkQuantity(t, selector, mode, aggValue, want)
	})
}

func podInfoFuzz(metric string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: metric}
}

// expectSplit is the documented contract of the external API's selector:
// at most one spillway.dev/aggregate requirement, = or in with one of avg,
// max, sum; at least one other requirement, which alone selects pods.
func expectSplit(sel labels.Selector) (labels.Selector, string, error) {
	reqs, _ := sel.Requirements()
	mode := ""
	var rest []labels.Requirement
	for _, r := range reqs {
		if r.Key() != AggregateKey {
			rest = append(rest, r)
			continue
		}
		vals := r.Values().List()
		if mode != "" || len(vals) != 1 || !slices.Contains([]string{AggregateAvg, AggregateMax, AggregateSum}, vals[0]) {
			return nil, "", errors.New("bad aggregate")
		}
		switch r.Operator() {
		case "=", "==", "in":
		default:
			return nil, "", errors.New("bad aggregate operator")
		}
		mode = vals[0]
	}
	if len(rest) == 0 {
		return nil, "", errors.New("no pod requirement")
	}
	return labels.NewSelector().Add(rest...), mode, nil
}

// checkRefusal asserts a refused request is a Kubernetes status error and
// that it was right to refuse: a malformed aggregate, no pod with data, or
// too few of the pods that should report.
func checkRefusal(t *testing.T, err error, selector string, aggErr error, withData int, tooFew bool) {
	t.Helper()
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		t.Fatalf("%q: error %v (%T) is not a Kubernetes status error", selector, err, err)
	}
	if aggErr == nil && withData > 0 && !tooFew {
		t.Fatalf("%q: refused (%v) though %d selected pods have data", selector, err, withData)
	}
}

// checkQuantity asserts a served value is the true one to the milli-unit
// (relative for large values) and, above all, never negative.
func checkQuantity(t *testing.T, selector, what string, q resource.Quantity, want float64) {
	t.Helper()
	got := q.AsApproximateFloat64()
	if q.Sign() < 0 {
		t.Fatalf("%q: %s served as %s, a negative value; want %v", selector, what, q.String(), want)
	}
	// Past 2^53 milli-units a float64 is no longer exact to the milli-unit,
	// and no Quantity holds more than an int64 of units: a value that large
	// may be rounded or capped, but never served as a smaller load.
	if want < 1<<53/1000 {
		if math.Abs(got-want) > 1e-3+1e-9*want {
			t.Fatalf("%q: %s served as %s (%v), want %v", selector, what, q.String(), got, want)
		}
	} else if got < min(want, math.MaxInt64)*(1-1e-6) {
		t.Fatalf("%q: %s served as %s (%v), less than %v", selector, what, q.String(), got, want)
	}
}

func keys(m map[string]resource.Quantity) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
