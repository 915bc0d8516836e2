package app

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/pkg/provider"
)

// BenchmarkHTTP measures one request at a time through the library's real
// serving stack (TLS, routing, conversion, JSON; no authn/authz, no
// aggregator) for the spillway provider over a 5,000-pod / 20,000-series
// snapshot, next to "floor", a provider that returns a fixed 50-item list
// (the difference is what spillway adds), and "floor-1-item", a fixed
// one-item list like the library test-adapter's External answer (the
// difference to "floor" is what answering 50 pods costs the serving stack).
// Reports p50/p99 per request.
func BenchmarkHTTP(b *testing.B) {
	var pods []testPod
	var vec model.Vector
	now := time.Now()
	for a := 0; a < 100; a++ {
		for i := 0; i < 50; i++ {
			name := fmt.Sprintf("app-%03d-%02d", a, i)
			pods = append(pods, testPod{name, map[string]string{"app": fmt.Sprintf("app-%03d", a)}})
			for g := 0; g < 2; g++ {
				for p := 0; p < 2; p++ {
					vec = append(vec, promquery.Series(sm, "bench", name, fmt.Sprintf("GPU-%s-%d", name, g), fmt.Sprint(p), float64((a+i+g+p)%60), now))
				}
			}
		}
	}
	p := newProvider(b, "bench", pods, vec)
	spillBase, client := startServer(b, p, p)
	floorBase, _ := startServer(b, newFloor(50), newFloor(50))
	floor1Base, _ := startServer(b, newFloor(1), newFloor(1))

	sel := url.QueryEscape("app=app-042")
	agg := url.QueryEscape("app=app-042," + provider.AggregateKey + "=avg")
	paths := []struct{ name, path string }{
		{"pods-selector-50-of-5000", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/bench/pods/*/" + sm + "?labelSelector=" + sel},
		{"external-per-pod-50-of-5000", "/apis/external.metrics.k8s.io/v1beta1/namespaces/bench/" + sm + "?labelSelector=" + sel},
		{"external-aggregate-avg", "/apis/external.metrics.k8s.io/v1beta1/namespaces/bench/" + sm + "?labelSelector=" + agg},
	}
	for _, pt := range paths {
		for _, srv := range []struct{ name, base string }{{"floor-1-item", floor1Base}, {"floor", floorBase}, {"spillway", spillBase}} {
			b.Run(pt.name+"/"+srv.name, func(b *testing.B) {
				u := srv.base + pt.path
				if code, body := get(b, client, u); code != http.StatusOK {
					b.Fatalf("HTTP %d: %s", code, body)
				}
				var lat []time.Duration
				for b.Loop() {
					start := time.Now()
					resp, err := client.Get(u)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					lat = append(lat, time.Since(start))
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[(len(lat)*99+99)/100-1].Microseconds()), "p99-µs")
			})
		}
	}
}
