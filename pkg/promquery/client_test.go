package promquery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// promAPI is a stand-in Prometheus /api/v1/query endpoint that records the
// form it received and answers with a fixed body.
type promAPI struct {
	mu     sync.Mutex
	forms  []url.Values
	status int
	body   string
}

func (p *promAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.forms = append(p.forms, r.Form)
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(p.status)
	_, _ = w.Write([]byte(p.body))
}

const vectorBody = `{"status":"success","data":{"resultType":"vector","result":[
 {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-1","pid":"9"},"value":[1764331200.5,"42"]},
 {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","NamespaceName":"ns","PodName":"p","UUID":"GPU-2","pid":"9"},"value":[1764331200.5,"NaN"]},
 {"metric":{"__name__":"DCGM_CUSTOM_PROCESS_SM_UTIL","Hostname":"n1","UUID":"GPU-3","pid":"1"},"value":[1764331200.5,"3"]}
]}}`

func TestClientSamples(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		body        string
		q           Query
		wantErr     string
		wantSamples int
		wantSkipped Skipped
		wantForm    map[string]string
	}{
		{
			name:        "vector is decoded and validated",
			status:      http.StatusOK,
			body:        vectorBody,
			q:           Query{Metrics: []string{metricnames.ProcessSMUtil}, LookbackDelta: 30 * time.Second},
			wantSamples: 1,
			wantSkipped: Skipped{InvalidValue: 1, MissingLabels: 1},
			wantForm: map[string]string{
				"query":          `{__name__="DCGM_CUSTOM_PROCESS_SM_UTIL",job="spillway-gpu-exporter"}`,
				"lookback_delta": "30s",
				"timeout":        "2s",
				"time":           "",
				// Thanos fails the query rather than answer from some stores.
				"partial_response": "false",
			},
		},
		{
			name:    "an answer with warnings is refused, naming them",
			status:  http.StatusOK,
			body:    strings.Replace(vectorBody, `]}}`, `]},"warnings":["No StoreAPIs matched for this query","receiving series from store shard-b: rpc error: code = Unavailable"]}`, 1),
			q:       Query{Metrics: []string{metricnames.ProcessSMUtil}},
			wantErr: `the answer may be partial (a store or shard did not respond), so it is not used; 2 warning(s): "No StoreAPIs matched for this query"; "receiving series from store shard-b: rpc error: code = Unavailable"`,
		},
		{
			name:        "infos are not warnings",
			status:      http.StatusOK,
			body:        strings.Replace(vectorBody, `]}}`, `]},"infos":["PromQL info: metric might not be a counter"]}`, 1),
			q:           Query{Metrics: []string{metricnames.ProcessSMUtil}},
			wantSamples: 1,
			wantSkipped: Skipped{InvalidValue: 1, MissingLabels: 1},
		},
		{
			name:    "API error is returned",
			status:  http.StatusBadRequest,
			body:    `{"status":"error","errorType":"bad_data","error":"parse error"}`,
			q:       Query{Metrics: []string{metricnames.ProcessSMUtil}},
			wantErr: "parse error",
		},
		{
			name:    "server error is returned",
			status:  http.StatusInternalServerError,
			body:    `oops`,
			q:       Query{Metrics: []string{metricnames.ProcessSMUtil}},
			wantErr: "prometheus query",
		},
		{
			name:    "matrix is rejected",
			status:  http.StatusOK,
			body:    `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
			q:       Query{Metrics: []string{metricnames.ProcessSMUtil}},
			wantErr: "want a vector",
		},
		{
			name:    "invalid query never reaches the server",
			status:  http.StatusOK,
			body:    vectorBody,
			q:       Query{},
			wantErr: "at least one metric",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &promAPI{status: tt.status, body: tt.body}
			srv := httptest.NewServer(api)
			defer srv.Close()
			c, err := New(Config{URL: srv.URL, Timeout: 2 * time.Second, SeriesSelector: testSelector})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			res, err := c.Samples(context.Background(), tt.q)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Samples error = %v, want %q", err, tt.wantErr)
				}
				if tt.q.Validate() != nil && len(api.forms) != 0 {
					t.Errorf("invalid query was sent: %v", api.forms)
				}
				return
			}
			if err != nil {
				t.Fatalf("Samples: %v", err)
			}
			if len(res.Samples) != tt.wantSamples || res.Skipped != tt.wantSkipped {
				t.Errorf("got %d samples, skipped %+v; want %d, %+v", len(res.Samples), res.Skipped, tt.wantSamples, tt.wantSkipped)
			}
			if len(api.forms) != 1 {
				t.Fatalf("server saw %d requests, want 1", len(api.forms))
			}
			for k, want := range tt.wantForm {
				if got := api.forms[0].Get(k); got != want {
					t.Errorf("form %s = %q, want %q", k, got, want)
				}
			}
			if got := res.Samples[0].Timestamp; !got.Equal(time.UnixMilli(1764331200500)) {
				t.Errorf("timestamp = %s", got)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{name: "ok", cfg: Config{URL: "http://prometheus:9090", Timeout: time.Second, SeriesSelector: testSelector}},
		{name: "empty url, timeout and selector together", cfg: Config{}, wantErr: []string{"URL is empty", "timeout must be positive", "series selector {}: no matchers"}},
		{name: "scheme", cfg: Config{URL: "ftp://x", Timeout: time.Second, SeriesSelector: testSelector}, wantErr: []string{"scheme must be http or https"}},
		{name: "no host", cfg: Config{URL: "http://", Timeout: time.Second, SeriesSelector: testSelector}, wantErr: []string{"has no host"}},
		{name: "unparsable", cfg: Config{URL: "http://a b:%zz", Timeout: time.Second, SeriesSelector: testSelector}, wantErr: []string{"prometheus URL"}},
		{
			name:    "URL that would allow partial answers",
			cfg:     Config{URL: "http://thanos-query:9090/?partial_response=true", Timeout: time.Second, SeriesSelector: testSelector},
			wantErr: []string{"sets partial_response: the client always sends partial_response=false"},
		},
		{
			name:    "selector that identifies nothing",
			cfg:     Config{URL: "http://prometheus:9090", Timeout: time.Second, SeriesSelector: SeriesSelector{{Label: "job", Op: MatchNotEqual, Value: "x"}}},
			wantErr: []string{"at least one must require a value"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("New = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New = nil error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestPartialResponseErrorIsBounded(t *testing.T) {
	long := strings.Repeat("x", 1000)
	err := &PartialResponseError{Warnings: []string{"a", long, "c", "d", "e"}}
	msg := err.Error()
	for _, want := range []string{`5 warning(s): "a"; "` + strings.Repeat("x", maxWarningLen) + `..."; "c"; and 2 more`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, `"d"`) || len(msg) > 600 {
		t.Errorf("message not bounded (%d bytes): %q", len(msg), msg)
	}
}
