package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Each pod runs 2 processes on each of 2 GPUs: 4 series per pod.
const (
	gpusPerPod     = 2
	procsPerGPU    = 2
	benchNode      = "bench-gpu-node"
	benchContainer = "main"
	benchGPUModel  = "NVIDIA A100-SXM4-80GB"
)

// benchJob is the scrape job of the synthetic exporter; the adapters under
// test select it with --series-selector. Its series carry Hostname
// benchNode, the node every bench pod is bound to (createRunningPod), so
// the adapter's Hostname check passes them all.
const benchJob = "bench-gpu-exporter"

// series is one per-process sample, with every label the exporter sets.
type series struct {
	labels map[string]string
	value  int
}

func appName(i int) string             { return fmt.Sprintf("app-%03d", i) }
func podName(app string, j int) string { return fmt.Sprintf("%s-pod-%02d", app, j) }

// seriesFor builds the series of every benchmark pod. Values are spread over
// 0-100 deterministically so runs are comparable.
func seriesFor(apps, podsPerApp int) []series {
	out := make([]series, 0, apps*podsPerApp*gpusPerPod*procsPerGPU)
	for a := range apps {
		app := appName(a)
		for p := range podsPerApp {
			pod := podName(app, p)
			podIdx := a*podsPerApp + p
			for g := range gpusPerPod {
				gpuIdx := podIdx*gpusPerPod + g
				for k := range procsPerGPU {
					out = append(out, series{
						labels: map[string]string{
							metricnames.LabelHostname:     benchNode,
							metricnames.LabelGPU:          strconv.Itoa(gpuIdx % 8),
							metricnames.LabelUUID:         fmt.Sprintf("GPU-%08x-0000-4000-8000-%012x", gpuIdx, gpuIdx),
							metricnames.LabelModelName:    benchGPUModel,
							metricnames.LabelNamespace:    benchNamespace,
							metricnames.LabelPod:          pod,
							metricnames.LabelContainer:    benchContainer,
							metricnames.LabelPID:          strconv.Itoa(10000 + gpuIdx*procsPerGPU + k),
							metricnames.LabelACKNamespace: benchNamespace,
							metricnames.LabelACKPod:       pod,
							metricnames.LabelACKContainer: benchContainer,
						},
						value: (podIdx*37 + g*23 + k*11) % 101,
					})
				}
			}
		}
	}
	return out
}

// renderExposition writes the text exposition once; the endpoint serves the
// same bytes on every scrape.
func renderExposition(ss []series) []byte {
	var b strings.Builder
	b.Grow(len(ss) * 320)
	fmt.Fprintf(&b, "# HELP %s SM utilization of one process on one GPU (%%).\n# TYPE %s gauge\n",
		metricnames.ProcessSMUtil, metricnames.ProcessSMUtil)
	for _, s := range ss {
		b.WriteString(metricnames.ProcessSMUtil)
		b.WriteByte('{')
		for i, l := range metricnames.ProcessLabels {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(l)
			b.WriteString(`="`)
			b.WriteString(s.labels[l]) // fixed ASCII values: nothing to escape
			b.WriteByte('"')
		}
		b.WriteString("} ")
		b.WriteString(strconv.Itoa(s.value))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

type expositionServer struct {
	Addr string
	srv  *http.Server
}

func (s *expositionServer) Close() { _ = s.srv.Close() }

func serveExposition(body []byte) (*expositionServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(body)
	})
	s := &expositionServer{Addr: ln.Addr().String(), srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// waitSeries polls Prometheus until it holds want series of the metric.
func waitSeries(ctx context.Context, promURL string, want int, log io.Writer) error {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 10 * time.Second}
	q := promURL + "/api/v1/query?query=" + url.QueryEscape("count("+metricnames.ProcessSMUtil+")")
	last := -1
	return localcluster.Poll(wctx, time.Second, fmt.Sprintf("Prometheus to hold %d series", want), func(ctx context.Context) (bool, error) {
		n, err := promCount(ctx, hc, q)
		if err != nil {
			return false, err
		}
		if n == want {
			fmt.Fprintf(log, "[adaptercluster] Prometheus holds all %d series\n", n)
			return true, nil
		}
		if n != last {
			fmt.Fprintf(log, "[adaptercluster] Prometheus holds %d of %d series\n", n, want)
			last = n
		}
		return false, fmt.Errorf("last count %d", n)
	})
}

func promCount(ctx context.Context, hc *http.Client, q string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query status %q", r.Status)
	}
	if len(r.Data.Result) == 0 {
		return 0, nil
	}
	s, ok := r.Data.Result[0].Value[1].(string)
	if !ok {
		return 0, errors.New("count has no string value")
	}
	f, err := strconv.ParseFloat(s, 64)
	return int(f), err
}
