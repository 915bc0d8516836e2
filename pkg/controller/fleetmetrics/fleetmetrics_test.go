package fleetmetrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	mn "github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/placement"
)

// policy is a ResourcePolicy with units of the given names.
func policy(ns, name string, units ...string) *v1alpha1.ResourcePolicy {
	us := []v1alpha1.Unit{}
	for _, u := range units {
		us = append(us, v1alpha1.Unit{Name: u})
	}
	return testobjects.ResourcePolicy(testobjects.PolicyOptions{Name: name, Namespace: ns, Units: us})
}

func pod(ns, name string, labels map[string]string, phase corev1.PodPhase) *corev1.Pod {
	return testobjects.Pod(testobjects.PodOptions{Name: name, Namespace: ns, Labels: labels, Phase: phase})
}

func placed(policy, unit string) map[string]string {
	return map[string]string{placement.LabelPolicy: policy, placement.LabelUnit: unit}
}

// ownedHPA is the HPA of InferenceScaler scaler: two metrics, one of them
// read.
func ownedHPA(ns, scaler string) *autoscalingv2.HorizontalPodAutoscaler {
	return testobjects.HPA(testobjects.HPAOptions{Name: scaler, Namespace: ns, Deployment: scaler, MinReplicas: ptr.To(int32(2)), MaxReplicas: 10},
		func(h *autoscalingv2.HorizontalPodAutoscaler) {
			h.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: v1alpha1.GroupVersion.String(), Kind: "InferenceScaler", Name: scaler, UID: "u", Controller: ptr.To(true),
			}}
			h.Spec.Metrics = []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: mn.ProcessSMUtil},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(resource.MustParse("60"))},
				},
			}, {
				Type: autoscalingv2.ExternalMetricSourceType,
				External: &autoscalingv2.ExternalMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: mn.VLLMRequestsWaiting},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(resource.MustParse("500m"))},
				},
			}}
			h.Status = autoscalingv2.HorizontalPodAutoscalerStatus{
				CurrentReplicas: 3, DesiredReplicas: 4,
				CurrentMetrics: []autoscalingv2.MetricStatus{{
					Type: autoscalingv2.PodsMetricSourceType,
					Pods: &autoscalingv2.PodsMetricStatus{
						Metric:  autoscalingv2.MetricIdentifier{Name: mn.ProcessSMUtil},
						Current: autoscalingv2.MetricValueStatus{AverageValue: ptr.To(resource.MustParse("75"))},
					},
				}}, // the External metric was not read yet: no value, its target only
			}
		})
}

func TestCollect(t *testing.T) {
	foreign := ownedHPA("team-a", "hand-made")
	foreign.OwnerReferences = nil
	unnamed := policy("team-b", "batch")
	unnamed.Spec.Units = []v1alpha1.Unit{{}} // labelled by its index, "0"

	objs := []client.Object{
		policy("team-a", "llm", "onprem", "elastic"),
		unnamed,
		pod("team-a", "p1", placed("llm", "onprem"), corev1.PodRunning),
		pod("team-a", "p2", placed("llm", "onprem"), corev1.PodRunning),
		pod("team-a", "p3", placed("llm", "elastic"), corev1.PodPending),
		pod("team-a", "p4", placed("llm", "none"), corev1.PodRunning),
		pod("team-b", "b1", placed("batch", "0"), corev1.PodSucceeded),
		// Counted nowhere: a policy or unit that does not exist (label
		// values are bounded by the objects), another namespace's policy,
		// no placement labels.
		pod("team-a", "x1", placed("ghost", "onprem"), corev1.PodRunning),
		pod("team-a", "x2", placed("llm", "gone"), corev1.PodRunning),
		pod("team-b", "x3", placed("llm", "onprem"), corev1.PodRunning),
		pod("team-a", "x4", map[string]string{"app": "llm"}, corev1.PodRunning),
		ownedHPA("team-a", "llm"),
		foreign,
	}
	cl := newClient(t, objs...)

	const want = `
# HELP spillway_resourcepolicy_unit_pods Pods carrying a ResourcePolicy's placement labels, by policy, unit (none: placed outside every unit) and phase.
# TYPE spillway_resourcepolicy_unit_pods gauge
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Failed",policy="llm",unit="elastic"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Failed",policy="llm",unit="none"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Failed",policy="llm",unit="onprem"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Pending",policy="llm",unit="elastic"} 1
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Pending",policy="llm",unit="none"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Pending",policy="llm",unit="onprem"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Running",policy="llm",unit="elastic"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Running",policy="llm",unit="none"} 1
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Running",policy="llm",unit="onprem"} 2
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Succeeded",policy="llm",unit="elastic"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Succeeded",policy="llm",unit="none"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Succeeded",policy="llm",unit="onprem"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Unknown",policy="llm",unit="elastic"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Unknown",policy="llm",unit="none"} 0
spillway_resourcepolicy_unit_pods{namespace="team-a",phase="Unknown",policy="llm",unit="onprem"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Failed",policy="batch",unit="0"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Failed",policy="batch",unit="none"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Pending",policy="batch",unit="0"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Pending",policy="batch",unit="none"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Running",policy="batch",unit="0"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Running",policy="batch",unit="none"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Succeeded",policy="batch",unit="0"} 1
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Succeeded",policy="batch",unit="none"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Unknown",policy="batch",unit="0"} 0
spillway_resourcepolicy_unit_pods{namespace="team-b",phase="Unknown",policy="batch",unit="none"} 0
# HELP spillway_inferencescaler_hpa_current_replicas Current replicas of the HPA an InferenceScaler owns (status.currentReplicas).
# TYPE spillway_inferencescaler_hpa_current_replicas gauge
spillway_inferencescaler_hpa_current_replicas{inferencescaler="llm",namespace="team-a"} 3
# HELP spillway_inferencescaler_hpa_desired_replicas Desired replicas of the HPA an InferenceScaler owns (status.desiredReplicas).
# TYPE spillway_inferencescaler_hpa_desired_replicas gauge
spillway_inferencescaler_hpa_desired_replicas{inferencescaler="llm",namespace="team-a"} 4
# HELP spillway_inferencescaler_hpa_max_replicas spec.maxReplicas of the HPA an InferenceScaler owns.
# TYPE spillway_inferencescaler_hpa_max_replicas gauge
spillway_inferencescaler_hpa_max_replicas{inferencescaler="llm",namespace="team-a"} 10
# HELP spillway_inferencescaler_hpa_min_replicas spec.minReplicas of the HPA an InferenceScaler owns.
# TYPE spillway_inferencescaler_hpa_min_replicas gauge
spillway_inferencescaler_hpa_min_replicas{inferencescaler="llm",namespace="team-a"} 2
# HELP spillway_inferencescaler_hpa_metric_target Target of one metric of the HPA an InferenceScaler owns.
# TYPE spillway_inferencescaler_hpa_metric_target gauge
spillway_inferencescaler_hpa_metric_target{inferencescaler="llm",metric_name="DCGM_CUSTOM_PROCESS_SM_UTIL",metric_target_type="average",namespace="team-a"} 60
spillway_inferencescaler_hpa_metric_target{inferencescaler="llm",metric_name="vllm:num_requests_waiting",metric_target_type="average",namespace="team-a"} 0.5
# HELP spillway_inferencescaler_hpa_metric_value Value the HPA an InferenceScaler owns last read for one of its metrics (status.currentMetrics).
# TYPE spillway_inferencescaler_hpa_metric_value gauge
spillway_inferencescaler_hpa_metric_value{inferencescaler="llm",metric_name="DCGM_CUSTOM_PROCESS_SM_UTIL",metric_target_type="average",namespace="team-a"} 75
`
	// Pods read through the cache's reader (New alone) and from the pod
	// informer's store (as Register sets it up) count the same.
	for _, fromStore := range []bool{false, true} {
		c := newCollector(t, cl, func(err error) { t.Errorf("scrape error: %v", err) })
		if fromStore {
			c.pods = storeOf(t, objs...)
		}
		if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
			t.Errorf("pods from the informer's store %v: %v", fromStore, err)
		}
	}
}

// storeOf is an informer store holding objs' pods.
func storeOf(tb testing.TB, objs ...client.Object) toolscache.Store {
	tb.Helper()
	store := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			if err := store.Add(p); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return store
}

func TestCollectEmptyCluster(t *testing.T) {
	c := newCollector(t, newClient(t), func(err error) { t.Errorf("scrape error: %v", err) })
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("an empty cluster gave %d series, want 0", n)
	}
}

// failingReader fails every read, as a cache that is not started does.
type failingReader struct{ client.Reader }

func (failingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("cache not started")
}

func TestCollectReportsReadErrors(t *testing.T) {
	var got []error
	c := newCollector(t, failingReader{}, func(err error) { got = append(got, err) })
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("a failed read gave %d series, want 0", n)
	}
	if len(got) != 1 || !strings.Contains(got[0].Error(), "cache not started") {
		t.Errorf("onError heard %v, want one error naming the failed read", got)
	}
}

func newCollector(tb testing.TB, r client.Reader, onError func(error)) *Collector {
	tb.Helper()
	c, err := New(r, prometheus.NewRegistry(), Options{OnError: onError})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func newClient(tb testing.TB, objs ...client.Object) client.Client {
	tb.Helper()
	scheme, err := kubescheme.New()
	if err != nil {
		tb.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

// BenchmarkCollect50kPods is one scrape with 50,000 pods in the pod
// informer's store, 10,000 of them placed by one policy of two units.
func BenchmarkCollect50kPods(b *testing.B) {
	objs := []client.Object{policy("team-a", "llm", "onprem", "elastic")}
	for i := range 50_000 {
		l := map[string]string{"app": "other"}
		if i%5 == 0 {
			l = placed("llm", []string{"onprem", "elastic"}[i%2])
		}
		objs = append(objs, pod("team-a", fmt.Sprintf("p%d", i), l, corev1.PodRunning))
	}
	c := newCollector(b, newClient(b, objs[0]), func(err error) { b.Error(err) })
	c.pods = storeOf(b, objs...)
	b.ReportAllocs()
	for b.Loop() {
		if n := testutil.CollectAndCount(c); n != 15 {
			b.Fatalf("got %d series, want 15", n)
		}
	}
}
