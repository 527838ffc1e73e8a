package query

import "github.com/sonde-metrics/sonde/engine/sample"

// Increase returns how much a COUNTER grew over pts (oldest first), the
// way Prometheus counts it: a value below the previous one is a reset, the
// counter having restarted from zero, so it adds the new value itself.
func Increase(pts []sample.Point) (increase float64, resets int) {
	for i := 1; i < len(pts); i++ {
		if d := pts[i].V - pts[i-1].V; d >= 0 {
			increase += d
		} else {
			increase += pts[i].V
			resets++
		}
	}
	return increase, resets
}

// Rate returns the per-second rate of a COUNTER over pts: its Increase
// divided by the time between the first and the last point. ok is false
// with fewer than two points or no time between them. Unlike Prometheus'
// rate(), it does not extrapolate to the edges of the asked range.
func Rate(pts []sample.Point) (rate, increase float64, resets int, ok bool) {
	if len(pts) < 2 || pts[len(pts)-1].T <= pts[0].T {
		return 0, 0, 0, false
	}
	increase, resets = Increase(pts)
	secs := float64(pts[len(pts)-1].T-pts[0].T) / 1000
	return increase / secs, increase, resets, true
}
