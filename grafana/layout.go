package grafana

import (
	"errors"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// gridWidth is Grafana's grid width.
const gridWidth = 24

// layout places panels left to right in lines of gridWidth columns, under
// full-width rows, and numbers them. A panel that does not build is kept
// as an error, returned when the dashboard is assembled.
type layout struct {
	panels []dashboard.PanelOrRowPanel
	err    error
	nextID uint32
	x, y   uint32
	lineH  uint32
}

func (l *layout) id() uint32 {
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
	r, err := dashboard.NewRowBuilder(title).Collapsed(false).Id(l.id()).
		GridPos(dashboard.GridPos{H: 1, W: gridWidth, X: 0, Y: l.y}).Build()
	if err != nil {
		l.err = errors.Join(l.err, err)
		return
	}
	l.panels = append(l.panels, dashboard.PanelOrRowPanel{RowPanel: &r})
	l.y++
}

// add places the panel w columns wide and h high, wrapping when the line
// is full.
func (l *layout) add(w, h uint32, b cog.Builder[dashboard.Panel]) {
	p, err := b.Build()
	if err != nil {
		l.err = errors.Join(l.err, err)
		return
	}
	if l.x+w > gridWidth {
		l.newline()
	}
	p.Id = cog.ToPtr(l.id())
	p.GridPos = &dashboard.GridPos{H: h, W: w, X: l.x, Y: l.y}
	l.panels = append(l.panels, dashboard.PanelOrRowPanel{Panel: &p})
	l.x += w
	l.lineH = max(l.lineH, h)
}

// target is one PromQL range query; legend uses Grafana's {{label}} syntax.
func target(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Datasource(promDS()).Expr(expr).LegendFormat(legend).
		Range().EditorMode(prometheus.QueryEditorModeCode)
}

// withRefIDs names a panel's queries A, B, C...
func withRefIDs(ts []*prometheus.DataqueryBuilder) []cog.Builder[variants.Dataquery] {
	out := make([]cog.Builder[variants.Dataquery], len(ts))
	for i, t := range ts {
		out[i] = t.RefId(string(rune('A' + i)))
	}
	return out
}

// timeseries is a line chart in unit (Grafana unit ids: percent, s, short,
// decmbytes, reqps...).
func timeseriesPanel(title, description, unit string, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().Title(title).Description(description).Datasource(promDS()).
		Targets(withRefIDs(targets)).Unit(unit).
		DrawStyle(common.GraphDrawStyleLine).LineWidth(1).FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).SpanNulls(common.BoolOrFloat64{Bool: cog.ToPtr(false)}).
		Legend(common.NewVizLegendOptionsBuilder().DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementRight).ShowLegend(true).Calcs([]string{"lastNotNull", "max"})).
		Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending))
}

// stacked is a stacked area chart (counts that add up, like replicas).
func stacked(title, description, unit string, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	return timeseriesPanel(title, description, unit, targets...).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal).Group("A")).
		FillOpacity(40)
}

// percent0to100 fixes the axis of utilization panels.
func percent0to100(p *timeseries.PanelBuilder) *timeseries.PanelBuilder {
	return p.Min(0).Max(100)
}

// statPanel is a single-number panel over an instant query; steps colour it
// (none: plain).
func statPanel(title, description, unit string, t *prometheus.DataqueryBuilder, steps ...dashboard.Threshold) *stat.PanelBuilder {
	p := stat.NewPanelBuilder().Title(title).Description(description).Datasource(promDS()).
		Targets(withRefIDs([]*prometheus.DataqueryBuilder{t.Instant()})).Unit(unit).NoValue("no data").
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields("").Values(false)).
		ColorMode(common.BigValueColorModeValue).GraphMode(common.BigValueGraphModeArea).
		TextMode(common.BigValueTextModeAuto).JustifyMode(common.BigValueJustifyModeAuto)
	if len(steps) > 0 {
		p.Thresholds(dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(steps)).
			ColorScheme(dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdThresholds))
	}
	return p
}

// step is a threshold step; a nil from is the base step.
func step(color string, from *float64) dashboard.Threshold {
	return dashboard.Threshold{Color: color, Value: from}
}
