package grafana

import "k8s.io/utils/ptr"

// promDS is the data source of every panel and query: the dashboard's
// "datasource" variable, so one dashboard works with any Prometheus.
var promDS = &Datasource{Type: "prometheus", UID: "${datasource}"}

// gridWidth is Grafana's grid width.
const gridWidth = 24

// layout places panels left to right in lines of gridWidth columns, under
// full-width rows, and numbers them.
type layout struct {
	panels []Panel
	nextID int
	x, y   int
	lineH  int
}

func (l *layout) id() int {
	l.nextID++
	return l.nextID
}

func (l *layout) newline() {
	if l.x > 0 {
		l.y += l.lineH
		l.x, l.lineH = 0, 0
	}
}

// row starts a new expanded row.
func (l *layout) row(title string) {
	l.newline()
	collapsed := false
	l.panels = append(l.panels, Panel{
		ID: l.id(), Type: "row", Title: title, Collapsed: &collapsed,
		GridPos: GridPos{H: 1, W: gridWidth, X: 0, Y: l.y},
	})
	l.y++
}

// add places p w columns wide and h high, wrapping when the line is full.
func (l *layout) add(w, h int, p Panel) {
	if l.x+w > gridWidth {
		l.newline()
	}
	p.ID = l.id()
	p.GridPos = GridPos{H: h, W: w, X: l.x, Y: l.y}
	l.panels = append(l.panels, p)
	l.x += w
	l.lineH = max(l.lineH, h)
}

// target is one PromQL query; legend uses Grafana's {{label}} syntax.
func target(expr, legend string) Target {
	return Target{Datasource: promDS, Expr: expr, LegendFormat: legend, Range: true, EditorMode: "code"}
}

// withRefIDs names a panel's queries A, B, C...
func withRefIDs(ts []Target) []Target {
	for i := range ts {
		ts[i].RefID = string(rune('A' + i))
	}
	return ts
}

// timeseries is a line chart in unit (Grafana unit ids: percent, s, short,
// decmbytes, reqps...).
func timeseries(title, description, unit string, targets ...Target) Panel {
	return Panel{
		Type: "timeseries", Title: title, Description: description, Datasource: promDS,
		Targets: withRefIDs(targets),
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{
			Unit: unit,
			Custom: map[string]any{
				"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
				"showPoints": "never", "spanNulls": false,
			},
		}, Overrides: []any{}},
		Options: map[string]any{
			"legend":  map[string]any{"displayMode": "table", "placement": "right", "showLegend": true, "calcs": []string{"lastNotNull", "max"}},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		},
	}
}

// stacked is a stacked area chart (counts that add up, like replicas).
func stacked(title, description, unit string, targets ...Target) Panel {
	p := timeseries(title, description, unit, targets...)
	p.FieldConfig.Defaults.Custom["stacking"] = map[string]any{"mode": "normal", "group": "A"}
	p.FieldConfig.Defaults.Custom["fillOpacity"] = 40
	return p
}

// percent0to100 fixes the axis of utilization panels.
func percent0to100(p Panel) Panel {
	p.FieldConfig.Defaults.Min = ptr.To(0.0)
	p.FieldConfig.Defaults.Max = ptr.To(100.0)
	return p
}

// stat is a single-number panel; steps colour it (nil: plain).
func stat(title, description, unit string, t Target, steps ...Threshold) Panel {
	t.Instant, t.Range = true, false
	fd := FieldDefaults{Unit: unit, NoValue: "no data"}
	if len(steps) > 0 {
		fd.Thresholds = &Thresholds{Mode: "absolute", Steps: steps}
		fd.Color = map[string]any{"mode": "thresholds"}
	}
	return Panel{
		Type: "stat", Title: title, Description: description, Datasource: promDS,
		Targets:     withRefIDs([]Target{t}),
		FieldConfig: &FieldConfig{Defaults: fd, Overrides: []any{}},
		Options: map[string]any{
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"colorMode":     "value", "graphMode": "area", "textMode": "auto", "justifyMode": "auto",
		},
	}
}

func step(color string, from *float64) Threshold { return Threshold{Color: color, Value: from} }

// datasourceVar is the Prometheus data source picker every query uses.
func datasourceVar() Variable {
	return Variable{
		Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus",
		Current: map[string]any{}, Options: []any{},
	}
}

// queryVar is a multi-value variable filled by a Grafana label_values(...)
// query; All matches every value (regex .*).
func queryVar(name, label, query, description string) Variable {
	return Variable{
		Name: name, Label: label, Type: "query", Description: description,
		Datasource: promDS, Definition: query,
		Query:   map[string]any{"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
		Refresh: 2, Sort: 1, Multi: true, IncludeAll: true, AllValue: ".*",
		Current: map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}},
		Options: []any{},
	}
}

// dashboard fills the fields every spillway dashboard shares.
func dashboard(uid, title, description string, vars []Variable, l *layout) Dashboard {
	return Dashboard{
		UID: uid, Title: title, Description: description,
		Tags:     []string{"spillway", "gpu"},
		Timezone: "browser", Editable: true, GraphTooltip: 1, Refresh: "30s",
		SchemaVersion: 39, Version: 1,
		Time:       TimeRange{From: "now-6h", To: "now"},
		Templating: Templating{List: append([]Variable{datasourceVar()}, vars...)},
		Annotations: Annotation{List: []map[string]any{{
			"builtIn": 1, "datasource": map[string]any{"type": "grafana", "uid": "-- Grafana --"},
			"enable": true, "hide": true, "iconColor": "rgba(0, 211, 255, 1)",
			"name": "Annotations & Alerts", "type": "dashboard",
		}}},
		Links:  []Link{{Title: "Spillway", Type: "dashboards", Tags: []string{"spillway"}, AsDropdown: true, IncludeVars: true, KeepTime: true}},
		Panels: l.panels,
	}
}
