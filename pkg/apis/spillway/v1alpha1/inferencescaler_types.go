package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// InferenceScalerSpec is filled in by the InferenceScaler work (issue 6).
type InferenceScalerSpec struct{}

// InferenceScalerStatus is filled in by the InferenceScaler work (issue 6).
type InferenceScalerStatus struct{}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status

// InferenceScaler scales a predictor through an HPA it owns.
type InferenceScaler struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   InferenceScalerSpec   `json:"spec,omitempty"`
	Status InferenceScalerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// InferenceScalerList is a list of InferenceScaler.
type InferenceScalerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []InferenceScaler `json:"items"`
}
