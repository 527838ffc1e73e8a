package bench

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Hist is a latency histogram with log-linear buckets: exact below 64 ns,
// then 64 buckets per power of two (at most 1.6 % relative error). Record
// may be called from many goroutines at once.
type Hist struct {
	b     [histBuckets]atomic.Int64
	count atomic.Int64
	max   atomic.Int64
}

const (
	subBits     = 6
	subCount    = 1 << subBits
	histBuckets = subCount + (64-subBits)*subCount
)

func bucketOf(v int64) int {
	if v < subCount {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - subBits - 1
	return subCount + shift*subCount + int(v>>shift) - subCount
}

// bucketMid is a representative value of bucket i: its midpoint.
func bucketMid(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := (i - subCount) / subCount
	lo := int64((i-subCount)%subCount+subCount) << shift
	return lo + (int64(1)<<shift)/2
}

// Record adds n observations of d.
func (h *Hist) Record(d time.Duration, n int64) {
	v := int64(d)
	h.b[bucketOf(v)].Add(n)
	h.count.Add(n)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count returns how many observations were recorded.
func (h *Hist) Count() int64 { return h.count.Load() }

// Quantile returns the q-quantile (0 < q <= 1); 0 when empty.
func (h *Hist) Quantile(q float64) time.Duration {
	total := h.count.Load()
	if total == 0 {
		return 0
	}
	rank := int64(q*float64(total) + 0.5)
	rank = min(max(rank, 1), total)
	var seen int64
	for i := range h.b {
		seen += h.b[i].Load()
		if seen >= rank {
			return min(time.Duration(bucketMid(i)), time.Duration(h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

// Max returns the largest observation.
func (h *Hist) Max() time.Duration { return time.Duration(h.max.Load()) }

// Summary is what a result file keeps of a histogram, in milliseconds.
type Summary struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary returns the histogram's count and quantiles.
func (h *Hist) Summary() Summary {
	return Summary{Count: h.Count(), P50: ms(h.Quantile(0.5)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max())}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
