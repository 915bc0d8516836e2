package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ResourcePolicySpec is filled in by the ResourcePolicy work (issue 5).
type ResourcePolicySpec struct{}

// ResourcePolicyStatus is filled in by the ResourcePolicy work (issue 5).
type ResourcePolicyStatus struct{}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status

// ResourcePolicy places selected pods on ordered node units.
type ResourcePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ResourcePolicySpec   `json:"spec,omitempty"`
	Status ResourcePolicyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ResourcePolicyList is a list of ResourcePolicy.
type ResourcePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ResourcePolicy `json:"items"`
}
