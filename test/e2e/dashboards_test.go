package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/grafana"
)

// dashboardQuery is one PromQL text of a shipped dashboard.
type dashboardQuery struct {
	dashboard, panel, ref, expr string
}

// dashboardVar is a query variable: Grafana's label_values(selector, label).
type dashboardVar struct {
	dashboard, name, selector, label string
}

// labelValuesQuery is Grafana's label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// loadDashboards reads every shipped dashboard as the JSON Grafana loads and
// returns its panel queries and query variables.
func loadDashboards(t *testing.T) ([]dashboardQuery, []dashboardVar, map[string]bool) {
	t.Helper()
	files, err := grafana.All()
	if err != nil {
		t.Fatal(err)
	}
	var qs []dashboardQuery
	var vars []dashboardVar
	titles := map[string]bool{}
	for _, f := range files {
		data, err := grafana.Render(f.Dashboard)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels     []json.RawMessage `json:"panels"`
			Templating struct {
				List []struct {
					Name       string `json:"name"`
					Type       string `json:"type"`
					Definition string `json:"definition"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		type panel struct {
			Title   string            `json:"title"`
			Panels  []json.RawMessage `json:"panels"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		}
		var walk func([]json.RawMessage)
		walk = func(raw []json.RawMessage) {
			for _, r := range raw {
				var p panel
				if err := json.Unmarshal(r, &p); err != nil {
					t.Fatalf("%s: %v", f.Name, err)
				}
				titles[p.Title] = true
				for _, tg := range p.Targets {
					qs = append(qs, dashboardQuery{f.Name, p.Title, tg.RefID, tg.Expr})
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			m := labelValuesQuery.FindStringSubmatch(v.Definition)
			if m == nil {
				t.Fatalf("%s: variable %s: %q is not label_values(selector, label)", f.Name, v.Name, v.Definition)
			}
			vars = append(vars, dashboardVar{f.Name, v.Name, m[1], m[2]})
		}
	}
	if len(qs) == 0 || len(vars) == 0 {
		t.Fatalf("%d queries and %d variables in the dashboards", len(qs), len(vars))
	}
	return qs, vars, titles
}

// grafanaMacro and grafanaVariable are what Grafana replaces before a query
// reaches Prometheus.
var (
	grafanaMacro    = regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`)
	grafanaVariable = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?`)
)

// substitute does Grafana's part for a dashboard opened with its defaults:
// every variable at All, which the dashboards define as the regex .*;
// $__rate_interval as Grafana computes it for a Prometheus data source with
// its default 15 s scrape interval (4 × 15 s); $__interval as the step;
// $__range as the window.
func substitute(expr string, step, window time.Duration) string {
	expr = grafanaMacro.ReplaceAllStringFunc(expr, func(m string) string {
		switch strings.Trim(m, "${}") {
		case "__rate_interval":
			return "1m"
		case "__interval":
			return promDuration(step)
		default:
			return promDuration(window)
		}
	})
	return grafanaVariable.ReplaceAllString(expr, ".*")
}

func promDuration(d time.Duration) string { return strconv.Itoa(int(d.Seconds())) + "s" }

// promGet calls a Prometheus HTTP API endpoint and decodes its data.
func promGet(ctx context.Context, base, path string, params url.Values, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

// checkDashboardQueries runs every query of the shipped dashboards against
// the scenario's Prometheus over [from, now], as Grafana would with its
// defaults, and fails on any that returns nothing unless grafana.ExpectedEmpty
// excuses its panel. Each query variable must offer at least one value.
func checkDashboardQueries(t *testing.T, promURL string, from time.Time) {
	qs, vars, titles := loadDashboards(t)
	for title := range grafana.ExpectedEmpty {
		if !titles[title] {
			t.Errorf("grafana.ExpectedEmpty names panel %q, which no dashboard has", title)
		}
	}
	ctx := context.Background()
	to := time.Now()
	window := to.Sub(from).Truncate(time.Second)
	const step = 10 * time.Second
	span := url.Values{"start": {strconv.FormatInt(from.Unix(), 10)}, "end": {strconv.FormatInt(to.Unix(), 10)}}

	for _, v := range vars {
		params := url.Values{"match[]": {substitute(v.selector, step, window)}}
		for k, vs := range span {
			params[k] = vs
		}
		var values []string
		if err := promGet(ctx, promURL, "/api/v1/label/"+v.label+"/values", params, &values); err != nil {
			t.Errorf("%s: variable %s: %v", v.dashboard, v.name, err)
			continue
		}
		if len(values) == 0 {
			t.Errorf("%s: variable %s (%s) has no values", v.dashboard, v.name, v.selector)
		}
	}

	var empty, excused []string
	for _, q := range qs {
		params := url.Values{"query": {substitute(q.expr, step, window)}, "step": {promDuration(step)}}
		for k, vs := range span {
			params[k] = vs
		}
		var res struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		}
		if err := promGet(ctx, promURL, "/api/v1/query_range", params, &res); err != nil {
			t.Errorf("%s: panel %q query %s: %v", q.dashboard, q.panel, q.ref, err)
			continue
		}
		samples := 0
		for _, s := range res.Result {
			samples += len(s.Values)
		}
		name := fmt.Sprintf("%s: %q %s", q.dashboard, q.panel, q.ref)
		switch {
		case samples > 0:
			t.Logf("%s: %d series, %d samples", name, len(res.Result), samples)
			if _, ok := grafana.ExpectedEmpty[q.panel]; ok {
				t.Logf("%s: listed in grafana.ExpectedEmpty, yet has data here", name)
			}
		case grafana.ExpectedEmpty[q.panel] != "":
			excused = append(excused, fmt.Sprintf("%s (%s)", name, grafana.ExpectedEmpty[q.panel]))
		default:
			empty = append(empty, fmt.Sprintf("%s: %s", name, q.expr))
		}
	}
	slices.Sort(excused)
	for _, e := range excused {
		t.Logf("empty as expected: %s", e)
	}
	t.Logf("%d dashboard queries over the last %s: %d with data, %d empty as expected, %d empty",
		len(qs), window, len(qs)-len(excused)-len(empty), len(excused), len(empty))
	if len(empty) > 0 {
		t.Errorf("dashboard queries without data after the seed scenario (fix the cause, or list the panel with its reason in grafana.ExpectedEmpty):\n  %s",
			strings.Join(empty, "\n  "))
	}
}
