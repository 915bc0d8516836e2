package controller

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/testobjects"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/controller/placementwebhook"
	"github.com/spillway-dev/spillway/pkg/placement"
)

var created = time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)

// fullPod is a pod as the API server returns it, with what a real
// inference pod carries: a sidecar, an init container, env, volumes,
// probes, container statuses.
func fullPod(edit ...func(*corev1.Pod)) *corev1.Pod {
	p := testobjects.Pod(testobjects.PodOptions{
		Name: "qwen-1", UID: "uid-1", Created: created, NodeName: "onprem-1", Phase: corev1.PodRunning,
		Labels:   map[string]string{testobjects.AppLabel: testobjects.AppValue, "tier": "gold"},
		Requests: testobjects.Resources("2", 1),
	}, func(p *corev1.Pod) {
		p.ResourceVersion = "42"
		p.GenerateName = "qwen-"
		p.Annotations = map[string]string{"team": "chat", placement.AnnotationDeletionCost: "1000000"}
		p.Finalizers = []string{"example.com/keep"}
		p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "qwen-abc", UID: "rs-1", Controller: ptr.To(true)}}
		c := &p.Spec.Containers[0]
		c.Image = "registry.example/qwen:1"
		c.Command = []string{"python", "-m", "vllm.entrypoints.openai.api_server"}
		c.Args = []string{"--model", "/mnt/models", "--port", "8080"}
		c.Env = []corev1.EnvVar{{Name: "HF_HOME", Value: "/cache"}, {Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "t"}}}}
		c.Resources.Limits = corev1.ResourceList{testobjects.GPU: resource.MustParse("1")}
		c.VolumeMounts = []corev1.VolumeMount{{Name: "models", MountPath: "/mnt/models"}}
		c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}}}
		// The sidecar first: its requests then add to the init
		// container's (placement.PodRequests).
		p.Spec.InitContainers = []corev1.Container{
			{Name: "proxy", Image: "envoy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}}},
			{Name: "storage-initializer", Image: "kserve/storage-initializer", Args: []string{"s3://models/qwen"},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}}},
		}
		p.Spec.Overhead = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}
		p.Spec.Volumes = []corev1.Volume{{Name: "models", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		p.Spec.Tolerations = []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists}}
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: placement.UnitRequirements(map[string]string{testobjects.PoolLabel: testobjects.OnPremPool})}},
		}}}
		p.Spec.NodeSelector = map[string]string{"gpu": "true"}
		p.Spec.ServiceAccountName = "qwen"
		p.Spec.Priority = ptr.To[int32](100)
		p.Spec.PreemptionPolicy = ptr.To(corev1.PreemptLowerPriority)
		p.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue},
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(created)},
		}
		p.Status.PodIP = "10.0.0.7"
		p.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.7"}}
		p.Status.HostIP = "192.168.0.3"
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "kserve-container", Image: "registry.example/qwen:1", Ready: true, ImageID: "sha256:abc"}}
	})
	for _, e := range edit {
		e(p)
	}
	return p
}

// policies are ones whose rules read different parts of a pod.
func policies() []*v1alpha1.ResourcePolicy {
	base := testobjects.ResourcePolicy(testobjects.PolicyOptions{Created: created.Add(-time.Hour)})
	marked := testobjects.ResourcePolicy(testobjects.PolicyOptions{Name: "marked", Created: created.Add(time.Hour)}, func(rp *v1alpha1.ResourcePolicy) {
		rp.Spec.IgnorePreviousPod = true
		rp.Spec.IgnoreTerminatingPod = ptr.To(false)
		rp.Spec.MatchLabelKeys = []string{"tier"}
		rp.Spec.Units[0].PodLabels = map[string]string{"tier": "gold"}
		rp.Spec.Units[0].PodAnnotations = map[string]string{"team": "chat"}
		rp.Spec.Units[0].MaxResources = corev1.ResourceList{testobjects.GPU: resource.MustParse("4")}
	})
	return []*v1alpha1.ResourcePolicy{base, marked}
}

func TestSlimPodKeepsWhatPlacementReads(t *testing.T) {
	nodes := map[string]*corev1.Node{
		"onprem-1":  testobjects.Node(testobjects.NodeOptions{Name: "onprem-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.OnPremPool}}),
		"elastic-1": testobjects.Node(testobjects.NodeOptions{Name: "elastic-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.ElasticPool}}),
	}
	nodeOf := func(name string) *corev1.Node { return nodes[name] }
	incoming := fullPod(func(p *corev1.Pod) { p.Spec.Priority = ptr.To[int32](50); p.Spec.NodeName = "" })
	keys := placement.NewKeyring(nil, time.Hour)
	if err := keys.Update([]byte("serving key")); err != nil {
		t.Fatal(err)
	}
	claim := placement.Claim{Namespace: testobjects.Namespace, PlacementID: "p-1", Node: "onprem-1", Policy: testobjects.PolicyName, Unit: "0"}
	sig, err := keys.Sign(claim)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		pod  *corev1.Pod
	}{
		{"running and bound", fullPod()},
		{"placed, waiting on a signed reservation", fullPod(func(p *corev1.Pod) {
			p.Spec.NodeName = ""
			p.Status.Phase = corev1.PodPending
			p.Labels[placement.LabelPolicy], p.Labels[placement.LabelUnit] = testobjects.PolicyName, "0"
			p.Annotations[placement.AnnotationPlacementID] = claim.PlacementID
			p.Annotations[placement.AnnotationReservedNode] = claim.Node
			p.Annotations[placement.AnnotationSignature] = sig
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes"}}
		})},
		{"nominated after preemption", fullPod(func(p *corev1.Pod) {
			p.Spec.NodeName = ""
			p.Status.NominatedNodeName = "onprem-1"
		})},
		{"terminating", fullPod(func(p *corev1.Pod) {
			p.DeletionTimestamp = ptr.To(metav1.NewTime(created.Add(time.Minute)))
		})},
		{"finished", fullPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })},
		{"pod-level requests, no containers' requests", fullPod(func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Requests = nil
			p.Spec.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3")}}
		})},
		{"on the elastic unit, low priority", fullPod(func(p *corev1.Pod) {
			p.Spec.NodeName = "elastic-1"
			p.Spec.Priority = ptr.To[int32](-5)
			delete(p.Labels, "tier")
		})},
		{"bare: no owner, no status", testobjects.Pod(testobjects.PodOptions{Name: "bare", Labels: map[string]string{testobjects.AppLabel: testobjects.AppValue}})},
	}
	// One slimmer for every case, as in the cache: what it shares between
	// pods must not change what any of them reads.
	slimmer := NewPodSlimmer(maxSharedSets)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := slimmer.Slim(tc.pod.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			slim := out.(*corev1.Pod)
			// Every reading the controllers and the webhook make of a
			// cached pod gives the same answer on the slim copy.
			reads := map[string]func(p *corev1.Pod) any{
				"PodRequests":  func(p *corev1.Pod) any { return placement.PodRequests(p) },
				"OccupiedNode": func(p *corev1.Pod) any { return placement.OccupiedNode(p) },
				"Terminal":     func(p *corev1.Pod) any { return placement.Terminal(p) },
				"Charged": func(p *corev1.Pod) any {
					return len(placement.Charged([]*corev1.Pod{p}, keys.Signed))
				},
				"ClaimOf":          func(p *corev1.Pod) any { return placement.ClaimOf(p) },
				"Signed":           func(p *corev1.Pod) any { return keys.Signed(p) },
				"Preempts":         func(p *corev1.Pod) any { return placement.Preempts(incoming, p) },
				"index node":       func(p *corev1.Pod) any { return placementwebhook.IndexOccupiedNodeFunc(p) },
				"index placement":  func(p *corev1.Pod) any { return placementwebhook.IndexPlacementIDFunc(p) },
				"controller owner": func(p *corev1.Pod) any { return metav1.GetControllerOf(p) },
				"unschedulable": func(p *corev1.Pod) any {
					for _, c := range p.Status.Conditions {
						if c.Type == corev1.PodScheduled {
							return c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable
						}
					}
					return false
				},
				"identity": func(p *corev1.Pod) any {
					return []any{p.Name, p.Namespace, p.UID, p.ResourceVersion, p.CreationTimestamp, p.DeletionTimestamp, p.Labels, p.Annotations}
				},
				"phase and node": func(p *corev1.Pod) any { return []any{p.Status.Phase, p.Spec.NodeName} },
			}
			for _, rp := range policies() {
				reads[rp.Name+" Selects"] = func(p *corev1.Pod) any { return placement.Selects(rp, p) }
				reads[rp.Name+" Counted"] = func(p *corev1.Pod) any { return placement.Counted(rp, p) }
				reads[rp.Name+" Usage"] = func(p *corev1.Pod) any {
					c, u := placement.Usage(rp, []*corev1.Pod{p}, nodeOf)
					return []any{c, u}
				}
				reads[rp.Name+" TerminatingUnits"] = func(p *corev1.Pod) any {
					return placement.TerminatingUnits(rp, []*corev1.Pod{p}, nodeOf)
				}
				reads[rp.Name+" GroupKey"] = func(p *corev1.Pod) any { return placement.GroupKey(rp, p) }
				reads[rp.Name+" Adopt"] = func(p *corev1.Pod) any {
					a, s := placement.Adopt(rp, p, nodeOf(p.Spec.NodeName))
					return []any{a, s}
				}
				reads[rp.Name+" UnitOf"] = func(p *corev1.Pod) any { return placement.UnitOf(rp, p, nodeOf(p.Spec.NodeName)) }
			}
			for name, read := range reads {
				if want, got := read(tc.pod), read(slim); !reflect.DeepEqual(want, got) {
					t.Errorf("%s: full pod %v, slim pod %v", name, want, got)
				}
			}

			// What nobody reads is gone.
			for name, kept := range map[string]bool{
				"managed fields":       slim.ManagedFields != nil,
				"finalizers":           slim.Finalizers != nil,
				"volumes":              slim.Spec.Volumes != nil,
				"tolerations":          slim.Spec.Tolerations != nil,
				"affinity":             slim.Spec.Affinity != nil,
				"node selector":        slim.Spec.NodeSelector != nil,
				"service account":      slim.Spec.ServiceAccountName != "",
				"pod IPs":              slim.Status.PodIP != "" || slim.Status.PodIPs != nil || slim.Status.HostIP != "",
				"container statuses":   slim.Status.ContainerStatuses != nil,
				"conditions but one":   len(slim.Status.Conditions) > 1,
				"the kept condition's": len(slim.Status.Conditions) == 1 && slim.Status.Conditions[0].Type != corev1.PodScheduled,
			} {
				if kept {
					t.Errorf("%s kept", name)
				}
			}
			for _, c := range append(slim.Spec.Containers, slim.Spec.InitContainers...) {
				if c.Image != "" || c.Command != nil || c.Args != nil || c.Env != nil || c.VolumeMounts != nil || c.ReadinessProbe != nil || c.Resources.Limits != nil {
					t.Errorf("container %s keeps more than its name, requests and restart policy: %+v", c.Name, c)
				}
			}

			// Applied again (a relist), it changes nothing.
			again, err := slimmer.Slim(slim.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, slim) {
				t.Errorf("Slim is not idempotent:\n%+v\n%+v", again, slim)
			}
		})
	}
}

func TestPodSlimmerShares(t *testing.T) {
	slim := func(s *PodSlimmer, p *corev1.Pod) *corev1.Pod {
		t.Helper()
		out, err := s.Slim(p)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*corev1.Pod)
	}
	same := func(a, b any) bool { return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() }
	requests := func(p *corev1.Pod) corev1.ResourceList { return p.Spec.Containers[0].Resources.Requests }
	other := func(p *corev1.Pod) {
		p.Name = "qwen-2"
		p.Labels["tier"] = "silver"
		p.Spec.Containers[0].Resources.Requests = testobjects.Resources("2", 2)
	}

	s := NewPodSlimmer(2)
	a, b, c := slim(s, fullPod()), slim(s, fullPod(func(p *corev1.Pod) { p.Name = "qwen-2" })), slim(s, fullPod(other))
	if !same(a.Labels, b.Labels) || !same(requests(a), requests(b)) {
		t.Error("two pods of one template hold their own label sets or request lists")
	}
	if same(a.Labels, c.Labels) || same(requests(a), requests(c)) {
		t.Error("pods with other labels or requests share a label set or request list")
	}
	if c.Labels["tier"] != "silver" || !reflect.DeepEqual(placement.PodRequests(c), placement.PodRequests(fullPod(other))) {
		t.Errorf("the other pod reads labels %v, requests %v", c.Labels, requests(c))
	}
	// The tables are full (2 sets each): a third set starts them over,
	// and pods slimmed before keep what they hold.
	d := slim(s, fullPod(func(p *corev1.Pod) { p.Labels["tier"] = "bronze" }))
	if d.Labels["tier"] != "bronze" || a.Labels["tier"] != "gold" || s.labels.Len() != 1 {
		t.Errorf("after the tables filled: labels %v and %v, %d label sets held", d.Labels, a.Labels, s.labels.Len())
	}

	// Without sharing, every pod holds its own.
	s = NewPodSlimmer(0)
	if a, b := slim(s, fullPod()), slim(s, fullPod()); same(a.Labels, b.Labels) || same(requests(a), requests(b)) {
		t.Error("a slimmer sharing nothing shared a label set or request list")
	}
}

func TestSlimPodSize(t *testing.T) {
	full, err := json.Marshal(fullPod())
	if err != nil {
		t.Fatal(err)
	}
	out, _ := NewPodSlimmer(maxSharedSets).Slim(fullPod())
	slim, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	// The point of the transform: the cached copy is a fraction of the pod.
	if len(slim)*2 > len(full) {
		t.Errorf("slim pod is %d bytes of JSON, the full one %d: less than halved", len(slim), len(full))
	}
	t.Logf("full pod %d bytes of JSON, slim %d", len(full), len(slim))
}

func TestSlimNodeKeepsWhatPlacementReads(t *testing.T) {
	full := testobjects.Node(testobjects.NodeOptions{
		Name: "onprem-1", Labels: map[string]string{testobjects.PoolLabel: testobjects.OnPremPool, "gpu": "true"},
		Allocatable: testobjects.Resources("8", 4),
	}, func(n *corev1.Node) {
		n.UID, n.ResourceVersion = "node-uid", "7"
		n.Annotations = map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
		n.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
		n.Spec.Taints = []corev1.Taint{{Key: "nvidia.com/gpu", Effect: corev1.TaintEffectNoSchedule}, {Key: "soft", Effect: corev1.TaintEffectPreferNoSchedule}}
		n.Spec.PodCIDR = "10.0.1.0/24"
		n.Status.Capacity = testobjects.Resources("8", 4)
		n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.example/qwen:1"}, SizeBytes: 1 << 30}}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.3"}}
		n.Status.NodeInfo.KubeletVersion = "v1.35.0"
	})
	tolerating := fullPod(func(p *corev1.Pod) { p.Spec.NodeName = "" })
	intolerant := fullPod(func(p *corev1.Pod) { p.Spec.NodeName = ""; p.Spec.Tolerations = nil })
	byName := fullPod(func(p *corev1.Pod) {
		p.Spec.NodeName = ""
		p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms = []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"onprem-1"}}},
		}}
	})
	for _, cordoned := range []bool{false, true} {
		n := full.DeepCopy()
		n.Spec.Unschedulable = cordoned
		out, err := SlimNode(n.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		slim := out.(*corev1.Node)
		unit := &policies()[0].Spec.Units[0]
		for name, read := range map[string]func(*corev1.Node) any{
			"Usable tolerating":   func(n *corev1.Node) any { return placement.Usable(n, tolerating) },
			"Usable intolerant":   func(n *corev1.Node) any { return placement.Usable(n, intolerant) },
			"Usable by name":      func(n *corev1.Node) any { return placement.Usable(n, byName) },
			"NodeInUnit":          func(n *corev1.Node) any { return placement.NodeInUnit(unit, n) },
			"allocatable":         func(n *corev1.Node) any { return n.Status.Allocatable },
			"identity and labels": func(n *corev1.Node) any { return []any{n.Name, n.UID, n.ResourceVersion, n.Labels} },
			"RoomNode": func(n *corev1.Node) any {
				name, ok := placement.RoomNode(tolerating, placement.PodRequests(tolerating), []placement.NodeUsage{{Node: n}}, nil)
				return []any{name, ok}
			},
		} {
			if want, got := read(n), read(slim); !reflect.DeepEqual(want, got) {
				t.Errorf("cordoned=%t %s: full node %v, slim node %v", cordoned, name, want, got)
			}
		}
		if slim.Status.Images != nil || slim.Status.Conditions != nil || slim.Status.Addresses != nil || slim.Status.Capacity != nil ||
			slim.Status.NodeInfo != (corev1.NodeSystemInfo{}) || slim.Annotations != nil || slim.ManagedFields != nil || slim.Spec.PodCIDR != "" {
			t.Errorf("slim node keeps what nobody reads: %+v", slim)
		}
	}
}

func TestSlimDeployment(t *testing.T) {
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{testobjects.AppLabel: testobjects.AppValue}}
	full := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "qwen-predictor", Namespace: testobjects.Namespace, UID: "d-1", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kserve"}}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: sel, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: sel.MatchLabels}, Spec: fullPod().Spec,
		}},
		Status: appsv1.DeploymentStatus{Replicas: 3},
	}
	out, err := SlimDeployment(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	want := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "qwen-predictor", Namespace: testobjects.Namespace, UID: "d-1"},
		Spec:       appsv1.DeploymentSpec{Selector: sel},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("SlimDeployment = %+v, want %+v", out, want)
	}
}

func TestSlimPassesOtherObjectsThrough(t *testing.T) {
	rp := testobjects.ResourcePolicy(testobjects.PolicyOptions{})
	for name, f := range map[string]func(any) (any, error){"Slim": NewPodSlimmer(maxSharedSets).Slim, "SlimNode": SlimNode, "SlimDeployment": SlimDeployment} {
		out, err := f(rp)
		if err != nil || out != any(rp) {
			t.Errorf("%s(ResourcePolicy) = %v, %v; want it unchanged", name, out, err)
		}
	}
}
