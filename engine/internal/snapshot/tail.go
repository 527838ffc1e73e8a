package snapshot

import (
	"encoding/binary"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// A series' tail is the newest points a snapshot stored for it, kept in
// its state (State.Tail) instead of the history bucket until there are
// enough of them for a chunk worth its key: TailPoints, or a quarter of
// the series' raw keep in time. Then they move into history as one
// chunk.
//
// Why: a snapshot stores the points each changed series got since the
// last one, often a few. Put into the history bucket as a chunk each,
// they land at the end of every series' key range, so a snapshot of n
// series rewrites the n leaf pages holding those ends (bbolt copies a
// page on write), and compaction rewrites them again to merge the small
// chunks. The series bucket is rewritten by every snapshot anyway (each
// changed state); a tail of a few hundred bytes beside each state costs
// little there, and history gets one full chunk per series every
// TailPoints points.
//
// Format: zero or more pieces, each uvarint(length) | chunk, oldest
// first; the ordinals follow on from State.TailFirst.

// TailPoints is how many points a tail holds at most before they move
// into a history chunk (fewer with a small SetChunkPoints).
const TailPoints = 128

// smallPiece is the size under which tail pieces are merged: each piece's
// chunk header costs a dozen bytes, worth merging away for a few points
// but not for many. Two newest pieces both under it merge when the newer
// holds at least as many points as the older (a binary counter): a
// series that gets one point a snapshot keeps about log2(n) pieces and
// re-encodes each point about log2(smallPiece) times; one that gets
// smallPiece points or more a snapshot is never re-encoded before its
// tail moves to history.
const smallPiece = 32

// eachPiece calls fn with each piece of tail, oldest first.
func eachPiece(tail []byte, fn func(data []byte) error) error {
	for len(tail) > 0 {
		n, k := binary.Uvarint(tail)
		if k <= 0 || n == 0 || n > uint64(len(tail)-k) {
			return fmt.Errorf("%w: a tail piece's length", ErrFormat)
		}
		if err := fn(tail[k : k+int(n)]); err != nil {
			return err
		}
		tail = tail[k+int(n):]
	}
	return nil
}

// appendPiece appends chunk data to a tail as a piece.
func appendPiece(tail, data []byte) []byte {
	tail = binary.AppendUvarint(tail, uint64(len(data)))
	return append(tail, data...)
}

// tailInfo is what a tail's chunk headers say.
type tailInfo struct {
	pieces      int
	points      uint64
	first, last int64 // times
}

func readTail(tail []byte) (tailInfo, error) {
	var ti tailInfo
	err := eachPiece(tail, func(data []byte) error {
		n, first, last, err := chunkHeader(data)
		if err != nil {
			return err
		}
		if ti.pieces == 0 {
			ti.first = first
		}
		ti.pieces++
		ti.points += n
		ti.last = last
		return nil
	})
	return ti, err
}

// tailPoints appends the points of tail to dst, oldest first.
func tailPoints(tail []byte, dst []sample.Point) ([]sample.Point, error) {
	err := eachPiece(tail, func(data []byte) error {
		var err error
		dst, err = DecodeChunk(data, dst)
		return err
	})
	return dst, err
}

// checkTail decodes every point of a stored tail: what `sonde check`
// asks of a state.
func checkTail(st *State) error {
	ti, err := readTail(st.Tail)
	if err != nil {
		return err
	}
	if len(st.Tail) > 0 && (st.TailFirst == 0 || st.TailFirst+ti.points-1 != st.Ordinal) {
		return fmt.Errorf("%w: a tail of %d points from %d in a state at point %d", ErrFormat, ti.points, st.TailFirst, st.Ordinal)
	}
	_, err = tailPoints(st.Tail, nil)
	return err
}

// storeTail sets st's tail to the old tail (from the stored state of the
// same incarnation, if any) followed by the new chunks, and moves points
// into history chunks once there are enough: when the new points would
// take the old tail past the limit (TailPoints, or the series' maxSpan in
// time), the old tail goes to history as one chunk; when what is left
// reaches the limit, it goes too. History chunks thus hold between about
// half the limit and the limit, never split. It counts what changes in t.
// Every byte it puts is its own: bbolt keeps keys and values until the
// transaction commits.
func (s *Store) storeTail(hist *bolt.Bucket, key string, st *State, old *State, chunks []Chunk, t *tally) error {
	var tail []byte
	var first uint64
	if old != nil {
		tail, first = old.Tail, old.TailFirst
	}
	ti, err := readTail(tail)
	if err != nil {
		return damaged(bucketSeries, []byte(key), err)
	}
	t.tail(len(tail), ti, -1)
	ci, err := chunksInfo(chunks)
	if err != nil {
		return err
	}
	limit := uint64(min(TailPoints, s.maxChunk))
	// size is what a and b hold together: points and the time they span.
	size := func(a, b tailInfo) (uint64, int64) {
		firstT, lastT := a.first, b.last
		if a.pieces == 0 {
			firstT = b.first
		}
		if b.pieces == 0 {
			lastT = a.last
		}
		return a.points + b.points, lastT - firstT
	}
	span := int64(math.MaxInt64)
	if s.maxSpan != nil {
		span = s.maxSpan(key)
	}
	full := func(a, b tailInfo) bool { n, d := size(a, b); return n >= limit || d >= span }
	over := func(a, b tailInfo) bool { n, d := size(a, b); return n > limit || d > span }
	if ti.pieces > 0 && ci.pieces > 0 && (chunks[0].First != first+ti.points || over(ti, ci)) {
		// The old tail is done (or, never expected, the new points do not
		// follow it: the ring holds every point past what is stored): it
		// goes to history as it is, one chunk.
		if err := s.toHistory(hist, key, st.Created, tail, ti, first, nil, t); err != nil {
			return err
		}
		tail, ti = nil, tailInfo{}
	}
	if ti.pieces == 0 {
		if ci.pieces == 0 {
			st.Tail, st.TailFirst = nil, 0
			return nil
		}
		first = chunks[0].First
	}
	if full(ti, ci) {
		st.Tail, st.TailFirst = nil, 0
		return s.toHistory(hist, key, st.Created, tail, ti, first, chunks, t)
	}
	type piece struct {
		data []byte
		n    uint64
	}
	var few [16]piece // a tail has about log2 of its points in pieces
	pieces := few[:0]
	err = eachPiece(tail, func(data []byte) error {
		n, _, _, err := chunkHeader(data)
		pieces = append(pieces, piece{data, n})
		return err
	})
	if err != nil {
		return damaged(bucketSeries, []byte(key), err)
	}
	for _, c := range chunks {
		pieces = append(pieces, piece{c.Data, uint64(c.Points)})
		for len(pieces) >= 2 {
			a, b := pieces[len(pieces)-2], pieces[len(pieces)-1]
			if a.n >= smallPiece || b.n >= smallPiece || b.n < a.n {
				break
			}
			pts, err := DecodeChunk(a.data, s.scratch[:0])
			if err == nil {
				pts, err = DecodeChunk(b.data, pts)
			}
			s.keepScratch(pts)
			if err != nil {
				return damaged(bucketSeries, []byte(key), err)
			}
			pieces = append(pieces[:len(pieces)-2], piece{AppendChunk(nil, pts), a.n + b.n})
		}
	}
	// One allocation of the tail's size: bbolt keeps what is put until the
	// transaction commits, and a snapshot writes one tail per changed
	// series.
	bytes := 0
	var lenBuf [binary.MaxVarintLen64]byte
	for _, p := range pieces {
		bytes += binary.PutUvarint(lenBuf[:], uint64(len(p.data))) + len(p.data)
	}
	out := make([]byte, 0, bytes)
	ni := tailInfo{pieces: len(pieces)}
	for _, p := range pieces {
		out = appendPiece(out, p.data)
		ni.points += p.n
	}
	t.tail(len(out), ni, 1)
	st.Tail, st.TailFirst = out, first
	return nil
}

// keepScratch keeps pts' array for the next merge, unless a rare large
// one grew it past what merges of tails need.
func (s *Store) keepScratch(pts []sample.Point) {
	if cap(pts) > 1<<16 {
		pts = nil
	}
	s.scratch = pts[:0]
}

// chunksInfo is readTail for new chunks.
func chunksInfo(chunks []Chunk) (tailInfo, error) {
	var ci tailInfo
	for i, c := range chunks {
		_, f, l, err := chunkHeader(c.Data)
		if err != nil {
			return ci, err
		}
		if i == 0 {
			ci.first = f
		}
		ci.last = l
		ci.pieces++
		ci.points += uint64(c.Points)
	}
	return ci, nil
}

// toHistory puts a tail (ti says what it holds) and then chunks, from
// ordinal first, into history: the tail's pieces and the chunks as one
// chunk when the tail had several pieces or the chunks follow it, the
// chunks as they are when there is no tail.
func (s *Store) toHistory(hist *bolt.Bucket, key string, created uint64, tail []byte, ti tailInfo, first uint64, chunks []Chunk, t *tally) error {
	if ti.pieces == 1 && len(chunks) == 0 {
		return eachPiece(tail, func(data []byte) error {
			return s.putChunk(hist, key, created, Chunk{First: first, Points: int(ti.points), Data: data}, t)
		})
	}
	if ti.pieces > 0 {
		pts, err := tailPoints(tail, s.scratch[:0])
		if err != nil {
			return damaged(bucketSeries, []byte(key), err)
		}
		for _, c := range chunks {
			if pts, err = DecodeChunk(c.Data, pts); err != nil {
				return err
			}
		}
		s.keepScratch(pts)
		chunks, _ = s.EncodeChunks(nil, nil, pts, first)
	}
	for _, c := range chunks {
		if err := s.putChunk(hist, key, created, c, t); err != nil {
			return err
		}
	}
	return nil
}

// putChunk puts one history chunk.
func (s *Store) putChunk(hist *bolt.Bucket, key string, created uint64, c Chunk, t *tally) error {
	k := chunkKey(nil, key, created, c.First)
	v := seal(bucketHistory, k, c.Data)
	if err := hist.Put(k, v); err != nil {
		return fmt.Errorf("put history chunk of %q: %w", key, err)
	}
	t.add(bucketHistory, k, len(v), uint64(c.Points), 1)
	return nil
}
