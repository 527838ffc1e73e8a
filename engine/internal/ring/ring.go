// Package ring holds the recent history points of one series in memory,
// compressed, filled by one writer and read by any number of readers
// without locks.
//
// Points are numbered by ordinal (1, 2, 3, ... for one series). They are
// encoded as they come into blocks of BlockBytes bytes, a few bytes a
// point (encode.go). A block is one allocation, its header and its bytes
// together, and only grows at its end, so what a reader has been shown
// never changes under it. The writer copies a point's bytes past the
// published end, then publishes the new end and point count in one atomic
// word; a point that does not fit opens a new block, linked behind the
// last. A reader starts at the oldest block and follows the links,
// loading each block's link before its published end: a block with a
// successor is full, so no point between two blocks is ever missed. No
// lock, no retry, and no list of blocks to copy at each new block.
//
// The ring keeps its newest block, and at least its capacity of newest
// points (0 and up), up to a block more: the oldest block goes once the
// points after it are enough. It never drops a point past the ordinal
// the caller says is stored elsewhere (Push's stored argument): until the
// snapshot database has them, the points stay here, so a read never
// finds a gap between the two. With capacity 0 a ring holds what is not
// stored yet and the block being filled: memory in proportion to the
// rate of writes, not to the history kept.
package ring

import (
	"encoding/binary"
	"math"
	"sync/atomic"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// BlockBytes is the size of a block's encoded points: with its header, a
// block is one 128-byte allocation.
const BlockBytes = 104

// BlockPoints is the most points one block can hold (a point takes a
// byte at least).
const BlockPoints = BlockBytes

// block is a run of encoded points. Once a block has a successor it never
// changes; the newest one grows at its end only.
type block struct {
	first uint64 // ordinal of its first point
	// meta is the published state: points << 32 | bytes.
	meta atomic.Uint64
	next atomic.Pointer[block] // the next newer block; nil for the newest
	data [BlockBytes]byte
}

// published returns the points and bytes a reader may decode, and the
// next block. The link is loaded first: a block with a successor is full,
// so its bytes read after are all of them.
func (b *block) published() (n int, buf []byte, next *block) {
	next = b.next.Load()
	m := b.meta.Load()
	return int(m >> 32), b.data[:uint32(m)], next
}

// Ring holds the newest points of one series. Push must be called from one
// goroutine at a time; Points may be called concurrently with it.
type Ring struct {
	max int32
	// seen is the low half of the stored ordinal of the last walk over
	// the blocks (writer): with capacity 0 what may go changes only when
	// that moves or a block is added, so a push otherwise skips the walk,
	// which reads the oldest block, cold in memory, at every point.
	seen   uint32
	head   atomic.Uint64         // ordinal the next Push gets; only Push stores it
	oldest atomic.Pointer[block] // nil until the first Push
	open   *block                // the newest block (writer)
	enc    encoder               // the newest block's encoder state (writer)
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
	r.max = int32(min(max(capacity, 0), math.MaxInt32))
	r.head.Store(next)
}

// Next returns the ordinal the next Push will get.
func (r *Ring) Next() uint64 { return r.head.Load() }

// Push appends a point with the ordinal Next(). Points up to ordinal
// stored are kept elsewhere: blocks of only such points may be dropped
// once the ring holds its capacity without them.
func (r *Ring) Push(p sample.Point, stored uint64) {
	var tmp [binary.MaxVarintLen64 + maxPointBytes]byte // a block's first point starts with its time
	if b := r.open; b != nil {
		m := b.meta.Load()
		n, size := m>>32, int(uint32(m))
		if enc := r.enc.append(tmp[:0], p, false); size+len(enc) <= BlockBytes {
			copy(b.data[size:], enc)
			b.meta.Store((n+1)<<32 | uint64(size+len(enc)))
			r.pushed(stored, false)
			return
		}
	}
	// A new block; the encoder starts again from this point.
	b := &block{first: r.head.Load()}
	enc := r.enc.append(tmp[:0], p, true)
	copy(b.data[:], enc)
	b.meta.Store(1<<32 | uint64(len(enc)))
	if r.open != nil {
		r.open.next.Store(b)
	} else {
		r.oldest.Store(b)
	}
	r.open = b
	r.pushed(stored, true)
}

// pushed publishes the new head and drops the oldest blocks that may go:
// the rest hold the capacity, and their points are stored elsewhere. With
// capacity 0 it looks only when a block was added (added) or stored moved
// since it last looked; stored never moves by 2^32 between two pushes (it
// is at most the head).
func (r *Ring) pushed(stored uint64, added bool) {
	next := r.head.Load() + 1
	r.head.Store(next)
	if r.max == 0 && !added && uint32(stored) == r.seen {
		return
	}
	r.seen = uint32(stored)
	old := r.oldest.Load()
	b := old
	for {
		nb := b.next.Load()
		if nb == nil {
			break
		}
		after := nb.first // the first ordinal kept if b goes
		if next-after < uint64(r.max) || after-1 > stored {
			break
		}
		b = nb
	}
	if b != old {
		r.oldest.Store(b)
	}
}

// Points appends the ring's points, oldest first, to dst and returns it
// with the ordinal of the first point appended (Next() when none).
func (r *Ring) Points(dst []sample.Point) ([]sample.Point, uint64) {
	b := r.oldest.Load()
	if b == nil {
		return dst, r.head.Load()
	}
	lo := b.first
	for b != nil {
		n, buf, next := b.published()
		var err error
		if dst, err = decode(dst, buf, n); err != nil {
			// Only this package writes the bytes: a failure is a bug.
			panic("ring: " + err.Error())
		}
		b = next
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
	b := r.oldest.Load()
	if b == nil || b.first > after+1 {
		panic("ring: points asked for are no longer held")
	}
	start := len(dst)
	for b != nil {
		n, buf, next := b.published()
		if b.first+uint64(n) <= after+1 {
			b = next
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
		b = next
	}
	if want := int(upTo - after); len(dst)-start < want {
		panic("ring: points asked for are not published")
	} else {
		dst = dst[:start+want]
	}
	return dst
}
