package promquery

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
)

// MatchOp is a PromQL label-matching operator.
type MatchOp string

// The four PromQL label-matching operators.
const (
	MatchEqual     MatchOp = "="
	MatchNotEqual  MatchOp = "!="
	MatchRegexp    MatchOp = "=~"
	MatchNotRegexp MatchOp = "!~"
)

// Matcher is one label matcher of a SeriesSelector.
type Matcher struct {
	Label string
	Op    MatchOp
	// Value is the literal, or for =~ and !~ an RE2 pattern that Prometheus
	// anchors at both ends.
	Value string

	re *regexp.Regexp // compiled, anchored pattern of a regex matcher
}

// SeriesSelector is the identity every series the adapter reads must
// carry, e.g. job="spillway-gpu-exporter": Prometheus scrapes many targets,
// and only the exporter's series may become scaling signals. Build one with
// ParseSeriesSelector; the Client adds its matchers to every query.
type SeriesSelector []Matcher

// ParseSeriesSelector reads a comma-separated list of PromQL label matchers,
// optionally wrapped in braces: `job="spillway-gpu-exporter"` or
// `{job="spillway-gpu-exporter",cluster=~"gpu-.*"}`. Values are PromQL
// double-quoted (Go-escaped) or backquoted strings. It refuses what could
// not identify the exporter: an empty list, matchers on __name__ or other
// reserved labels (the adapter picks the metric names itself), and lists in
// which every matcher also matches series that lack the label.
func ParseSeriesSelector(s string) (SeriesSelector, error) {
	text := strings.TrimSpace(s)
	if strings.HasPrefix(text, "{") {
		if !strings.HasSuffix(text, "}") {
			return nil, fmt.Errorf("series selector %q: opening brace without a closing one", s)
		}
		text = strings.TrimSpace(text[1 : len(text)-1])
	}
	var sel SeriesSelector
	for text != "" {
		m, rest, err := parseMatcher(text)
		if err != nil {
			return nil, fmt.Errorf("series selector %q: %w", s, err)
		}
		sel = append(sel, m)
		rest = strings.TrimSpace(rest)
		if rest == "" {
			break
		}
		if rest[0] != ',' {
			return nil, fmt.Errorf("series selector %q: want a comma before %q", s, rest)
		}
		text = strings.TrimSpace(rest[1:])
	}
	if err := sel.Validate(); err != nil {
		return nil, fmt.Errorf("series selector %q: %w", s, err)
	}
	return sel, nil
}

// parseMatcher reads `label op "value"` from the start of s.
func parseMatcher(s string) (Matcher, string, error) {
	end := strings.IndexAny(s, "=!")
	if end < 0 {
		return Matcher{}, "", fmt.Errorf("%q is not a label matcher (label=\"value\")", s)
	}
	m := Matcher{Label: strings.TrimSpace(s[:end])}
	rest := s[end:]
	for _, op := range []MatchOp{MatchRegexp, MatchNotRegexp, MatchNotEqual, MatchEqual} {
		if strings.HasPrefix(rest, string(op)) {
			m.Op = op
			break
		}
	}
	if m.Op == "" {
		return Matcher{}, "", fmt.Errorf("label %q: unknown operator at %q (use =, !=, =~ or !~)", m.Label, rest)
	}
	rest = strings.TrimSpace(rest[len(m.Op):])
	if rest == "" || (rest[0] != '"' && rest[0] != '`') {
		return Matcher{}, "", fmt.Errorf("label %q: the value must be a double-quoted string", m.Label)
	}
	lit, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return Matcher{}, "", fmt.Errorf("label %q: unterminated or malformed string at %q", m.Label, rest)
	}
	if m.Value, err = strconv.Unquote(lit); err != nil {
		return Matcher{}, "", fmt.Errorf("label %q: %w", m.Label, err)
	}
	return m, rest[len(lit):], nil
}

// Validate checks a selector built by hand the way ParseSeriesSelector
// checks a parsed one, and compiles its regular expressions.
func (sel SeriesSelector) Validate() error {
	if len(sel) == 0 {
		return errors.New("no matchers: name the exporter's scrape job, e.g. job=\"spillway-gpu-exporter\"")
	}
	var errs []error
	identifies := false
	for i := range sel {
		m := &sel[i]
		switch {
		case !model.LegacyValidation.IsValidLabelName(m.Label):
			errs = append(errs, fmt.Errorf("invalid label name %q", m.Label))
			continue
		case strings.HasPrefix(m.Label, "__"):
			errs = append(errs, fmt.Errorf("label %q is reserved: the adapter selects metric names itself", m.Label))
			continue
		}
		switch m.Op {
		case MatchEqual, MatchNotEqual:
		case MatchRegexp, MatchNotRegexp:
			re, err := regexp.Compile("^(?s:" + m.Value + ")$")
			if err != nil {
				errs = append(errs, fmt.Errorf("label %q: invalid regular expression %q: %w", m.Label, m.Value, err))
				continue
			}
			m.re = re
		default:
			errs = append(errs, fmt.Errorf("label %q: unknown operator %q", m.Label, m.Op))
			continue
		}
		if !m.matches("") {
			identifies = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !identifies {
		return errors.New("every matcher also matches series without the label; at least one must require a value, e.g. job=\"spillway-gpu-exporter\"")
	}
	return nil
}

// matches applies one matcher to a label value ("" when absent, as in
// Prometheus). A matcher that cannot be evaluated matches nothing, so a
// broken selector lets no series through.
func (m *Matcher) matches(v string) bool {
	switch m.Op {
	case MatchEqual:
		return v == m.Value
	case MatchNotEqual:
		return v != m.Value
	case MatchRegexp, MatchNotRegexp:
		re := m.re
		if re == nil {
			// Built by hand and never validated: compile per call rather
			// than cache, so concurrent readers never write.
			var err error
			if re, err = regexp.Compile("^(?s:" + m.Value + ")$"); err != nil {
				return false
			}
		}
		return re.MatchString(v) == (m.Op == MatchRegexp)
	}
	return false
}

// Matches reports whether a series' labels satisfy every matcher, the way
// Prometheus evaluates them.
func (sel SeriesSelector) Matches(metric model.Metric) bool {
	for i := range sel {
		if !sel[i].matches(string(metric[model.LabelName(sel[i].Label)])) {
			return false
		}
	}
	return true
}

// String renders the matchers as PromQL, without braces; it parses back to
// the same selector.
func (sel SeriesSelector) String() string {
	var b strings.Builder
	for i, m := range sel {
		if i > 0 {
			b.WriteByte(',')
		}
		m.write(&b)
	}
	return b.String()
}

// write renders the matcher with its value as a Go-quoted literal (PromQL
// strings use Go's escaping): whatever the value holds stays one literal.
func (m Matcher) write(b *strings.Builder) {
	b.WriteString(m.Label)
	b.WriteString(string(m.Op))
	b.WriteString(strconv.QuoteToASCII(m.Value))
}
