package provider

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// GetMetricByName serves custom.metrics.k8s.io .../pods/<name>/<metric>.
func (p *Provider) GetMetricByName(_ context.Context, name types.NamespacedName, info provider.CustomMetricInfo, metricSelector labels.Selector) (_ *custom_metrics.MetricValue, err error) {
	start := time.Now()
	defer func() { p.metrics.observeRequest(apiCustom, start, err) }()

	mi, err := p.checkCustomRequest(name.Namespace, info, metricSelector)
	if err != nil {
		return nil, err
	}
	snap, err := p.current()
	if err != nil {
		return nil, err
	}
	_, v, ok := snap.lookup(name, mi, p.clock.Now(), p.maxStaleness)
	if !ok {
		return nil, notFound(fmt.Sprintf("no value of %s younger than %s for pod %s/%s",
			p.specs[mi].name, p.maxStaleness, name.Namespace, name.Name))
	}
	mv := p.podMetricValue(name, mi, v)
	return &mv, nil
}

// GetMetricBySelector serves custom.metrics.k8s.io .../pods/*/<metric>
// with a pod label selector (what the HPA sends for `type: Pods`). Pods
// without a fresh value are left out (the HPA has its own rules for
// missing pods), but the request fails if none has one or if too few of
// those that should report do (coverage).
func (p *Provider) GetMetricBySelector(_ context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, metricSelector labels.Selector) (_ *custom_metrics.MetricValueList, err error) {
	start := time.Now()
	defer func() { p.metrics.observeRequest(apiCustom, start, err) }()

	mi, err := p.checkCustomRequest(namespace, info, metricSelector)
	if err != nil {
		return nil, err
	}
	if selector == nil {
		selector = labels.Everything()
	}
	pods, err := p.selectPods(namespace, selector)
	if err != nil {
		return nil, err
	}
	snap, err := p.current()
	if err != nil {
		return nil, err
	}
	now := p.clock.Now()
	var cov coverage
	list := &custom_metrics.MetricValueList{Items: make([]custom_metrics.MetricValue, 0, len(pods))}
	for _, sp := range pods {
		key := types.NamespacedName{Namespace: namespace, Name: sp.Name}
		_, v, ok := snap.lookup(key, mi, now, p.maxStaleness)
		cov.add(sp, ok, now, p.maxStaleness)
		if ok {
			list.Items = append(list.Items, p.podMetricValue(key, mi, v))
		}
	}
	if err := p.refusal(cov, namespace, selector, mi); err != nil {
		return nil, err
	}
	return list, nil
}

func (p *Provider) checkCustomRequest(namespace string, info provider.CustomMetricInfo, metricSelector labels.Selector) (int, error) {
	if info.GroupResource != podsResource {
		return 0, notFound(fmt.Sprintf("spillway serves metrics of pods only, not of %q", info.GroupResource.String()))
	}
	mi, ok := p.metricIndex(info.Metric)
	if !ok {
		return 0, p.unknownMetric(info.Metric)
	}
	if namespace == "" {
		return 0, apierrors.NewBadRequest("pod metrics are namespaced: ask for /namespaces/<ns>/pods/...")
	}
	if metricSelector != nil && !metricSelector.Empty() {
		return 0, apierrors.NewBadRequest(fmt.Sprintf(
			"metric selector %q is not supported: a pod's value already combines all its GPUs and processes", metricSelector.String()))
	}
	return mi, nil
}

// selectPods resolves a selector from the informer cache, sorted by name so
// answers are stable. An empty selection is an error: "no pods" must never
// read as "no load".
func (p *Provider) selectPods(namespace string, selector labels.Selector) ([]SelectedPod, error) {
	pods, err := p.pods.SelectPods(namespace, selector)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("listing pods: %v", err))
	}
	if len(pods) == 0 {
		return nil, notFound(fmt.Sprintf("no pods in namespace %s match selector %q", namespace, selector.String()))
	}
	return sortedByName(pods), nil
}

// sortedByName orders pods by name in place. It sorts their indices, then
// moves each pod once along the permutation's cycles: sorting the pods
// themselves moves them (strings, so write-barriered while the GC marks)
// many times over.
func sortedByName(pods []SelectedPod) []SelectedPod {
	var buf [64]int32 // the usual selection fits: no allocation
	order := buf[:0]
	if len(pods) > len(buf) {
		order = make([]int32, 0, len(pods))
	}
	for i := range pods {
		order = append(order, int32(i))
	}
	slices.SortFunc(order, func(a, b int32) int { return strings.Compare(pods[a].Name, pods[b].Name) })
	// pods[j] must become the old pods[order[j]]; -1 marks a done index.
	for i := range order {
		if order[i] < 0 {
			continue
		}
		first := pods[i]
		j := i
		for {
			k := int(order[j])
			order[j] = -1
			if k == i {
				pods[j] = first
				break
			}
			pods[j] = pods[k]
			j = k
		}
	}
	return pods
}

// podMetricValue is a pod's item; its quantity comes pre-formatted from the
// snapshot.
func (p *Provider) podMetricValue(pod types.NamespacedName, metric int, v *metricValue) custom_metrics.MetricValue {
	return custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{
			APIVersion: "v1",
			Kind:       "Pod",
			Namespace:  pod.Namespace,
			Name:       pod.Name,
		},
		Metric:    custom_metrics.MetricIdentifier{Name: p.specs[metric].name},
		Timestamp: metav1.NewTime(v.ts),
		Value:     v.quantity,
	}
}

// quantity keeps three decimals (50.125 → "50125m"), falling back to whole
// units where milli-units would overflow int64.
func quantity(v float64) resource.Quantity {
	if v*1000 < math.MaxInt64/2 {
		return *resource.NewMilliQuantity(int64(math.Round(v*1000)), resource.DecimalSI)
	}
	// Converting a float beyond int64 wraps to its minimum on amd64: a sum
	// of huge values would be served as a large negative number. Values are
	// finite and non-negative (promquery.Decode), so only a sum can get here.
	if !(v < math.MaxInt64) {
		return *resource.NewQuantity(math.MaxInt64, resource.DecimalSI)
	}
	return *resource.NewQuantity(int64(math.Round(v)), resource.DecimalSI)
}

func (p *Provider) unknownMetric(name string) error {
	return notFound(fmt.Sprintf("spillway does not serve metric %q; it serves %s", name, strings.Join(p.metricNames(), ", ")))
}

// notFound is a 404 with our own message: the HPA reports it as a failed
// metric and keeps the current scale.
func notFound(msg string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusNotFound,
		Reason:  metav1.StatusReasonNotFound,
		Message: msg,
	}}
}
