package promquery

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// fuzzQuery asks for two of the served metrics, so that series of a third
// name must be counted as unexpected rather than decoded.
var fuzzQuery = Query{Metrics: []string{metricnames.ProcessSMUtil, metricnames.ProcessMemUsed}}

// Seed vectors in the shape the Prometheus HTTP API returns under
// data.result, covering each way a series can be rejected.
var fuzzVectors = []string{
	`[]`,
	`[{"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1","pid":"9","ContainerName":"main"},"value":[1764331200.5,"42"]}]`,
	`[{"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","namespace":"ns","pod":"p","UUID":"GPU-1","pid":"9"},"value":[1764331200.5,"0"]},
	  {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","namespace":"ns","pod":"p","UUID":"GPU-1","pid":"9"},"value":[1764331201,"7"]}]`,
	`[{"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1"},"value":[1764331200.5,"NaN"]},
	  {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1"},"value":[1764331200.5,"+Inf"]},
	  {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1"},"value":[1764331200.5,"-Inf"]},
	  {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1"},"value":[1764331200.5,"-1"]},
	  {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1"},"value":[0,"1"]}]`,
	`[{"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1"},"histogram":[1764331200.5,{"count":"1","sum":"1","buckets":[[0,"0","1","1"]]}]}]`,
	`[{"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","Hostname":"n1","UUID":"GPU-3","pid":"1"},"value":[1764331200.5,"3"]},
	  {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_ENC_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1"},"value":[1764331200.5,"3"]},
	  {"metric":{"NamespaceName":"ns","PodName":"p","UUID":"GPU-1"},"value":[1764331200.5,"3"]}]`,
	`[{"metric":{"__name__":"DCGM_CUSTOM_PROCESS_MEM_USED","NamespaceName":"","namespace":"ns","PodName":"p","UUID":"GPU-1"},"value":[1764331200.5,"1e308"]}]`,
	`[null]`,
}

// checkSamples asserts what every caller of Decode relies on: nothing that
// is not a real, current, attributable observation is ever returned, so a
// missing value can never be served as a zero.
func checkSamples(t *testing.T, res Result, q Query) {
	t.Helper()
	seen := map[Sample]bool{}
	for _, s := range res.Samples {
		if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) || s.Value < 0 {
			t.Fatalf("sample with value %v returned: %+v", s.Value, s)
		}
		if s.Namespace == "" || s.Pod == "" || s.GPU == "" {
			t.Fatalf("sample without namespace, pod or GPU returned: %+v", s)
		}
		if !slices.Contains(q.Metrics, s.Metric) {
			t.Fatalf("sample of metric %q not asked for returned: %+v", s.Metric, s)
		}
		if s.Timestamp.IsZero() || s.Timestamp.Equal(time.Unix(0, 0)) {
			t.Fatalf("sample without timestamp returned: %+v", s)
		}
		// A process is every label of its sample: only the reading differs.
		k := s
		k.Value, k.Timestamp = 0, time.Time{}
		if seen[k] {
			t.Fatalf("process returned twice: %+v", s)
		}
		seen[k] = true
	}
}

// FuzzDecode feeds Decode the vectors that JSON of the Prometheus API's
// data.result decodes to. Every series must come out either as a valid
// sample or counted as skipped.
func FuzzDecode(f *testing.F) {
	for _, v := range fuzzVectors {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var vec model.Vector
		if err := json.Unmarshal(data, &vec); err != nil {
			return
		}
		res, err := Decode(vec, fuzzQuery)
		if err != nil {
			t.Fatalf("Decode of a vector failed: %v", err)
		}
		checkSamples(t, res, fuzzQuery)
		if got := len(res.Samples) + res.Skipped.Total(); got != len(vec) {
			t.Fatalf("%d series in, %d samples + %d skipped out (%+v)", len(vec), len(res.Samples), res.Skipped.Total(), res.Skipped)
		}
	})
}

// bodyTransport answers every request with one status and body, so the
// fuzzer drives the real client (the Prometheus API library's decoding
// of the envelope, then Decode) without a network.
type bodyTransport struct {
	status int
	body   []byte
}

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return &http.Response{
		StatusCode: b.status,
		Status:     http.StatusText(b.status),
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(bytes.NewReader(b.body)),
		Request:    r,
	}, nil
}

// FuzzClientSamples feeds whole HTTP responses of /api/v1/query to a real
// Client. Whatever the body says, Samples either fails or returns only
// valid samples.
func FuzzClientSamples(f *testing.F) {
	for _, v := range fuzzVectors {
		f.Add(uint8(0), []byte(`{"status":"success","data":{"resultType":"vector","result":`+v+`}}`))
	}
	f.Add(uint8(0), []byte(`{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["partial response"],"infos":["x"]}`))
	f.Add(uint8(0), []byte(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL"},"values":[[1,"1"]]}]}}`))
	f.Add(uint8(0), []byte(`{"status":"success","data":{"resultType":"scalar","result":[1764331200.5,"1"]}}`))
	f.Add(uint8(0), []byte(`{"status":"success","data":{"resultType":"string","result":[1764331200.5,"x"]}}`))
	f.Add(uint8(0), []byte(`{"status":"success","data":{"resultType":"vector","result":null}}`))
	f.Add(uint8(0), []byte(`{"status":"success"}`))
	f.Add(uint8(1), []byte(`{"status":"error","errorType":"bad_data","error":"parse error"}`))
	f.Add(uint8(3), []byte(`{"status":"error","errorType":"timeout","error":"query timed out"}`))
	f.Add(uint8(2), []byte(`not json`))
	statuses := []int{http.StatusOK, http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusServiceUnavailable}
	f.Fuzz(func(t *testing.T, status uint8, body []byte) {
		c, err := New(Config{
			URL:            "http://prometheus.invalid:9090",
			Timeout:        time.Second,
			RoundTripper:   bodyTransport{status: statuses[int(status)%len(statuses)], body: body},
			SeriesSelector: testSelector,
		})
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Samples(context.Background(), fuzzQuery)
		if err != nil {
			if len(res.Samples) != 0 {
				t.Fatalf("error %v with %d samples", err, len(res.Samples))
			}
			return
		}
		// An answer that warns it may be partial is never used.
		var envelope struct {
			Warnings []string `json:"warnings"`
		}
		if json.Unmarshal(body, &envelope) == nil && len(envelope.Warnings) > 0 {
			t.Fatalf("an answer with warnings %q was used", envelope.Warnings)
		}
		checkSamples(t, res, fuzzQuery)
	})
}

// FuzzRender checks the PromQL a Client sends, with the real PromQL parser:
// a series selector given on the command line parses back from its String
// to itself, and whatever namespace and pod names a Query carries, the
// rendered selector parses and matches exactly those values (no injection,
// no widening by regex), with the operator's identity matchers intact.
func FuzzRender(f *testing.F) {
	for _, s := range []struct{ sel, ns, pod1, pod2 string }{
		{`job="spillway-gpu-exporter"`, "team", "web-1", ""},
		{`{job="spillway-gpu-exporter",cluster=~"gpu-.*"}`, "team", "web-1", "web-2"},
		{"job=`raw\\string`, env!=\"dev\", zone!~\"a|b\"", "ns", "p", "q"},
		{`job="x"`, `a", job="other`, `.*`, `web|db`},
		{`job="x"`, "ns\n", "p\u00e9", "p\x00"},
		{`job=~".+"`, "ns", "(", "["},
		{`job="a\"b"`, "", "", ""},
		{`job=~"a.b"`, "ns", "p", ""},
		{`__name__="x"`, "ns", "p", ""},
		{`job=""`, "ns", "p", ""},
		{`job="x",`, "ns", "p", ""},
		{`{job="x"`, "ns", "p", ""},
		{`job="\xff"`, "\xff", "\xfe", ""},
		// Invalid UTF-8 and U+FFFD: once rendered as a raw rune Prometheus refuses.
		{`A="\x9a"`, "ns", "p", ""},
		{"A=\"\ufffd\"", "ns", "p", ""},
	} {
		f.Add(s.sel, s.ns, s.pod1, s.pod2, uint8(2))
	}
	p := parser.NewParser(parser.Options{})
	fallback, err := ParseSeriesSelector(`job="spillway-gpu-exporter"`)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, selText, ns, pod1, pod2 string, nPods uint8) {
		sel, err := ParseSeriesSelector(selText)
		if err != nil {
			if sel != nil {
				t.Fatalf("error %v with selector %v", err, sel)
			}
			sel = fallback
		} else {
			again, err := ParseSeriesSelector(sel.String())
			if err != nil || !sameSelector(again, sel) {
				t.Fatalf("%q parses to %q, which parses to %q, %v", selText, sel.String(), again.String(), err)
			}
		}
		q := Query{Metrics: []string{metricnames.ProcessSMUtil, metricnames.ProcessMemUsed}, Namespace: ns}
		switch nPods % 3 {
		case 1:
			q.Pods = []string{pod1}
		case 2:
			q.Pods = []string{pod1, pod2}
		}
		if q.Validate() != nil {
			return
		}
		text := q.Render(sel)
		ms, err := p.ParseMetricSelector(text)
		if err != nil {
			t.Fatalf("Prometheus cannot parse %s: %v", text, err)
		}
		want := 1 + len(sel)
		if ns != "" {
			want++
		}
		if q.Pods != nil {
			want++
		}
		if len(ms) != want {
			t.Fatalf("%s parses to %d matchers, want %d: %v", text, len(ms), want, ms)
		}
		exactly(t, text, ms[0], model.MetricNameLabel, q.Metrics)
		for i, m := range sel {
			pm := ms[1+i]
			if pm.Name != m.Label || pm.Type.String() != string(m.Op) || pm.Value != m.Value {
				t.Fatalf("identity matcher %s%s%q reaches Prometheus as %v", m.Label, m.Op, m.Value, pm)
			}
		}
		rest := ms[1+len(sel):]
		if ns != "" {
			exactly(t, text, rest[0], metricnames.LabelACKNamespace, []string{ns})
			rest = rest[1:]
		}
		if q.Pods != nil {
			exactly(t, text, rest[0], metricnames.LabelACKPod, q.Pods)
		}
	})
}

func sameSelector(a, b SeriesSelector) bool {
	return slices.EqualFunc(a, b, func(x, y Matcher) bool {
		return x.Label == y.Label && x.Op == y.Op && x.Value == y.Value
	})
}

// exactly asserts that m is on label and matches the values and nothing
// near them: each with a character added, the empty string, and the regex
// wildcards a value might smuggle in.
func exactly(t *testing.T, text string, m *labels.Matcher, label string, values []string) {
	t.Helper()
	if m.Name != label {
		t.Fatalf("%s: matcher %v, want one on %s", text, m, label)
	}
	probes := []string{"", ".*", ".+", "x"}
	for _, v := range values {
		if !m.Matches(v) {
			t.Fatalf("%s: %v does not match %q", text, m, v)
		}
		probes = append(probes, v+"x", "x"+v, v+"\n", strings.Repeat(v, 2), strings.ToUpper(v))
	}
	for _, p := range probes {
		if m.Matches(p) && !slices.Contains(values, p) {
			t.Fatalf("%s: %v also matches %q", text, m, p)
		}
	}
}

// FuzzDecodeAnswer feeds whole /api/v1/query bodies to the streaming
// decoder and checks it against encoding/json: it accepts only valid
// JSON; every series of the result comes out as a valid sample or counted
// as skipped; and where encoding/json reads each series as a
// model.Sample (the Prometheus client library's reading), Decode of those
// gives exactly the same Result. Series the two read differently by
// design are left out of that comparison: those whose keys are not
// exactly "metric" and "value" (encoding/json matches struct fields in
// any case; the histogram is skipped either way) and negative timestamps
// (model.Time reads -1.5 as -0.5 s).
func FuzzDecodeAnswer(f *testing.F) {
	for _, v := range fuzzVectors {
		f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":` + v + `}}`))
	}
	for _, b := range []string{
		`{"status":"success","data":{"resultType":"vector","result":null},"warnings":["a","b"]}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"n\u0073","PodName":"p\u00e9","UUID":"GPU-1","x":"\ud800"},"value":[1764331200.5,"1.5"]}]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"c":"1","a":"2","c":"3"},"value":[1,"1"]}]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"value":[-1.5,"1"],"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1"}}]}}`,
		`{"status":"error","errorType":"bad_data","error":"x","data":{"resultType":"vector","result":[]}}`,
		`{"infos":[],"stats":{"timings":{"evalTotalTime":0.1}},"status":"success","data":{"resultType":"vector","result":[]}}`,
	} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		res, a, err := decodeAnswer(bytes.NewReader(body), fuzzQuery, 0)
		if err != nil {
			if len(res.Samples) != 0 {
				t.Fatalf("error %v with %d samples", err, len(res.Samples))
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("invalid JSON accepted")
		}
		checkSamples(t, res, fuzzQuery)
		if len(a.warnings) > maxKeptWarnings {
			t.Fatalf("%d warnings kept", len(a.warnings))
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(body, &top); err != nil {
			t.Fatalf("accepted, but not an object: %v", err)
		}
		var data map[string]json.RawMessage
		var result []json.RawMessage
		if top["data"] != nil {
			if err := json.Unmarshal(top["data"], &data); err != nil {
				t.Fatalf("accepted, but data is not an object: %v", err)
			}
		}
		if data["result"] != nil {
			if err := json.Unmarshal(data["result"], &result); err != nil {
				t.Fatalf("accepted, but the result is not an array: %v", err)
			}
		}
		if got := len(res.Samples) + res.Skipped.Total(); got != len(result) {
			t.Fatalf("%d series in, %d samples + %d skipped out (%+v)", len(result), len(res.Samples), res.Skipped.Total(), res.Skipped)
		}
		vec := make(model.Vector, len(result))
		for i, raw := range result {
			if bytes.Equal(raw, []byte("null")) {
				continue
			}
			var fields map[string]json.RawMessage
			if json.Unmarshal(raw, &fields) != nil {
				return
			}
			for k := range fields {
				if k != "metric" && k != "value" {
					return
				}
			}
			var s model.Sample
			if json.Unmarshal(raw, &s) != nil || s.Timestamp < 0 {
				return
			}
			vec[i] = &s
		}
		want, err := Decode(vec, fuzzQuery)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if len(res.Samples) == 0 && len(want.Samples) == 0 {
			res.Samples, want.Samples = nil, nil
		}
		if !reflect.DeepEqual(res, want) {
			t.Fatalf("streaming decoder read\n%+v\nencoding/json and Decode read\n%+v", res, want)
		}
	})
}
