// Package scaler tests InferenceScaler against a real control plane: the
// real kube-apiserver validates the CRD, the real HPA controller in
// kube-controller-manager acts on the HPA that spillway-controller (run as
// its binary, bin/spillway-controller) materializes, and the fallback test
// brings up the real metrics pipeline (sim exporter, Prometheus, adapter).
//
// Build the binaries first: make build (or go build -o bin/... for the
// controller, the exporter and the adapter).
package scaler

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spillway-dev/spillway/internal/localcluster"
	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/test/framework"
)

const (
	repoRoot = "../.."
	binDir   = "../../bin"
	// gpuPool is the one static pool every test shares: 8 GPUs hold the
	// 3 replicas of one test plus pods of an earlier test whose namespace
	// is still being deleted.
	gpuPool = "scaler-gpus"
)

var (
	cluster *localcluster.Cluster
	kc      client.Client
	// setupErr is reported by every test: framework.Main's hook cannot fail
	// the run itself.
	setupErr error
)

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, localcluster.Options{NoKarpenter: true}, func(c *localcluster.Cluster) {
		cluster = c
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if setupErr = setup(ctx, c); setupErr != nil {
			fmt.Fprintln(os.Stderr, "setting up the scaler test environment:", setupErr)
		}
	}))
}

// setup adds the GPU pool, installs spillway's CRDs and a stand-in KServe
// InferenceService CRD, and starts spillway-controller. The KServe CRD must
// be served before the controller starts: the controller watches
// InferenceServices only when their kind is known at startup.
func setup(ctx context.Context, c *localcluster.Cluster) error {
	if _, err := c.AddStaticGPUNodes(ctx, gpuPool, 2, localcluster.NodeShape{CPU: "32", Memory: "128Gi", GPUs: 4}); err != nil {
		return err
	}
	if err := framework.InstallCRDs(ctx, c, repoRoot); err != nil {
		return err
	}
	crd, err := os.ReadFile("testdata/inferenceservice-crd.yaml")
	if err != nil {
		return err
	}
	if err := c.Apply(ctx, crd); err != nil {
		return err
	}
	for _, gv := range []string{"spillway.dev/v1alpha1", "serving.kserve.io/v1beta1"} {
		if err := waitServed(ctx, c, gv); err != nil {
			return err
		}
	}
	scheme, err := kubescheme.New()
	if err != nil {
		return err
	}
	if kc, err = client.New(c.RESTConfig(), client.Options{Scheme: scheme}); err != nil {
		return err
	}
	_, err = framework.StartController(ctx, c, binDir, nil)
	return err
}

func waitServed(ctx context.Context, c *localcluster.Cluster, groupVersion string) error {
	return localcluster.Poll(ctx, 300*time.Millisecond, groupVersion+" to be served", func(context.Context) (bool, error) {
		_, err := c.Client().Discovery().ServerResourcesForGroupVersion(groupVersion)
		return err == nil, err
	})
}

func requireEnv(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("the test environment did not start: %v", setupErr)
	}
}

// deployment creates a GPU predictor Deployment whose pods carry app=<app>.
func deployment(t *testing.T, ns, name, app string, replicas int32) {
	t.Helper()
	d := framework.GPUDeployment(ns, name, app, replicas, "4", "12Gi")
	if err := kc.Create(context.Background(), d); err != nil {
		t.Fatalf("creating Deployment %s/%s: %v", ns, name, err)
	}
}

// scalerFor is an InferenceScaler of a Deployment with the default metric.
func scalerFor(ns, name, target string, minReplicas, maxReplicas int32) *v1alpha1.InferenceScaler {
	return &v1alpha1.InferenceScaler{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.InferenceScalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetRef{APIVersion: v1alpha1.DeploymentAPIVersion, Kind: v1alpha1.DeploymentKind, Name: target},
			MinReplicas:    ptr.To(minReplicas),
			MaxReplicas:    maxReplicas,
		},
	}
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := kc.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

func getScaler(ctx context.Context, ns, name string) (*v1alpha1.InferenceScaler, error) {
	s := &v1alpha1.InferenceScaler{}
	return s, kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, s)
}

func getHPA(ctx context.Context, ns, name string) (*autoscalingv2.HorizontalPodAutoscaler, error) {
	h := &autoscalingv2.HorizontalPodAutoscaler{}
	return h, kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, h)
}

// condition renders one status condition for failure messages.
func condition(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return typ + "=<absent>"
	}
	return fmt.Sprintf("%s=%s/%s (%q)", typ, c.Status, c.Reason, c.Message)
}

func hpaCondition(h *autoscalingv2.HorizontalPodAutoscaler, typ autoscalingv2.HorizontalPodAutoscalerConditionType) *autoscalingv2.HorizontalPodAutoscalerCondition {
	for i := range h.Status.Conditions {
		if h.Status.Conditions[i].Type == typ {
			return &h.Status.Conditions[i]
		}
	}
	return nil
}

// waitReady waits until the controller has observed the scaler's current
// generation and set Ready to the given status and reason.
func waitReady(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string) *v1alpha1.InferenceScaler {
	t.Helper()
	var got *v1alpha1.InferenceScaler
	framework.Eventually(t, time.Minute, 300*time.Millisecond, fmt.Sprintf("InferenceScaler %s Ready=%s/%s", name, status, reason), func(ctx context.Context) (bool, string) {
		s, err := getScaler(ctx, ns, name)
		if err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady)
		ok := c != nil && s.Status.ObservedGeneration == s.Generation && c.ObservedGeneration == s.Generation &&
			c.Status == status && c.Reason == reason
		got = s
		return ok, fmt.Sprintf("generation %d observed %d, %s", s.Generation, s.Status.ObservedGeneration, condition(s.Status.Conditions, v1alpha1.ConditionReady))
	})
	return got
}

// waitEvent waits for an event about the InferenceScaler with the reason,
// and returns its note. spillway-controller writes events.k8s.io/v1 events.
func waitEvent(t *testing.T, ns, scaler, eventType, reason string) string {
	t.Helper()
	var note string
	framework.Eventually(t, time.Minute, 500*time.Millisecond, fmt.Sprintf("a %s event %s about InferenceScaler %s", eventType, reason, scaler), func(ctx context.Context) (bool, string) {
		list, err := cluster.Client().EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Kind != "InferenceScaler" || e.Regarding.Name != scaler {
				continue
			}
			seen = append(seen, e.Type+"/"+e.Reason)
			if e.Type == eventType && e.Reason == reason {
				note = e.Note
				return true, ""
			}
		}
		return false, "events about the scaler: " + strings.Join(seen, ", ")
	})
	return note
}

// waitHPAGone waits until the HPA does not exist.
func waitHPAGone(t *testing.T, ns, name string) {
	t.Helper()
	framework.Eventually(t, time.Minute, 300*time.Millisecond, "HPA "+name+" deleted", func(ctx context.Context) (bool, string) {
		h, err := getHPA(ctx, ns, name)
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, fmt.Sprintf("still there (deletionTimestamp %v, owners %v)", h.DeletionTimestamp, h.OwnerReferences)
	})
}

// inferenceService creates a stand-in KServe InferenceService; nothing
// reconciles it, the controller only reads its annotations.
func inferenceService(t *testing.T, ns, name string, annotations map[string]string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(v1alpha1.InferenceServiceAPIVersion)
	u.SetKind(v1alpha1.InferenceServiceKind)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetAnnotations(annotations)
	if err := unstructured.SetNestedField(u.Object, map[string]any{
		"predictor": map[string]any{"model": map[string]any{"modelFormat": map[string]any{"name": "vllm"}}},
	}, "spec"); err != nil {
		t.Fatal(err)
	}
	create(t, u)
}

// deploymentReplicas is spec.replicas of a Deployment (what the HPA sets).
func deploymentReplicas(ctx context.Context, ns, name string) (int32, error) {
	d, err := cluster.Client().AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	return ptr.Deref(d.Spec.Replicas, 1), nil
}
