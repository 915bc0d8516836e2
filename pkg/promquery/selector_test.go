package promquery

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/common/model"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// testSelector is the adapter's default identity.
var testSelector = mustSelector(`job="` + metricnames.ExporterJob + `"`)

func mustSelector(s string) SeriesSelector {
	sel, err := ParseSeriesSelector(s)
	if err != nil {
		panic(err)
	}
	return sel
}

func TestParseSeriesSelector(t *testing.T) {
	tests := []struct {
		in      string
		want    []parsedMatcher
		wantErr []string
	}{
		{in: `job="spillway-gpu-exporter"`, want: []parsedMatcher{{"job", "=", "spillway-gpu-exporter"}}},
		{in: ` { job = "a" , cluster=~"gpu-.*", env!="dev",zone!~"x|y", } `, want: []parsedMatcher{
			{"job", "=", "a"}, {"cluster", "=~", "gpu-.*"}, {"env", "!=", "dev"}, {"zone", "!~", "x|y"},
		}},
		{in: "job=`raw\\string`", want: []parsedMatcher{{"job", "=", `raw\string`}}},
		{in: `job="quote\" and, comma"`, want: []parsedMatcher{{"job", "=", `quote" and, comma`}}},
		{in: ``, wantErr: []string{"no matchers"}},
		{in: `{}`, wantErr: []string{"no matchers"}},
		{in: `{job="a"`, wantErr: []string{"opening brace"}},
		{in: `job`, wantErr: []string{"not a label matcher"}},
		{in: `job=a`, wantErr: []string{"double-quoted"}},
		{in: `job='a'`, wantErr: []string{"double-quoted"}},
		{in: `job="a`, wantErr: []string{"unterminated"}},
		{in: `job="a" cluster="b"`, wantErr: []string{"want a comma"}},
		{in: `job=="a"`, wantErr: []string{"double-quoted"}},
		{in: `job<>"a"`, wantErr: []string{"not a label matcher"}},
		{in: `job!"a"`, wantErr: []string{"unknown operator"}},
		{in: `1job="a"`, wantErr: []string{`invalid label name "1job"`}},
		{in: `__name__="DCGM_CUSTOM_PROCESS_SM_UTIL"`, wantErr: []string{"reserved"}},
		{in: `__address__="x",job="a"`, wantErr: []string{"reserved"}},
		{in: `job=~"(unclosed"`, wantErr: []string{"invalid regular expression"}},
		{in: `job!="x"`, wantErr: []string{"at least one must require a value"}},
		{in: `job=~".*",env!~"dev"`, wantErr: []string{"at least one must require a value"}},
		{in: `job=""`, wantErr: []string{"at least one must require a value"}},
		{in: `job=~".+",env!="dev"`, want: []parsedMatcher{{"job", "=~", ".+"}, {"env", "!=", "dev"}}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sel, err := ParseSeriesSelector(tt.in)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ParseSeriesSelector(%q) = %v, want an error", tt.in, sel)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSeriesSelector(%q): %v", tt.in, err)
			}
			var got []parsedMatcher
			for _, m := range sel {
				got = append(got, parsedMatcher{m.Label, string(m.Op), m.Value})
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("parsed %q, want %q", got, tt.want)
			}
			// String parses back to the same selector.
			again, err := ParseSeriesSelector(sel.String())
			if err != nil || again.String() != sel.String() {
				t.Errorf("String() = %s does not round-trip: %v, %v", sel, again, err)
			}
		})
	}
}

func TestSeriesSelectorMatches(t *testing.T) {
	sel := mustSelector(`job="exp",cluster=~"gpu-.*",env!="dev",zone!~"x|y"`)
	tests := []struct {
		name   string
		labels model.Metric
		want   bool
	}{
		{"all satisfied", model.Metric{"job": "exp", "cluster": "gpu-1", "zone": "z"}, true},
		{"wrong job", model.Metric{"job": "kubernetes-pods", "cluster": "gpu-1"}, false},
		{"missing job", model.Metric{"cluster": "gpu-1"}, false},
		{"regex is anchored", model.Metric{"job": "exp", "cluster": "my-gpu-1"}, false},
		{"not-equal", model.Metric{"job": "exp", "cluster": "gpu-1", "env": "dev"}, false},
		{"not-regex", model.Metric{"job": "exp", "cluster": "gpu-1", "zone": "y"}, false},
		{"job forged as exported_job does not count", model.Metric{"exported_job": "exp", "job": "kubernetes-pods", "cluster": "gpu-1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sel.Matches(tt.labels); got != tt.want {
				t.Errorf("Matches(%v) = %v, want %v", tt.labels, got, tt.want)
			}
		})
	}
	// A hand-built, never validated selector with a broken pattern lets
	// nothing through, whatever the operator.
	for _, op := range []MatchOp{MatchRegexp, MatchNotRegexp} {
		broken := SeriesSelector{{Label: "job", Op: op, Value: "(x"}}
		if broken.Matches(model.Metric{"job": "y"}) {
			t.Errorf("broken %s matcher matched", op)
		}
	}
}

// TestRenderScopesEveryQuery: the identity's matchers sit in every rendered
// query, beside the caller's, and hostile text in either stays a literal.
func TestRenderScopesEveryQuery(t *testing.T) {
	hostileJob := SeriesSelector{{Label: "job", Op: MatchEqual, Value: `x"} or vector(100) or {job="y`}}
	if err := hostileJob.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		q        Query
		identity SeriesSelector
		want     string
		matchers []parsedMatcher
	}{
		{
			name:     "refresh query",
			q:        Query{Metrics: []string{"A", "B"}},
			identity: testSelector,
			want:     `{__name__=~"A|B",job="spillway-gpu-exporter"}`,
		},
		{
			name:     "live query of some pods",
			q:        Query{Metrics: []string{"A"}, Namespace: "ns", Pods: []string{"p1", "p2"}},
			identity: mustSelector(`job="e",cluster=~"gpu-(a|b)"`),
			want:     `{__name__="A",job="e",cluster=~"gpu-(a|b)",NamespaceName="ns",PodName=~"p1|p2"}`,
		},
		{
			name:     "hostile identity value stays one literal",
			q:        Query{Metrics: []string{"A"}},
			identity: hostileJob,
			matchers: []parsedMatcher{{"__name__", "=", "A"}, {"job", "=", `x"} or vector(100) or {job="y`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.q.Render(tt.identity)
			if tt.want != "" && got != tt.want {
				t.Errorf("Render = %s\nwant     %s", got, tt.want)
			}
			ms := parseSelector(t, got)
			if tt.matchers != nil && fmt.Sprint(ms) != fmt.Sprint(tt.matchers) {
				t.Errorf("matchers = %q, want %q", ms, tt.matchers)
			}
			for _, m := range tt.identity {
				found := false
				for _, pm := range ms {
					found = found || pm == parsedMatcher{m.Label, string(m.Op), m.Value}
				}
				if !found {
					t.Errorf("identity matcher %s%s%q missing from %s", m.Label, m.Op, m.Value, got)
				}
			}
		})
	}
}

// TestFakeAppliesSelector: the fake drops series outside the identity the
// way Prometheus would, so provider tests see what production would.
func TestFakeAppliesSelector(t *testing.T) {
	honest := Series(sm, "ns", "p", "GPU-1", "1", 20, t0)
	forged := with(Series(sm, "ns", "p", "GPU-forged", "1", 100, t0), metricnames.LabelJob, "kubernetes-pods")
	f := &Fake{Selector: testSelector}
	f.Set(model.Vector{honest, forged}, nil)
	res, err := f.Samples(t.Context(), Query{Metrics: []string{sm}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 1 || res.Samples[0].GPU != "GPU-1" {
		t.Errorf("samples = %+v, want only the exporter's", res.Samples)
	}
}
