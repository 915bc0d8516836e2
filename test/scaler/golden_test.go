package scaler

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/autoscaling"
	"github.com/spillway-dev/spillway/pkg/controller/inferencescaler"
	"github.com/spillway-dev/spillway/test/framework"
)

// The unit tests' inputs and golden HPAs: the HPA the API server stores must
// be exactly what pkg/autoscaling promised, after defaulting and pruning.
var (
	scalerDir = filepath.Join(repoRoot, "pkg", "autoscaling", "testdata", "scalers")
	goldenDir = filepath.Join(repoRoot, "pkg", "autoscaling", "testdata", "golden")
)

func TestHPAMatchesGolden(t *testing.T) {
	requireEnv(t)
	tests := []struct {
		name string // the scaler input and the golden file
		// podsApp, when set, creates the target Deployment (0 replicas)
		// with pods labelled app=<podsApp>: its selector is the default
		// selector of an External metric.
		podsApp string
		// isvc, when set, creates this InferenceService with
		// serving.kserve.io/autoscalerClass: external.
		isvc string
	}{
		// The seed's arena command as an InferenceScaler, metric left to
		// the CRD's defaults.
		{name: "arena-inferenceservice", isvc: "qwen-chat"},
		{name: "arena-deployment"},
		{name: "external-pod-selector", podsApp: "isvc.qwen-chat-predictor"},
		// Behavior (policies, stabilization, tolerance) passes through.
		{name: "external-behavior", isvc: "llama"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := framework.Namespace(t, cluster)
			s := loadScaler(t, tt.name)
			goldenNS, goldenUID := s.Namespace, s.UID
			s.Namespace, s.UID = ns, ""
			target, err := autoscaling.TargetDeployment(s.Spec.ScaleTargetRef)
			if err != nil {
				t.Fatal(err)
			}
			if tt.podsApp != "" {
				deployment(t, ns, target, tt.podsApp, 0)
			}
			if tt.isvc != "" {
				inferenceService(t, ns, tt.isvc, map[string]string{
					autoscaling.KServeAutoscalerClassAnnotation: autoscaling.KServeAutoscalerClassExternal,
				})
			}
			create(t, s)
			s = waitReady(t, ns, s.Name, metav1.ConditionTrue, v1alpha1.ReasonHPAApplied)

			want, err := os.ReadFile(filepath.Join(goldenDir, tt.name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			framework.Eventually(t, 30*time.Second, 500*time.Millisecond, "the stored HPA to equal "+tt.name+".yaml", func(ctx context.Context) (bool, string) {
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(autoscalingv2.SchemeGroupVersion.WithKind("HorizontalPodAutoscaler"))
				if err := kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: s.Name}, u); err != nil {
					return false, err.Error()
				}
				if msg := checkManagers(u); msg != "" {
					return false, msg
				}
				got, err := manifest(u, ns, s.UID, goldenNS, goldenUID)
				if err != nil {
					return false, err.Error()
				}
				if !bytes.Equal(got, want) {
					return false, fmt.Sprintf("stored HPA differs from the golden file:\n--- stored\n%s\n--- golden\n%s", got, want)
				}
				return true, ""
			})
		})
	}
}

func loadScaler(t *testing.T, name string) *v1alpha1.InferenceScaler {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(scalerDir, name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := &v1alpha1.InferenceScaler{}
	if err := yaml.UnmarshalStrict(data, s); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

// checkManagers: spillway-controller owns the spec through server-side
// apply, and nobody but the HPA controller (status only) writes the HPA.
func checkManagers(u *unstructured.Unstructured) string {
	applied := false
	var others []string
	for _, mf := range u.GetManagedFields() {
		switch {
		case mf.Manager == inferencescaler.FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.Subresource == "":
			applied = true
		case mf.Subresource == "status":
		default:
			others = append(others, fmt.Sprintf("%s/%s/%q", mf.Manager, mf.Operation, mf.Subresource))
		}
	}
	switch {
	case !applied:
		return fmt.Sprintf("no managedFields entry of manager %s with operation Apply; entries: %v", inferencescaler.FieldManager, others)
	case len(others) > 0:
		return fmt.Sprintf("other managers write the HPA outside its status: %s", strings.Join(others, ", "))
	}
	return ""
}

// manifest strips what the server sets and puts the golden file's
// namespace and owner UID in place of this test's, after checking them.
func manifest(u *unstructured.Unstructured, ns string, scalerUID types.UID, goldenNS string, goldenUID types.UID) ([]byte, error) {
	u = u.DeepCopy()
	if u.GetNamespace() != ns {
		return nil, fmt.Errorf("HPA namespace %q, want %q", u.GetNamespace(), ns)
	}
	refs := u.GetOwnerReferences()
	matched := false
	for i := range refs {
		if refs[i].UID == scalerUID {
			refs[i].UID = goldenUID
			matched = true
		}
	}
	if !matched {
		return nil, fmt.Errorf("no owner reference with the InferenceScaler's UID %s: %v", scalerUID, refs)
	}
	u.SetOwnerReferences(refs)
	u.SetNamespace(goldenNS)
	unstructured.RemoveNestedField(u.Object, "status")
	for _, f := range []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	return yaml.Marshal(u.Object)
}
