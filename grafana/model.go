// Package grafana defines spillway's Grafana dashboards in Go and checks
// their queries.
//
// The dashboards are built with Grafana's typed SDK
// (github.com/grafana/grafana-foundation-sdk/go), so their JSON follows
// Grafana's dashboard schema by construction; `go run ./grafana/gen` renders
// them into grafana/dashboards/*.json (for file provisioning) and into the
// Helm chart's dashboards/ (for the dashboard sidecar). The package test
// fails when a committed JSON file differs from what the code renders, when
// a query does not parse as PromQL, or when it reads a metric that neither
// spillway nor the listed third parties export. Nobody edits the JSON by
// hand.
package grafana

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Dashboard is Grafana's classic dashboard JSON model. The SDK marks it
// deprecated in favour of dashboardv2, the v2 schema that only Grafana 12's
// app platform serves; file provisioning and the chart's dashboard sidecar
// load this model from Grafana 10 on, so spillway keeps it.
type Dashboard = dashboard.Dashboard //nolint:staticcheck // see above

// Render returns the dashboard as indented JSON with a trailing newline.
// The output is deterministic: the same dashboard always renders to the
// same bytes, so committed files can be compared with a fresh render.
func Render(d Dashboard) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("rendering dashboard %s: %w", deref(d.Uid), err)
	}
	return buf.Bytes(), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// promDS is the data source of every panel and query: the dashboard's
// "datasource" variable, so one dashboard works with any Prometheus.
func promDS() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}
}

// datasourceVar is the Prometheus data source picker every query uses.
func datasourceVar() *dashboard.DatasourceVariableBuilder {
	return dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus")
}

// queryVar is a multi-value variable filled by a Grafana label_values(...)
// query; All matches every value (regex .*).
func queryVar(name, label, query, description string) *dashboard.QueryVariableBuilder {
	all := dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}}
	allValue := dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}}
	return dashboard.NewQueryVariableBuilder(name).Label(label).Description(description).
		Datasource(promDS()).Definition(query).
		Query(dashboard.StringOrMap{Map: map[string]any{
			"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1,
		}}).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).Sort(dashboard.VariableSortAlphabeticalAsc).
		Multi(true).IncludeAll(true).AllValue(".*").Regex("").Hide(dashboard.VariableHideDontHide).
		Current(dashboard.VariableOption{Selected: cog.ToPtr(true), Text: all, Value: allValue})
}

// dashboard fills the fields every spillway dashboard shares, and places
// the layout's panels.
func newDashboard(uid, title, description string, vars []cog.Builder[dashboard.VariableModel], l *layout) (Dashboard, error) {
	builtIn := dashboard.NewAnnotationQueryBuilder().
		Name("Annotations & Alerts").BuiltIn(1).Type("dashboard").
		Datasource(common.DataSourceRef{Type: cog.ToPtr("grafana"), Uid: cog.ToPtr("-- Grafana --")}).
		Enable(true).Hide(true).IconColor("rgba(0, 211, 255, 1)")
	link := dashboard.NewDashboardLinkBuilder("Spillway").Type(dashboard.DashboardLinkTypeDashboards).
		Tags([]string{"spillway"}).AsDropdown(true).IncludeVars(true).KeepTime(true)
	//nolint:staticcheck // the classic model: see Dashboard
	b := dashboard.NewDashboardBuilder(title).Uid(uid).Description(description).
		Tags([]string{"spillway", "gpu"}).Timezone("browser").Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).Refresh("30s").Version(1).
		Time("now-6h", "now").
		Annotation(builtIn).Link(link).
		WithVariable(datasourceVar())
	for _, v := range vars {
		b.WithVariable(v)
	}
	d, err := b.Build()
	if err != nil {
		return Dashboard{}, fmt.Errorf("dashboard %s: %w", uid, err)
	}
	if l.err != nil {
		return Dashboard{}, fmt.Errorf("dashboard %s: %w", uid, l.err)
	}
	// Placed by layout rather than by the builder's WithPanel, whose
	// placement does not wrap a panel that would overflow the line.
	d.Panels = l.panels
	return d, nil
}
