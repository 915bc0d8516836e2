package placement

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spillway-dev/spillway/internal/testobjects"
)

func TestKeyring(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	k := NewKeyring(clk, time.Hour)
	claim := Claim{Namespace: "victim", PlacementID: "uid-1", Node: "onprem-1", Policy: "p", Unit: "0"}
	if _, err := k.Sign(claim); err == nil {
		t.Fatal("signing before a key is loaded must fail")
	}
	if err := k.Update(nil); err == nil {
		t.Fatal("empty key material must be refused")
	}
	if err := k.Update([]byte("key one")); err != nil {
		t.Fatal(err)
	}
	sig, err := k.Sign(claim)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Verify(claim, sig) {
		t.Fatal("a fresh signature must verify")
	}
	// Every field is covered, and fields cannot trade characters.
	for name, c := range map[string]Claim{
		"namespace":    {Namespace: "mallory", PlacementID: "uid-1", Node: "onprem-1", Policy: "p", Unit: "0"},
		"placement id": {Namespace: "victim", PlacementID: "uid-2", Node: "onprem-1", Policy: "p", Unit: "0"},
		"node":         {Namespace: "victim", PlacementID: "uid-1", Node: "onprem-2", Policy: "p", Unit: "0"},
		"policy":       {Namespace: "victim", PlacementID: "uid-1", Node: "onprem-1", Policy: "q", Unit: "0"},
		"unit":         {Namespace: "victim", PlacementID: "uid-1", Node: "onprem-1", Policy: "p", Unit: "1"},
		"shifted":      {Namespace: "victimu", PlacementID: "id-1", Node: "onprem-1", Policy: "p", Unit: "0"},
	} {
		if k.Verify(c, sig) {
			t.Errorf("signature verifies with another %s", name)
		}
	}
	for _, bad := range []string{"", "not base64!", sig[:len(sig)-2]} {
		if k.Verify(claim, bad) {
			t.Errorf("signature %q verifies", bad)
		}
	}
	if k.Verify(Claim{Namespace: "victim"}, mustSign(t, k, Claim{Namespace: "victim"})) {
		t.Error("a claim without placement ID must not verify")
	}

	// Rotation: the previous key verifies for the grace, then not.
	if err := k.Update([]byte("key one")); err != nil {
		t.Fatal(err)
	}
	if err := k.Update([]byte("key two")); err != nil {
		t.Fatal(err)
	}
	if sig2 := mustSign(t, k, claim); sig2 == sig || !k.Verify(claim, sig2) {
		t.Error("after rotation the new key signs")
	}
	if !k.Verify(claim, sig) {
		t.Error("the previous key must verify during the grace")
	}
	clk.Step(time.Hour)
	if k.Verify(claim, sig) {
		t.Error("the previous key must not verify after the grace")
	}

	// Another replica deriving from the same secret agrees.
	other := NewKeyring(clk, time.Hour)
	if err := other.Update([]byte("key two")); err != nil {
		t.Fatal(err)
	}
	if !other.Verify(claim, mustSign(t, k, claim)) {
		t.Error("replicas with the same secret must verify each other's signatures")
	}
}

func mustSign(t *testing.T, k *Keyring, c Claim) string {
	t.Helper()
	s, err := k.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestReserved(t *testing.T) {
	for key, want := range map[string]bool{
		LabelPolicy: true, LabelUnit: true, AnnotationReservedNode: true, AnnotationSignature: true,
		"spillway.dev/anything": true, "a.b.spillway.dev/x": true,
		"spillway.dev/workload": false, "notspillway.dev/x": false, "spillway.dev": false,
		"example.com/spillway.dev": false, AnnotationDeletionCost: false, "app": false,
	} {
		if got := Reserved(key); got != want {
			t.Errorf("Reserved(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestCharged(t *testing.T) {
	waiting := func(name, id string, signed bool) *corev1.Pod {
		p := gpuPod(name, 1)
		p.Annotations = map[string]string{AnnotationReservedNode: "a", AnnotationPlacementID: id}
		if signed {
			p.Annotations[AnnotationSignature] = "ok"
		}
		return p
	}
	bound := gpuPod("bound", 1)
	bound.Spec.NodeName = "a"
	nominated := gpuPod("nominated", 1)
	nominated.Status.NominatedNodeName = "a"
	noID := waiting("no-id", "", true)
	older := waiting("copy-b", "id-1", true)
	older.CreationTimestamp.Time = t0
	newer := waiting("copy-a", "id-1", true)
	newer.CreationTimestamp.Time = t0.Add(time.Second)
	signed := func(p *corev1.Pod) bool { return p.Annotations[AnnotationSignature] == "ok" }

	got := Charged([]*corev1.Pod{newer, waiting("unsigned", "id-2", false), bound, nominated, noID, older, waiting("other", "id-3", true)}, signed)
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	// Oldest first: the older copy of id-1 is the one charged.
	if want := "copy-b,bound,nominated,other"; join(names) != want {
		t.Errorf("charged %s, want %s", join(names), want)
	}
}

func join(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

// TestClaimsThatFitNowhereTakeNothing: a waiting pod or reservation too big
// for every node of the unit cannot be scheduled there, so it does not make
// the unit look full.
func TestClaimsThatFitNowhereTakeNothing(t *testing.T) {
	huge := gpuPod("huge", 8)
	huge.Annotations = map[string]string{AnnotationReservedNode: "a"}
	nodes := []NodeUsage{{Node: node("a", nil, testobjects.Resources("8", 1)), Pods: []*corev1.Pod{huge}}}
	if n, ok := RoomNode(gpuPod("new", 1), PodRequests(gpuPod("new", 1)), nodes, nil); !ok || n != "a" {
		t.Errorf("waiting pod: RoomNode = %q,%v, want a", n, ok)
	}
	inflight := []Reservation{{ID: "r", Node: "a", Requests: PodRequests(gpuPod("x", 8))}}
	if n, ok := RoomNode(gpuPod("new", 1), PodRequests(gpuPod("new", 1)), []NodeUsage{{Node: node("a", nil, testobjects.Resources("8", 1))}}, inflight); !ok || n != "a" {
		t.Errorf("reservation: RoomNode = %q,%v, want a", n, ok)
	}
}

// TestTryReserve: another policy's reservation on the nodes a decision
// looked at, made after the decision read the reservations, fails the
// reservation; anything else does not.
func TestTryReserve(t *testing.T) {
	tr := NewTracker(clocktesting.NewFakeClock(t0), time.Minute, time.Minute)
	a := tr.BeginPolicy("ns-a/p", nil)
	_ = a.InFlight()

	b := tr.BeginPolicy("ns-b/p", nil)
	_ = b.InFlight()
	if !b.TryReserve(Reservation{ID: "b1", Policy: "ns-b/p", Node: "n1"}, []string{"n1"}) {
		t.Fatal("a first reservation must succeed")
	}
	b.Done()

	if a.TryReserve(Reservation{ID: "a1", Policy: "ns-a/p", Node: "n1"}, []string{"n1", "n2"}) {
		t.Error("policy a decided on n1 before b took room there: it must decide again")
	}
	if !a.TryReserve(Reservation{ID: "a2", Policy: "ns-a/p", Node: "n3"}, []string{"n3"}) {
		t.Error("b's reservation is on other nodes: no conflict")
	}
	if !a.TryReserve(Reservation{ID: "a3", Policy: "ns-a/p"}, nil) {
		t.Error("a decision that looked at no room cannot conflict")
	}
	_ = a.InFlight()
	if !a.TryReserve(Reservation{ID: "a4", Policy: "ns-a/p", Node: "n1"}, []string{"n1"}) {
		t.Error("after reading the reservations again, b's is known")
	}
	a.Done()
	if n := tr.Begin(nil).Len(); n != 4 {
		t.Errorf("%d reservations, want 4", n)
	}
}

// TestPoliciesLockIndependently: a policy's transaction does not wait for
// another policy's (it would wait forever here), and an idle policy's lock
// is forgotten.
func TestPoliciesLockIndependently(t *testing.T) {
	tr := NewTracker(clocktesting.NewFakeClock(t0), time.Minute, time.Minute)
	a := tr.BeginPolicy("ns-a/p", nil)
	b := tr.BeginPolicy("ns-b/p", nil)
	b.Reserve(Reservation{ID: "b1", Policy: "ns-b/p"})
	b.Done()
	a.Done()
	if len(tr.policies) != 0 {
		t.Errorf("%d policy locks left, want none", len(tr.policies))
	}
}

// TestRelease: a reservation released (its pod seen by the informer) is
// gone at once, whatever its TTL.
func TestRelease(t *testing.T) {
	tr := NewTracker(clocktesting.NewFakeClock(t0), time.Minute, time.Minute)
	tx := tr.BeginPolicy("ns/p", nil)
	tx.Reserve(Reservation{ID: "a", Policy: "ns/p", Node: "n1"})
	tx.Reserve(Reservation{ID: "b", Policy: "ns/p", Node: "n1"})
	tx.Done()
	tr.Release("a")
	tr.Release("unknown")
	tx = tr.Begin(nil)
	defer tx.Done()
	if got := ids(tx.InFlight()); got != "b" {
		t.Errorf("in flight after releasing a: %s, want b", got)
	}
}
