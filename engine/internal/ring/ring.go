// Package ring holds the recent history points of one series in memory,
// compressed, filled by one writer and read by any number of readers
// without locks.
//
// Points are numbered by ordinal (1, 2, 3, ... for one series). They are
// encoded as they come into blocks of up to BlockPoints points, a few
// bytes a point (encode.go): a block is a byte string that only grows at
// its end, so what a reader has been shown never changes under it. The
// writer appends a point's bytes past the published end, then publishes
// the new end and point count in one atomic word; a full block is sealed
// (its bytes trimmed to size) and a new one opened, and the list of
// blocks is replaced, never changed in place. A reader loads the list,
// then each block's published end, and decodes: no seqlock, no retry.
//
// The ring keeps at least its capacity of newest points, and up to a
// block more: the oldest sealed block goes once the points after it are
// enough. It never drops a point past the ordinal the caller says is
// stored elsewhere (Push's stored argument): until the snapshot database
// has them, the points stay here, so a read never finds a gap between
// the two.
package ring

import (
	"sync/atomic"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// BlockPoints is the most points one block holds.
const BlockPoints = 32

// block is a run of encoded points. Sealed blocks never change; the open
// one grows at its end only.
type block struct {
	first uint64 // ordinal of its first point
	// meta is the published state: points << 32 | bytes.
	meta atomic.Uint64
	// data holds the bytes up to the published end, and room after it;
	// replaced by a larger copy when it must grow.
	data atomic.Pointer[[]byte]
}

func (b *block) published() (n int, buf []byte) {
	m := b.meta.Load()
	d := *b.data.Load()
	return int(m >> 32), d[:uint32(m)]
}

// view is what readers load: the blocks, oldest first, the last open.
type view struct {
	blocks []*block
}

// Ring holds the newest points of one series. Push must be called from one
// goroutine at a time; Points may be called concurrently with it.
type Ring struct {
	max  int
	next uint64 // ordinal the next Push gets (writer)
	head atomic.Uint64
	v    atomic.Pointer[view] // nil until the first Push
	enc  encoder              // the open block's encoder state (writer)
}

// New returns a ring of capacity max whose first point will have ordinal
// next (points before it live on disk only).
func New(capacity int, next uint64) *Ring {
	r := &Ring{}
	r.Init(capacity, next)
	return r
}

// Init is New for a Ring embedded in another struct.
func (r *Ring) Init(capacity int, next uint64) {
	r.max = max(capacity, 1)
	r.next = next
	r.head.Store(next)
}

// Next returns the ordinal the next Push will get.
func (r *Ring) Next() uint64 { return r.head.Load() }

// Push appends a point with the ordinal Next(). Points up to ordinal
// stored are kept elsewhere: blocks of only such points may be dropped
// once the ring holds its capacity without them.
func (r *Ring) Push(p sample.Point, stored uint64) {
	v := r.v.Load()
	var open *block
	if v != nil {
		open = v.blocks[len(v.blocks)-1]
	}
	if open == nil || int(open.meta.Load()>>32) >= BlockPoints {
		v = r.openBlock(v, stored)
		open = v.blocks[len(v.blocks)-1]
	} else if len(v.blocks) > 1 && r.droppable(v.blocks, stored) > 0 {
		r.publish(v.blocks, stored) // the open block stays; older ones go
	}
	m := open.meta.Load()
	n, size := m>>32, uint32(m)
	buf := *open.data.Load()
	var tmp [maxPointBytes]byte
	enc := r.enc.append(tmp[:0], p, n == 0)
	if int(size)+len(enc) > len(buf) {
		// A larger copy; the slice behind the pointer never changes (its
		// length is its capacity), only the bytes past the published end.
		nb := make([]byte, max(2*len(buf), int(size)+len(enc), 16))
		copy(nb, buf[:size])
		open.data.Store(&nb)
		buf = nb
	}
	copy(buf[size:], enc)
	open.meta.Store((n+1)<<32 | uint64(size+uint32(len(enc))))
	r.next++
	r.head.Store(r.next)
}

// openBlock seals the open block (if any), drops the blocks that are no
// longer needed, and publishes a view with a new open block.
func (r *Ring) openBlock(old *view, stored uint64) *view {
	var blocks []*block
	room := 16
	if old != nil {
		blocks = old.blocks
		last := blocks[len(blocks)-1]
		n, buf := last.published()
		// The block stops growing here; it is trimmed only when its slack
		// is worth a copy. The next one starts with room for as many bytes.
		if d := *last.data.Load(); len(d)-len(buf) > len(buf)/8 {
			sealed := &block{first: last.first}
			exact := append([]byte(nil), buf...)
			sealed.data.Store(&exact)
			sealed.meta.Store(uint64(n)<<32 | uint64(len(exact)))
			blocks = append(blocks[:len(blocks)-1:len(blocks)-1], sealed)
		}
		room = len(buf) + len(buf)/8
	}
	open := &block{first: r.next}
	buf := make([]byte, room)
	open.data.Store(&buf)
	return r.publish(append(blocks[:len(blocks):len(blocks)], open), stored)
}

// droppable counts the oldest blocks that may go: the rest hold the
// capacity, and their points are stored elsewhere.
func (r *Ring) droppable(blocks []*block, stored uint64) int {
	drop := 0
	for drop < len(blocks)-1 {
		after := blocks[drop+1].first // the first ordinal kept if blocks[drop] goes
		if r.next-after < uint64(r.max) || after-1 > stored {
			break
		}
		drop++
	}
	return drop
}

// publish makes blocks, less those that may go, what readers load.
func (r *Ring) publish(blocks []*block, stored uint64) *view {
	v := &view{blocks: append([]*block(nil), blocks[r.droppable(blocks, stored):]...)}
	r.v.Store(v)
	return v
}

// Points appends the ring's points, oldest first, to dst and returns it
// with the ordinal of the first point appended (Next() when none).
func (r *Ring) Points(dst []sample.Point) ([]sample.Point, uint64) {
	v := r.v.Load()
	if v == nil {
		return dst, r.head.Load()
	}
	lo := v.blocks[0].first
	for _, b := range v.blocks {
		n, buf := b.published()
		var err error
		if dst, err = decode(dst, buf, n); err != nil {
			// Only this package writes the bytes: a failure is a bug.
			panic("ring: " + err.Error())
		}
	}
	return dst, lo
}

// Range appends to dst the points with ordinals in (after, upTo], oldest
// first: what a snapshot stores of a series past what it stored before.
// Every one of them must still be in the ring (Push never drops a point
// past its stored argument), and upTo must be at most Next()-1; a point
// missing from the ring is a bug and panics.
func (r *Ring) Range(after, upTo uint64, dst []sample.Point) []sample.Point {
	if upTo <= after {
		return dst
	}
	v := r.v.Load()
	if v == nil || v.blocks[0].first > after+1 {
		panic("ring: points asked for are no longer held")
	}
	start := len(dst)
	for _, b := range v.blocks {
		n, buf := b.published()
		if b.first+uint64(n) <= after+1 {
			continue // every point of b is at or before after
		}
		if b.first > upTo {
			break
		}
		at := len(dst)
		var err error
		if dst, err = decode(dst, buf, n); err != nil {
			panic("ring: " + err.Error())
		}
		// Keep the ordinals in range: skip those at or before after.
		if b.first <= after {
			skip := int(after + 1 - b.first)
			dst = append(dst[:at], dst[at+skip:]...)
		}
	}
	if want := int(upTo - after); len(dst)-start < want {
		panic("ring: points asked for are not published")
	} else {
		dst = dst[:start+want]
	}
	return dst
}
