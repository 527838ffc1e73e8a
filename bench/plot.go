package bench

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// PlotRun is one run on the plot: a line in each panel, and a dotted
// vertical line at Visible (seconds; 0 for none), when the read-back saw
// every sample.
type PlotRun struct {
	Label    string
	Timeline []Tick
	Visible  float64
}

// Plot draws throughput (top) and ack latency p50/p99 (bottom) over time
// for the runs, to path; the extension picks PNG or SVG.
func Plot(path, title string, runs []PlotRun) error {
	tp := plot.New()
	tp.Title.Text = title
	tp.X.Label.Text = "seconds"
	tp.Y.Label.Text = "samples/s (acked, or sent when there are no replies)"
	tp.Y.Tick.Marker = siTicks{}
	lp := plot.New()
	lp.X.Label.Text = "seconds"
	lp.Y.Label.Text = "ack latency, ms"
	hasLat := false
	top := 0.0
	for _, r := range runs {
		for _, t := range r.Timeline {
			top = max(top, t.Rate)
		}
	}
	for i, r := range runs {
		rate := make(plotter.XYs, 0, len(r.Timeline))
		var p50, p99 plotter.XYs
		for _, t := range r.Timeline {
			rate = append(rate, plotter.XY{X: t.T, Y: t.Rate})
			if t.P99 > 0 {
				p50 = append(p50, plotter.XY{X: t.T, Y: t.P50})
				p99 = append(p99, plotter.XY{X: t.T, Y: t.P99})
			}
		}
		c := palette[i%len(palette)]
		if len(rate) > 0 {
			if _, err := addLine(tp, rate, c, r.Label); err != nil {
				return fmt.Errorf("plot %s: %w", r.Label, err)
			}
		}
		if r.Visible > 0 {
			label := fmt.Sprintf("%s: all visible at %.2fs", r.Label, r.Visible)
			if err := addDotted(tp, r.Visible, top, c, label); err != nil {
				return fmt.Errorf("plot %s: %w", r.Label, err)
			}
		}
		if len(p99) > 0 {
			hasLat = true
			for j, pts := range []plotter.XYs{p50, p99} {
				l, err := addLine(lp, pts, c, r.Label+[]string{" p50", " p99"}[j])
				if err != nil {
					return fmt.Errorf("plot %s: %w", r.Label, err)
				}
				if j == 0 {
					l.Dashes = []vg.Length{vg.Points(3), vg.Points(2)}
				}
			}
		}
	}
	tp.Legend.Top = true
	lp.Legend.Top = true
	tp.Add(plotter.NewGrid())
	lp.Add(plotter.NewGrid())
	plots := []*plot.Plot{tp}
	if hasLat {
		plots = append(plots, lp)
	}
	return writePlots(path, plots)
}

// addLine adds a line through pts, in colour c, to p, and to its legend
// as label.
func addLine(p *plot.Plot, pts plotter.XYs, c color.Color, label string) (*plotter.Line, error) {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return nil, err
	}
	l.Color = c
	p.Add(l)
	p.Legend.Add(label, l)
	return l, nil
}

// addDotted adds a dotted vertical line at x, from 0 to top, to p; and to
// its legend as label, unless label is empty.
func addDotted(p *plot.Plot, x, top float64, c color.Color, label string) error {
	v, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: top}})
	if err != nil {
		return err
	}
	v.Color = c
	v.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
	p.Add(v)
	if label != "" {
		p.Legend.Add(label, v)
	}
	return nil
}

// writePlots draws plots one above the other, sharing their X axis, to
// path; the extension picks PNG or SVG.
func writePlots(path string, plots []*plot.Plot) error {
	rows := len(plots)
	w, h := 9*vg.Inch, vg.Length(rows)*3.5*vg.Inch
	var canvas interface {
		vg.CanvasSizer
		vg.CanvasWriterTo
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		canvas = vgsvg.New(w, h)
	case ".png":
		canvas = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	default:
		return fmt.Errorf("plot %s: want a .png or .svg file", path)
	}
	dc := draw.New(canvas)
	grid := make([][]*plot.Plot, rows)
	for i, p := range plots {
		grid[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: rows, Cols: 1, PadY: vg.Points(8), PadX: vg.Points(8), PadTop: vg.Points(4), PadBottom: vg.Points(4)}
	cs := plot.Align(grid, tiles, dc)
	for i := range grid {
		grid[i][0].Draw(cs[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

// ProcRun is one server on a process plot: its samples, and a dotted
// vertical line at LoadEnd (seconds; 0 for none), when the load ended.
type ProcRun struct {
	Label   string
	Samples []ProcSample
	LoadEnd float64
}

// PlotProc draws the servers' CPU seconds, RSS and data-directory size
// over time, one panel each, to path; the extension picks PNG or SVG.
func PlotProc(path, title string, runs []ProcRun) error {
	panels := []struct {
		label string
		ticks plot.Ticker
		y     func(ProcSample) float64
	}{
		{"server CPU seconds (utime+stime)", plot.DefaultTicks{}, func(s ProcSample) float64 { return s.CPU }},
		{"RSS, bytes", byteTicks{}, func(s ProcSample) float64 { return float64(s.RSS) }},
		{"data directory, bytes", byteTicks{}, func(s ProcSample) float64 { return float64(s.Disk) }},
	}
	var plots []*plot.Plot
	for i, pn := range panels {
		p := plot.New()
		if i == 0 {
			p.Title.Text = title
		}
		p.X.Label.Text = "seconds from the first byte"
		p.Y.Label.Text = pn.label
		p.Y.Tick.Marker = pn.ticks
		p.Legend.Top, p.Legend.Left = true, true
		top := 0.0
		for _, r := range runs {
			for _, s := range r.Samples {
				top = max(top, pn.y(s))
			}
		}
		for j, r := range runs {
			c := palette[j%len(palette)]
			pts := make(plotter.XYs, len(r.Samples))
			for k, s := range r.Samples {
				pts[k] = plotter.XY{X: s.T, Y: pn.y(s)}
			}
			if len(pts) > 0 {
				if _, err := addLine(p, pts, c, r.Label); err != nil {
					return fmt.Errorf("plot %s: %w", r.Label, err)
				}
			}
			if r.LoadEnd > 0 {
				label := "" // in the first panel's legend only
				if i == 0 {
					label = fmt.Sprintf("%s: load ends at %.1fs", r.Label, r.LoadEnd)
				}
				if err := addDotted(p, r.LoadEnd, top, c, label); err != nil {
					return fmt.Errorf("plot %s: %w", r.Label, err)
				}
			}
		}
		p.Add(plotter.NewGrid())
		plots = append(plots, p)
	}
	return writePlots(path, plots)
}

// byteTicks labels an axis in B, KiB, MiB or GiB, on round numbers of
// the unit that suits the axis' top.
type byteTicks struct{}

func (byteTicks) Ticks(lo, hi float64) []plot.Tick {
	unit, name := 1.0, "B"
	for _, u := range []string{"KiB", "MiB", "GiB"} {
		if hi < unit*1024 {
			break
		}
		unit, name = unit*1024, u
	}
	ts := plot.DefaultTicks{}.Ticks(lo/unit, hi/unit)
	for i := range ts {
		ts[i].Value *= unit
		if ts[i].Label != "" {
			ts[i].Label += " " + name
		}
	}
	return ts
}

// siTicks labels an axis 500k, 1.5M, ... instead of 1500000.00.
type siTicks struct{}

func (siTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label == "" {
			continue
		}
		switch v := ts[i].Value; {
		case v >= 1e6:
			ts[i].Label = strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
		case v >= 1e3:
			ts[i].Label = strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
		default:
			ts[i].Label = strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ts
}

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}
