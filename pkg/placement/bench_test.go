package placement

import (
	"fmt"
	"testing"

	"github.com/spillway-dev/spillway/internal/testobjects"
)

// BenchmarkRoomNode is the webhook's hot path for one unit: 100 full GPU
// nodes of 30 pods each and 20 in-flight reservations, room only on the last
// node by name.
func BenchmarkRoomNode(b *testing.B) {
	var nodes []NodeUsage
	for n := range 100 {
		name := fmt.Sprintf("node-%03d", n)
		gpus := int64(8)
		if n == 99 {
			gpus = 9
		}
		u := NodeUsage{Node: node(name, nil, testobjects.Resources("256", gpus))}
		for p := range 30 {
			var g int64
			if p < 8 {
				g = 1
			}
			pod := gpuPod(fmt.Sprintf("%s-%d", name, p), g)
			pod.Spec.NodeName = name
			u.Pods = append(u.Pods, pod)
		}
		nodes = append(nodes, u)
	}
	var inflight []Reservation
	for i := range 20 {
		inflight = append(inflight, Reservation{ID: fmt.Sprint(i), Node: "elsewhere", Requests: PodRequests(gpuPod("r", 1))})
	}
	p := gpuPod("new", 1)
	req := PodRequests(p)
	b.ResetTimer()
	for b.Loop() {
		if n, ok := RoomNode(p, req, nodes, inflight); !ok || n != "node-099" {
			b.Fatalf("RoomNode = %s,%v", n, ok)
		}
	}
}
