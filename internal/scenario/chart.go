package scenario

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	colorDemand  = color.RGBA{R: 0x33, G: 0x66, B: 0xcc, A: 0xff}
	colorUtil    = color.RGBA{R: 0xdd, G: 0x55, B: 0x00, A: 0xff}
	colorTarget  = color.RGBA{R: 0x88, G: 0x88, B: 0x88, A: 0xff}
	colorOnPrem  = color.RGBA{R: 0x2e, G: 0x8b, B: 0x57, A: 0xff}
	colorElastic = color.RGBA{R: 0xe0, G: 0x9f, B: 0x3e, A: 0xff}
	colorNodes   = color.RGBA{R: 0x99, G: 0x22, B: 0x22, A: 0xff}
)

// hourTicks labels the x axis with clock times of the compressed day.
type hourTicks struct{}

func (hourTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for m := math.Ceil(lo/60) * 60; m <= hi; m += 60 {
		label := ""
		if int(m)%180 == 0 {
			label = DayClock(m)
		}
		ticks = append(ticks, plot.Tick{Value: m, Label: label})
	}
	return ticks
}

// WriteChart renders the timeline as a PNG of three stacked panels sharing
// the day-time axis: demand; mean SM utilization against the target; and
// running replicas stacked by pool with the elastic node count.
func (tl *Timeline) WriteChart(w io.Writer, title string, target float64, maxReplicas int) error {
	if len(tl.Samples) == 0 {
		return fmt.Errorf("no samples to chart")
	}
	lo, hi := tl.Samples[0].DayMinute, tl.Samples[len(tl.Samples)-1].DayMinute

	demand := plot.New()
	demand.Title.Text = title
	demand.Y.Label.Text = "demand (req/s)"
	demandXY := make(plotter.XYs, 0, len(tl.Samples))
	for _, s := range tl.Samples {
		demandXY = append(demandXY, plotter.XY{X: s.DayMinute, Y: s.DemandRPS})
	}
	if err := addLine(demand, demandXY, colorDemand, "demand", false); err != nil {
		return err
	}

	util := plot.New()
	util.Y.Label.Text = "SM utilization (%)"
	util.Y.Min, util.Y.Max = 0, 105
	var utilXY plotter.XYs
	for _, s := range tl.Samples {
		if m := s.MeanUtil(); !math.IsNaN(m) {
			utilXY = append(utilXY, plotter.XY{X: s.DayMinute, Y: m})
		}
	}
	if len(utilXY) > 0 {
		if err := addLine(util, utilXY, colorUtil, "mean per-pod SM util (served to the HPA)", false); err != nil {
			return err
		}
	}
	if err := addLine(util, plotter.XYs{{X: lo, Y: target}, {X: hi, Y: target}}, colorTarget, fmt.Sprintf("HPA target %.0f%%", target), true); err != nil {
		return err
	}

	reps := plot.New()
	reps.Y.Label.Text = "replicas / nodes"
	reps.X.Label.Text = "time of day (compressed)"
	reps.Y.Min, reps.Y.Max = 0, float64(maxReplicas)+0.5
	onPrem := make(plotter.XYs, 0, len(tl.Samples))
	total := make(plotter.XYs, 0, len(tl.Samples))
	nodes := make(plotter.XYs, 0, len(tl.Samples))
	for _, s := range tl.Samples {
		onPrem = append(onPrem, plotter.XY{X: s.DayMinute, Y: float64(s.PodsOnPrem)})
		total = append(total, plotter.XY{X: s.DayMinute, Y: float64(s.PodsOnPrem + s.PodsElastic)})
		nodes = append(nodes, plotter.XY{X: s.DayMinute, Y: float64(s.NodesElastic)})
	}
	// Stacked areas: draw the total (elastic on top) first, on-prem over it.
	for _, a := range []struct {
		xy    plotter.XYs
		c     color.Color
		label string
	}{{total, colorElastic, "replicas on elastic (cloud) nodes"}, {onPrem, colorOnPrem, "replicas on on-prem nodes"}} {
		area, err := plotter.NewLine(steps(a.xy))
		if err != nil {
			return err
		}
		area.FillColor = a.c
		area.Color = a.c
		reps.Add(area)
		reps.Legend.Add(a.label, area)
	}
	if err := addLine(reps, steps(nodes), colorNodes, "elastic nodes", true); err != nil {
		return err
	}

	for _, p := range []*plot.Plot{demand, util, reps} {
		p.X.Min, p.X.Max = lo, hi
		p.X.Tick.Marker = hourTicks{}
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		p.Legend.Left = true
		p.Legend.TextStyle.Font.Size = vg.Points(9)
	}
	img := vgimg.New(vg.Points(960), vg.Points(720))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(6)}
	canvases := plot.Align([][]*plot.Plot{{demand}, {util}, {reps}}, tiles, dc)
	demand.Draw(canvases[0][0])
	util.Draw(canvases[1][0])
	reps.Draw(canvases[2][0])
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

func addLine(p *plot.Plot, xy plotter.XYs, c color.Color, label string, dashed bool) error {
	l, err := plotter.NewLine(xy)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1.8)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	}
	p.Add(l)
	p.Legend.Add(label, l)
	return nil
}

// steps turns samples into a staircase so counts do not look interpolated.
func steps(xy plotter.XYs) plotter.XYs {
	out := make(plotter.XYs, 0, 2*len(xy))
	for i, p := range xy {
		if i > 0 {
			out = append(out, plotter.XY{X: p.X, Y: xy[i-1].Y})
		}
		out = append(out, p)
	}
	return out
}
