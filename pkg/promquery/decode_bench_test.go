package promquery

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// benchAnswer is an /api/v1/query answer of n series shaped like the
// exporter's after a scrape (labels in name order, 4 series per pod: 2
// processes on each of 2 GPUs), as Prometheus renders it.
func benchAnswer(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"status":"success","data":{"resultType":"vector","result":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		pod, gpu := i/4, i/2
		fmt.Fprintf(&b, `{"metric":{"ContainerName":"main","Hostname":"node-1","NamespaceName":"fleet","PodName":"app-%03d-pod-%02d",`+
			`"UUID":"GPU-%08x-0000-4000-8000-%012x","__name__":%q,"container":"main","gpu":"%d","instance":"10.0.0.1:9400",`+
			`"job":"spillway-gpu-exporter","modelName":"NVIDIA A100-SXM4-80GB","namespace":"fleet","pid":"%d","pod":"app-%03d-pod-%02d"},`+
			`"value":[1764331200.5,"%s"]}`,
			pod/50, pod%50, gpu, gpu, metricnames.ProcessSMUtil, gpu%8, 10000+i, pod/50, pod%50, strconv.Itoa(i%101))
	}
	b.WriteString(`]}}`)
	return b.Bytes()
}

// BenchmarkDecodeAnswer is the adapter's own share of reading a refresh's
// answer: decoding and validating it from memory, without the network
// or the server that renders it.
func BenchmarkDecodeAnswer(b *testing.B) {
	q := Query{Metrics: []string{metricnames.ProcessSMUtil}}
	for _, n := range []int{20000, 200000} {
		body := benchAnswer(n)
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				res, _, err := decodeAnswer(bytes.NewReader(body), q, n)
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Samples) != n {
					b.Fatalf("%d samples, want %d (%+v)", len(res.Samples), n, res.Skipped)
				}
			}
		})
	}
}
