package ring

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

const allStored = math.MaxUint64

func checkOrdinals(t *testing.T, pts []sample.Point, lo uint64, value func(o int64) float64) {
	t.Helper()
	for j, p := range pts {
		o := int64(lo) + int64(j)
		if p.T != o || math.Float64bits(p.V) != math.Float64bits(value(o)) {
			t.Fatalf("point %d = %+v, want ordinal %d with %v", j, p, o, value(o))
		}
	}
}

func TestRingKeepsNewest(t *testing.T) {
	const capacity = 40
	r := New(capacity, 1)
	pts, lo := r.Points(nil)
	if len(pts) != 0 || lo != 1 {
		t.Fatalf("empty ring: got %v from %d", pts, lo)
	}
	for i := 1; i <= 500; i++ {
		r.Push(sample.Point{T: int64(i), V: float64(i * 10)}, allStored)
		pts, lo := r.Points(nil)
		if want := min(i, capacity); len(pts) < want || len(pts) > want+BlockPoints {
			t.Fatalf("after %d pushes: %d points, want %d to %d", i, len(pts), want, want+BlockPoints)
		}
		if lo+uint64(len(pts)) != uint64(i+1) {
			t.Fatalf("after %d pushes: points %d from %d do not end at the newest", i, len(pts), lo)
		}
		checkOrdinals(t, pts, lo, func(o int64) float64 { return float64(o * 10) })
	}
	if r.Next() != 501 {
		t.Fatalf("Next = %d, want 501", r.Next())
	}
}

// TestRingKeepsWhatIsNotStored checks that no point past the stored
// ordinal is dropped, however many come, and that they go once stored.
func TestRingKeepsWhatIsNotStored(t *testing.T) {
	r := New(8, 1)
	for i := 1; i <= 1000; i++ {
		r.Push(sample.Point{T: int64(i), V: 1}, 100)
	}
	pts, lo := r.Points(nil)
	if lo > 101 || lo+uint64(len(pts)) != 1001 {
		t.Fatalf("stored up to 100: the ring holds %d points from %d; it must hold 101 to 1000", len(pts), lo)
	}
	for i := 1001; i <= 1000+2*BlockPoints; i++ {
		r.Push(sample.Point{T: int64(i), V: 1}, uint64(i-1))
	}
	if pts, _ := r.Points(nil); len(pts) > 8+BlockPoints {
		t.Fatalf("all stored: the ring still holds %d points, capacity 8", len(pts))
	}
}

// TestRingOfCapacityZero: a ring of capacity 0 holds every point not yet
// stored and, once they all are, only the block being filled.
func TestRingOfCapacityZero(t *testing.T) {
	r := New(0, 1)
	value := func(o int64) float64 { return float64(o) * 0.25 }
	for i := int64(1); i <= 2000; i++ {
		stored := uint64(max(i-1-i%50, 0)) // a snapshot every 50 points
		r.Push(sample.Point{T: i, V: value(i)}, stored)
		pts, lo := r.Points(nil)
		if lo > stored+1 || lo+uint64(len(pts)) != uint64(i+1) {
			t.Fatalf("after %d pushes, stored to %d: points %d from %d", i, stored, len(pts), lo)
		}
		checkOrdinals(t, pts, lo, value)
		// Whole blocks of stored points before the one being filled go.
		if kept := uint64(i) - stored; len(pts) > int(kept)+2*BlockPoints {
			t.Fatalf("after %d pushes, %d unstored: the ring holds %d points", i, kept, len(pts))
		}
	}
	for i := int64(2001); i <= 2000+3*BlockPoints; i++ {
		r.Push(sample.Point{T: i, V: value(i)}, uint64(i))
	}
	pts, lo := r.Points(nil)
	if len(pts) == 0 || len(pts) > BlockPoints {
		t.Fatalf("all stored: the ring holds %d points, want the open block's", len(pts))
	}
	checkOrdinals(t, pts, lo, value)
}

func TestRingStartsAtOrdinal(t *testing.T) {
	r := New(4, 100)
	r.Push(sample.Point{T: 5, V: 5}, allStored)
	pts, lo := r.Points(nil)
	if lo != 100 || len(pts) != 1 || pts[0].T != 5 {
		t.Fatalf("got %v from %d", pts, lo)
	}
}

// roundTrip pushes pts into a ring that keeps them all and reads them
// back bit for bit.
func roundTrip(t *testing.T, pts []sample.Point) int {
	t.Helper()
	r := New(len(pts)+1, 1)
	for _, p := range pts {
		r.Push(p, 0)
	}
	got, lo := r.Points(nil)
	if lo != 1 || len(got) != len(pts) {
		t.Fatalf("%d points back from %d, want %d from 1", len(got), lo, len(pts))
	}
	for i := range pts {
		if got[i].T != pts[i].T || math.Float64bits(got[i].V) != math.Float64bits(pts[i].V) {
			t.Fatalf("point %d: got %+v, want %+v", i, got[i], pts[i])
		}
	}
	size := 0
	for b := r.oldest.Load(); b != nil; b = b.next.Load() {
		_, buf, _ := b.published()
		size += len(buf)
	}
	return size
}

func TestEncodingRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	odd := []float64{0, math.Copysign(0, -1), math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64,
		1e300, -1e-300, 0.1 + 0.2, 1 << 53, 1<<53 + 2, -(1 << 62), 123456789.123456789, 9.999999999}
	var pts []sample.Point
	t0 := int64(1_700_000_000_000)
	for i := range 3000 {
		var v float64
		switch i % 4 {
		case 0:
			v = odd[rng.IntN(len(odd))]
		case 1:
			v = float64(rng.Int64N(1e6)) / 100
		case 2:
			v = rng.NormFloat64() * 1e3
		default:
			v = math.Float64frombits(rng.Uint64() &^ (0x7ff << 52)) // any finite bits
		}
		t0 += rng.Int64N(1 << uint(rng.IntN(40)))
		pts = append(pts, sample.Point{T: t0, V: v})
	}
	roundTrip(t, pts)
}

// TestEncodingSize checks what the format promises: a steady gauge at a
// steady interval costs a byte a point, a random walk in steps of 0.01 at
// most four.
func TestEncodingSize(t *testing.T) {
	steady := make([]sample.Point, 1000)
	walk := make([]sample.Point, 1000)
	rng := rand.New(rand.NewPCG(5, 6))
	v := 20.0
	for i := range steady {
		steady[i] = sample.Point{T: int64(i) * 10_000, V: 42}
		v = math.Round((v+float64(rng.IntN(201)-100)/100)*100) / 100
		walk[i] = sample.Point{T: int64(i)*1000 + rng.Int64N(5), V: v}
	}
	if n := roundTrip(t, steady); n > 1000+len(steady)/BlockPoints*16 {
		t.Errorf("steady gauge: %d bytes for 1000 points", n)
	}
	if n := roundTrip(t, walk); n > 4*1000 {
		t.Errorf("random walk: %d bytes for 1000 points, want at most 4 a point", n)
	}
}

// TestRingConcurrentReaders checks under -race that readers only ever see
// consistent points in ordinal order.
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
					if p.T != o || p.V != float64(-o)/100 {
						t.Errorf("torn or misplaced point %+v at ordinal %d", p, o)
						return
					}
				}
			}
		})
	}
	for i := 1; i <= n; i++ {
		r.Push(sample.Point{T: int64(i), V: float64(-i) / 100}, uint64(i))
	}
	wg.Wait()
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Fuzz(func(t *testing.T, b []byte) {
		var pts []sample.Point
		for len(b) >= 16 {
			tm := int64(uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 | uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56)
			var bits uint64
			for i := range 8 {
				bits |= uint64(b[8+i]) << (8 * i)
			}
			v := math.Float64frombits(bits)
			if math.IsNaN(v) || math.IsInf(v, 0) {
				v = float64(bits % 1000)
			}
			pts = append(pts, sample.Point{T: tm, V: v})
			b = b[16:]
		}
		if len(pts) > 0 {
			roundTrip(t, pts)
		}
	})
}

// BenchmarkPush is the ring's share of a write, per point: a decimal
// walk (the common case) and floats that are no short decimal (every
// exponent is tried before the XOR).
func BenchmarkPush(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 8))
	walk, floats := make([]float64, 4096), make([]float64, 4096)
	v := 20.0
	for i := range walk {
		v = math.Round((v+float64(rng.IntN(201)-100)/100)*100) / 100
		walk[i] = v
		floats[i] = rng.NormFloat64() * 1e3
	}
	for _, c := range []struct {
		name string
		vals []float64
	}{{"walk", walk}, {"floats", floats}} {
		b.Run(c.name, func(b *testing.B) {
			r := New(120, 1)
			for i := range b.N {
				r.Push(sample.Point{T: int64(i) * 1000, V: c.vals[i%len(c.vals)]}, uint64(i))
			}
		})
	}
}

// BenchmarkPushMany pushes to 100k rings of capacity 0 in turn, as the
// committer does under a load over many keys: a push whose stored
// ordinal has not moved need not look at the oldest block, which by then
// is cold in memory.
func BenchmarkPushMany(b *testing.B) {
	const rings = 100_000
	rng := rand.New(rand.NewPCG(7, 9))
	rs := make([]*Ring, rings)
	for i := range rs {
		rs[i] = New(0, 1)
		for j := range 40 { // floats: several blocks each, none stored
			rs[i].Push(sample.Point{T: int64(j) * 1000, V: rng.NormFloat64()}, 0)
		}
	}
	order := rng.Perm(rings) // the heap's order, not the allocation's
	i := 0
	for b.Loop() {
		r := rs[order[i%rings]]
		r.Push(sample.Point{T: int64(40+i/rings) * 1000, V: float64(i % 7)}, 0)
		i++
	}
}

// TestRingRange checks Range against every (after, upTo) window a
// snapshot could ask for, across block edges, while the ring holds only
// the points past what is stored.
func TestRingRange(t *testing.T) {
	const stored = 100 // past the first blocks (up to BlockBytes bytes each), which go
	r := New(4, 1)
	value := func(o int64) float64 { return float64(o)*0.25 - 3 }
	for i := int64(1); i <= 150; i++ {
		r.Push(sample.Point{T: i, V: value(i)}, stored)
	}
	for after := uint64(stored); after <= 150; after++ {
		for upTo := after; upTo <= 150; upTo++ {
			got := r.Range(after, upTo, []sample.Point{{T: -1}})
			if len(got) != 1+int(upTo-after) || got[0].T != -1 {
				t.Fatalf("Range(%d, %d): %d points (dst kept: %v), want %d", after, upTo, len(got)-1, got[0].T == -1, upTo-after)
			}
			checkOrdinals(t, got[1:], after+1, value)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Range of points the ring dropped did not panic")
		}
	}()
	r.Range(0, 10, nil)
}
