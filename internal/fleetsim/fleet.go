// Package fleetsim is a synthetic GPU fleet for benchmarks and tests at
// fleet scale: Running pods on one node that nothing else manages, and the
// per-process DCGM_CUSTOM_PROCESS_SM_UTIL series an exporter would publish
// for them (every label spillway's exporter sets, ACK names included),
// rendered once as a Prometheus text exposition and served over HTTP. A
// fleet can be split into shards, each served on its own endpoint, as the
// halves of a fleet that two Prometheus servers scrape.
package fleetsim

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Each pod runs 2 processes on each of 2 GPUs: 4 series per pod.
const (
	GPUsPerPod   = 2
	ProcsPerGPU  = 2
	SeriesPerPod = GPUsPerPod * ProcsPerGPU

	// Container is the one container of every fleet pod.
	Container = "main"
	gpuModel  = "NVIDIA A100-SXM4-80GB"
)

// Fleet is apps × pods-per-app pods in one namespace, all bound to Node.
type Fleet struct {
	Namespace string
	// Node is the node every pod is bound to and the Hostname of every
	// series, so the adapter's Hostname check passes them all.
	Node       string
	Apps       int
	PodsPerApp int
}

// Pods is the fleet's pod count.
func (f Fleet) Pods() int { return f.Apps * f.PodsPerApp }

// AppName is the app label value (app=app-NNN) of app i.
func AppName(i int) string { return fmt.Sprintf("app-%03d", i) }

// PodName is the name of pod j of an app.
func PodName(app string, j int) string { return fmt.Sprintf("%s-pod-%02d", app, j) }

// Series is one per-process sample, with every label the exporter sets.
type Series struct {
	Labels map[string]string
	Value  int
	// PodIndex numbers the pod across the fleet (app-major); Shard splits
	// on it.
	PodIndex int
}

// Series builds the series of every pod. Values are spread over 0-100
// deterministically so runs are comparable.
func (f Fleet) Series() []Series {
	out := make([]Series, 0, f.Pods()*SeriesPerPod)
	for a := range f.Apps {
		app := AppName(a)
		for p := range f.PodsPerApp {
			pod := PodName(app, p)
			podIdx := a*f.PodsPerApp + p
			for g := range GPUsPerPod {
				gpuIdx := podIdx*GPUsPerPod + g
				for k := range ProcsPerGPU {
					out = append(out, Series{
						Labels: map[string]string{
							metricnames.LabelHostname:     f.Node,
							metricnames.LabelGPU:          strconv.Itoa(gpuIdx % 8),
							metricnames.LabelUUID:         fmt.Sprintf("GPU-%08x-0000-4000-8000-%012x", gpuIdx, gpuIdx),
							metricnames.LabelModelName:    gpuModel,
							metricnames.LabelNamespace:    f.Namespace,
							metricnames.LabelPod:          pod,
							metricnames.LabelContainer:    Container,
							metricnames.LabelPID:          strconv.Itoa(10000 + gpuIdx*ProcsPerGPU + k),
							metricnames.LabelACKNamespace: f.Namespace,
							metricnames.LabelACKPod:       pod,
							metricnames.LabelACKContainer: Container,
						},
						Value:    (podIdx*37 + g*23 + k*11) % 101,
						PodIndex: podIdx,
					})
				}
			}
		}
	}
	return out
}

// Shard returns the series of shard i of n: the pods whose index is i
// modulo n. Every app with at least n pods has pods in every shard, as a
// workload spread over nodes that different Prometheus servers scrape.
func Shard(ss []Series, i, n int) []Series {
	var out []Series
	for _, s := range ss {
		if s.PodIndex%n == i {
			out = append(out, s)
		}
	}
	return out
}

// ShardOfPod is the shard (of n) that serves pod j of app a in a fleet
// with podsPerApp pods per app.
func ShardOfPod(a, j, podsPerApp, n int) int { return (a*podsPerApp + j) % n }

// Render writes the text exposition of ss.
func Render(ss []Series) []byte {
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
			b.WriteString(s.Labels[l]) // fixed ASCII values: nothing to escape
			b.WriteByte('"')
		}
		b.WriteString("} ")
		b.WriteString(strconv.Itoa(s.Value))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}
