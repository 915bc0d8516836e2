package placement

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"

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

// BenchmarkUnitRoom is a review's reading of one unit's room at fleet size,
// 10 nodes of 100 bound pods: adding up each node's pods (Charged, then
// free) against reading the Ledger's sums.
func BenchmarkUnitRoom(b *testing.B) {
	ledger := NewLedger()
	var nodes []NodeUsage
	for n := range 10 {
		name := fmt.Sprintf("node-%02d", n)
		u := NodeUsage{Node: node(name, nil, testobjects.Resources("256", 100))}
		for p := range 100 {
			pod := gpuPod(fmt.Sprintf("%s-%d", name, p), 1)
			pod.Spec.NodeName = name
			u.Pods = append(u.Pods, pod)
			ledger.Update(nil, pod)
		}
		nodes = append(nodes, u)
	}
	p := gpuPod("new", 1)
	req := PodRequests(p)
	signed := func(*corev1.Pod) bool { return true }
	b.Run("pods", func(b *testing.B) {
		for b.Loop() {
			usage := make([]NodeUsage, len(nodes))
			for i, u := range nodes {
				usage[i] = NodeUsage{Node: u.Node, Pods: Charged(u.Pods, signed)}
			}
			if _, ok := RoomNode(p, req, usage, nil); ok {
				b.Fatal("the unit is full")
			}
		}
	})
	b.Run("ledger", func(b *testing.B) {
		for b.Loop() {
			usage := make([]NodeUsage, len(nodes))
			for i, u := range nodes {
				taken, waiting := ledger.Node(u.Node.Name)
				usage[i] = NodeUsage{Node: u.Node, Taken: taken, Pods: Charged(waiting, signed)}
			}
			if _, ok := RoomNode(p, req, usage, nil); ok {
				b.Fatal("the unit is full")
			}
		}
	})
}
