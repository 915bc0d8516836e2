package provider

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/metrics/pkg/apis/external_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// AggregateKey is the reserved selector key that asks the external API for
// one aggregated item instead of one item per pod. It is removed from the
// selector before pods are matched.
const AggregateKey = "spillway.dev/aggregate"

// Aggregate modes for AggregateKey.
const (
	AggregateAvg = "avg"
	AggregateMax = "max"
	AggregateSum = "sum"
)

// Labels on the items the external API returns.
const (
	itemLabelPodsUsed     = "spillway.dev/pods-with-value"
	itemLabelPodsSelected = "spillway.dev/pods-selected"
)

// GetExternalMetric serves external.metrics.k8s.io/v1beta1
// namespaces/<ns>/<metric>?labelSelector=<pod labels>. By default it returns
// one item per selected pod with a fresh value (an HPA `AverageValue`
// target divides their sum by the replica count); with
// spillway.dev/aggregate=avg|max|sum it returns one item for a `Value`
// target. If no selected pod has a fresh value, or too few of those that
// should report do (coverage), the request fails.
func (p *Provider) GetExternalMetric(_ context.Context, namespace string, metricSelector labels.Selector, info provider.ExternalMetricInfo) (_ *external_metrics.ExternalMetricValueList, err error) {
	start := time.Now()
	defer func() { p.metrics.observeRequest(apiExternal, start, err) }()

	mi, ok := p.metricIndex(info.Metric)
	if !ok {
		return nil, p.unknownMetric(info.Metric)
	}
	if namespace == "" {
		return nil, apierrors.NewBadRequest("external metrics are namespaced: ask for /namespaces/<ns>/<metric>")
	}
	podSelector, mode, err := splitSelector(metricSelector)
	if err != nil {
		return nil, err
	}
	pods, err := p.selectPods(namespace, podSelector)
	if err != nil {
		return nil, err
	}
	snap, err := p.current()
	if err != nil {
		return nil, err
	}

	now := p.clock.Now()
	metric := p.specs[mi].name
	items := len(pods)
	if mode != "" {
		items = 1
	}
	list := &external_metrics.ExternalMetricValueList{Items: make([]external_metrics.ExternalMetricValue, 0, items)}
	var agg aggregator
	var cov coverage
	for _, sp := range pods {
		e, v, ok := snap.lookup(types.NamespacedName{Namespace: namespace, Name: sp.Name}, mi, now, p.maxStaleness)
		cov.add(sp, ok, now, p.maxStaleness)
		if !ok {
			continue
		}
		if mode != "" {
			agg.add(v.value)
			continue
		}
		// The labels map and the quantity are the snapshot's, shared and
		// never written (podValues).
		list.Items = append(list.Items, external_metrics.ExternalMetricValue{
			MetricName:   metric,
			MetricLabels: e.podLabel,
			Timestamp:    metav1.NewTime(v.ts),
			Value:        v.quantity,
		})
	}
	if err := p.refusal(cov, namespace, podSelector, mi); err != nil {
		return nil, err
	}
	if mode != "" {
		list.Items = append(list.Items, external_metrics.ExternalMetricValue{
			MetricName: metric,
			MetricLabels: map[string]string{
				AggregateKey:          mode,
				itemLabelPodsUsed:     strconv.Itoa(agg.n),
				itemLabelPodsSelected: strconv.Itoa(len(pods)),
			},
			Timestamp: metav1.NewTime(agg.oldest),
			Value:     quantity(agg.result(mode)),
		})
	}
	return list, nil
}

type aggregator struct {
	n      int
	sum    float64
	max    float64
	oldest time.Time
}

func (a *aggregator) add(v value) {
	if a.n == 0 || v.v > a.max {
		a.max = v.v
	}
	if a.n == 0 || v.ts.Before(a.oldest) {
		a.oldest = v.ts
	}
	a.sum += v.v
	a.n++
}

func (a *aggregator) result(mode string) float64 {
	switch mode {
	case AggregateMax:
		return a.max
	case AggregateSum:
		return a.sum
	default:
		return a.sum / float64(a.n)
	}
}

// splitSelector separates the reserved aggregate key from the pod selector.
// The remaining requirements select pods in memory; they are never turned
// into a query. Values appear in errors %q-quoted so hostile input cannot
// forge message text.
func splitSelector(sel labels.Selector) (labels.Selector, string, error) {
	if sel == nil {
		sel = labels.Everything()
	}
	reqs, selectable := sel.Requirements()
	if !selectable {
		return nil, "", apierrors.NewBadRequest("the metric selector can never match anything")
	}
	if !slices.ContainsFunc(reqs, func(r labels.Requirement) bool { return r.Key() == AggregateKey }) {
		// The usual request: the selector selects pods as it is.
		if len(reqs) == 0 {
			return nil, "", apierrors.NewBadRequest(fmt.Sprintf(
				"the metric selector must select pods by at least one label (e.g. app: my-model) besides %s", AggregateKey))
		}
		return sel, "", nil
	}
	mode := ""
	rest := make([]labels.Requirement, 0, len(reqs))
	for _, r := range reqs {
		if r.Key() != AggregateKey {
			rest = append(rest, r)
			continue
		}
		if mode != "" {
			return nil, "", apierrors.NewBadRequest(fmt.Sprintf("%s is given more than once", AggregateKey))
		}
		vals := r.ValuesUnsorted()
		op := r.Operator()
		if (op != selection.Equals && op != selection.DoubleEquals && op != selection.In) || len(vals) != 1 {
			return nil, "", apierrors.NewBadRequest(fmt.Sprintf(
				"%s takes exactly one value, e.g. %s=avg; got %q", AggregateKey, AggregateKey, r.String()))
		}
		switch vals[0] {
		case AggregateAvg, AggregateMax, AggregateSum:
			mode = vals[0]
		default:
			return nil, "", apierrors.NewBadRequest(fmt.Sprintf(
				"unknown %s value %q: use %s, %s or %s", AggregateKey, vals[0], AggregateAvg, AggregateMax, AggregateSum))
		}
	}
	if len(rest) == 0 {
		return nil, "", apierrors.NewBadRequest(fmt.Sprintf(
			"the metric selector must select pods by at least one label (e.g. app: my-model) besides %s", AggregateKey))
	}
	return labels.NewSelector().Add(rest...), mode, nil
}
