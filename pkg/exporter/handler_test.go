package exporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/gpu"
	"github.com/spillway-dev/spillway/pkg/podmap"
)

// scrapeCase is one request to /metrics. delegated is whether the fast
// path must hand it to promhttp.
type scrapeCase struct {
	name           string
	accept, encode string
	query          string
	delegated      bool
}

// An Accept header shaped like Prometheus 3's (OpenMetrics first, which
// the exporter does not offer, then text).
const prom3Accept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6," +
	"application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4," +
	"text/plain;version=0.0.4;q=0.3,*/*;q=0.2"

var scrapeCases = []scrapeCase{
	{name: "no headers"},
	{name: "text 0.0.4", accept: string(expfmt.FmtText)},
	{name: "text, gzip", accept: string(expfmt.FmtText), encode: "gzip"},
	{name: "prometheus 3, gzip", accept: prom3Accept, encode: "gzip"},
	{name: "text 1.0.0 underscores", accept: "text/plain;version=1.0.0;escaping=underscores"},
	{name: "openmetrics only", accept: "application/openmetrics-text;version=1.0.0"},
	{name: "browser encodings", accept: "text/html,*/*;q=0.8", encode: "gzip, deflate, br"},
	{name: "identity wins over gzip", encode: "gzip, identity"},
	{name: "star means identity", encode: "*"},
	{name: "star keeps identity over gzip", encode: "gzip, *"},
	{name: "unknown coding only", encode: "br"},
	{name: "protobuf", accept: string(expfmt.FmtProtoDelim), delegated: true},
	{name: "quality values", encode: "gzip;q=0.5, identity;q=0.9", delegated: true},
	{name: "gzip refused", encode: "gzip;q=0", delegated: true},
	{name: "zstd", encode: "zstd", delegated: true},
	{name: "odd syntax", encode: "gzip,,deflate", delegated: true},
	{name: "name filter", query: "?name[]=" + "spillway_gpu_exporter_devices", delegated: true},
}

type response struct {
	code                  int
	contentType, encoding string
	vary                  []string
	body                  []byte
}

func serve(t *testing.T, h http.Handler, c scrapeCase) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics"+c.query, nil)
	if c.accept != "" {
		req.Header.Set("Accept", c.accept)
	}
	if c.encode != "" {
		req.Header.Set("Accept-Encoding", c.encode)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := response{
		code: rec.Code, contentType: rec.Header().Get("Content-Type"), encoding: rec.Header().Get("Content-Encoding"),
		vary: rec.Header().Values("Vary"), body: rec.Body.Bytes(),
	}
	if r.encoding == "gzip" {
		z, err := gzip.NewReader(bytes.NewReader(r.body))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.body, err = io.ReadAll(z); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	return r
}

// checkHandler serves every scrape case through e.Handler and through
// promhttp over a registry holding e and others, and fails on any
// difference. It returns the fast path's text body.
func checkHandler(t *testing.T, e *Exporter, others ...prometheus.Collector) string {
	t.Helper()
	h, err := e.Handler(nil, others...)
	if err != nil {
		t.Fatal(err)
	}
	mh := h.(*metricsHandler)
	delegated := 0
	full := mh.full
	mh.full = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delegated++
		full.ServeHTTP(w, r)
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	reg.MustRegister(others...)
	ref := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	var text string
	for _, c := range scrapeCases {
		before := delegated
		got, want := serve(t, h, c), serve(t, ref, c)
		if d := delegated > before; d != c.delegated {
			t.Errorf("%s: delegated to promhttp = %v, want %v", c.name, d, c.delegated)
		}
		if got.code != want.code || got.contentType != want.contentType || got.encoding != want.encoding || !slices.Equal(got.vary, want.vary) {
			t.Errorf("%s: got %d %q %q %q, promhttp %d %q %q %q", c.name,
				got.code, got.contentType, got.encoding, got.vary, want.code, want.contentType, want.encoding, want.vary)
		}
		if !bytes.Equal(got.body, want.body) {
			t.Errorf("%s: body differs from promhttp's:\n%s", c.name, diffLines(string(want.body), string(got.body)))
		}
		if c.name == "no headers" {
			text = string(got.body)
		}
	}
	return text
}

// constCollector exports fixed gauges, unchecked (no Describe), named to
// land before, between and after the process families.
type constCollector []string

func (constCollector) Describe(chan<- *prometheus.Desc) {}

func (c constCollector) Collect(ch chan<- prometheus.Metric) {
	for i, name := range c {
		d := prometheus.NewDesc(name, "A test gauge.", []string{"k"}, nil)
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(i), "v")
	}
}

func TestHandlerMatchesPromhttp(t *testing.T) {
	tests := []struct {
		name      string
		collect   bool
		hostProcs bool
		after     time.Duration
		others    []prometheus.Collector
		// wantProcs: process series are served.
		wantProcs bool
	}{
		{name: "before the first collection"},
		{name: "fresh", collect: true, after: 2 * time.Second, wantProcs: true},
		{name: "host processes", collect: true, hostProcs: true, wantProcs: true},
		{name: "at the stale limit", collect: true, after: StaleAfter * 5 * time.Second, wantProcs: true},
		{name: "stale", collect: true, after: StaleAfter*5*time.Second + time.Millisecond},
		{
			name: "other collectors", collect: true, wantProcs: true,
			others: []prometheus.Collector{
				constCollector{"AAA_first", "DCGM_CUSTOM_PROCESS_F_between", "zzz_last"},
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "go_like", Help: "A checked gauge."}, func() float64 { return 1 }),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			e, _, _ := newTestExporter(t, c, tt.hostProcs)
			if tt.collect {
				if err := e.CollectOnce(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			c.t = c.t.Add(tt.after)
			text := checkHandler(t, e, tt.others...)
			// Guard against both paths being wrong the same way.
			if got := strings.Contains(text, "\nDCGM_CUSTOM_PROCESS_SM_UTIL{"); got != tt.wantProcs {
				t.Errorf("process series served: %v, want %v", got, tt.wantProcs)
			}
		})
	}
}

// TestHandlerDuplicateFamily: a collector exporting a process metric name
// makes the scrape fail as the registry would fail it, not serve two
// families of one name.
func TestHandlerDuplicateFamily(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	e, _, _ := newTestExporter(t, c, false)
	if err := e.CollectOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"DCGM_CUSTOM_PROCESS_SM_UTIL", "spillway_gpu_exporter_devices"} {
		h, err := e.Handler(nil, constCollector{name})
		if err != nil {
			t.Fatal(err)
		}
		if r := serve(t, h, scrapeCase{}); r.code != http.StatusInternalServerError {
			t.Errorf("%s twice: status %d, want 500; body:\n%s", name, r.code, r.body)
		}
	}
	// A checked collector clashing with the exporter is refused at once.
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "DCGM_CUSTOM_PROCESS_SM_UTIL", Help: "clash"})
	if _, err := e.Handler(nil, g); err == nil {
		t.Error("Handler accepted a collector that redefines a process metric")
	}
}

// TestHandlerAcrossCollections changes the processes between collections
// (one leaves, one arrives, a PID moves to another pod, values become
// special floats, labels need escaping and sort on a NUL byte) and checks
// every collection's exposition against promhttp: the order kept from the
// previous collection and the full sort must both be the registry's.
func TestHandlerAcrossCollections(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	e, s, m := newTestExporter(t, c, false)
	r := e.resolver.(fakeResolver)
	const uidNew, cidNew = "77777777-2222-4333-8444-555555555555", "aa4375ec65c2c4092a1cc21e76712472eae0de999384e8327c495957121db9c2"
	r[uidNew+"/"+cidNew] = gpu.PodRef{UID: uidNew, Namespace: "demo", Name: "llm-0\x00b", Container: "vllm"}
	steps := []struct {
		name   string
		change func()
	}{
		{name: "first", change: func() {}},
		{name: "steady", change: func() {}},
		{name: "values change", change: func() {
			for i := range s.sample.Processes {
				s.sample.Processes[i].SMUtil = float64(i) * 1.5
			}
		}},
		{name: "a process leaves", change: func() {
			s.sample.Processes = slices.DeleteFunc(s.sample.Processes, func(p gpu.Process) bool { return p.PID == 700 })
		}},
		{name: "a process arrives", change: func() {
			m.byPID[900] = lookupResult{id: podmap.Identity{PodUID: uidNew, ContainerID: cidNew}}
			s.sample.Processes = append(s.sample.Processes, gpu.Process{PID: 900, Device: 0, UtilValid: true, SMUtil: math.Inf(1), MemValid: true, MemUsedMiB: math.NaN()})
		}},
		{name: "a PID changes pod", change: func() {
			m.byPID[900] = lookupResult{id: podmap.Identity{PodUID: uidMIG, ContainerID: cidMIG}}
		}},
		{name: "odd model and values", change: func() {
			s.sample.Devices[0].Model = "H100 \"SXM\"\\ 80GB\nrev é"
			s.sample.Processes[0].SMUtil = math.Copysign(0, -1)
			s.sample.Processes[0].MemUsedMiB = 1e21
			s.sample.Processes[0].EncUtil = -1
			s.sample.Processes[0].DecUtil = 1e-7
			s.sample.Processes[0].MemCopyUtil = math.Inf(-1)
		}},
		{name: "steady again", change: func() {}},
	}
	for _, st := range steps {
		st.change()
		c.t = c.t.Add(5 * time.Second)
		if err := e.CollectOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Run(st.name, func(t *testing.T) { checkHandler(t, e) })
	}
}

// TestScrapesDuringCollections scrapes while collections replace the
// snapshot and reshape the series cache (run with -race): every scrape is
// a well-formed exposition of one whole snapshot.
func TestScrapesDuringCollections(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	e, s, _ := newTestExporter(t, c, false)
	h, err := e.Handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CollectOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	full := s.sample.Processes
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			// Alternate between all processes and the first two, so series
			// come and go.
			s.sample.Processes = full[:2+(i%2)*(len(full)-2)]
			if err := e.CollectOnce(context.Background()); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 200 {
		r := serve(t, h, scrapeCase{name: "concurrent", encode: "gzip"})
		p := expfmt.NewTextParser(model.LegacyValidation)
		mfs, err := p.TextToMetricFamilies(bytes.NewReader(r.body))
		if err != nil {
			t.Fatalf("scrape does not parse: %v\n%s", err, r.body)
		}
		// Each collection exports 5 series (all processes) or 1 (the first
		// two: PID 100 twice on one GPU); a mix would show a torn read.
		if n := len(mfs["DCGM_CUSTOM_PROCESS_SM_UTIL"].GetMetric()); n != 3 && n != 1 {
			t.Fatalf("scrape has %d SM series, want 3 or 1", n)
		}
	}
	<-done
}

// TestAppendFloat checks the text format's values against strconv's
// shortest 'g' format, around the whole-number shortcut's edges.
func TestAppendFloat(t *testing.T) {
	special := map[float64]string{0: "0", math.Inf(1): "+Inf", math.Inf(-1): "-Inf"}
	values := []float64{
		math.Copysign(0, -1), 1, -1, 0.5, 1.5, 99, 100, 81920, 81920.5, 1e-7, -1e-7,
		99999, 999999, 999999.5, 1e6, -1e6, 1e6 + 1, -999999, 1234567, 1e15, 1e21, -1e21,
		math.MaxFloat64, math.SmallestNonzeroFloat64, math.Nextafter(1e6, 0), math.Nextafter(1e6, 2e6),
		float64(1<<53) + 2, math.Inf(1), math.Inf(-1),
	}
	for i := range 1000 {
		values = append(values, float64(i*997), -float64(i*997), float64(i)/8)
	}
	for _, v := range values {
		want, ok := special[v]
		if !ok {
			want = strconv.FormatFloat(v, 'g', -1, 64)
		}
		if got := string(appendFloat([]byte("x"), v)); got != "x"+want {
			t.Errorf("appendFloat(%v) = %q, want %q", v, got[1:], want)
		}
	}
	if got := string(appendFloat(nil, math.NaN())); got != "NaN" {
		t.Errorf("appendFloat(NaN) = %q", got)
	}
}
