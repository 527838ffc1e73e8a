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
			l, err := plotter.NewLine(rate)
			if err != nil {
				return fmt.Errorf("plot %s: %w", r.Label, err)
			}
			l.Color = c
			tp.Add(l)
			tp.Legend.Add(r.Label, l)
		}
		if r.Visible > 0 {
			v, err := plotter.NewLine(plotter.XYs{{X: r.Visible, Y: 0}, {X: r.Visible, Y: top}})
			if err != nil {
				return fmt.Errorf("plot %s: %w", r.Label, err)
			}
			v.Color = c
			v.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
			tp.Add(v)
			tp.Legend.Add(fmt.Sprintf("%s: all visible at %.2fs", r.Label, r.Visible), v)
		}
		if len(p99) > 0 {
			hasLat = true
			for j, pts := range []plotter.XYs{p50, p99} {
				l, err := plotter.NewLine(pts)
				if err != nil {
					return fmt.Errorf("plot %s: %w", r.Label, err)
				}
				l.Color = c
				if j == 0 {
					l.Dashes = []vg.Length{vg.Points(3), vg.Points(2)}
				}
				lp.Add(l)
				lp.Legend.Add(r.Label+[]string{" p50", " p99"}[j], l)
			}
		}
	}
	tp.Legend.Top = true
	lp.Legend.Top = true
	tp.Add(plotter.NewGrid())
	lp.Add(plotter.NewGrid())
	rows := 1
	if hasLat {
		rows = 2
	}
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
	plots := [][]*plot.Plot{{tp}}
	if hasLat {
		plots = append(plots, []*plot.Plot{lp})
	}
	tiles := draw.Tiles{Rows: rows, Cols: 1, PadY: vg.Points(8), PadX: vg.Points(8), PadTop: vg.Points(4), PadBottom: vg.Points(4)}
	cs := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(cs[i][0])
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
