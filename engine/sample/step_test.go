package sample

import (
	"math"
	"testing"
)

func TestFloorStep(t *testing.T) {
	for _, c := range []struct{ t, step, want int64 }{
		{0, 60, 0}, {59, 60, 0}, {60, 60, 60}, {61, 60, 60},
		{-1, 60, -60}, {-60, 60, -60}, {-61, 60, -120},
		{math.MaxInt64, 1000, math.MaxInt64 - math.MaxInt64%1000},
	} {
		if got := FloorStep(c.t, c.step); got != c.want {
			t.Errorf("FloorStep(%d, %d) = %d, want %d", c.t, c.step, got, c.want)
		}
	}
}

func TestFold(t *testing.T) {
	pts := []Point{{V: 3}, {V: -1}, {V: 4}, {V: 2}}
	for agg, want := range map[Agg]float64{Avg: 2, Sum: 8, Min: -1, Max: 4, Last: 2, 0: 2} {
		if got := Fold(agg, pts); got != want {
			t.Errorf("Fold(%v) = %v, want %v", agg, got, want)
		}
	}
	if got := Fold(Max, pts[:1]); got != 3 {
		t.Errorf("Fold(max) of one point = %v, want 3", got)
	}
}
