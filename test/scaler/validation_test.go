package scaler

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/spillway-dev/spillway/test/framework"
)

const expectedErrorAnnotation = "spillway.dev/expected-error"

// TestInvalidScalersAreRejected creates every document of the invalid
// fixtures through the real API server (schema, defaults and CEL rules of
// config/crd) and expects the annotated substring in the rejection. A valid
// scaler in the same namespace is accepted, so the rejections are the
// CRD's doing and not an environment problem.
func TestInvalidScalersAreRejected(t *testing.T) {
	requireEnv(t)
	ns := framework.Namespace(t, cluster)
	valid := scalerFor(ns, "valid", "qwen-chat-predictor", 1, 3)
	create(t, valid)

	docs := framework.ReadObjects(t, filepath.Join(repoRoot, "pkg", "apis", "spillway", "v1alpha1", "testdata", "invalid-inferencescalers.yaml"))
	if len(docs) < 10 {
		t.Fatalf("only %d invalid fixtures", len(docs))
	}
	for _, u := range docs {
		want := u.GetAnnotations()[expectedErrorAnnotation]
		t.Run(u.GetName(), func(t *testing.T) {
			if want == "" {
				t.Fatalf("fixture %s has no %s annotation", u.GetName(), expectedErrorAnnotation)
			}
			u.SetNamespace(ns)
			err := kc.Create(context.Background(), u)
			switch {
			case err == nil:
				t.Fatalf("the API server accepted it; want a rejection containing %q", want)
			case !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err):
				t.Fatalf("error %v is not a validation error; want one containing %q", err, want)
			case !strings.Contains(err.Error(), want):
				t.Fatalf("rejection does not contain %q:\n%v", want, err)
			}
		})
	}
}
