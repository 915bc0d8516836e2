package placement

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
)

// PodRequests' sum over plain containers must answer exactly what the
// scheduler's helper answers.
func TestPodRequestsMatchesTheSchedulersSum(t *testing.T) {
	rl := func(kv ...string) corev1.ResourceList {
		out := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return out
	}
	c := func(req corev1.ResourceList) corev1.Container {
		return corev1.Container{Resources: corev1.ResourceRequirements{Requests: req}}
	}
	always := corev1.ContainerRestartPolicyAlways
	tests := []struct {
		name string
		spec corev1.PodSpec
	}{
		{"no containers", corev1.PodSpec{}},
		{"no requests", corev1.PodSpec{Containers: []corev1.Container{c(nil)}}},
		{"one container", corev1.PodSpec{Containers: []corev1.Container{c(rl("cpu", "500m", "memory", "1Gi", "nvidia.com/gpu", "1"))}}},
		{"two containers, overlapping", corev1.PodSpec{Containers: []corev1.Container{
			c(rl("cpu", "500m", "nvidia.com/gpu", "1")), c(rl("cpu", "1500m", "memory", "100Mi"))}}},
		{"an init container (general path)", corev1.PodSpec{
			InitContainers: []corev1.Container{c(rl("cpu", "4"))},
			Containers:     []corev1.Container{c(rl("cpu", "1", "nvidia.com/gpu", "1"))}}},
		{"a sidecar (general path)", corev1.PodSpec{
			InitContainers: []corev1.Container{{RestartPolicy: &always, Resources: corev1.ResourceRequirements{Requests: rl("cpu", "250m")}}},
			Containers:     []corev1.Container{c(rl("cpu", "1"))}}},
		{"overhead (general path)", corev1.PodSpec{Overhead: rl("cpu", "100m"), Containers: []corev1.Container{c(rl("cpu", "1"))}}},
		{"pod-level resources (general path)", corev1.PodSpec{
			Resources:  &corev1.ResourceRequirements{Requests: rl("cpu", "3")},
			Containers: []corev1.Container{c(rl("cpu", "1"))}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: tt.spec}
			before := pod.DeepCopy()
			got := PodRequests(pod)
			want := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
			want[corev1.ResourcePods] = resource.MustParse("1")
			if len(got) != len(want) {
				t.Fatalf("PodRequests = %v, want %v", got, want)
			}
			for name, q := range want {
				if g, ok := got[name]; !ok || g.Cmp(q) != 0 {
					t.Errorf("%s = %v, want %v (all: %v)", name, got[name], q, got)
				}
			}
			// The sum must not write into the pod's own quantities (pods
			// here are the informer cache's, read without copying).
			got[corev1.ResourceCPU] = resource.MustParse("99")
			for i := range pod.Spec.Containers {
				if a, b := pod.Spec.Containers[i].Resources.Requests, before.Spec.Containers[i].Resources.Requests; !equalLists(a, b) {
					t.Errorf("container %d's requests changed: %v, was %v", i, a, b)
				}
			}
		})
	}
}

func equalLists(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v.Cmp(w) != 0 {
			return false
		}
	}
	return true
}
