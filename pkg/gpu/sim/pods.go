package sim

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// WorkloadLabel names a pod's workload when it has no Deployment above it:
// its value is the workload name in the pod's namespace.
const WorkloadLabel = "spillway.dev/workload"

// DefaultResource is the extended resource that marks a pod as a GPU pod.
const DefaultResource corev1.ResourceName = "nvidia.com/gpu"

// Pod is what the simulator needs to know about one GPU pod.
type Pod struct {
	UID       string `json:"uid,omitempty"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Node      string `json:"node"`
	// Workload is the name, in the pod's namespace, of the workload whose
	// load the pod shares.
	Workload string `json:"workload"`
	// Running pods have processes; only Ready ones get traffic.
	Running    bool           `json:"running"`
	Ready      bool           `json:"ready"`
	Containers []GPUContainer `json:"containers"`
}

// GPUContainer is one container that requests GPUs; each gets one process.
type GPUContainer struct {
	Name string `json:"name"`
	GPUs int    `json:"gpus"`
}

// WorkloadKey is "namespace/workload".
func (p Pod) WorkloadKey() string { return p.Namespace + "/" + p.Workload }

// PodSource lists the GPU pods the simulator may report on.
type PodSource interface {
	Pods() ([]Pod, error)
}

// DeploymentOf returns the name of the Deployment that owns a ReplicaSet.
type DeploymentOf func(namespace, replicaSet string) (string, bool)

// PodFromKube converts a Kubernetes pod. ok is false for pods that request
// no GPUs (of the given resource) or have no node yet.
//
// The workload is, in order: the Deployment above the pod's ReplicaSet; the
// spillway.dev/workload label; the pod's controller (a StatefulSet, a
// ReplicaSet without Deployment, ...); the pod itself.
func PodFromKube(pod *corev1.Pod, resource corev1.ResourceName, deploymentOf DeploymentOf) (Pod, bool) {
	if pod.Spec.NodeName == "" {
		return Pod{}, false
	}
	var ctrs []GPUContainer
	for _, c := range pod.Spec.Containers {
		n := gpuCount(c.Resources, resource)
		if n > 0 {
			ctrs = append(ctrs, GPUContainer{Name: c.Name, GPUs: n})
		}
	}
	if len(ctrs) == 0 {
		return Pod{}, false
	}
	p := Pod{
		UID:        string(pod.UID),
		Namespace:  pod.Namespace,
		Name:       pod.Name,
		Node:       pod.Spec.NodeName,
		Workload:   workloadOf(pod, deploymentOf),
		Running:    pod.Status.Phase == corev1.PodRunning,
		Containers: ctrs,
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			p.Ready = c.Status == corev1.ConditionTrue
		}
	}
	// A pod on its way out keeps its processes until it is gone, but the
	// endpoints controller already stopped sending it traffic.
	if pod.DeletionTimestamp != nil {
		p.Ready = false
	}
	return p, true
}

// gpuCount reads an extended resource: limits are required for it and
// requests, when set, must equal them, so whichever is set is the count.
func gpuCount(r corev1.ResourceRequirements, resource corev1.ResourceName) int {
	q, ok := r.Limits[resource]
	if !ok {
		q, ok = r.Requests[resource]
	}
	if !ok {
		return 0
	}
	return int(q.Value())
}

func workloadOf(pod *corev1.Pod, deploymentOf DeploymentOf) string {
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		if ref.Kind == "ReplicaSet" && deploymentOf != nil {
			if d, ok := deploymentOf(pod.Namespace, ref.Name); ok {
				return d
			}
		}
	}
	if w := pod.Labels[WorkloadLabel]; w != "" {
		return w
	}
	for _, ref := range pod.OwnerReferences {
		if ref.Controller != nil && *ref.Controller {
			return ref.Name
		}
	}
	return pod.Name
}

// StaticPods is a fixed pod list, for running the simulator without a
// cluster (benchmarks, memory measurements, demos on a laptop).
type StaticPods []Pod

// Pods returns the list.
func (s StaticPods) Pods() ([]Pod, error) { return s, nil }

// ReadPodsFile reads a YAML or JSON list of pods:
//
//   - namespace: demo
//     name: llm-0
//     node: gpu-node-0
//     workload: llm          # the pods of demo/llm share its load
//     running: true
//     ready: true
//     containers: [{name: vllm, gpus: 1}]
//     uid: ...               # optional; derived from namespace/name if empty
func ReadPodsFile(path string) (StaticPods, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pods file: %w", err)
	}
	var pods []Pod
	if err := yaml.UnmarshalStrict(data, &pods); err != nil {
		return nil, fmt.Errorf("pods file %s: %w", path, err)
	}
	var errs []error
	seen := map[string]bool{}
	for i := range pods {
		p := &pods[i]
		if p.UID == "" {
			p.UID = derivedUID(p.Namespace, p.Name)
		}
		if err := validatePod(*p); err != nil {
			errs = append(errs, fmt.Errorf("pod %d (%s/%s): %w", i, p.Namespace, p.Name, err))
		}
		if seen[p.UID] {
			errs = append(errs, fmt.Errorf("pod %d (%s/%s): duplicate uid %s", i, p.Namespace, p.Name, p.UID))
		}
		seen[p.UID] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pods file %s: %w", path, err)
	}
	return pods, nil
}

func validatePod(p Pod) error {
	var errs []error
	for _, f := range []struct{ name, value string }{
		{"namespace", p.Namespace}, {"name", p.Name}, {"node", p.Node}, {"workload", p.Workload},
	} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("%s is empty", f.name))
		}
	}
	if len(p.Containers) == 0 {
		errs = append(errs, errors.New("no containers"))
	}
	names := map[string]bool{}
	for _, c := range p.Containers {
		if c.Name == "" || c.GPUs <= 0 {
			errs = append(errs, fmt.Errorf("container %q: want a name and gpus > 0", c.Name))
		}
		if names[c.Name] {
			errs = append(errs, fmt.Errorf("container %q listed twice", c.Name))
		}
		names[c.Name] = true
	}
	return errors.Join(errs...)
}

// derivedUID is a stable UUID-shaped UID (RFC 4122 version 5 layout over
// SHA-1) for pods listed without one.
func derivedUID(namespace, name string) string {
	sum := sha1.Sum([]byte("spillway-sim/" + namespace + "/" + name))
	sum[6] = sum[6]&0x0f | 0x50
	sum[8] = sum[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}

// KubePods adapts a pod cache (an informer's lister) to PodSource.
type KubePods struct {
	// List returns the cached pods; they must not be modified.
	List         func() []*corev1.Pod
	DeploymentOf DeploymentOf
	// Resource is the GPU resource name (DefaultResource when empty).
	Resource corev1.ResourceName
}

// Pods converts the cached pods that request GPUs.
func (k KubePods) Pods() ([]Pod, error) {
	res := k.Resource
	if res == "" {
		res = DefaultResource
	}
	var out []Pod
	for _, kp := range k.List() {
		if p, ok := PodFromKube(kp, res, k.DeploymentOf); ok {
			out = append(out, p)
		}
	}
	return out, nil
}
