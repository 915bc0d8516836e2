// Package v1alpha1 holds the spillway.dev/v1alpha1 API: ResourcePolicy and
// InferenceScaler. It imports only apimachinery and k8s.io/api.
//
// +kubebuilder:object:generate=true
// +groupName=spillway.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every type in this package.
var GroupVersion = schema.GroupVersion{Group: "spillway.dev", Version: "v1alpha1"}

// AddToScheme registers the package's types with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&ResourcePolicy{}, &ResourcePolicyList{},
		&InferenceScaler{}, &InferenceScalerList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
