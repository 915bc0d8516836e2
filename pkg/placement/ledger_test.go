package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-dev/spillway/internal/testobjects"
)

// TestLedgerMatchesAddingUpPods drives a ledger with random pod events, as
// an informer hands them over, and checks after each that every node's room
// from the ledger (bound pods summed, waiting pods listed) is the room free
// computes from all the pods occupying the node, and that Holds knows
// exactly the placement IDs of the pods held.
func TestLedgerMatchesAddingUpPods(t *testing.T) {
	nodes := []string{"a", "b", "c"}
	rng := rand.New(rand.NewPCG(1, 2))
	states := []func(p *corev1.Pod){
		func(*corev1.Pod) {}, // created, no placement
		func(p *corev1.Pod) { p.Annotations[AnnotationReservedNode] = nodes[rng.IntN(3)] },
		func(p *corev1.Pod) { p.Spec.NodeName = nodes[rng.IntN(3)] },
		func(p *corev1.Pod) { p.Status.NominatedNodeName = nodes[rng.IntN(3)] },
		func(p *corev1.Pod) {
			p.Spec.NodeName = nodes[rng.IntN(3)]
			p.DeletionTimestamp = &metav1.Time{Time: t0}
		},
		func(p *corev1.Pod) {
			p.Spec.NodeName = nodes[rng.IntN(3)]
			p.Status.Phase = corev1.PodSucceeded
		},
		func(p *corev1.Pod) {
			p.Annotations[AnnotationReservedNode] = nodes[rng.IntN(3)]
			p.DeletionTimestamp = &metav1.Time{Time: t0}
		},
	}
	newPod := func(name string) *corev1.Pod {
		p := gpuPod(name, rng.Int64N(3))
		p.Annotations = map[string]string{AnnotationPlacementID: fmt.Sprintf("id-%d", rng.IntN(8))}
		if rng.IntN(4) == 0 {
			// Not containers only: the ledger must sum as PodRequests does.
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3")},
			}}}
		}
		states[rng.IntN(len(states))](p)
		return p
	}

	l := NewLedger()
	store := map[string]*corev1.Pod{}
	for step := range 2000 {
		name := fmt.Sprintf("p%d", rng.IntN(40))
		old := store[name]
		var cur *corev1.Pod
		if old == nil || rng.IntN(5) > 0 {
			cur = newPod(name)
			store[name] = cur
		} else {
			delete(store, name)
		}
		l.Update(old, cur)
		checkLedger(t, step, l, store, nodes)
		if t.Failed() {
			return
		}
	}
	for name, p := range store {
		l.Update(p, nil)
		delete(store, name)
	}
	if len(l.nodes) != 0 || len(l.ids) != 0 {
		t.Errorf("with every pod deleted the ledger still holds nodes %v and ids %v", l.nodes, l.ids)
	}
}

func checkLedger(t *testing.T, step int, l *Ledger, store map[string]*corev1.Pod, nodes []string) {
	t.Helper()
	ids := map[string]bool{}
	for _, p := range store {
		ids[p.Annotations[AnnotationPlacementID]] = true
	}
	for i := range 8 {
		id := fmt.Sprintf("id-%d", i)
		if l.Holds(id) != ids[id] {
			t.Errorf("step %d: Holds(%s) = %v, want %v", step, id, l.Holds(id), ids[id])
		}
	}
	for _, name := range nodes {
		n := node(name, nil, testobjects.Resources("64", 8))
		var occupying, waiting []*corev1.Pod
		for _, p := range store {
			if OccupiedNode(p) != name {
				continue
			}
			occupying = append(occupying, p)
			if p.Spec.NodeName == "" && p.Status.NominatedNodeName == "" && p.DeletionTimestamp == nil {
				waiting = append(waiting, p)
			}
		}
		taken, got := l.Node(name)
		byName := func(a, b *corev1.Pod) int { return cmpString(a.Name, b.Name) }
		slices.SortFunc(got, byName)
		slices.SortFunc(waiting, byName)
		// Waiting pods take room in the order given (Charged sorts them).
		slices.SortFunc(occupying, byName)
		if !slices.Equal(got, waiting) {
			t.Errorf("step %d node %s: waiting %v, want %v", step, name, names(got), names(waiting))
		}
		want := free([]NodeUsage{{Node: n, Pods: occupying}}, nil)[0]
		have := free([]NodeUsage{{Node: n, Taken: taken, Pods: got}}, nil)[0]
		if !sameRoom(want, have) {
			t.Errorf("step %d node %s: room from the ledger %v, from the pods %v", step, name, have, want)
		}
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func names(pods []*corev1.Pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Name
	}
	return out
}

// sameRoom compares two free lists, a missing resource counting as zero.
func sameRoom(a, b corev1.ResourceList) bool {
	for _, pair := range [][2]corev1.ResourceList{{a, b}, {b, a}} {
		for k, v := range pair[0] {
			w := pair[1][k]
			if v.Cmp(w) != 0 {
				return false
			}
		}
	}
	return true
}

// TestLedgerNodeIsACopy checks that a caller changing what Node returned
// leaves the ledger's sum alone (free subtracts from it).
func TestLedgerNodeIsACopy(t *testing.T) {
	l := NewLedger()
	p := gpuPod("p", 1)
	p.Spec.NodeName = "a"
	l.Update(nil, p)
	taken, _ := l.Node("a")
	taken[testobjects.GPU] = resource.MustParse("100")
	again, _ := l.Node("a")
	if q := again[testobjects.GPU]; q.Cmp(resource.MustParse("1")) != 0 {
		t.Errorf("gpu taken = %s after the caller changed its copy, want 1", q.String())
	}
	if n := again[corev1.ResourcePods]; n.Value() != 1 {
		t.Errorf("pods taken = %d, want 1", n.Value())
	}
}
