package sample

import "math"

// FloorStep returns the start of the step of step ms that holds t: steps
// are aligned on multiples of step, times before 1970 included. Every
// step bucketing (history reads, Graphite's grid, retention archives)
// goes through it.
func FloorStep(t, step int64) int64 {
	f := t - t%step
	if t%step < 0 {
		f -= step
	}
	return f
}

// Fold folds the values of pts (at least one point) into one by agg:
// Avg, Sum, Min, Max or Last; Avg for any other.
func Fold(agg Agg, pts []Point) float64 {
	switch agg {
	case Last:
		return pts[len(pts)-1].V
	case Min:
		v := math.Inf(1)
		for _, p := range pts {
			v = math.Min(v, p.V)
		}
		return v
	case Max:
		v := math.Inf(-1)
		for _, p := range pts {
			v = math.Max(v, p.V)
		}
		return v
	}
	var v float64
	for _, p := range pts {
		v += p.V
	}
	if agg == Sum {
		return v
	}
	return v / float64(len(pts))
}
