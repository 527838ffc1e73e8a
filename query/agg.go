package query

import (
	"fmt"
	"strconv"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Agg folds the points of one step into one value.
type Agg string

// The aggregations a history read can ask for.
const (
	AggAvg   Agg = "avg"
	AggSum   Agg = "sum"
	AggMin   Agg = "min"
	AggMax   Agg = "max"
	AggFirst Agg = "first"
	AggLast  Agg = "last"
	AggCount Agg = "count"
	// AggIncrease is how much a COUNTER grew in the step, from the last
	// point before it, resets counted as Increase counts them; AggRate is
	// that per second of the step.
	AggIncrease Agg = "increase"
	AggRate     Agg = "rate"
)

// ParseAgg checks an aggregation name; empty is avg.
func ParseAgg(s string) (Agg, error) {
	switch a := Agg(s); a {
	case "":
		return AggAvg, nil
	case AggAvg, AggSum, AggMin, AggMax, AggFirst, AggLast, AggCount, AggIncrease, AggRate:
		return a, nil
	}
	return "", fmt.Errorf("agg=%q is unknown (want avg, sum, min, max, first, last, count, increase or rate)", s)
}

// ParseStep reads a step: a Go duration ("10s", "1m", "1h") or whole
// milliseconds, at least 1 ms.
func ParseStep(s string) (int64, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil && ms > 0 {
		return ms, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Millisecond {
		return 0, fmt.Errorf("step=%q is not a duration of at least 1ms (10s, 1m, 1h) or milliseconds", s)
	}
	return d.Milliseconds(), nil
}

// Downsample folds pts (oldest first, T in ms) into steps of step ms
// aligned on multiples of step, one point per step that holds data, at
// the step's start. For increase and rate, a step's growth runs from the
// last point before it, so steps add up to the whole range's Increase.
func Downsample(pts []sample.Point, step int64, agg Agg) []sample.Point {
	var out []sample.Point
	for i := 0; i < len(pts); {
		start := sample.FloorStep(pts[i].T, step)
		j := i
		for j < len(pts) && pts[j].T < start+step {
			j++
		}
		in := pts[i:j]
		var v float64
		switch agg {
		case AggSum:
			v = sample.Fold(sample.Sum, in)
		case AggAvg:
			v = sample.Fold(sample.Avg, in)
		case AggMin:
			v = sample.Fold(sample.Min, in)
		case AggMax:
			v = sample.Fold(sample.Max, in)
		case AggFirst:
			v = in[0].V
		case AggLast:
			v = sample.Fold(sample.Last, in)
		case AggCount:
			v = float64(len(in))
		case AggIncrease, AggRate:
			from := i
			if i > 0 {
				from = i - 1 // the last point before the step
			}
			v, _ = Increase(pts[from:j])
			if agg == AggRate {
				v /= float64(step) / 1000
			}
		}
		out = append(out, sample.Point{T: start, V: v})
		i = j
	}
	return out
}
