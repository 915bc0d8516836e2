// Package testobjects builds the objects spillway's tests start from (a
// ResourcePolicy, pods, nodes, HPAs, KEDA ScaledObjects) with what a test does not care about
// filled in, so that each test states only the fields it is about.
//
// Every builder takes a small options struct whose zero fields mean "the
// default, or unset", plus optional functions that edit the built object
// for what the options do not cover. Defaults are the seed's: namespace
// "default", the ResourcePolicy "qwen-chat" selecting the KServe predictor
// pods app=isvc.qwen-predictor over an on-prem unit then an elastic one.
//
// It imports only API types, so that unit tests of the pure packages
// (pkg/placement, pkg/autoscaling) may use it as well as the controllers'
// and the cluster tests under test/.
package testobjects

import (
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// Defaults of the builders.
const (
	Namespace  = "default"
	PolicyName = "qwen-chat"
	// AppLabel and AppValue label the seed's predictor pods, which the
	// default policy selects.
	AppLabel = "app"
	AppValue = "isvc.qwen-predictor"
	// PoolLabel is the node label the default units select on, with
	// OnPremPool and ElasticPool its values.
	PoolLabel   = "pool"
	OnPremPool  = "onprem"
	ElasticPool = "elastic"
	// GPU is the extended resource of NVIDIA's device plugin.
	GPU corev1.ResourceName = "nvidia.com/gpu"
)

// PolicyOptions describe a ResourcePolicy; zero fields take the defaults.
type PolicyOptions struct {
	// Name defaults to PolicyName, Namespace to Namespace.
	Name, Namespace string
	// Created is the creation timestamp; zero leaves it unset.
	Created    time.Time
	Generation int64
	// Selector defaults to AppLabel=AppValue.
	Selector map[string]string
	// Strategy is left unset when empty.
	Strategy v1alpha1.Strategy
	// Units default to TwoUnits(PoolLabel, OnPremPool, ElasticPool).
	Units []v1alpha1.Unit
}

// ResourcePolicy builds the policy o describes, then applies edit.
func ResourcePolicy(o PolicyOptions, edit ...func(*v1alpha1.ResourcePolicy)) *v1alpha1.ResourcePolicy {
	rp := &v1alpha1.ResourcePolicy{
		ObjectMeta: objectMeta(or(o.Name, PolicyName), or(o.Namespace, Namespace), o.Created),
		Spec: v1alpha1.ResourcePolicySpec{
			Selector: o.Selector,
			Strategy: o.Strategy,
			Units:    o.Units,
		},
	}
	rp.Generation = o.Generation
	if rp.Spec.Selector == nil {
		rp.Spec.Selector = map[string]string{AppLabel: AppValue}
	}
	if rp.Spec.Units == nil {
		rp.Spec.Units = TwoUnits(PoolLabel, OnPremPool, ElasticPool)
	}
	for _, e := range edit {
		e(rp)
	}
	return rp
}

// TwoUnits are the seed's units: the on-prem nodes ("ecs") first, then the
// autoscaled pool ("elastic"), each selected by label.
func TwoUnits(label, onPrem, elastic string) []v1alpha1.Unit {
	return []v1alpha1.Unit{
		{Resource: "ecs", NodeSelector: map[string]string{label: onPrem}},
		{Resource: "elastic", NodeSelector: map[string]string{label: elastic}},
	}
}

// PodOptions describe a pod; zero fields are left unset, except Namespace
// (default Namespace).
type PodOptions struct {
	Name, Namespace string
	UID             types.UID
	Labels          map[string]string
	Created         time.Time
	// NodeName binds the pod.
	NodeName string
	Phase    corev1.PodPhase
	// Requests, when set, are those of the pod's one container,
	// "kserve-container".
	Requests corev1.ResourceList
}

// Pod builds the pod o describes, then applies edit.
func Pod(o PodOptions, edit ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: objectMeta(o.Name, or(o.Namespace, Namespace), o.Created),
		Spec:       corev1.PodSpec{NodeName: o.NodeName},
		Status:     corev1.PodStatus{Phase: o.Phase},
	}
	p.UID, p.Labels = o.UID, o.Labels
	if o.Requests != nil {
		p.Spec.Containers = []corev1.Container{{Name: "kserve-container", Resources: corev1.ResourceRequirements{Requests: o.Requests}}}
	}
	for _, e := range edit {
		e(p)
	}
	return p
}

// NodeOptions describe a node; zero fields are left unset.
type NodeOptions struct {
	Name        string
	Labels      map[string]string
	Allocatable corev1.ResourceList
}

// Node builds the node o describes, then applies edit.
func Node(o NodeOptions, edit ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Labels: o.Labels},
		Status:     corev1.NodeStatus{Allocatable: o.Allocatable},
	}
	for _, e := range edit {
		e(n)
	}
	return n
}

// Resources is a resource list of cpu (a quantity), 110 pods and, when
// gpus > 0, that many GPUs: a node's allocatable.
func Resources(cpu string, gpus int64) corev1.ResourceList {
	l := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourcePods: resource.MustParse("110")}
	if gpus > 0 {
		l[GPU] = *resource.NewQuantity(gpus, resource.DecimalSI)
	}
	return l
}

// HPAOptions describe an autoscaling/v2 HPA on a Deployment; zero fields
// are left unset, except Namespace (default Namespace).
type HPAOptions struct {
	Name, Namespace string
	// Deployment is the scale target's name.
	Deployment  string
	MinReplicas *int32
	MaxReplicas int32
}

// HPA builds the HPA o describes, then applies edit.
func HPA(o HPAOptions, edit ...func(*autoscalingv2.HorizontalPodAutoscaler)) *autoscalingv2.HorizontalPodAutoscaler {
	h := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: or(o.Namespace, Namespace)},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: o.Deployment},
			MinReplicas:    o.MinReplicas,
			MaxReplicas:    o.MaxReplicas,
		},
	}
	for _, e := range edit {
		e(h)
	}
	return h
}

// ScaledObjectOptions describe a KEDA ScaledObject (keda.sh/v1alpha1) on a
// Deployment with one Prometheus trigger; zero fields are left unset
// (KEDA's defaults), except Namespace (default Namespace).
type ScaledObjectOptions struct {
	Name, Namespace string
	// Deployment is the scale target's name.
	Deployment string
	// MinReplicas and MaxReplicas are minReplicaCount and maxReplicaCount
	// (KEDA's defaults: 0 and 100).
	MinReplicas, MaxReplicas *int32
	// PollingInterval is how often the operator polls the trigger.
	PollingInterval time.Duration
	// ServerAddress, Query and Threshold are the trigger's metadata of the
	// same names; Metadata adds other keys (e.g. ignoreNullValues).
	ServerAddress, Query, Threshold string
	Metadata                        map[string]string
	// ScaleWindow, when set, gives the generated HPA a behavior that scales
	// up and down by up to 100 % every ScaleWindow with no stabilization
	// (advanced.horizontalPodAutoscalerConfig.behavior).
	ScaleWindow time.Duration
}

// ScaledObject builds the ScaledObject o describes as an unstructured
// object (spillway does not import KEDA's API types), then applies edit.
func ScaledObject(o ScaledObjectOptions, edit ...func(*unstructured.Unstructured)) *unstructured.Unstructured {
	meta := map[string]any{"serverAddress": o.ServerAddress, "query": o.Query, "threshold": o.Threshold}
	for k, v := range o.Metadata {
		meta[k] = v
	}
	spec := map[string]any{
		"scaleTargetRef": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": o.Deployment},
		"triggers":       []any{map[string]any{"type": "prometheus", "metadata": meta}},
	}
	if o.MinReplicas != nil {
		spec["minReplicaCount"] = int64(*o.MinReplicas)
	}
	if o.MaxReplicas != nil {
		spec["maxReplicaCount"] = int64(*o.MaxReplicas)
	}
	if o.PollingInterval > 0 {
		spec["pollingInterval"] = int64(o.PollingInterval / time.Second)
	}
	if o.ScaleWindow > 0 {
		rules := map[string]any{
			"stabilizationWindowSeconds": int64(0),
			"policies":                   []any{map[string]any{"type": "Percent", "value": int64(100), "periodSeconds": int64(o.ScaleWindow / time.Second)}},
		}
		spec["advanced"] = map[string]any{"horizontalPodAutoscalerConfig": map[string]any{
			"behavior": map[string]any{"scaleUp": rules, "scaleDown": rules},
		}}
	}
	so := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "keda.sh/v1alpha1",
		"kind":       "ScaledObject",
		"metadata":   map[string]any{"name": o.Name, "namespace": or(o.Namespace, Namespace)},
		"spec":       spec,
	}}
	for _, e := range edit {
		e(so)
	}
	return so
}

func objectMeta(name, namespace string, created time.Time) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: name, Namespace: namespace}
	if !created.IsZero() {
		m.CreationTimestamp = metav1.NewTime(created)
	}
	return m
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
