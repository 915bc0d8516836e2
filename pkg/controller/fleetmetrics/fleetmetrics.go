// Package fleetmetrics exports the fleet state spillway's fleet dashboard
// shows, so that a cluster with only Prometheus and spillway needs no
// kube-state-metrics: the pods of each ResourcePolicy unit by phase, and the
// replicas and metric of each HPA an InferenceScaler owns.
//
// The collector keeps no state of its own: every scrape reads the objects
// from the manager's cache, which the controllers watch anyway, and builds
// the series fresh (as node_exporter does), so a deleted policy or scaler
// simply has no series at the next scrape. Label values come from the
// objects' names and specs, so the series are bounded by the objects that
// exist: a pod's label naming no policy or no unit of it counts nowhere.
package fleetmetrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	mn "github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/placement"
)

// scrapeTimeout bounds one scrape's cache reads: a read waits while the
// cache syncs (at startup, or the first time a non-leader reads HPAs).
const scrapeTimeout = 5 * time.Second

// phases are the pod phases every unit reports, zero included.
var phases = []corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown}

// Options configures the collector.
type Options struct {
	// OnError hears about a scrape that could not read the cache; that
	// scrape then lacks the series the read would have given. Register
	// sets it to log through the manager's logger when nil; New drops the
	// errors when nil.
	OnError func(error)
}

// Collector is a prometheus.Collector over the cache.
type Collector struct {
	reader  client.Reader
	onError func(error)
	// pods is the pod informer's store (Register sets it); nil lists pods
	// through reader.
	pods informerStore

	unitPods                                   *prometheus.Desc
	desired, current, minReplicas, maxReplicas *prometheus.Desc
	metricValue, metricTarget                  *prometheus.Desc
}

// New builds a collector reading from reader (the manager's cache) and
// registers it on reg. It takes no event recorder, unlike the other
// packages here: it only reads.
func New(reader client.Reader, reg prometheus.Registerer, opts Options) (*Collector, error) {
	if reader == nil || reg == nil {
		return nil, errors.New("fleetmetrics: nil reader or registerer")
	}
	scaler := []string{mn.LabelNamespace, mn.LabelInferenceScaler}
	metric := []string{mn.LabelNamespace, mn.LabelInferenceScaler, mn.LabelMetricName, mn.LabelMetricTargetType}
	c := &Collector{
		reader:  reader,
		onError: opts.OnError,
		unitPods: prometheus.NewDesc(mn.ResourcePolicyUnitPods,
			"Pods carrying a ResourcePolicy's placement labels, by policy, unit (none: placed outside every unit) and phase.",
			[]string{mn.LabelNamespace, mn.LabelPolicy, mn.LabelUnit, mn.LabelPhase}, nil),
		desired: prometheus.NewDesc(mn.InferenceScalerHPADesiredReplicas,
			"Desired replicas of the HPA an InferenceScaler owns (status.desiredReplicas).", scaler, nil),
		current: prometheus.NewDesc(mn.InferenceScalerHPACurrentReplicas,
			"Current replicas of the HPA an InferenceScaler owns (status.currentReplicas).", scaler, nil),
		minReplicas: prometheus.NewDesc(mn.InferenceScalerHPAMinReplicas,
			"spec.minReplicas of the HPA an InferenceScaler owns.", scaler, nil),
		maxReplicas: prometheus.NewDesc(mn.InferenceScalerHPAMaxReplicas,
			"spec.maxReplicas of the HPA an InferenceScaler owns.", scaler, nil),
		metricValue: prometheus.NewDesc(mn.InferenceScalerHPAMetricValue,
			"Value the HPA an InferenceScaler owns last read for one of its metrics (status.currentMetrics).", metric, nil),
		metricTarget: prometheus.NewDesc(mn.InferenceScalerHPAMetricTarget,
			"Target of one metric of the HPA an InferenceScaler owns.", metric, nil),
	}
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("fleetmetrics: %w", err)
	}
	return c, nil
}

// Register builds the collector on mgr's cache and registers it on reg.
// Every replica exports the series (the cache runs on each); there is
// nothing to add to mgr itself.
func Register(mgr manager.Manager, reg prometheus.Registerer, opts Options) error {
	if opts.OnError == nil {
		log := mgr.GetLogger().WithName("fleetmetrics")
		opts.OnError = func(err error) { log.Error(err, "fleet metrics incomplete for this scrape") }
	}
	c, err := New(mgr.GetCache(), reg, opts)
	if err != nil {
		return err
	}
	inf, err := mgr.GetCache().GetInformer(context.Background(), &corev1.Pod{}, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("fleetmetrics: the pod informer: %w", err)
	}
	store, ok := inf.(interface{ GetIndexer() toolscache.Indexer })
	if !ok {
		return fmt.Errorf("fleetmetrics: the manager's pod informer (%T) has no store to read", inf)
	}
	c.pods = store.GetIndexer()
	return nil
}

// informerStore is an informer's store of pods. List hands out the cache's own
// objects: a scrape counts every placed pod, and listing them through the
// cache's reader copies each into a list (62 MB of garbage per scrape and
// most of its CPU at 50,000 pods). Nothing may write to what it returns.
type informerStore interface {
	List() []any
}

// placedPods calls f with every cached pod that carries both placement
// labels.
func (c *Collector) placedPods(ctx context.Context, f func(*corev1.Pod)) error {
	if c.pods == nil {
		var pods corev1.PodList
		if err := c.reader.List(ctx, &pods, client.HasLabels{placement.LabelPolicy, placement.LabelUnit}, client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("listing placed pods: %w", err)
		}
		for i := range pods.Items {
			f(&pods.Items[i])
		}
		return nil
	}
	for _, o := range c.pods.List() {
		p, ok := o.(*corev1.Pod)
		if !ok {
			continue
		}
		if _, ok := p.Labels[placement.LabelPolicy]; !ok {
			continue
		}
		if _, ok := p.Labels[placement.LabelUnit]; ok {
			f(p)
		}
	}
	return nil
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=spillway.dev,resources=resourcepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.unitPods, c.desired, c.current, c.minReplicas, c.maxReplicas, c.metricValue, c.metricTarget} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if err := errors.Join(c.collectUnits(ctx, ch), c.collectHPAs(ctx, ch)); err != nil && c.onError != nil {
		c.onError(err)
	}
}

type policyKey struct{ namespace, name string }

type unitKey struct {
	policy policyKey
	unit   string
	phase  corev1.PodPhase
}

// collectUnits counts placed pods by policy, unit and phase in one pass
// over the pods that carry both placement labels. The reads skip the
// cache's copies: the objects are only read, and at 50,000 pods the copies
// would be most of the scrape's cost.
func (c *Collector) collectUnits(ctx context.Context, ch chan<- prometheus.Metric) error {
	var policies v1alpha1.ResourcePolicyList
	if err := c.reader.List(ctx, &policies, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing ResourcePolicies: %w", err)
	}
	if len(policies.Items) == 0 {
		return nil
	}
	units := make(map[policyKey][]string, len(policies.Items))
	known := map[policyKey]map[string]bool{}
	for i := range policies.Items {
		rp := &policies.Items[i]
		k := policyKey{rp.Namespace, rp.Name}
		seen := map[string]bool{}
		// Unit labels are unique by validation; the set guards the
		// exposition against duplicate series all the same.
		for _, label := range append(unitLabels(rp), placement.UnitNone) {
			if !seen[label] {
				seen[label] = true
				units[k] = append(units[k], label)
			}
		}
		known[k] = seen
	}

	counts := map[unitKey]int{}
	if err := c.placedPods(ctx, func(pod *corev1.Pod) {
		k := policyKey{pod.Namespace, pod.Labels[placement.LabelPolicy]}
		unit := pod.Labels[placement.LabelUnit]
		if known[k][unit] {
			counts[unitKey{k, unit, pod.Status.Phase}]++
		}
	}); err != nil {
		return err
	}

	for i := range policies.Items {
		k := policyKey{policies.Items[i].Namespace, policies.Items[i].Name}
		for _, unit := range units[k] {
			for _, phase := range phases {
				ch <- prometheus.MustNewConstMetric(c.unitPods, prometheus.GaugeValue,
					float64(counts[unitKey{k, unit, phase}]), k.namespace, k.name, unit, string(phase))
			}
		}
	}
	return nil
}

func unitLabels(rp *v1alpha1.ResourcePolicy) []string {
	out := make([]string, len(rp.Spec.Units))
	for i := range rp.Spec.Units {
		out[i] = placement.UnitLabel(rp, i)
	}
	return out
}

// collectHPAs reports every HPA whose controller is an InferenceScaler.
func (c *Collector) collectHPAs(ctx context.Context, ch chan<- prometheus.Metric) error {
	var hpas autoscalingv2.HorizontalPodAutoscalerList
	if err := c.reader.List(ctx, &hpas, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing HPAs: %w", err)
	}
	for i := range hpas.Items {
		hpa := &hpas.Items[i]
		scaler, ok := owningScaler(hpa)
		if !ok {
			continue
		}
		labels := []string{hpa.Namespace, scaler}
		minReplicas := int32(1) // the API's default
		if hpa.Spec.MinReplicas != nil {
			minReplicas = *hpa.Spec.MinReplicas
		}
		ch <- prometheus.MustNewConstMetric(c.desired, prometheus.GaugeValue, float64(hpa.Status.DesiredReplicas), labels...)
		ch <- prometheus.MustNewConstMetric(c.current, prometheus.GaugeValue, float64(hpa.Status.CurrentReplicas), labels...)
		ch <- prometheus.MustNewConstMetric(c.minReplicas, prometheus.GaugeValue, float64(minReplicas), labels...)
		ch <- prometheus.MustNewConstMetric(c.maxReplicas, prometheus.GaugeValue, float64(hpa.Spec.MaxReplicas), labels...)

		seen := map[[2]string]bool{}
		for _, spec := range hpa.Spec.Metrics {
			id, target, ok := specOf(spec)
			targetType, known := targetTypes[target.Type]
			if !ok || !known || seen[[2]string{id.name, targetType}] {
				continue
			}
			seen[[2]string{id.name, targetType}] = true
			metricLabels := []string{hpa.Namespace, scaler, id.name, targetType}
			if v, ok := targetValue(target); ok {
				ch <- prometheus.MustNewConstMetric(c.metricTarget, prometheus.GaugeValue, v, metricLabels...)
			}
			for _, st := range hpa.Status.CurrentMetrics {
				if sid, cur, ok := statusOf(st); ok && sid == id {
					if v, ok := currentValue(target.Type, cur); ok {
						ch <- prometheus.MustNewConstMetric(c.metricValue, prometheus.GaugeValue, v, metricLabels...)
					}
					break
				}
			}
		}
	}
	return nil
}

// owningScaler is the name of the InferenceScaler controlling hpa.
func owningScaler(hpa *autoscalingv2.HorizontalPodAutoscaler) (string, bool) {
	for _, ref := range hpa.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller || ref.Kind != "InferenceScaler" {
			continue
		}
		if gv, err := schema.ParseGroupVersion(ref.APIVersion); err == nil && gv.Group == v1alpha1.GroupVersion.Group {
			return ref.Name, true
		}
	}
	return "", false
}

// targetTypes spell target types as kube-state-metrics does.
var targetTypes = map[autoscalingv2.MetricTargetType]string{
	autoscalingv2.ValueMetricType:        "value",
	autoscalingv2.AverageValueMetricType: "average",
	autoscalingv2.UtilizationMetricType:  "utilization",
}

// metricID identifies one HPA metric across spec and status.
type metricID struct {
	source autoscalingv2.MetricSourceType
	name   string
}

func specOf(s autoscalingv2.MetricSpec) (metricID, autoscalingv2.MetricTarget, bool) {
	switch {
	case s.Type == autoscalingv2.PodsMetricSourceType && s.Pods != nil:
		return metricID{s.Type, s.Pods.Metric.Name}, s.Pods.Target, true
	case s.Type == autoscalingv2.ExternalMetricSourceType && s.External != nil:
		return metricID{s.Type, s.External.Metric.Name}, s.External.Target, true
	case s.Type == autoscalingv2.ObjectMetricSourceType && s.Object != nil:
		return metricID{s.Type, s.Object.Metric.Name}, s.Object.Target, true
	case s.Type == autoscalingv2.ResourceMetricSourceType && s.Resource != nil:
		return metricID{s.Type, string(s.Resource.Name)}, s.Resource.Target, true
	case s.Type == autoscalingv2.ContainerResourceMetricSourceType && s.ContainerResource != nil:
		return metricID{s.Type, string(s.ContainerResource.Name)}, s.ContainerResource.Target, true
	}
	return metricID{}, autoscalingv2.MetricTarget{}, false
}

func statusOf(s autoscalingv2.MetricStatus) (metricID, autoscalingv2.MetricValueStatus, bool) {
	switch {
	case s.Type == autoscalingv2.PodsMetricSourceType && s.Pods != nil:
		return metricID{s.Type, s.Pods.Metric.Name}, s.Pods.Current, true
	case s.Type == autoscalingv2.ExternalMetricSourceType && s.External != nil:
		return metricID{s.Type, s.External.Metric.Name}, s.External.Current, true
	case s.Type == autoscalingv2.ObjectMetricSourceType && s.Object != nil:
		return metricID{s.Type, s.Object.Metric.Name}, s.Object.Current, true
	case s.Type == autoscalingv2.ResourceMetricSourceType && s.Resource != nil:
		return metricID{s.Type, string(s.Resource.Name)}, s.Resource.Current, true
	case s.Type == autoscalingv2.ContainerResourceMetricSourceType && s.ContainerResource != nil:
		return metricID{s.Type, string(s.ContainerResource.Name)}, s.ContainerResource.Current, true
	}
	return metricID{}, autoscalingv2.MetricValueStatus{}, false
}

func targetValue(t autoscalingv2.MetricTarget) (float64, bool) {
	switch t.Type {
	case autoscalingv2.ValueMetricType:
		return quantity(t.Value)
	case autoscalingv2.AverageValueMetricType:
		return quantity(t.AverageValue)
	case autoscalingv2.UtilizationMetricType:
		if t.AverageUtilization != nil {
			return float64(*t.AverageUtilization), true
		}
	}
	return 0, false
}

// currentValue is the part of cur that compares with a target of type t.
func currentValue(t autoscalingv2.MetricTargetType, cur autoscalingv2.MetricValueStatus) (float64, bool) {
	switch t {
	case autoscalingv2.ValueMetricType:
		return quantity(cur.Value)
	case autoscalingv2.AverageValueMetricType:
		return quantity(cur.AverageValue)
	case autoscalingv2.UtilizationMetricType:
		if cur.AverageUtilization != nil {
			return float64(*cur.AverageUtilization), true
		}
	}
	return 0, false
}

func quantity(q *resource.Quantity) (float64, bool) {
	if q == nil {
		return 0, false
	}
	return q.AsApproximateFloat64(), true
}
