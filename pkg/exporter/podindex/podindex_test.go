package podindex

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	metafake "k8s.io/client-go/metadata/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/spillway-dev/spillway/pkg/gpu"
)

const (
	cidVLLM  = "57d59e28722dfd55524b8d4faf279bd38f0a3f33106f9e54dfe9239fa2d0dfbf"
	cidInit  = "8f4375ec65c2c4092a1cc21e76712472eae0de999384e8327c495957121db9c2"
	staticID = "6f1d5b0a4e2c3b7d8e9f0a1b2c3d4e5f"
)

func pods() []runtime.Object {
	yes := true
	return []runtime.Object{
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "demo", Name: "llm-0", UID: "uid-llm-0",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "llm-abc", Controller: &yes}},
				ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
			},
			Spec: corev1.PodSpec{NodeName: "gpu-0", Containers: []corev1.Container{{Name: "vllm", Image: "vllm:latest"}}},
			Status: corev1.PodStatus{
				Phase:                 corev1.PodRunning,
				ContainerStatuses:     []corev1.ContainerStatus{{Name: "vllm", ContainerID: "containerd://" + cidVLLM, Image: "vllm:latest"}},
				InitContainerStatuses: []corev1.ContainerStatus{{Name: "fetch-model", ContainerID: "cri-o://" + cidInit}},
				Conditions: []corev1.PodCondition{
					{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
					{Type: corev1.PodReady, Status: corev1.ConditionTrue, Message: "dropped"},
				},
			},
		},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "kube-system", Name: "etcd-gpu-0", UID: "uid-mirror",
				Annotations: map[string]string{MirrorAnnotation: staticID, "other": "x"},
			},
			Spec: corev1.PodSpec{NodeName: "gpu-0"},
		},
	}
}

func replicaSets() []runtime.Object {
	yes := true
	rs := func(name string, owner *metav1.OwnerReference) *metav1.PartialObjectMetadata {
		m := &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ReplicaSet"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name},
		}
		if owner != nil {
			m.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		return m
	}
	return []runtime.Object{
		rs("llm-abc", &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "llm", Controller: &yes}),
		rs("orphan", nil),
		rs("rolled", &metav1.OwnerReference{APIVersion: "argoproj.io/v1alpha1", Kind: "Rollout", Name: "r", Controller: &yes}),
	}
}

// started runs an index over fake clients; withRS adds ReplicaSets.
func started(t *testing.T, withRS bool) *Index {
	t.Helper()
	cs := fake.NewClientset(pods()...)
	podsLW := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Pods("").List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cs.CoreV1().Pods("").Watch(ctx, o)
		},
	}, cs)
	var rsLW cache.ListerWatcher
	if withRS {
		scheme := metafake.NewTestScheme()
		if err := metav1.AddMetaToScheme(scheme); err != nil {
			t.Fatal(err)
		}
		scheme.AddKnownTypeWithName(appsv1.SchemeGroupVersion.WithKind("ReplicaSet"), &metav1.PartialObjectMetadata{})
		scheme.AddKnownTypeWithName(appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"), &metav1.PartialObjectMetadataList{})
		rsLW = ReplicaSetListWatch(metafake.NewSimpleMetadataClient(scheme, replicaSets()...))
	}
	x, err := New(podsLW, rsLW, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	x.Start(ctx)
	syncCtx, cancelSync := context.WithTimeout(ctx, time.Minute)
	defer cancelSync()
	if err := x.WaitForSync(syncCtx); err != nil {
		t.Fatal(err)
	}
	return x
}

func TestResolve(t *testing.T) {
	x := started(t, false)
	tests := []struct {
		name, uid, cid string
		want           gpu.PodRef
		wantOK         bool
	}{
		{"container", "uid-llm-0", cidVLLM, gpu.PodRef{UID: "uid-llm-0", Namespace: "demo", Name: "llm-0", Container: "vllm"}, true},
		{"init container", "uid-llm-0", cidInit, gpu.PodRef{UID: "uid-llm-0", Namespace: "demo", Name: "llm-0", Container: "fetch-model"}, true},
		{"sandbox or status not written yet", "uid-llm-0", "f00d", gpu.PodRef{UID: "uid-llm-0", Namespace: "demo", Name: "llm-0"}, true},
		{"pod-level process", "uid-llm-0", "", gpu.PodRef{UID: "uid-llm-0", Namespace: "demo", Name: "llm-0"}, true},
		{"static pod by its cgroup UID", staticID, "", gpu.PodRef{UID: staticID, Namespace: "kube-system", Name: "etcd-gpu-0"}, true},
		{"unknown pod", "uid-nope", cidVLLM, gpu.PodRef{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := x.Resolve(tt.uid, tt.cid)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("Resolve(%s, %s) = %+v, %v; want %+v, %v", tt.uid, tt.cid, got, ok, tt.want, tt.wantOK)
			}
		})
	}
	if _, ok := x.DeploymentOf("demo", "llm-abc"); ok {
		t.Errorf("DeploymentOf answered without ReplicaSets enabled")
	}
}

func TestPodsAreTrimmed(t *testing.T) {
	x := started(t, false)
	var llm *corev1.Pod
	for _, p := range x.Pods() {
		if p.UID == types.UID("uid-llm-0") {
			llm = p
		}
	}
	if llm == nil {
		t.Fatalf("pod missing from %d pods", len(x.Pods()))
	}
	if llm.ManagedFields != nil || llm.Spec.Containers[0].Image != "" || llm.Status.ContainerStatuses[0].Image != "" {
		t.Errorf("pod not trimmed: %+v", llm)
	}
	if len(llm.Status.Conditions) != 1 || llm.Status.Conditions[0].Type != corev1.PodReady || llm.Status.Conditions[0].Message != "" {
		t.Errorf("conditions = %+v, want Ready only", llm.Status.Conditions)
	}
	if len(llm.OwnerReferences) != 1 || llm.Spec.NodeName != "gpu-0" || llm.Status.Phase != corev1.PodRunning {
		t.Errorf("fields the simulator needs were dropped: %+v", llm)
	}
}

func TestDeploymentOf(t *testing.T) {
	x := started(t, true)
	tests := []struct {
		rs     string
		want   string
		wantOK bool
	}{
		{"llm-abc", "llm", true},
		{"orphan", "", false},
		{"rolled", "", false},
		{"missing", "", false},
	}
	for _, tt := range tests {
		if got, ok := x.DeploymentOf("demo", tt.rs); got != tt.want || ok != tt.wantOK {
			t.Errorf("DeploymentOf(demo, %s) = %q, %v; want %q, %v", tt.rs, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestNeedsPods(t *testing.T) {
	if _, err := New(nil, nil, Options{}); err == nil {
		t.Error("an index without a pod source was accepted")
	}
}

// TestPodListWatchREST drives PodListWatch against a stand-in API server:
// its core/v1-only scheme must decode lists and watch events, and it must
// send the node's field selector.
func TestPodListWatchREST(t *testing.T) {
	selectors := make(chan string, 10)
	const (
		podA = `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"demo","uid":"uid-a","resourceVersion":"1"},"spec":{"nodeName":"gpu-0"}}`
		podB = `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"b","namespace":"demo","uid":"uid-b","resourceVersion":"2"},"spec":{"nodeName":"gpu-0"}}`
		// The end of a streamed initial list, as the API server marks it.
		bookmark = `{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"1","annotations":{"k8s.io/initial-events-end":"true"}}}`
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/pods" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		selectors <- q.Get("fieldSelector")
		w.Header().Set("Content-Type", "application/json")
		if q.Get("watch") != "true" {
			fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[`+podA+`]}`)
			return
		}
		// Serve both a streamed initial list (what the reflector asks a
		// current API server for) and a plain watch after a list.
		if q.Get("sendInitialEvents") == "true" {
			fmt.Fprint(w, `{"type":"ADDED","object":`+podA+"}\n")
			fmt.Fprint(w, `{"type":"BOOKMARK","object":`+bookmark+"}\n")
		}
		fmt.Fprint(w, `{"type":"ADDED","object":`+podB+"}\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()

	lw, err := PodListWatch(&rest.Config{Host: srv.URL}, "gpu-0")
	if err != nil {
		t.Fatal(err)
	}
	x, err := New(lw, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x.Start(ctx)
	if err := x.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-selectors; got != "spec.nodeName=gpu-0" {
		t.Errorf("field selector %q, want spec.nodeName=gpu-0", got)
	}
	if ref, ok := x.Resolve("uid-a", ""); !ok || ref.Name != "a" {
		t.Errorf("listed pod: %+v %v", ref, ok)
	}
	// The watched pod arrives asynchronously; wait for it (the test's own
	// deadline bounds the wait).
	for {
		if ref, ok := x.Resolve("uid-b", ""); ok {
			if ref.Name != "b" {
				t.Errorf("watched pod resolved to %+v", ref)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStripRuntime(t *testing.T) {
	for in, want := range map[string]string{"containerd://abc": "abc", "cri-o://abc": "abc", "docker://abc": "abc", "abc": "abc", "": ""} {
		if got := StripRuntime(in); got != want {
			t.Errorf("StripRuntime(%q) = %q, want %q", in, got, want)
		}
	}
}
