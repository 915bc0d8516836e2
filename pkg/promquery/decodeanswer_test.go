package promquery

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unsafe"

	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// series renders one series of the exporter's in the API's JSON, with
// extra labels (already JSON: `"k":"v"`) spliced in name order by the
// caller.
func seriesJSON(labels string) string {
	return `{"metric":{` + labels + `},"value":[1764331200.5,"42"]}`
}

const goodLabels = `"NamespaceName":"ns","PodName":"p","UUID":"GPU-1","__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","pid":"9"`

func answerJSON(result string) string {
	return `{"status":"success","data":{"resultType":"vector","result":[` + result + `]}}`
}

func TestDecodeAnswer(t *testing.T) {
	q := Query{Metrics: []string{metricnames.ProcessSMUtil}}
	long := strings.Repeat("x", maxSeriesBytes)
	var many strings.Builder
	for i := range maxSeriesBytes / labelCost {
		fmt.Fprintf(&many, `,"z%05d":""`, i)
	}
	tests := []struct {
		name         string
		body         string
		wantErr      string
		wantSamples  int
		wantSkipped  Skipped
		wantStatus   string
		wantWarnings int
		wantMore     int
	}{
		{name: "one series", body: answerJSON(seriesJSON(goodLabels)), wantSamples: 1, wantStatus: "success"},
		{
			name:        "escapes and non-ASCII read as encoding/json reads them",
			body:        answerJSON(seriesJSON(`"NamespaceName":"n\u0073","PodName":"p\u00e9","UUID":"GPU-1","__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL"`)),
			wantSamples: 1, wantStatus: "success",
		},
		{
			name:    "a label repeated out of order",
			body:    answerJSON(seriesJSON(`"c":"1","a":"2","c":"3"`)),
			wantErr: `label "c" twice`,
		},
		{
			name:    "a label repeated in order",
			body:    answerJSON(seriesJSON(`"a":"1","a":"2"`)),
			wantErr: `label "a" twice`,
		},
		{
			name:        "labels out of order are read",
			body:        answerJSON(seriesJSON(`"pid":"9","__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","UUID":"GPU-1","PodName":"p","NamespaceName":"ns"`)),
			wantSamples: 1, wantStatus: "success",
		},
		{
			name:        "an oversized label value skips its series only",
			body:        answerJSON(seriesJSON(goodLabels+`,"z":"`+long+`"`) + "," + seriesJSON(strings.Replace(goodLabels, `"p"`, `"q"`, 1))),
			wantSamples: 1, wantSkipped: Skipped{Oversized: 1}, wantStatus: "success",
		},
		{
			name:        "an oversized label value with escapes skips its series only",
			body:        answerJSON(seriesJSON(goodLabels+`,"z":"\n`+long+`"`) + "," + seriesJSON(strings.Replace(goodLabels, `"p"`, `"q"`, 1))),
			wantSamples: 1, wantSkipped: Skipped{Oversized: 1}, wantStatus: "success",
		},
		{
			name:        "an oversized label name skips its series",
			body:        answerJSON(seriesJSON(`"` + long + `":"v",` + goodLabels)),
			wantSkipped: Skipped{Oversized: 1}, wantStatus: "success",
		},
		{
			name:        "many labels count against the bound",
			body:        answerJSON(seriesJSON(goodLabels + many.String())),
			wantSkipped: Skipped{Oversized: 1}, wantStatus: "success",
		},
		{
			name:    "an invalid escape in a skipped string",
			body:    answerJSON(seriesJSON(goodLabels + `,"z":"` + long + `\x"`)),
			wantErr: "invalid escape",
		},
		{
			name:    "a control character in a skipped string",
			body:    `{"status":"success","stats":"a` + "\x01" + `","data":{"resultType":"vector","result":[]}}`,
			wantErr: "control character",
		},
		{name: "a null result is empty", body: `{"status":"success","data":{"resultType":"vector","result":null}}`, wantStatus: "success"},
		{name: "a null series is an invalid value", body: answerJSON(`null`), wantSkipped: Skipped{InvalidValue: 1}, wantStatus: "success"},
		{name: "no result", body: `{"status":"success","data":{"resultType":"vector"}}`, wantErr: "no result"},
		{name: "result before resultType", body: `{"status":"success","data":{"result":[],"resultType":"vector"}}`, wantErr: "before its resultType"},
		{name: "matrix", body: `{"status":"success","data":{"resultType":"matrix","result":[]}}`, wantErr: "want a vector"},
		{name: "two data fields", body: `{"status":"success","data":{"resultType":"vector","result":[]},"data":{}}`, wantErr: "two data"},
		{name: "truncated", body: answerJSON(seriesJSON(goodLabels))[:100], wantErr: "unexpected end"},
		{name: "trailing bytes", body: answerJSON("") + "x", wantErr: "after the answer"},
		{name: "trailing whitespace", body: answerJSON("") + "\n", wantStatus: "success"},
		{name: "timestamp out of range", body: answerJSON(`{"metric":{},"value":[9223372036854775,"1"]}`), wantErr: "out of range"},
		{name: "timestamp with an exponent", body: answerJSON(`{"metric":{},"value":[1e9,"1"]}`), wantErr: "exponent"},
		{name: "value not a string", body: answerJSON(`{"metric":{},"value":[1,1]}`), wantErr: `want '"'`},
		{name: "value too long", body: answerJSON(`{"metric":{},"value":[1,"` + strings.Repeat("1", 100) + `"]}`), wantErr: "sample value longer"},
		{name: "status too long", body: `{"status":"` + long + `"}`, wantErr: "status longer"},
		{
			name:         "warnings are kept up to a bound and counted",
			body:         `{"status":"success","data":{"resultType":"vector","result":[]},"warnings":[` + strings.Repeat(`"w",`, 20) + `"` + long + `x"]}`,
			wantStatus:   "success",
			wantWarnings: maxKeptWarnings, wantMore: 5,
		},
		{name: "nested deep in a skipped field", body: `{"x":` + strings.Repeat("[", maxDepth+2) + strings.Repeat("]", maxDepth+2) + `}`, wantErr: "nested deeper"},
		{name: "unknown fields are skipped", body: `{"status":"success","infos":["i"],"stats":{"a":[1,true,null,-0.5e3]},"data":{"resultType":"vector","result":[]}}`, wantStatus: "success"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, a, err := decodeAnswer(strings.NewReader(tt.body), q, 0)
			// Read a byte at a time (the buffer refilled at every
			// step), the answer reads alike, errors and offsets too.
			res1, a1, err1 := decodeAnswer(iotest.OneByteReader(strings.NewReader(tt.body)), q, 0)
			if fmt.Sprint(err) != fmt.Sprint(err1) || !reflect.DeepEqual(res, res1) || !reflect.DeepEqual(a, a1) {
				t.Fatalf("read whole: %v, %+v, %+v; a byte at a time: %v, %+v, %+v", err, res, a, err1, res1, a1)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if len(res.Samples) != 0 {
					t.Fatalf("error with %d samples", len(res.Samples))
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeAnswer: %v", err)
			}
			if len(res.Samples) != tt.wantSamples || res.Skipped != tt.wantSkipped {
				t.Errorf("got %d samples, skipped %+v; want %d, %+v", len(res.Samples), res.Skipped, tt.wantSamples, tt.wantSkipped)
			}
			if a.status != tt.wantStatus || len(a.warnings) != tt.wantWarnings || a.moreWarnings != tt.wantMore {
				t.Errorf("status %q, %d warnings + %d more; want %q, %d + %d", a.status, len(a.warnings), a.moreWarnings, tt.wantStatus, tt.wantWarnings, tt.wantMore)
			}
			for _, w := range a.warnings {
				if len(w) > maxMessageBytes {
					t.Errorf("warning of %d bytes kept", len(w))
				}
			}
		})
	}
}

// TestDecodeAnswerInterns checks that equal strings of different series
// share memory, and that a pod name is not confused with a namespace.
func TestDecodeAnswerInterns(t *testing.T) {
	q := Query{Metrics: []string{metricnames.ProcessSMUtil}}
	body := answerJSON(seriesJSON(goodLabels) + "," + seriesJSON(strings.Replace(goodLabels, `"9"`, `"10"`, 1)) + "," +
		seriesJSON(strings.Replace(goodLabels, `"PodName":"p"`, `"PodName":"ns"`, 1)))
	res, _, err := decodeAnswer(strings.NewReader(body), q, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 3 {
		t.Fatalf("%d samples, want 3", len(res.Samples))
	}
	a, b, c := res.Samples[0], res.Samples[1], res.Samples[2]
	if a.Pod != "p" || b.Pod != "p" || c.Pod != "ns" || a.PID != "9" || b.PID != "10" {
		t.Fatalf("samples %+v", res.Samples)
	}
	if unsafeData(a.Namespace) != unsafeData(b.Namespace) || unsafeData(a.Pod) != unsafeData(b.Pod) {
		t.Errorf("namespace or pod not shared between series")
	}
}

func unsafeData(s string) *byte { return unsafe.StringData(s) }

// TestDecodeAnswerReadError checks that a failing body is an error that
// says so, not a truncated answer read as complete.
func TestDecodeAnswerReadError(t *testing.T) {
	q := Query{Metrics: []string{metricnames.ProcessSMUtil}}
	body := answerJSON(seriesJSON(goodLabels))
	boom := errors.New("connection reset")
	for _, n := range []int{0, 10, len(body) - 1, len(body)} {
		r := io.MultiReader(strings.NewReader(body[:n]), iotest.ErrReader(boom))
		res, _, err := decodeAnswer(r, q, 0)
		if !errors.Is(err, boom) || len(res.Samples) != 0 {
			t.Errorf("after %d bytes: %v with %d samples, want %v", n, err, len(res.Samples), boom)
		}
	}
}

func TestParseTimestamp(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "1764331200.5", want: 1764331200500},
		{in: "1764331200", want: 1764331200000},
		{in: "1.23456", want: 1234},
		{in: "0.001", want: 1},
		{in: "0", want: 0},
		{in: "-1.5", want: -1500},
		{in: "-0.0001", want: 0},
		{in: "9000000000000.999", want: 9000000000000999},
		{in: "9000000000001", wantErr: "out of range"},
		{in: "-9000000000001", wantErr: "out of range"},
		{in: "1e3", wantErr: "exponent"},
		{in: "1.5E3", wantErr: "exponent"},
	}
	for _, tt := range tests {
		got, err := parseTimestamp([]byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseTimestamp(%s) = %d, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseTimestamp(%s) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

// TestDecoderHashCollisions decodes with every process key hashing alike,
// so that all but the first go through the collision table: the result
// must not change.
func TestDecoderHashCollisions(t *testing.T) {
	q := Query{Metrics: []string{metricnames.ProcessSMUtil, metricnames.ProcessMemUsed}}
	vec := model.Vector{
		Series(sm, "ns", "p", "GPU-1", "1", 1, t0),
		Series(sm, "ns", "p", "GPU-1", "2", 2, t0),
		Series(sm, "ns", "p", "GPU-1", "1", 3, t0.Add(time.Second)),
		Series(sm, "ns", "q", "GPU-2", "1", 4, t0),
		Series(metricnames.ProcessMemUsed, "ns", "p", "GPU-1", "1", 5, t0),
		Series(sm, "ns", "q", "GPU-2", "1", 6, t0.Add(-time.Second)),
		Series(sm, "ns", "p", "GPU-1", "2", 7, t0.Add(time.Second)),
	}
	want, err := Decode(vec, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Samples) != 4 || want.Skipped.Duplicate != 3 {
		t.Fatalf("Decode: %d samples, %+v; want 4 and 3 duplicates", len(want.Samples), want.Skipped)
	}
	d := newDecoder(q, 0)
	d.hash = func(processKey) uint64 { return 1 }
	var s rawSeries
	for _, ms := range vec {
		s.reset()
		for name, value := range ms.Metric {
			s.addLabel(string(name), string(value))
		}
		s.ts, s.value = int64(ms.Timestamp), float64(ms.Value)
		d.add(&s)
	}
	if !reflect.DeepEqual(d.res, want) {
		t.Fatalf("with colliding hashes\n%+v\nwant\n%+v", d.res, want)
	}
	if len(d.collided) != 3 {
		t.Errorf("%d keys in the collision table, want 3", len(d.collided))
	}
}
