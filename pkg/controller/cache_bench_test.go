package controller

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/pkg/placement"
)

// fleetPod is a placed KServe predictor pod as the informer decodes it:
// the labels and annotations KServe, Knative and spillway put there, two
// containers with requests and limits, env, probes and statuses.
func fleetPod(ns string, i int) *corev1.Pod {
	isvc := fmt.Sprintf("llm-%d", i%2)
	requests := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("4Gi"), "nvidia.com/gpu": resource.MustParse("1")}
	limits := corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi"), "nvidia.com/gpu": resource.MustParse("1")}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("%s-predictor-7d9c5b6f4-%05d", isvc, i), Namespace: ns, UID: types.UID(fmt.Sprintf("6f1c2d3e-0000-4000-8000-%012d", i)),
			ResourceVersion: fmt.Sprint(100000 + i), CreationTimestamp: metav1.Unix(1764331200+int64(i), 0),
			Labels: map[string]string{
				"app": isvc, "component": "predictor", "serving.kserve.io/inferenceservice": isvc,
				"serving.knative.dev/configuration": isvc + "-predictor", "serving.knative.dev/revision": isvc + "-predictor-00001",
				"serving.knative.dev/service": isvc + "-predictor", "app.kubernetes.io/name": "vllm", "pod-template-hash": "7d9c5b6f4",
				placement.LabelPolicy: isvc, placement.LabelUnit: "onprem",
			},
			Annotations: map[string]string{
				"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev", "serving.kserve.io/deploymentMode": "RawDeployment",
				"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "kubectl.kubernetes.io/default-container": "kserve-container",
				placement.AnnotationPlacementID:  fmt.Sprintf("9a8b7c6d-0000-4000-8000-%012d", i),
				placement.AnnotationReservedNode: fmt.Sprintf("onprem-%02d", i%10),
				placement.AnnotationSignature:    fmt.Sprintf("v1.k1.%064d", i),
				placement.AnnotationDeletionCost: "1000000",
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: isvc + "-predictor-7d9c5b6f4",
				UID: "rs-uid-0000-4000-8000-000000000001", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1"}},
		},
		Spec: corev1.PodSpec{
			NodeName: fmt.Sprintf("onprem-%02d", i%10),
			Containers: []corev1.Container{
				{Name: "kserve-container", Image: "vllm/vllm-openai:v0.11.0", Args: []string{"--model=/mnt/models", "--port=8080"},
					Env:       []corev1.EnvVar{{Name: "MODEL_ID", Value: "qwen2.5-7b-instruct"}, {Name: "K_REVISION", Value: isvc + "-predictor-00001"}},
					Resources: corev1.ResourceRequirements{Requests: requests, Limits: limits}},
				{Name: "queue-proxy", Image: "knative/queue:v1.15",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("25m")}}},
			},
			Priority: ptr.To[int32](0), PreemptionPolicy: ptr.To(corev1.PreemptLowerPriority),
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Unix(1764331200, 0)},
			},
			PodIP: "10.0.0.7", HostIP: "192.168.0.3",
			ContainerStatuses: []corev1.ContainerStatus{{Name: "kserve-container", Ready: true, ImageID: "sha256:abc"}},
		},
	}
}

// BenchmarkSlimPodRetained is the heap a cached pod keeps once slimmed,
// decoded from protobuf as the informer receives it (so its strings and
// maps are the decoder's, each its own allocation): retained-B/pod is what
// the controller's pod cache costs per pod, before the informer's indexes.
func BenchmarkSlimPodRetained(b *testing.B) {
	const pods = 5000
	raw := make([][]byte, pods)
	for i := range raw {
		data, err := fleetPod(fmt.Sprintf("fleet-%03d", i%50), i).Marshal()
		if err != nil {
			b.Fatal(err)
		}
		raw[i] = data
	}
	var perPod float64
	for b.Loop() {
		kept := make([]any, pods)
		slimmer := NewPodSlimmer(maxSharedSets)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		for i, data := range raw {
			p := &corev1.Pod{}
			if err := p.Unmarshal(data); err != nil {
				b.Fatal(err)
			}
			out, err := slimmer.Slim(p)
			if err != nil {
				b.Fatal(err)
			}
			kept[i] = out
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		perPod = float64(after.HeapAlloc-before.HeapAlloc) / pods
		runtime.KeepAlive(kept)
	}
	b.ReportMetric(perPod, "retained-B/pod")
}
