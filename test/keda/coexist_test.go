package keda

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/deploy/chart"
	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

// kedaVariant is the chart's values for a cluster where KEDA owns
// external.metrics.k8s.io.
const kedaVariant = "keda-owns-external-metrics"

// customAPIServices are the APIServices spillway keeps with KEDA present.
var customAPIServices = []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"}

// podsOnlyAdapter is spillway-metrics-adapter run with the arguments and
// APIServices the chart renders for kedaVariant, localized: the APIServices
// point at it on localhost through an ExternalName Service, and the
// in-cluster addresses are replaced by local ones.
type podsOnlyAdapter struct {
	args        []string
	apiServices []*unstructured.Unstructured
	proc        *localcluster.Process
}

// startPodsOnlyAdapter renders the chart with kedaVariant as release
// "spillway" in framework.SystemNamespace (so its names are the ones the local
// ExternalName Service and the adapter's certificate use), applies its
// APIServices and runs the adapter with its arguments.
func startPodsOnlyAdapter(ctx context.Context, promURL string) (*podsOnlyAdapter, error) {
	var set []string
	for _, v := range chart.Variants() {
		if v.Name == kedaVariant {
			set = v.Set
		}
	}
	if set == nil {
		return nil, fmt.Errorf("the chart has no variant %q", kedaVariant)
	}
	objs, err := chart.Render(ctx, chart.Release{Name: "spillway", Namespace: framework.SystemNamespace, Set: set})
	if err != nil {
		return nil, err
	}
	a := &podsOnlyAdapter{apiServices: chart.Find(objs, "APIService")}
	containers, err := chart.Containers(objs)
	if err != nil {
		return nil, err
	}
	for _, c := range containers {
		if c.Workload == "Deployment/"+framework.AdapterServiceName && c.Name == "adapter" {
			a.args = c.Args
		}
	}
	if a.args == nil {
		return nil, fmt.Errorf("no adapter container in the chart's Deployment/%s", framework.AdapterServiceName)
	}
	ports, err := localcluster.FreePorts(2)
	if err != nil {
		return nil, err
	}
	port, selfPort := ports[0], ports[1]
	args, err := localize(a.args, map[string]string{
		"--prometheus-url":       promURL,
		"--secure-port":          fmt.Sprint(port),
		"--self-metrics-address": fmt.Sprintf("127.0.0.1:%d", selfPort),
	})
	if err != nil {
		return nil, err
	}
	args = append(args,
		"--bind-address=127.0.0.1",
		"--lister-kubeconfig="+cluster.KubeconfigPath(),
		"--authentication-kubeconfig="+cluster.KubeconfigPath(),
		"--authorization-kubeconfig="+cluster.KubeconfigPath(),
	)
	var manifest bytes.Buffer
	fmt.Fprintf(&manifest, `apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
# Local development only: kube-apiserver proxies to https://localhost:<port>.
apiVersion: v1
kind: Service
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  type: ExternalName
  externalName: localhost
`, framework.SystemNamespace, framework.AdapterServiceName)
	for _, s := range a.apiServices {
		s = s.DeepCopy()
		if err := unstructured.SetNestedField(s.Object, int64(port), "spec", "service", "port"); err != nil {
			return nil, err
		}
		b, err := json.Marshal(s.Object)
		if err != nil {
			return nil, err
		}
		manifest.WriteString("---\n")
		manifest.Write(b)
		manifest.WriteString("\n")
	}
	if err := cluster.Apply(ctx, manifest.Bytes()); err != nil {
		return nil, err
	}
	if a.proc, err = cluster.StartProcess("spillway-metrics-adapter", "../../bin/spillway-metrics-adapter", args, nil); err != nil {
		return nil, err
	}
	return a, framework.Poll(ctx, 2*time.Minute, time.Second, func(ctx context.Context) (bool, string) {
		_, err := cluster.Client().Discovery().RESTClient().Get().AbsPath("/apis/custom.metrics.k8s.io/v1beta2").DoRaw(ctx)
		if err != nil {
			return false, "custom.metrics.k8s.io/v1beta2 through the aggregator: " + err.Error()
		}
		return true, ""
	})
}

// localize replaces the values of the chart's flags that name in-cluster
// addresses; every other argument stays as the chart renders it. Each flag
// in local must be among the chart's.
func localize(chartArgs []string, local map[string]string) ([]string, error) {
	out := make([]string, 0, len(chartArgs))
	seen := map[string]bool{}
	for _, a := range chartArgs {
		name, _, _ := strings.Cut(a, "=")
		if v, ok := local[name]; ok {
			seen[name] = true
			a = name + "=" + v
		}
		out = append(out, a)
	}
	for name := range local {
		if !seen[name] {
			return nil, fmt.Errorf("the chart's adapter arguments %v lack %s", chartArgs, name)
		}
	}
	return out, nil
}

// TestChartPodsOnlyRendering: with KEDA in the cluster the chart registers
// only the custom metrics API and the adapter writes its CA into those
// APIServices alone.
func TestChartPodsOnlyRendering(t *testing.T) {
	e := setup(t)
	var names []string
	for _, s := range e.spillway.apiServices {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	if !slices.Equal(names, customAPIServices) {
		t.Errorf("the chart renders APIServices %v, want %v", names, customAPIServices)
	}
	want := "--apiservices=" + strings.Join(customAPIServices, ",")
	if !slices.Contains(e.spillway.args, want) {
		t.Errorf("the adapter's arguments %v lack %s", e.spillway.args, want)
	}
}

// TestKEDAAndPodsOnlySpillwayShareTheCluster: KEDA owns
// external.metrics.k8s.io and spillway's adapter, as the chart renders it
// for that case, owns custom.metrics.k8s.io; neither takes the other's
// APIService, and an HPA of type Pods on spillway's
// DCGM_CUSTOM_PROCESS_SM_UTIL and a ScaledObject served by KEDA both scale
// their Deployments 1 → 3 → 1 at the same time.
func TestKEDAAndPodsOnlySpillwayShareTheCluster(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	ns := framework.Namespace(t, cluster)
	const onSpillway, onKEDA = "on-spillway", "on-keda"
	createDeployment(t, ns, onSpillway)
	createDeployment(t, ns, onKEDA)

	hpa := testobjects.HPA(testobjects.HPAOptions{
		Name: onSpillway, Namespace: ns, Deployment: onSpillway, MinReplicas: ptr.To(int32(1)), MaxReplicas: 3,
	}, func(h *autoscalingv2.HorizontalPodAutoscaler) {
		h.Spec.Metrics = []autoscalingv2.MetricSpec{{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: metricnames.ProcessSMUtil},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(resource.MustParse("50"))},
			},
		}}
		fast := &autoscalingv2.HPAScalingRules{
			StabilizationWindowSeconds: ptr.To(int32(0)),
			Policies:                   []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 5}},
		}
		h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: fast, ScaleDown: fast}
	})
	if _, err := cluster.Client().AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.demand.set(ns, 5)
	apply(t, scaledObject(e, ns, onKEDA, onKEDA))
	load := &demo.Env{Cluster: cluster, LoadURL: e.exporter.LoadURL}

	// The sim exporter: one replica serves 10 req/s at 100 % SM
	// utilization. 24 req/s is 80 % per pod at 3 replicas (target 50: 3);
	// 3 req/s is 10 % on one (1). KEDA's demand 30 over threshold 10: 3;
	// 5: 1.
	if err := load.SetLoad(ctx, ns, onSpillway, 24); err != nil {
		t.Fatal(err)
	}
	e.demand.set(ns, 30)
	waitReplicas(t, ns, onSpillway, 3, hpaStatus(ns, onSpillway))
	waitReplicas(t, ns, onKEDA, 3, hpaStatus(ns, "keda-hpa-"+onKEDA))

	if err := load.SetLoad(ctx, ns, onSpillway, 3); err != nil {
		t.Fatal(err)
	}
	e.demand.set(ns, 5)
	waitReplicas(t, ns, onSpillway, 1, hpaStatus(ns, onSpillway))
	waitReplicas(t, ns, onKEDA, 1, hpaStatus(ns, "keda-hpa-"+onKEDA))

	// Each APIService still points at its owner, verified by its owner's
	// CA: spillway's adapter (which writes its CA into --apiservices and
	// restores edits) left KEDA's alone.
	kedaCA, err := os.ReadFile(e.keda.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	apiServices := dyn.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"})
	for _, name := range append([]string{localcluster.KEDAAPIService}, customAPIServices...) {
		s, err := apiServices.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svcNS, _, _ := unstructured.NestedString(s.Object, "spec", "service", "namespace")
		svcName, _, _ := unstructured.NestedString(s.Object, "spec", "service", "name")
		wantNS, wantSvc := framework.SystemNamespace, framework.AdapterServiceName
		if name == localcluster.KEDAAPIService {
			wantNS, wantSvc = localcluster.KEDANamespace, "keda-metrics-apiserver"
			bundle, _, _ := unstructured.NestedString(s.Object, "spec", "caBundle")
			if bundle != base64.StdEncoding.EncodeToString(kedaCA) {
				t.Errorf("%s's caBundle is no longer KEDA's CA", name)
			}
		}
		if svcNS != wantNS || svcName != wantSvc {
			t.Errorf("%s points at %s/%s, want %s/%s", name, svcNS, svcName, wantNS, wantSvc)
		}
	}
}
