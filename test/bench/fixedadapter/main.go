// Command fixedadapter is the benchmark's second floor: a metrics server
// that answers every request with a fixed list of --items values held in
// memory, behind the same custom-metrics-apiserver serving stack as
// spillway-metrics-adapter. The library's test-adapter, the first floor,
// answers its External API with one item where spillway answers one per
// selected pod (50 in the benchmark); encoding 50 items costs the serving
// stack more than one, so test/bench/adaptercluster measures this server
// too, with spillway's answer shape and size, to show what spillway adds
// over a server that does no work at all. It is not part of the product.
//
//	go build -o fixedadapter ./test/bench/fixedadapter
//	fixedadapter --items=50 --secure-port=7443 --lister-kubeconfig=... [serving flags]
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/metrics/pkg/apis/external_metrics"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

const name = "fixedadapter"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	adapter := &basecmd.AdapterBase{Name: name}
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	adapter.FlagSet = fs
	adapter.InstallFlags()
	var (
		items     = fs.Int("items", 50, "Items in every list answer (External, and Pods by selector); a Pods answer by name is one item.")
		metric    = fs.String("metric", metricnames.ProcessSMUtil, "The one metric served, on both APIs.")
		namespace = fs.String("namespace", "bench", "Namespace the Pods API's items name.")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *items < 1 {
		return fmt.Errorf("--items must be at least 1, got %d", *items)
	}
	f := newFixed(*items, *metric, *namespace)
	adapter.WithCustomMetrics(f)
	adapter.WithExternalMetrics(f)
	return adapter.Run(ctx)
}

// fixed answers from lists built once; the library only reads (converts
// and encodes) what a provider returns.
type fixed struct {
	metric   string
	custom   *custom_metrics.MetricValueList
	external *external_metrics.ExternalMetricValueList
}

// newFixed builds n items shaped as spillway's: one per pod, a pod label
// on External items, values with a fractional part.
func newFixed(n int, metric, namespace string) *fixed {
	f := &fixed{metric: metric, custom: &custom_metrics.MetricValueList{}, external: &external_metrics.ExternalMetricValueList{}}
	now := metav1.Now()
	for i := range n {
		pod := fmt.Sprintf("app-042-%d", i)
		v := *resource.NewMilliQuantity(int64(40_000+i*1_250), resource.DecimalSI)
		f.custom.Items = append(f.custom.Items, custom_metrics.MetricValue{
			DescribedObject: custom_metrics.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: namespace, Name: pod},
			Metric:          custom_metrics.MetricIdentifier{Name: metric},
			Timestamp:       now,
			Value:           v,
		})
		f.external.Items = append(f.external.Items, external_metrics.ExternalMetricValue{
			MetricName:   metric,
			MetricLabels: map[string]string{metricnames.LabelPod: pod},
			Timestamp:    now,
			Value:        v,
		})
	}
	return f
}

func (f *fixed) GetMetricByName(context.Context, types.NamespacedName, cmprovider.CustomMetricInfo, labels.Selector) (*custom_metrics.MetricValue, error) {
	return &f.custom.Items[0], nil
}

func (f *fixed) GetMetricBySelector(context.Context, string, labels.Selector, cmprovider.CustomMetricInfo, labels.Selector) (*custom_metrics.MetricValueList, error) {
	return f.custom, nil
}

func (f *fixed) ListAllMetrics() []cmprovider.CustomMetricInfo {
	return []cmprovider.CustomMetricInfo{{GroupResource: schema.GroupResource{Resource: "pods"}, Namespaced: true, Metric: f.metric}}
}

func (f *fixed) GetExternalMetric(context.Context, string, labels.Selector, cmprovider.ExternalMetricInfo) (*external_metrics.ExternalMetricValueList, error) {
	return f.external, nil
}

func (f *fixed) ListAllExternalMetrics() []cmprovider.ExternalMetricInfo {
	return []cmprovider.ExternalMetricInfo{{Metric: f.metric}}
}
