package demo

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func TestCompressedWindow(t *testing.T) {
	tests := []struct {
		window, day, want time.Duration
	}{
		{5 * time.Minute, 8 * time.Minute, 2 * time.Second}, // 1.67 s, rounded up
		{5 * time.Minute, 6 * time.Minute, 2 * time.Second}, // 1.25 s
		{5 * time.Minute, 4 * time.Minute, time.Second},     // 0.83 s
		{5 * time.Minute, time.Minute, time.Second},         // never under 1 s
		{5 * time.Minute, 24 * time.Hour, 5 * time.Minute},  // an uncompressed day
	}
	for _, tt := range tests {
		if got := CompressedWindow(tt.window, tt.day); got != tt.want {
			t.Errorf("CompressedWindow(%s, %s) = %s, want %s", tt.window, tt.day, got, tt.want)
		}
	}
}

// decodeObjects splits a multi-document manifest into objects by kind.
func decodeObjects(t *testing.T, manifest string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("decoding the manifest: %v\n%s", err, manifest)
		}
		if obj != nil {
			out[obj["kind"].(string)] = obj
		}
	}
}

// TestKEDASeedObjectsMirrorTheInferenceScaler: the KEDA run's ScaledObject
// asks for what the InferenceScaler does (replicas, behavior, an HPA of the
// same name), and the rest of the seed is unchanged.
func TestKEDASeedObjectsMirrorTheInferenceScaler(t *testing.T) {
	for _, withPolicy := range []bool{false, true} {
		spill := decodeObjects(t, seedObjects("ns", withPolicy, false, 3*time.Second))
		keda := decodeObjects(t, kedaSeedObjects("ns", withPolicy, 3*time.Second, "http://127.0.0.1:9090", 2*time.Second))
		is, so := spill["InferenceScaler"], keda["ScaledObject"]
		if is == nil || so == nil || keda["InferenceScaler"] != nil {
			t.Fatalf("policy %t: InferenceScaler %v, ScaledObject %v, KEDA's InferenceScaler %v", withPolicy, is != nil, so != nil, keda["InferenceScaler"] != nil)
		}
		isSpec, soSpec := is["spec"].(map[string]any), so["spec"].(map[string]any)
		hpa := soSpec["advanced"].(map[string]any)["horizontalPodAutoscalerConfig"].(map[string]any)
		if !reflect.DeepEqual(isSpec["behavior"], hpa["behavior"]) {
			t.Errorf("behavior %v, want the InferenceScaler's %v", hpa["behavior"], isSpec["behavior"])
		}
		if hpa["name"] != ScalerName || soSpec["minReplicaCount"] != isSpec["minReplicas"] || soSpec["maxReplicaCount"] != isSpec["maxReplicas"] ||
			soSpec["pollingInterval"] != float64(2) {
			t.Errorf("ScaledObject spec %v does not mirror %v", soSpec, isSpec)
		}
		trigger := soSpec["triggers"].([]any)[0].(map[string]any)["metadata"].(map[string]any)
		want := `sum(DCGM_CUSTOM_PROCESS_SM_UTIL{job="spillway-gpu-exporter",namespace="ns",pod=~"qwen-chat-predictor-[a-z0-9]+-[a-z0-9]+"})`
		if trigger["query"] != want || trigger["threshold"] != "50" {
			t.Errorf("trigger %v, want query %s and threshold 50", trigger, want)
		}
		for _, kind := range []string{"Namespace", "Deployment", "ResourcePolicy"} {
			if !reflect.DeepEqual(spill[kind], keda[kind]) {
				t.Errorf("policy %t: %s differs: %v vs %v", withPolicy, kind, spill[kind], keda[kind])
			}
		}
		if (keda["ResourcePolicy"] != nil) != withPolicy {
			t.Errorf("policy %t: ResourcePolicy present %t", withPolicy, keda["ResourcePolicy"] != nil)
		}
	}
}
