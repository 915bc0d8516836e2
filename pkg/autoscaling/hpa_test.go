package autoscaling

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

func loadScaler(t *testing.T, name string) *v1alpha1.InferenceScaler {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "scalers", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := &v1alpha1.InferenceScaler{}
	if err := yaml.UnmarshalStrict(data, s); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

// manifest renders an HPA the way `kubectl get -o yaml` shows what a client
// wrote: no status, no server-set metadata.
func manifest(t *testing.T, hpa *autoscalingv2.HorizontalPodAutoscaler) []byte {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(hpa)
	if err != nil {
		t.Fatal(err)
	}
	delete(u, "status")
	out, err := yaml.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDesiredHPAGolden(t *testing.T) {
	podSelector := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "isvc.qwen-chat-predictor"}}
	tests := []struct {
		golden string
		scaler string
		in     Inputs
	}{
		{"arena-inferenceservice", "arena-inferenceservice", Inputs{}},
		{"arena-deployment", "arena-deployment", Inputs{}},
		{"external-pod-selector", "external-pod-selector", Inputs{PodSelector: podSelector}},
		// An explicit selector wins over the pod selector.
		{"external-behavior", "external-behavior", Inputs{PodSelector: podSelector}},
		{"tidal-quiet", "tidal", Inputs{}},
		{"tidal-window-open", "tidal", Inputs{ScheduleFloor: 3}},
		{"tidal-fallback", "tidal", Inputs{FallbackActive: true}},
		{"tidal-window-and-fallback", "tidal", Inputs{ScheduleFloor: 3, FallbackActive: true}},
		{"tidal-paused", "tidal", Inputs{ScheduleFloor: 3, FallbackActive: true, PausedReplicas: ptr.To[int32](2)}},
		{"tidal-paused-above-max", "tidal", Inputs{PausedReplicas: ptr.To[int32](7)}},
		{"queue-and-utilization", "queue-and-utilization", Inputs{PodSelector: podSelector}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			s := loadScaler(t, tt.scaler)
			before := s.DeepCopy()
			hpa, err := DesiredHPA(s, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got := manifest(t, hpa)
			path := filepath.Join("testdata", "golden", tt.golden+".yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("HPA differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
			}
			if s.Spec.Behavior != nil && hpa.Spec.Behavior == s.Spec.Behavior {
				t.Error("the HPA shares the scaler's behavior instead of a copy")
			}
			if !equalJSON(t, before, s) {
				t.Error("DesiredHPA modified its input")
			}
		})
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// TestBehaviorPassedThrough checks field by field what the golden file shows,
// so a regenerated golden cannot silently drop the behavior.
func TestBehaviorPassedThrough(t *testing.T) {
	s := loadScaler(t, "external-behavior")
	hpa, err := DesiredHPA(s, Inputs{})
	if err != nil {
		t.Fatal(err)
	}
	if !equalJSON(t, s.Spec.Behavior, hpa.Spec.Behavior) {
		t.Errorf("behavior changed:\n%s", manifest(t, hpa))
	}
	if hpa.Spec.Behavior == nil || hpa.Spec.Behavior.ScaleDown.Tolerance.String() != "50m" {
		t.Errorf("tolerance lost: %+v", hpa.Spec.Behavior)
	}
}

// Two metrics become two HPA metrics in spec order, defaults filled in; the
// preset becomes the behavior, checked field by field.
func TestSeveralMetricsAndPreset(t *testing.T) {
	s := loadScaler(t, "queue-and-utilization")
	hpa, err := DesiredHPA(s, Inputs{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	m := hpa.Spec.Metrics
	if len(m) != 2 || m[0].Type != autoscalingv2.ExternalMetricSourceType || m[0].External.Metric.Name != "vllm:num_requests_waiting" ||
		m[0].External.Target.AverageValue.String() != "5" || m[0].External.Metric.Selector.MatchLabels["app"] != "x" ||
		m[1].Type != autoscalingv2.PodsMetricSourceType || m[1].Pods.Metric.Name != v1alpha1.DefaultMetricName || m[1].Pods.Target.AverageValue.String() != "50" {
		t.Errorf("metrics:\n%s", manifest(t, hpa))
	}
	b := hpa.Spec.Behavior
	if b == nil || *b.ScaleUp.StabilizationWindowSeconds != 0 || len(b.ScaleUp.Policies) != 2 ||
		*b.ScaleDown.StabilizationWindowSeconds != 300 || len(b.ScaleDown.Policies) != 1 ||
		b.ScaleDown.Policies[0] != (autoscalingv2.HPAScalingPolicy{Type: autoscalingv2.PodsScalingPolicy, Value: 1, PeriodSeconds: 60}) {
		t.Errorf("behavior:\n%s", manifest(t, hpa))
	}
	// Without metric and metrics: the arena default.
	def := Metrics(&v1alpha1.InferenceScalerSpec{})
	if len(def) != 1 || def[0].Name != v1alpha1.DefaultMetricName || def[0].Type != v1alpha1.PodsMetric || def[0].Target.String() != "50" {
		t.Errorf("default metrics = %+v", def)
	}
}

func TestDesiredHPARejects(t *testing.T) {
	base := func() *v1alpha1.InferenceScaler {
		return &v1alpha1.InferenceScaler{
			ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "ns"},
			Spec: v1alpha1.InferenceScalerSpec{
				ScaleTargetRef: v1alpha1.ScaleTargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "x"},
				MaxReplicas:    3,
			},
		}
	}
	zero := resource.MustParse("0")
	tests := []struct {
		name   string
		mutate func(*v1alpha1.InferenceScaler)
		in     Inputs
		want   string
		is     error
	}{
		{"external without any selector", func(s *v1alpha1.InferenceScaler) {
			s.Spec.Metric = &v1alpha1.ScalerMetric{Type: v1alpha1.ExternalMetric}
		}, Inputs{}, "pod selector is unknown", ErrPodSelectorUnknown},
		{"statefulset", func(s *v1alpha1.InferenceScaler) { s.Spec.ScaleTargetRef.Kind = "StatefulSet" }, Inputs{}, "is not an apps/v1 Deployment", nil},
		{"zero target", func(s *v1alpha1.InferenceScaler) { s.Spec.Metric = &v1alpha1.ScalerMetric{Target: &zero} }, Inputs{}, "metric.target 0 is not above zero", nil},
		{"selector with pods", func(s *v1alpha1.InferenceScaler) {
			s.Spec.Metric = &v1alpha1.ScalerMetric{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}}
		}, Inputs{}, "only allowed with type External", nil},
		{"object metric", func(s *v1alpha1.InferenceScaler) { s.Spec.Metric = &v1alpha1.ScalerMetric{Type: "Object"} }, Inputs{}, `metric.type "Object"`, nil},
		{"min above max", func(s *v1alpha1.InferenceScaler) { s.Spec.MinReplicas = ptr.To[int32](4) }, Inputs{}, "minReplicas 4 is above maxReplicas 3", nil},
		{"no max", func(s *v1alpha1.InferenceScaler) { s.Spec.MaxReplicas = 0 }, Inputs{}, "maxReplicas 0 is below 1", nil},
		{"metric and metrics", func(s *v1alpha1.InferenceScaler) {
			s.Spec.Metric = &v1alpha1.ScalerMetric{}
			s.Spec.Metrics = []v1alpha1.ScalerMetric{{Name: "q"}}
		}, Inputs{}, "set metric or metrics, not both", nil},
		{"a bad second metric", func(s *v1alpha1.InferenceScaler) {
			s.Spec.Metrics = []v1alpha1.ScalerMetric{{Name: "q"}, {Name: "r", Target: &zero}}
		}, Inputs{}, "metrics[1]: metric.target 0 is not above zero", nil},
		{"preset and behavior", func(s *v1alpha1.InferenceScaler) {
			s.Spec.BehaviorPreset = v1alpha1.BehaviorLLMServing
			s.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{}
		}, Inputs{}, "set behavior or behaviorPreset, not both", nil},
		{"unknown preset", func(s *v1alpha1.InferenceScaler) { s.Spec.BehaviorPreset = "Fast" }, Inputs{}, `behaviorPreset "Fast"`, nil},
		{"all problems at once", func(s *v1alpha1.InferenceScaler) {
			s.Spec.ScaleTargetRef.Kind = "Job"
			s.Spec.Metric = &v1alpha1.ScalerMetric{Target: &zero}
		}, Inputs{}, "is not an apps/v1 Deployment", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.mutate(s)
			hpa, err := DesiredHPA(s, tt.in)
			if err == nil {
				t.Fatalf("accepted: %s", manifest(t, hpa))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q lacks %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestFloor(t *testing.T) {
	fb := &v1alpha1.Fallback{FailureThreshold: 3, Replicas: 4}
	tests := []struct {
		name     string
		min      *int32
		max      int32
		fb       *v1alpha1.Fallback
		schedule int32
		fallback bool
		want     int32
	}{
		{"spec min", ptr.To[int32](2), 5, fb, 0, false, 2},
		{"unset min is 1", nil, 5, fb, 0, false, 1},
		{"schedule above min", ptr.To[int32](2), 5, fb, 3, false, 3},
		{"schedule below min", ptr.To[int32](2), 5, fb, 1, false, 2},
		{"fallback above schedule", ptr.To[int32](1), 5, fb, 3, true, 4},
		{"schedule above fallback", ptr.To[int32](1), 8, fb, 6, true, 6},
		{"fallback active but not configured", ptr.To[int32](1), 5, nil, 0, true, 1},
		{"capped at max", ptr.To[int32](1), 3, fb, 7, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &v1alpha1.InferenceScalerSpec{MinReplicas: tt.min, MaxReplicas: tt.max, Fallback: tt.fb}
			if got := Floor(spec, tt.schedule, tt.fallback); got != tt.want {
				t.Errorf("Floor = %d, want %d", got, tt.want)
			}
		})
	}
}
