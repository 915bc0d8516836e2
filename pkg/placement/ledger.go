package placement

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// Ledger keeps, for every node, the sum of what its bound pods take and the
// pods waiting on a reservation there, updated from pod events. A placement
// that walked every pod on a unit's nodes spent most of an admission doing
// so at 100 pods per node; with the ledger it reads a sum per node and the
// few waiting pods, which still go through Charged (their reservations must
// be signed, and a copied placement ID counts once).
//
// A pod's contribution follows free's rules: a bound or nominated pod that
// is neither terminating nor finished takes its PodRequests on the node it
// occupies (OccupiedNode); an unbound pod with a reserved node is waiting
// there; any other pod takes nothing. Update is given the object the
// informer held before and the one it holds now, so the ledger keeps no
// copy of its own of a bound pod. It is safe for concurrent use.
type Ledger struct {
	mu    sync.RWMutex
	nodes map[string]*ledgerNode
	// ids counts the pods held per placement ID, whatever their state.
	ids map[string]int
}

type ledgerNode struct {
	taken corev1.ResourceList
	bound int
	// waiting is keyed by namespace/name.
	waiting map[string]*corev1.Pod
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{nodes: map[string]*ledgerNode{}, ids: map[string]int{}}
}

// Update moves the pod from its old state to its new one: old is nil for a
// pod added, cur is nil for a pod deleted. The ledger reads but keeps
// neither object's requests; it keeps a waiting pod's pointer, so nothing
// may write to a pod after handing it over.
func (l *Ledger) Update(old, cur *corev1.Pod) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old != nil {
		l.apply(old, -1)
	}
	if cur != nil {
		l.apply(cur, 1)
	}
}

func (l *Ledger) apply(p *corev1.Pod, sign int) {
	if id := p.Annotations[AnnotationPlacementID]; id != "" {
		if l.ids[id] += sign; l.ids[id] <= 0 {
			delete(l.ids, id)
		}
	}
	node := OccupiedNode(p)
	if node == "" || p.DeletionTimestamp != nil {
		return
	}
	n := l.nodes[node]
	if n == nil {
		if sign < 0 {
			return
		}
		n = &ledgerNode{taken: corev1.ResourceList{}}
		l.nodes[node] = n
	}
	if p.Spec.NodeName == "" && p.Status.NominatedNodeName == "" {
		key := p.Namespace + "/" + p.Name
		if sign > 0 {
			if n.waiting == nil {
				n.waiting = map[string]*corev1.Pod{}
			}
			n.waiting[key] = p
		} else {
			delete(n.waiting, key)
		}
	} else {
		chargePod(n.taken, p, sign)
		n.bound += sign
	}
	if n.bound <= 0 && len(n.waiting) == 0 {
		delete(l.nodes, node)
	}
}

// Node is what the node's bound pods take, in PodRequests' terms (a copy
// the caller may change), and the pods waiting on a reservation there
// (the informer's own objects: read only).
func (l *Ledger) Node(name string) (taken corev1.ResourceList, waiting []*corev1.Pod) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := l.nodes[name]
	if n == nil {
		return corev1.ResourceList{}, nil
	}
	taken = n.taken.DeepCopy()
	if len(n.waiting) > 0 {
		waiting = make([]*corev1.Pod, 0, len(n.waiting))
		for _, p := range n.waiting {
			waiting = append(waiting, p)
		}
	}
	return taken, waiting
}

// Holds reports whether the ledger has seen a pod with this placement ID
// that has not been deleted since: a reservation for it is then counted
// through the pod.
func (l *Ledger) Holds(id string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.ids[id] > 0
}
