package ring

import (
	"sync"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestRingKeepsNewest(t *testing.T) {
	r := New(8, 1)
	pts, lo := r.Points(nil)
	if len(pts) != 0 || lo != 1 {
		t.Fatalf("empty ring: got %v from %d", pts, lo)
	}
	for i := 1; i <= 20; i++ {
		r.Push(sample.Point{T: int64(i), V: float64(i * 10)})
		pts, lo := r.Points(nil)
		wantN := min(i, 8)
		if len(pts) != wantN {
			t.Fatalf("after %d pushes: %d points, want %d", i, len(pts), wantN)
		}
		if lo != uint64(i-wantN+1) {
			t.Fatalf("after %d pushes: first ordinal %d, want %d", i, lo, i-wantN+1)
		}
		for j, p := range pts {
			o := int64(lo) + int64(j)
			if p.T != o || p.V != float64(o*10) {
				t.Fatalf("after %d pushes: point %d = %+v, want ordinal %d", i, j, p, o)
			}
		}
	}
	if r.Next() != 21 {
		t.Fatalf("Next = %d, want 21", r.Next())
	}
}

func TestRingStartsAtOrdinal(t *testing.T) {
	r := New(4, 100)
	r.Push(sample.Point{T: 5, V: 5})
	pts, lo := r.Points(nil)
	if lo != 100 || len(pts) != 1 || pts[0].T != 5 {
		t.Fatalf("got %v from %d", pts, lo)
	}
}

// TestRingConcurrentReaders checks under -race that readers only ever see
// consistent points (T and V written together) in ordinal order.
func TestRingConcurrentReaders(t *testing.T) {
	r := New(16, 1)
	const n = 20000
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var buf []sample.Point
			for r.Next() <= n {
				var lo uint64
				buf, lo = r.Points(buf[:0])
				for j, p := range buf {
					o := int64(lo) + int64(j)
					if p.T != o || p.V != float64(-o) {
						t.Errorf("torn or misplaced point %+v at ordinal %d", p, o)
						return
					}
				}
			}
		})
	}
	for i := 1; i <= n; i++ {
		r.Push(sample.Point{T: int64(i), V: float64(-i)})
	}
	wg.Wait()
}
