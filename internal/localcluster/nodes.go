package localcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PoolLabel names the node pool a node belongs to; on-prem nodes and the
// elastic NodePool's nodes both carry it, so a ResourcePolicy unit can
// select either by one key.
const PoolLabel = "spillway.dev/pool"

// GPUResource is the extended resource GPU pods request.
const GPUResource corev1.ResourceName = "nvidia.com/gpu"

// NodeShape is the capacity of a static node.
type NodeShape struct {
	CPU, Memory string
	GPUs        int
}

// DefaultGPUNode fits the seed's predictor (1 GPU, 4 CPU, 12 GiB) once.
var DefaultGPUNode = NodeShape{CPU: "8", Memory: "32Gi", GPUs: 1}

// AddStaticGPUNodes creates n kwok nodes labelled spillway.dev/pool=<pool>,
// standing in for on-prem GPU servers, and waits until they are Ready.
func (c *Cluster) AddStaticGPUNodes(ctx context.Context, pool string, n int, shape NodeShape) ([]string, error) {
	names := make([]string, 0, n)
	for i := range n {
		name := fmt.Sprintf("%s-%d", pool, i)
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(shape.CPU),
			corev1.ResourceMemory: resource.MustParse(shape.Memory),
			corev1.ResourcePods:   resource.MustParse("110"),
			GPUResource:           *resource.NewQuantity(int64(shape.GPUs), resource.DecimalSI),
		}
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{KwokAnnotation: "fake"},
				Labels: map[string]string{
					PoolLabel:                pool,
					corev1.LabelHostname:     name,
					corev1.LabelOSStable:     "linux",
					corev1.LabelArchStable:   "amd64",
					"type":                   "kwok",
					corev1.LabelTopologyZone: "onprem-zone",
				},
			},
			Spec:   corev1.NodeSpec{ProviderID: "kwok://" + name},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		}
		if _, err := c.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating node %s: %w", name, err)
		}
		names = append(names, name)
	}
	for _, name := range names {
		if err := c.WaitNodeReady(ctx, name); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// WaitNodeReady waits until kwok has marked the node Ready and its
// not-ready taint is gone.
func (c *Cluster) WaitNodeReady(ctx context.Context, name string) error {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return Poll(wctx, 300*time.Millisecond, "node "+name+" Ready", func(ctx context.Context) (bool, error) {
		n, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		// The node lifecycle controller lifts the not-ready taint a few
		// seconds after Ready; a placement decision inside that window sees
		// the node as unusable.
		for _, t := range n.Spec.Taints {
			if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
				return false, nil
			}
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

// InstanceType is one entry of Karpenter-kwok's instance-types file (the
// v1.15 shape: each offering carries zone and capacity-type requirements).
type InstanceType struct {
	Name             string            `json:"name"`
	Architecture     string            `json:"architecture"`
	OperatingSystems []string          `json:"operatingSystems"`
	Resources        map[string]string `json:"resources"`
	Offerings        []Offering        `json:"offerings"`
}

// Offering is one price point of an instance type.
type Offering struct {
	Price        float64       `json:"Price"`
	Available    bool          `json:"Available"`
	Requirements []Requirement `json:"requirements"`
}

// Requirement is a node-selector requirement.
type Requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values"`
}

// ElasticZone is the zone of every elastic instance offering.
const ElasticZone = "cloud-zone-a"

// GPUInstanceTypes are the cloud GPU shapes the elastic pool may create:
// single-GPU instances priced like common cloud offerings, so Karpenter picks
// the cheapest one that fits a predictor.
var GPUInstanceTypes = []InstanceType{
	gpuInstance("g5.2xlarge", "8", "32Gi", 1, 1.212),
	gpuInstance("g5.4xlarge", "16", "64Gi", 1, 1.624),
}

func gpuInstance(name, cpu, mem string, gpus int, price float64) InstanceType {
	return InstanceType{
		Name:             name,
		Architecture:     "amd64",
		OperatingSystems: []string{"linux"},
		Resources: map[string]string{
			"cpu": cpu, "memory": mem, "ephemeral-storage": "600Gi", "pods": "110",
			string(GPUResource): fmt.Sprint(gpus),
		},
		Offerings: []Offering{{
			Price:     price,
			Available: true,
			Requirements: []Requirement{
				{Key: corev1.LabelTopologyZone, Operator: "In", Values: []string{ElasticZone}},
				{Key: "karpenter.sh/capacity-type", Operator: "In", Values: []string{"on-demand"}},
			},
		}},
	}
}

func (c *Cluster) startKarpenter(ctx context.Context) error {
	var crds []string
	for _, dir := range []string{"kwok/charts/crds", "kwok/apis/crds"} {
		matches, err := filepath.Glob(filepath.Join(c.bins.KarpenterModuleDir, dir, "*.yaml"))
		if err != nil {
			return err
		}
		crds = append(crds, matches...)
	}
	if len(crds) == 0 {
		return fmt.Errorf("no Karpenter CRDs found under %s", c.bins.KarpenterModuleDir)
	}
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := c.Apply(ctx, b); err != nil {
			return fmt.Errorf("installing Karpenter CRD %s: %w", filepath.Base(f), err)
		}
	}
	if err := c.Apply(ctx, []byte(`apiVersion: karpenter.kwok.sh/v1alpha1
kind: KWOKNodeClass
metadata:
  name: default
`)); err != nil {
		return err
	}
	types, err := json.MarshalIndent(GPUInstanceTypes, "", "  ")
	if err != nil {
		return err
	}
	typesPath := filepath.Join(c.dir, "instance-types.json")
	if err := os.WriteFile(typesPath, types, 0o644); err != nil {
		return err
	}
	if _, err := c.StartProcess("karpenter-kwok", c.bins.KarpenterKwok, []string{
		"--disable-leader-election",
		"--metrics-port=" + itoa(c.ports.karpMetrics),
		"--health-probe-port=" + itoa(c.ports.karpHealth),
		// Short batching keeps node creation prompt in tests.
		"--batch-idle-duration=1s",
		"--batch-max-duration=3s",
	}, []string{
		"KUBECONFIG=" + c.KubeconfigPath(),
		"INSTANCE_TYPES_FILE_PATH=" + typesPath,
		"SYSTEM_NAMESPACE=kube-system",
	}); err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return Poll(wctx, 500*time.Millisecond, "Karpenter readiness", func(context.Context) (bool, error) {
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", c.ports.karpHealth))
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// ElasticPool describes a Karpenter NodePool of GPU instances.
type ElasticPool struct {
	Name string
	// ConsolidateAfter is how long an empty node lives (default 10s).
	ConsolidateAfter time.Duration
	// GPULimit caps the pool's total GPUs (default 8).
	GPULimit int
}

// AddElasticPool creates a Karpenter NodePool whose nodes are labelled
// spillway.dev/pool=<name>; Karpenter adds nodes for pending pods that fit
// and removes them when empty.
func (c *Cluster) AddElasticPool(ctx context.Context, p ElasticPool) error {
	if p.ConsolidateAfter == 0 {
		p.ConsolidateAfter = 10 * time.Second
	}
	if p.GPULimit == 0 {
		p.GPULimit = 8
	}
	names := make([]string, 0, len(GPUInstanceTypes))
	for _, t := range GPUInstanceTypes {
		names = append(names, `"`+t.Name+`"`)
	}
	np := fmt.Sprintf(`apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: %[1]s
spec:
  template:
    metadata:
      labels:
        %[2]s: %[1]s
    spec:
      nodeClassRef:
        group: karpenter.kwok.sh
        kind: KWOKNodeClass
        name: default
      expireAfter: Never
      requirements:
      - key: node.kubernetes.io/instance-type
        operator: In
        values: [%[3]s]
      - key: karpenter.sh/capacity-type
        operator: In
        values: ["on-demand"]
  limits:
    nvidia.com/gpu: "%[4]d"
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: %[5]s
    # Karpenter's default budget (10%% of a pool's nodes) removes a small
    # pool's empty nodes one per pass; they all may go at once.
    budgets:
    - nodes: "100%%"
`, p.Name, PoolLabel, strings.Join(names, ", "), p.GPULimit, p.ConsolidateAfter)
	return c.Apply(ctx, []byte(np))
}
