package bench

import (
	"bytes"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/ingest/lineproto"
)

func TestHistQuantiles(t *testing.T) {
	var h Hist
	// 1..10000 µs, once each: the q-quantile is q*10 ms.
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i)*time.Microsecond, 1)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		got := h.Quantile(q)
		want := time.Duration(q * 10000 * float64(time.Microsecond))
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.02 {
			t.Errorf("Quantile(%g) = %v, want %v within 2%%", q, got, want)
		}
	}
	if h.Max() != 10*time.Millisecond || h.Count() != 10000 {
		t.Errorf("max %v count %d, want 10ms and 10000", h.Max(), h.Count())
	}
	var e Hist
	if e.Quantile(0.99) != 0 {
		t.Errorf("empty histogram quantile = %v", e.Quantile(0.99))
	}
}

func TestBucketsAreMonotonic(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<22; v += 1 + v/50 {
		b := bucketOf(v)
		if b < prev {
			t.Fatalf("bucketOf(%d) = %d < %d", v, b, prev)
		}
		if mid := bucketMid(b); math.Abs(float64(mid-v)) > 0.02*float64(v)+1 {
			t.Fatalf("bucketMid(bucketOf(%d)) = %d, more than 2%% off", v, mid)
		}
		prev = b
	}
}

// The lines a workload writes are valid commands, and replaying them
// gives exactly the last values the workload expects the server to hold.
func TestWorkloadLinesReplayToItsState(t *testing.T) {
	for _, incr := range []bool{false, true} {
		for _, shape := range []Shape{Walk, Counter, Const, Mixed} {
			w := newWorkload("t", 30, 3, 1, shape, incr)
			format := lineSet
			if incr {
				format = lineIncr
			}
			var buf []byte
			for range 1000 {
				buf = w.appendLine(buf, format, 0)
			}
			got := map[string]float64{}
			for _, line := range bytes.Split(bytes.TrimSuffix(buf, []byte("\n")), []byte("\n")) {
				_, op, err := lineproto.Parse(line)
				if err != nil {
					t.Fatalf("%s incr=%v: %q: %v", shape, incr, line, err)
				}
				if incr {
					got[op.Key] += op.Value
				} else {
					got[op.Key] = op.Value
				}
			}
			if len(got) != len(w.keys) {
				t.Fatalf("%s incr=%v: %d keys written, want %d", shape, incr, len(got), len(w.keys))
			}
			for k, key := range w.keys {
				if g := got[string(key)]; !same(g, w.state[k]) {
					t.Errorf("%s incr=%v: %s replays to %g, workload expects %g", shape, incr, key, g, w.state[k])
				}
			}
		}
	}
}

func TestGraphiteLinesCarryOneSecondSteps(t *testing.T) {
	w := newWorkload("g", 2, 1, 0, Walk, false)
	w.base = 1000
	var buf []byte
	for range 6 {
		buf = w.appendLine(buf, lineGraphite, 0)
	}
	lines := bytes.Split(bytes.TrimSuffix(buf, []byte("\n")), []byte("\n"))
	for i, line := range lines {
		f := bytes.Fields(line)
		if len(f) != 3 {
			t.Fatalf("line %q: want path value timestamp", line)
		}
		ts, err := strconv.ParseInt(string(f[2]), 10, 64)
		if err != nil || ts != 1000+int64(i/2) {
			t.Errorf("line %d %q: timestamp %d, want %d", i, line, ts, 1000+i/2)
		}
	}
}
