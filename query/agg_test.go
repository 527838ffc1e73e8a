package query

import (
	"fmt"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestDownsample(t *testing.T) {
	pts := []sample.Point{{T: 1000, V: 1}, {T: 5000, V: 3}, {T: 9999, V: 2}, {T: 10000, V: 10}, {T: 35000, V: 4}}
	for agg, want := range map[Agg]string{
		AggAvg:   "[{0 2} {10000 10} {30000 4}]",
		AggSum:   "[{0 6} {10000 10} {30000 4}]",
		AggMin:   "[{0 1} {10000 10} {30000 4}]",
		AggMax:   "[{0 3} {10000 10} {30000 4}]",
		AggFirst: "[{0 1} {10000 10} {30000 4}]",
		AggLast:  "[{0 2} {10000 10} {30000 4}]",
		AggCount: "[{0 3} {10000 1} {30000 1}]",
	} {
		if got := fmt.Sprint(Downsample(pts, 10_000, agg)); got != want {
			t.Errorf("%s: %s, want %s", agg, got, want)
		}
	}
	// A counter: steps add up to the whole Increase, resets included.
	c := []sample.Point{{T: 0, V: 10}, {T: 4000, V: 15}, {T: 12000, V: 30}, {T: 14000, V: 5}, {T: 25000, V: 9}}
	inc := Downsample(c, 10_000, AggIncrease)
	if fmt.Sprint(inc) != "[{0 5} {10000 20} {20000 4}]" {
		t.Fatalf("increase %v", inc)
	}
	total, _ := Increase(c)
	if inc[0].V+inc[1].V+inc[2].V != total {
		t.Fatalf("steps add up to %v, the range to %v", inc[0].V+inc[1].V+inc[2].V, total)
	}
	if r := Downsample(c, 10_000, AggRate); r[1].V != 2 {
		t.Fatalf("rate %v", r)
	}
	if got := Downsample([]sample.Point{{T: -1, V: 1}}, 10, AggLast); got[0].T != -10 {
		t.Fatalf("negative time floors to %d", got[0].T)
	}
}

func TestParseStepAndAgg(t *testing.T) {
	for in, want := range map[string]int64{"10s": 10_000, "1m": 60_000, "1h30m": 5_400_000, "250": 250} {
		if got, err := ParseStep(in); err != nil || got != want {
			t.Errorf("ParseStep(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"0", "-1s", "1us", "soon"} {
		if _, err := ParseStep(bad); err == nil {
			t.Errorf("ParseStep(%q): no error", bad)
		}
	}
	if a, err := ParseAgg(""); a != AggAvg || err != nil {
		t.Errorf("default agg %q %v", a, err)
	}
	if _, err := ParseAgg("median"); err == nil {
		t.Error("median accepted")
	}
}
