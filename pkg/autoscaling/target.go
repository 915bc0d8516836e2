// Package autoscaling turns an InferenceScaler into the autoscaling/v2 HPA
// that realizes it: the target, the floor (spec, schedule windows, fallback),
// the metric and the behavior. Everything here is a pure function of its
// inputs (the clock is a parameter), so schedules and fallback are tested
// without a cluster.
package autoscaling

import (
	"fmt"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// KServe facts the scaler relies on. In raw deployment mode KServe names the
// predictor Deployment "<isvc>-predictor" and, unless the autoscaler class is
// "external", creates its own HPA for it, which would fight ours.
const (
	KServePredictorSuffix           = "-predictor"
	KServeAutoscalerClassAnnotation = "serving.kserve.io/autoscalerClass"
	KServeAutoscalerClassExternal   = "external"
)

// TargetDeployment is the name of the Deployment the HPA scales.
func TargetDeployment(ref v1alpha1.ScaleTargetRef) (string, error) {
	if ref.Name == "" {
		return "", fmt.Errorf("scaleTargetRef.name is empty")
	}
	switch {
	case ref.APIVersion == v1alpha1.DeploymentAPIVersion && ref.Kind == v1alpha1.DeploymentKind:
		return ref.Name, nil
	case ref.APIVersion == v1alpha1.InferenceServiceAPIVersion && ref.Kind == v1alpha1.InferenceServiceKind:
		return ref.Name + KServePredictorSuffix, nil
	default:
		return "", fmt.Errorf("scaleTargetRef %s %s is not an %s %s or a %s %s",
			ref.APIVersion, ref.Kind,
			v1alpha1.DeploymentAPIVersion, v1alpha1.DeploymentKind,
			v1alpha1.InferenceServiceAPIVersion, v1alpha1.InferenceServiceKind)
	}
}

// IsInferenceService reports whether the target is a KServe InferenceService.
func IsInferenceService(ref v1alpha1.ScaleTargetRef) bool {
	return ref.APIVersion == v1alpha1.InferenceServiceAPIVersion && ref.Kind == v1alpha1.InferenceServiceKind
}
