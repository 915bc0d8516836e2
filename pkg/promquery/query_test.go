package promquery

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// parsedMatcher is one label matcher read back from a rendered selector.
type parsedMatcher struct {
	label, op, value string
}

// parseSelector reads back `{label op "literal", ...}` the way PromQL's
// lexer does for these tokens (Go-quoted strings), so a test can prove that
// hostile input cannot end a literal early or add matchers.
func parseSelector(t *testing.T, s string) []parsedMatcher {
	t.Helper()
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		t.Fatalf("selector %q is not wrapped in braces", s)
	}
	rest := s[1:]
	var out []parsedMatcher
	for {
		i := strings.IndexAny(rest, "=!")
		if i <= 0 {
			t.Fatalf("no matcher at %q", rest)
		}
		label := rest[:i]
		rest = rest[i:]
		op := "="
		for _, o := range []string{"=~", "!~", "!="} {
			if strings.HasPrefix(rest, o) {
				op = o
			}
		}
		rest = rest[len(op):]
		lit, err := strconv.QuotedPrefix(rest)
		if err != nil {
			t.Fatalf("no string literal at %q: %v", rest, err)
		}
		val, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("unquote %q: %v", lit, err)
		}
		out = append(out, parsedMatcher{label, op, val})
		rest = rest[len(lit):]
		switch {
		case rest == "}":
			return out
		case strings.HasPrefix(rest, ","):
			rest = rest[1:]
		default:
			t.Fatalf("unexpected text after literal: %q", rest)
		}
	}
}

func TestQueryString(t *testing.T) {
	hostile := []string{
		`a"}`,
		`x",pod=~".*`,
		"line\nbreak",
		`{__name__=~".+"}`,
		`back\slash`,
		`) or vector(1`,
	}
	tests := []struct {
		name string
		q    Query
		want string
		// wantMatchers is what PromQL would read back.
		wantMatchers []parsedMatcher
	}{
		{
			name:         "one metric",
			q:            Query{Metrics: []string{"DCGM_CUSTOM_PROCESS_SM_UTIL"}},
			want:         `{__name__="DCGM_CUSTOM_PROCESS_SM_UTIL"}`,
			wantMatchers: []parsedMatcher{{"__name__", "=", "DCGM_CUSTOM_PROCESS_SM_UTIL"}},
		},
		{
			name: "several metrics become an alternation",
			q:    Query{Metrics: []string{"A_B", "C:D"}},
			want: `{__name__=~"A_B|C:D"}`,
		},
		{
			name: "namespace and pods",
			q:    Query{Metrics: []string{"M"}, Namespace: "team-a", Pods: []string{"p-1", "p.2"}},
			want: `{__name__="M",NamespaceName="team-a",PodName=~"p-1|p\\.2"}`,
			wantMatchers: []parsedMatcher{
				{"__name__", "=", "M"},
				{"NamespaceName", "=", "team-a"},
				{"PodName", "=~", `p-1|p\.2`},
			},
		},
		{
			name: "hostile namespace stays one literal",
			q:    Query{Metrics: []string{"M"}, Namespace: `ns"} or {__name__=~".+`},
			want: `{__name__="M",NamespaceName="ns\"} or {__name__=~\".+"}`,
			wantMatchers: []parsedMatcher{
				{"__name__", "=", "M"},
				{"NamespaceName", "=", `ns"} or {__name__=~".+`},
			},
		},
		{
			name: "hostile single pod",
			q:    Query{Metrics: []string{"M"}, Namespace: "n", Pods: []string{"line\nbreak"}},
			want: `{__name__="M",NamespaceName="n",PodName="line\nbreak"}`,
		},
		{
			name: "hostile pods are regex-escaped then quoted",
			q:    Query{Metrics: []string{"M"}, Namespace: "n", Pods: hostile},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.q.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got := tt.q.Render(nil)
			if tt.want != "" && got != tt.want {
				t.Errorf("Render(nil) = %s\nwant            %s", got, tt.want)
			}
			ms := parseSelector(t, got)
			if tt.wantMatchers != nil && fmt.Sprint(ms) != fmt.Sprint(tt.wantMatchers) {
				t.Errorf("matchers = %q, want %q", ms, tt.wantMatchers)
			}
			wantCount := 1
			if tt.q.Namespace != "" {
				wantCount++
			}
			if tt.q.Pods != nil {
				wantCount++
			}
			if len(ms) != wantCount {
				t.Fatalf("got %d matchers %q, want %d", len(ms), ms, wantCount)
			}
			if tt.q.Pods == nil {
				return
			}
			pm := ms[len(ms)-1]
			var pattern string
			if pm.op == "=~" {
				pattern = "^(?:" + pm.value + ")$" // PromQL anchors regex matchers
			} else {
				pattern = "^" + regexp.QuoteMeta(pm.value) + "$"
			}
			re, err := regexp.Compile(pattern)
			if err != nil {
				t.Fatalf("pod matcher %q does not compile: %v", pm.value, err)
			}
			for _, p := range tt.q.Pods {
				if !re.MatchString(p) {
					t.Errorf("pod matcher does not match its own pod %q", p)
				}
			}
			for _, other := range []string{"", "a", "x", "other-pod", `a"`, "line", ".*"} {
				if !containsString(tt.q.Pods, other) && re.MatchString(other) {
					t.Errorf("pod matcher %q also matches %q", pm.value, other)
				}
			}
		})
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestQueryValidate(t *testing.T) {
	tests := []struct {
		name    string
		q       Query
		wantErr []string
	}{
		{name: "valid", q: Query{Metrics: []string{"M"}, Namespace: "n", Pods: []string{"p"}, LookbackDelta: time.Minute}},
		{name: "no metrics", q: Query{}, wantErr: []string{"at least one metric"}},
		{name: "bad metric name", q: Query{Metrics: []string{`M"}`}}, wantErr: []string{`invalid metric name "M\"}"`}},
		{
			name:    "empty pod list and no namespace reported together",
			q:       Query{Metrics: []string{"M"}, Pods: []string{}},
			wantErr: []string{"empty pod list", "needs a namespace"},
		},
		{name: "empty pod name", q: Query{Metrics: []string{"M"}, Namespace: "n", Pods: []string{"a", ""}}, wantErr: []string{"empty pod name"}},
		{name: "negative lookback", q: Query{Metrics: []string{"M"}, LookbackDelta: -time.Second}, wantErr: []string{"negative lookback"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.q.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, missing %q", err, w)
				}
			}
		})
	}
}
