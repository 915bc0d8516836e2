package provider

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// The benchmark cluster: 5,000 pods in one namespace (the lister's worst
// case: every selector is matched against all of them), 100 apps of 50
// pods, each pod with two GPUs and two processes per GPU: 20,000 series.
const (
	benchApps       = 100
	benchPodsPerApp = 50
	benchGPUsPerPod = 2
	benchProcsPerGP = 2
)

func benchCluster(tb testing.TB) ([]pod, model.Vector) {
	tb.Helper()
	var pods []pod
	var vec model.Vector
	for a := 0; a < benchApps; a++ {
		for i := 0; i < benchPodsPerApp; i++ {
			name := fmt.Sprintf("app-%03d-%02d", a, i)
			pods = append(pods, pod{ns: "bench", name: name, labels: map[string]string{
				"app": fmt.Sprintf("app-%03d", a), "pod-template-hash": "5d8f7c9b4",
			}})
			for g := 0; g < benchGPUsPerPod; g++ {
				for p := 0; p < benchProcsPerGP; p++ {
					vec = append(vec, series(sm, "bench", name, fmt.Sprintf("GPU-%s-%d", name, g), fmt.Sprint(1000+p), float64((a+i+g+p)%60), t0))
				}
			}
		}
	}
	return pods, vec
}

func BenchmarkServe(b *testing.B) {
	pods, vec := benchCluster(b)
	if len(pods) != 5000 || len(vec) != 20000 {
		b.Fatalf("cluster has %d pods, %d series", len(pods), len(vec))
	}
	e := newEnv(b, pods, vec)
	e.refresh(b)
	ctx := context.Background()
	appSel := labels.SelectorFromSet(labels.Set{"app": "app-042"})
	aggSel := labels.SelectorFromSet(labels.Set{"app": "app-042", AggregateKey: "avg"})
	inSel, err := labels.Parse("app in (app-042,app-043)")
	if err != nil {
		b.Fatal(err)
	}
	ext := cmprovider.ExternalMetricInfo{Metric: sm}

	cases := []struct {
		name string
		run  func() error
	}{
		{"pods/by-name", func() error {
			_, err := e.p.GetMetricByName(ctx, types.NamespacedName{Namespace: "bench", Name: "app-042-17"}, podInfo(sm), labels.Everything())
			return err
		}},
		{"pods/selector-50-of-5000", func() error {
			_, err := e.p.GetMetricBySelector(ctx, "bench", appSel, podInfo(sm), labels.Everything())
			return err
		}},
		{"external/per-pod-50-of-5000", func() error {
			_, err := e.p.GetExternalMetric(ctx, "bench", appSel, ext)
			return err
		}},
		{"external/per-pod-in-100-of-5000", func() error {
			_, err := e.p.GetExternalMetric(ctx, "bench", inSel, ext)
			return err
		}},
		{"external/aggregate-avg-50-of-5000", func() error {
			_, err := e.p.GetExternalMetric(ctx, "bench", aggSel, ext)
			return err
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if err := c.run(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := c.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("parallel/external-per-pod", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := e.p.GetExternalMetric(ctx, "bench", appSel, ext); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRefresh is the background cost per refresh for 20,000 series:
// decoding and validating the vector, then aggregating it (the HTTP and
// JSON work of a real query is not included).
func BenchmarkRefresh(b *testing.B) {
	pods, vec := benchCluster(b)
	e := newEnv(b, pods, vec)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := e.p.Refresh(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
