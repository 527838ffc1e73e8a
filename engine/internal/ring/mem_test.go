package ring

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// BenchmarkRingMemory reports the heap bytes a ring of the default
// capacity (120) holds per series once full, for the soak's shapes: a
// random walk in steps of 0.01, a counter, a constant, each at 500 ms
// with a few ms of jitter, 20 points past what is stored (a snapshot's
// worth); and a series of 4 points (the cardinality phase's).
func BenchmarkRingMemory(b *testing.B) {
	for _, shape := range []string{"walk", "counter", "constant", "walk-4-points"} {
		b.Run(shape, func(b *testing.B) {
			const rings = 10_000
			points := uint64(140)
			if shape == "walk-4-points" {
				points = 4
			}
			rng := rand.New(rand.NewPCG(1, 2))
			var before, after runtime.MemStats
			for range b.N {
				runtime.GC()
				runtime.ReadMemStats(&before)
				rs := make([]*Ring, rings)
				for i := range rs {
					r := New(120, 1)
					v, tm := float64(i%1000), int64(1_700_000_000_000)
					for o := uint64(1); o <= points; o++ {
						tm += 500 + rng.Int64N(5)
						switch shape {
						case "walk", "walk-4-points":
							v = math.Round((v+float64(rng.IntN(201)-100)/100)*100) / 100
						case "counter":
							v += float64(1 + i%7)
						}
						r.Push(sample.Point{T: tm, V: v}, points-min(points, 20))
					}
					rs[i] = r
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/rings, "B/ring")
				runtime.KeepAlive(rs)
			}
		})
	}
}
