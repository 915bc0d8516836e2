// Package kubescheme builds the runtime scheme of every type spillway's
// controllers read or write: the built-in Kubernetes kinds and spillway.dev.
package kubescheme

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// New returns a fresh scheme; each caller gets its own, so nothing is shared
// between managers or tests.
func New() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(s), v1alpha1.AddToScheme(s)); err != nil {
		return nil, fmt.Errorf("building the scheme: %w", err)
	}
	return s, nil
}
