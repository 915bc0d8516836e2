package sim

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func kubePod(mut ...func(*corev1.Pod)) *corev1.Pod {
	yes := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "demo", Name: "llm-7d9f8-abcde", UID: "uid-1",
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "llm-7d9f8", Controller: &yes}},
		},
		Spec: corev1.PodSpec{
			NodeName: "gpu-0",
			Containers: []corev1.Container{
				{Name: "proxy"},
				{Name: "vllm", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("2")}}},
			},
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, m := range mut {
		m(p)
	}
	return p
}

func TestPodFromKube(t *testing.T) {
	deployments := func(ns, rs string) (string, bool) {
		if ns == "demo" && rs == "llm-7d9f8" {
			return "llm", true
		}
		return "", false
	}
	tests := []struct {
		name   string
		pod    *corev1.Pod
		want   Pod
		wantOK bool
	}{
		{
			name:   "deployment pod",
			pod:    kubePod(),
			want:   Pod{UID: "uid-1", Namespace: "demo", Name: "llm-7d9f8-abcde", Node: "gpu-0", Workload: "llm", Running: true, Ready: true, Containers: []GPUContainer{{"vllm", 2}}},
			wantOK: true,
		},
		{
			name: "requests only",
			pod: kubePod(func(p *corev1.Pod) {
				p.Spec.Containers[1].Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}}
			}),
			want:   Pod{UID: "uid-1", Namespace: "demo", Name: "llm-7d9f8-abcde", Node: "gpu-0", Workload: "llm", Running: true, Ready: true, Containers: []GPUContainer{{"vllm", 1}}},
			wantOK: true,
		},
		{
			name: "ReplicaSet without Deployment falls back to the label",
			pod: kubePod(func(p *corev1.Pod) {
				p.OwnerReferences[0].Name = "orphan-rs"
				p.Labels = map[string]string{WorkloadLabel: "from-label"}
			}),
			want:   Pod{UID: "uid-1", Namespace: "demo", Name: "llm-7d9f8-abcde", Node: "gpu-0", Workload: "from-label", Running: true, Ready: true, Containers: []GPUContainer{{"vllm", 2}}},
			wantOK: true,
		},
		{
			name: "StatefulSet without label uses the controller",
			pod: kubePod(func(p *corev1.Pod) {
				p.OwnerReferences[0].Kind, p.OwnerReferences[0].Name = "StatefulSet", "db"
			}),
			want:   Pod{UID: "uid-1", Namespace: "demo", Name: "llm-7d9f8-abcde", Node: "gpu-0", Workload: "db", Running: true, Ready: true, Containers: []GPUContainer{{"vllm", 2}}},
			wantOK: true,
		},
		{
			name: "bare pod is its own workload; not ready",
			pod: kubePod(func(p *corev1.Pod) {
				p.OwnerReferences = nil
				p.Status.Conditions[0].Status = corev1.ConditionFalse
			}),
			want:   Pod{UID: "uid-1", Namespace: "demo", Name: "llm-7d9f8-abcde", Node: "gpu-0", Workload: "llm-7d9f8-abcde", Running: true, Containers: []GPUContainer{{"vllm", 2}}},
			wantOK: true,
		},
		{
			name: "terminating pod gets no traffic",
			pod: kubePod(func(p *corev1.Pod) {
				now := metav1.NewTime(time.Unix(0, 0))
				p.DeletionTimestamp = &now
			}),
			want:   Pod{UID: "uid-1", Namespace: "demo", Name: "llm-7d9f8-abcde", Node: "gpu-0", Workload: "llm", Running: true, Containers: []GPUContainer{{"vllm", 2}}},
			wantOK: true,
		},
		{
			name:   "pending pod",
			pod:    kubePod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
			want:   Pod{UID: "uid-1", Namespace: "demo", Name: "llm-7d9f8-abcde", Node: "gpu-0", Workload: "llm", Ready: true, Containers: []GPUContainer{{"vllm", 2}}},
			wantOK: true,
		},
		{name: "unscheduled", pod: kubePod(func(p *corev1.Pod) { p.Spec.NodeName = "" })},
		{name: "no GPUs", pod: kubePod(func(p *corev1.Pod) { p.Spec.Containers = p.Spec.Containers[:1] })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PodFromKube(tt.pod, DefaultResource, deployments)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if ok && !podEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func podEqual(a, b Pod) bool {
	return reflect.DeepEqual(a, b)
}

func TestKubePods(t *testing.T) {
	src := KubePods{List: func() []*corev1.Pod {
		return []*corev1.Pod{kubePod(), kubePod(func(p *corev1.Pod) { p.Spec.Containers = nil })}
	}}
	pods, err := src.Pods()
	if err != nil || len(pods) != 1 || pods[0].Workload != "llm-7d9f8" {
		t.Errorf("Pods() = %+v, %v; want the one GPU pod, workload from its ReplicaSet", pods, err)
	}
}

func TestReadPodsFile(t *testing.T) {
	pods, err := ReadPodsFile("testdata/pods.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 4 {
		t.Fatalf("got %d pods", len(pods))
	}
	if pods[3].UID != "3f0c9a52-1111-4222-8333-444455556666" {
		t.Errorf("explicit uid not kept: %s", pods[3].UID)
	}
	if pods[0].UID == "" || pods[0].UID == pods[1].UID || pods[0].UID != derivedUID("demo", "llm-0") {
		t.Errorf("derived UIDs not stable and distinct: %s %s", pods[0].UID, pods[1].UID)
	}
	if len(pods[0].UID) != 36 || pods[0].UID[14] != '5' {
		t.Errorf("derived UID %s is not UUIDv5-shaped", pods[0].UID)
	}

	_, err = ReadPodsFile("testdata/bad-pods.yaml")
	for _, want := range []string{"pod 0 (demo/a): node is empty", `container "c": want a name and gpus > 0`, "pod 1 (demo/b): no containers"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad file error %v lacks %q", err, want)
		}
	}
}
