package provider

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-dev/spillway/internal/fleetsim"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/promquery"
)

// fleetAnswer renders series as Prometheus renders an instant query's
// vector on /api/v1/query: labels sorted by name, __name__, job and
// instance added by the scrape, the value a [seconds, "string"] pair.
func fleetAnswer(ss []fleetsim.Series, instance string, ts time.Time) []byte {
	var b strings.Builder
	b.Grow(len(ss) * 480)
	b.WriteString(`{"status":"success","data":{"resultType":"vector","result":[`)
	stamp := strconv.FormatFloat(float64(ts.UnixMilli())/1000, 'f', 3, 64)
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		labels := map[string]string{
			"__name__":                metricnames.ProcessSMUtil,
			metricnames.LabelJob:      metricnames.ExporterJob,
			metricnames.LabelInstance: instance,
		}
		for k, v := range s.Labels {
			labels[k] = v
		}
		names := make([]string, 0, len(labels))
		for k := range labels {
			names = append(names, k)
		}
		slices.Sort(names)
		b.WriteString(`{"metric":{`)
		for j, n := range names {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(n))
			b.WriteByte(':')
			b.WriteString(strconv.Quote(labels[n]))
		}
		b.WriteString(`},"value":[`)
		b.WriteString(stamp)
		b.WriteString(`,"`)
		b.WriteString(strconv.Itoa(s.Value))
		b.WriteString(`"]}`)
	}
	b.WriteString(`]}}`)
	return []byte(b.String())
}

// fleetEnv is a Provider reading a fleet's answer through the real
// promquery client from an HTTP server that answers the exporter's query
// with body and the pods' own with an empty vector.
func fleetEnv(b *testing.B, f fleetsim.Fleet) (*Provider, int) {
	b.Helper()
	ss := f.Series()
	body := fleetAnswer(ss, "10.0.0.1:9400", t0)
	empty := []byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.Form.Get("query"), metricnames.ProcessSMUtil) {
			_, _ = w.Write(body)
			return
		}
		_, _ = w.Write(empty)
	}))
	b.Cleanup(srv.Close)
	sel, err := promquery.ParseSeriesSelector(`job="` + metricnames.ExporterJob + `"`)
	if err != nil {
		b.Fatal(err)
	}
	client, err := promquery.New(promquery.Config{URL: srv.URL, Timeout: time.Minute, SeriesSelector: sel})
	if err != nil {
		b.Fatal(err)
	}
	pods := make([]pod, 0, f.Pods())
	for a := range f.Apps {
		app := fleetsim.AppName(a)
		for j := range f.PodsPerApp {
			pods = append(pods, pod{ns: f.Namespace, name: fleetsim.PodName(app, j), labels: map[string]string{"app": app}})
		}
	}
	p, err := New(Config{
		Source:          client,
		Pods:            podLister(b, pods),
		Registry:        prometheus.NewRegistry(),
		RefreshInterval: testRefresh,
		MaxStaleness:    testMaxStale,
		Clock:           &fakeClock{t: t0},
	})
	if err != nil {
		b.Fatal(err)
	}
	return p, len(ss)
}

// heapPeak samples the heap's live and not yet swept objects every
// millisecond until stopped, without stopping the world.
type heapPeak struct {
	stop chan struct{}
	done sync.WaitGroup
	max  uint64
}

const heapObjects = "/memory/classes/heap/objects:bytes"

func heapNow() uint64 {
	s := []metrics.Sample{{Name: heapObjects}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapPeak() *heapPeak {
	h := &heapPeak{stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			if n := heapNow(); n > h.max {
				h.max = n
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) end() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.max
}

// BenchmarkRefreshFleet is one refresh at fleet size, as the adapter does
// it: the exporter's series of a fleetsim fleet (4 per pod, every label the
// exporter and the scrape set) read as /api/v1/query JSON through the real
// promquery client over loopback HTTP (the server rendering the answer
// runs in the same process: its CPU is in ns/op, its allocations are
// not), decoded, checked against the pod informer and built into a
// snapshot. Each measured refresh replaces the snapshot of the one
// before, as every refresh but the first does. Besides time and
// allocations it reports the heap's peak during a refresh above what was
// live before it, the previous snapshot included (peak-heap-B: what a
// refresh adds to RSS), and what a snapshot keeps live (snapshot-B).
func BenchmarkRefreshFleet(b *testing.B) {
	for _, pods := range []int{5000, 50000} {
		f := fleetsim.Fleet{Namespace: "fleet", Node: testNode, Apps: pods / 50, PodsPerApp: 50}
		b.Run(fmt.Sprintf("series=%d", pods*fleetsim.SeriesPerPod), func(b *testing.B) {
			p, n := fleetEnv(b, f)
			ctx := context.Background()
			runtime.GC()
			empty := heapNow()
			if err := p.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			retained := int64(heapNow()) - int64(empty)
			var peak int64
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				runtime.GC()
				base := heapNow()
				h := startHeapPeak()
				b.StartTimer()
				if err := p.Refresh(ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				peak = max(peak, int64(h.end())-int64(base))
				b.StartTimer()
			}
			if s := p.snap.Load(); s == nil || s.series != n {
				b.Fatalf("snapshot holds %v series, want %d", s, n)
			}
			b.ReportMetric(float64(peak), "peak-heap-B")
			b.ReportMetric(float64(retained), "snapshot-B")
		})
	}
}
