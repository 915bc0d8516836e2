// Package fixedmetrics is a metrics provider that does no work: every
// answer is a list built once, one item per pod, shaped as
// spillway-metrics-adapter's (a pod label on External items, values with a
// fractional part). Behind custom-metrics-apiserver's serving stack it is
// the floor spillway's per-pod answers are measured against: the in-process
// BenchmarkHTTP and test/bench/fixedadapter on a real cluster. It is not
// part of the product.
package fixedmetrics

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/metrics/pkg/apis/external_metrics"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Provider serves one metric on both APIs. The library only reads (converts
// and encodes) what a provider returns, so every answer shares the lists.
type Provider struct {
	metric   string
	custom   *custom_metrics.MetricValueList
	external *external_metrics.ExternalMetricValueList
}

// New builds n items (n > 0) of metric for pods app-042-0 … of namespace.
func New(n int, metric, namespace string) *Provider {
	p := &Provider{metric: metric, custom: &custom_metrics.MetricValueList{}, external: &external_metrics.ExternalMetricValueList{}}
	now := metav1.Now()
	for i := range n {
		pod := fmt.Sprintf("app-042-%d", i)
		v := *resource.NewMilliQuantity(int64(40_000+i*1_250), resource.DecimalSI)
		p.custom.Items = append(p.custom.Items, custom_metrics.MetricValue{
			DescribedObject: custom_metrics.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: namespace, Name: pod},
			Metric:          custom_metrics.MetricIdentifier{Name: metric},
			Timestamp:       now,
			Value:           v,
		})
		p.external.Items = append(p.external.Items, external_metrics.ExternalMetricValue{
			MetricName:   metric,
			MetricLabels: map[string]string{metricnames.LabelPod: pod},
			Timestamp:    now,
			Value:        v,
		})
	}
	return p
}

// GetMetricByName answers with the first item, whatever pod is asked for.
func (p *Provider) GetMetricByName(context.Context, types.NamespacedName, cmprovider.CustomMetricInfo, labels.Selector) (*custom_metrics.MetricValue, error) {
	return &p.custom.Items[0], nil
}

// GetMetricBySelector answers with every item, whatever the selector.
func (p *Provider) GetMetricBySelector(context.Context, string, labels.Selector, cmprovider.CustomMetricInfo, labels.Selector) (*custom_metrics.MetricValueList, error) {
	return p.custom, nil
}

// ListAllMetrics lists the metric, on pods.
func (p *Provider) ListAllMetrics() []cmprovider.CustomMetricInfo {
	return []cmprovider.CustomMetricInfo{{GroupResource: schema.GroupResource{Resource: "pods"}, Namespaced: true, Metric: p.metric}}
}

// GetExternalMetric answers with every item, whatever the selector.
func (p *Provider) GetExternalMetric(context.Context, string, labels.Selector, cmprovider.ExternalMetricInfo) (*external_metrics.ExternalMetricValueList, error) {
	return p.external, nil
}

// ListAllExternalMetrics lists the metric.
func (p *Provider) ListAllExternalMetrics() []cmprovider.ExternalMetricInfo {
	return []cmprovider.ExternalMetricInfo{{Metric: p.metric}}
}
