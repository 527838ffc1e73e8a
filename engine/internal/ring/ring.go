// Package ring is a capped ring of recent history points that one writer
// fills and any number of readers copy without locks.
//
// Points are numbered by ordinal (1, 2, 3, ... for one series). The ring
// keeps the newest points up to its capacity, growing its backing arrays by
// doubling so that rarely written series cost little memory. Every slot is
// a pair of atomics. The writer announces the ordinal it is about to write
// (begin), writes the slot, then publishes it (head). A reader copies the
// ordinals below head, then re-reads begin and drops any slot the writer may
// have reused meanwhile: a seqlock made of atomics, clean under the race
// detector.
package ring

import (
	"math"
	"sync/atomic"

	"github.com/sonde-metrics/sonde/engine/sample"
)

type slots struct {
	t []atomic.Int64
	v []atomic.Uint64
}

// Ring holds the newest points of one series. Push must be called from one
// goroutine at a time; Points may be called concurrently with it.
type Ring struct {
	max   int
	first uint64                // ordinal of the first point pushed into this ring
	head  atomic.Uint64         // ordinal the next Push gets; published after the slot is written
	begin atomic.Uint64         // ordinal+1 of the point being written; stored before the slot
	buf   atomic.Pointer[slots] // nil until the first Push
}

// New returns a ring of capacity max whose first point will have ordinal
// next (points before it live on disk only).
func New(max int, next uint64) *Ring {
	if max < 1 {
		max = 1
	}
	r := &Ring{}
	r.Init(max, next)
	return r
}

// Init is New for a Ring embedded in another struct.
func (r *Ring) Init(max int, next uint64) {
	if max < 1 {
		max = 1
	}
	r.max = max
	r.first = next
	r.head.Store(next)
	r.begin.Store(next)
}

// Next returns the ordinal the next Push will get.
func (r *Ring) Next() uint64 { return r.head.Load() }

// Push appends a point with the ordinal Next().
func (r *Ring) Push(p sample.Point) {
	h := r.head.Load()
	b := r.buf.Load()
	n := h - r.first // points pushed so far
	if b == nil || (uint64(len(b.t)) <= n && len(b.t) < r.max) {
		b = r.grow(b, h)
	}
	i := h % uint64(len(b.t))
	r.begin.Store(h + 1)
	b.t[i].Store(p.T)
	b.v[i].Store(math.Float64bits(p.V))
	r.head.Store(h + 1)
}

func (r *Ring) grow(old *slots, h uint64) *slots {
	size := 4
	if old != nil {
		size = len(old.t) * 2
	}
	size = min(size, r.max)
	nb := &slots{t: make([]atomic.Int64, size), v: make([]atomic.Uint64, size)}
	if old != nil {
		lo := r.first
		if h-lo > uint64(len(old.t)) {
			lo = h - uint64(len(old.t))
		}
		for o := lo; o < h; o++ {
			nb.t[o%uint64(size)].Store(old.t[o%uint64(len(old.t))].Load())
			nb.v[o%uint64(size)].Store(old.v[o%uint64(len(old.t))].Load())
		}
	}
	r.buf.Store(nb)
	return nb
}

// Points appends the ring's points, oldest first, to dst and returns it
// with the ordinal of the first point appended (Next() when none).
func (r *Ring) Points(dst []sample.Point) ([]sample.Point, uint64) {
	h1 := r.head.Load()
	b := r.buf.Load()
	if b == nil {
		return dst, h1
	}
	size := uint64(len(b.t))
	lo := r.first
	if h1-lo > size {
		lo = h1 - size
	}
	start := len(dst)
	for o := lo; o < h1; o++ {
		dst = append(dst, sample.Point{T: b.t[o%size].Load(), V: math.Float64frombits(b.v[o%size].Load())})
	}
	// The writer may have reused slots while we copied: writing ordinal w it
	// first stores begin = w+1, then overwrites ordinal w-size. So every
	// ordinal at or above begin-size is certain.
	b2 := r.begin.Load()
	if b2 > size && lo < b2-size {
		drop := b2 - size - lo
		if drop > uint64(len(dst)-start) {
			drop = uint64(len(dst) - start)
		}
		dst = append(dst[:start], dst[start+int(drop):]...)
		lo += drop
	}
	return dst, lo
}
