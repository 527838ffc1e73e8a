package snapshot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// historyFill is how full bbolt packs a history page when it splits one.
// Its default, half, suits random inserts; history keys mostly arrive in
// key order (each series' chunks at the end of its range, compaction
// walking the keys), so pages may be packed fuller.
const historyFill = 0.9

// CompactResult says what one Compact call did.
type CompactResult struct {
	Merged  int    // chunks that were merged into others and deleted
	Written int    // chunks written in their place
	Points  int    // points re-encoded into them
	Next    []byte // the history key to resume from; nil: the pass reached the end
}

// HistoryTotals are the size of the stored history (Store.Totals).
type HistoryTotals struct {
	Chunks int64 `json:"chunks"`
	Points int64 `json:"points"` // raw points
	// ArchivePoints are the points of every retention archive, in
	// ArchiveChunks chunks; Bytes counts their keys and values too.
	ArchiveChunks int64 `json:"archive_chunks"`
	ArchivePoints int64 `json:"archive_points"`
	Bytes         int64 `json:"bytes"` // chunk keys and values
	// UsedBytes is the database's pages in use (all buckets, branch pages,
	// meta; not the free pages bbolt will reuse); FileBytes the file, which
	// bbolt grows ahead of need and never shrinks.
	UsedBytes int64 `json:"used_bytes"`
	FileBytes int64 `json:"file_bytes"`
}

// Compact merges runs of small chunks of one series into chunks of up to
// target points, starting at the history key from (nil: the first), in
// one transaction that rewrites at most budget chunks. Each merge puts
// the merged chunk under the first chunk's key and deletes the others in
// the same transaction, so a crash leaves either the old chunks or the
// new one, never both and never neither. Call it again with Next until
// Next is nil, which ends a pass over the whole history.
//
// maxSpan, when set, caps the time (ms) one merged chunk may cover for a
// series key: expiry deletes whole chunks, so a chunk must not outlast the
// raw keep by much.
func (s *Store) Compact(from []byte, target, budget int, maxSpan func(key string) int64) (_ CompactResult, err error) {
	defer caught(&err)
	var res CompactResult
	var totals HistoryTotals
	err = s.db.Update(func(tx *bolt.Tx) error {
		hist := tx.Bucket(bucketHistory)
		hist.FillPercent = historyFill
		c := hist.Cursor()
		var k, v []byte
		if from == nil {
			k, v = c.First()
		} else {
			k, v = c.Seek(from)
		}
		type piece struct {
			key         []byte
			ord         uint64
			n           uint64
			first, last int64
			value       []byte // as stored (sealed)
		}
		// group is a run of contiguous chunks of one incarnation that will
		// become one chunk.
		type group struct {
			pieces      []piece
			n           uint64
			first, last int64
		}
		// groups are the chunks seen of the current incarnation, grouped
		// the way a binary counter carries: the newest group joins the one
		// before it when it holds at least half as many points (and the two
		// fit the target and the span). A group grows by half at least at
		// each merge, so a series whose history grows a chunk at a time has
		// each point re-encoded about log1.5(target/chunk) times; merging
		// every run whole, as before, re-encoded the run at each new chunk
		// (TestCompactGrowingSeries: 4 against 32 times a point). The
		// newest groups, still growing, stay smaller until more come.
		var groups []group
		span := int64(math.MaxInt64) // for the series of the groups
		type merge struct {
			first  []byte
			value  []byte
			drop   [][]byte
			points int
		}
		var t tally
		var merges []merge
		rewrites := 0
		flush := func() error {
			for _, g := range groups {
				if len(g.pieces) < 2 {
					continue
				}
				var pts []sample.Point
				for _, p := range g.pieces {
					payload, err := unseal(bucketHistory, p.key, p.value)
					if err != nil {
						return err
					}
					if pts, err = DecodeChunk(payload, pts); err != nil {
						return damaged(bucketHistory, p.key, err)
					}
				}
				m := merge{first: g.pieces[0].key, value: seal(bucketHistory, g.pieces[0].key, AppendChunk(nil, pts)), points: len(pts)}
				for i, p := range g.pieces {
					if i > 0 {
						m.drop = append(m.drop, p.key)
					}
					t.add(bucketHistory, p.key, len(p.value), p.n, -1)
				}
				t.add(bucketHistory, m.first, len(m.value), uint64(len(pts)), 1)
				merges = append(merges, m)
				rewrites += len(g.pieces)
			}
			groups = groups[:0]
			return nil
		}
		walked := 0
		for ; k != nil; k, v = c.Next() {
			if rewrites >= budget {
				res.Next = bytes.Clone(k)
				break
			}
			// A pass that finds little to merge walks the whole history in
			// one transaction: its pages go back as it goes, not only at
			// the end (a soak's RSS rose by the size of the history, 170
			// MB, right after each snapshot).
			if walked++; walked%releaseWalk == 0 {
				releaseInTx(s.db, tx)
			}
			// Most chunks are not rewritten: their headers are read without
			// checking the seal, which a merge checks (flush).
			n, first, last, err := chunkHeader(peek(v))
			if err != nil {
				return damaged(bucketHistory, k, err)
			}
			if len(k) < 17 {
				return fmt.Errorf("%w: history key %q", ErrFormat, k)
			}
			ord := binary.BigEndian.Uint64(k[len(k)-8:])
			if len(groups) > 0 {
				g := groups[len(groups)-1]
				prev := g.pieces[len(g.pieces)-1]
				if !bytes.Equal(k[:len(k)-8], prev.key[:len(prev.key)-8]) || ord != prev.ord+prev.n {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			if len(groups) == 0 {
				span = math.MaxInt64
				if maxSpan != nil {
					span = maxSpan(string(k[:len(k)-17])) // the key before 0x00|created|ordinal
				}
			}
			if n >= uint64(target) {
				// Full already: the groups before it cannot join the ones after.
				if err := flush(); err != nil {
					return err
				}
				continue
			}
			// Keys and values are only valid in the transaction; the merge
			// writes in it too, after the walk.
			p := piece{key: bytes.Clone(k), ord: ord, n: n, first: first, last: last, value: bytes.Clone(v)}
			groups = append(groups, group{pieces: []piece{p}, n: n, first: first, last: last})
			for len(groups) >= 2 {
				a, b := &groups[len(groups)-2], groups[len(groups)-1]
				if 2*b.n < a.n || a.n+b.n > uint64(target) || b.last-a.first > span {
					break
				}
				a.pieces = append(a.pieces, b.pieces...)
				a.n += b.n
				a.last = b.last
				groups = groups[:len(groups)-1]
			}
		}
		if err := flush(); err != nil {
			return err
		}
		if s.afterUpdates != nil {
			s.afterUpdates()
		}
		for _, m := range merges {
			if err := hist.Put(m.first, m.value); err != nil {
				return fmt.Errorf("put merged chunk %q: %w", m.first, err)
			}
			for _, d := range m.drop {
				if err := hist.Delete(d); err != nil {
					return fmt.Errorf("delete merged chunk %q: %w", d, err)
				}
			}
			res.Written++
			res.Merged += len(m.drop)
			res.Points += m.points
		}
		var err error
		totals, err = s.saveTotals(tx, t)
		return err
	})
	if err != nil {
		return CompactResult{}, fmt.Errorf("compact history: %w", err)
	}
	s.totals.Store(&totals)
	return res, nil
}
