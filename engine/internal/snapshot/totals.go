package snapshot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// keyTotals holds the history totals in the meta bucket: chunks, points,
// archive chunks, archive points and bytes, five uvarints, sealed. Every
// transaction that adds or deletes a chunk rewrites it, so the totals are
// exact at every commit; a file without it (written before, or salvaged)
// is counted once at Open.
var keyTotals = []byte("totals")

// tally is what one transaction changes in the history totals.
type tally struct {
	chunks, points, archChunks, archPoints, bytes int64
}

// add counts one chunk (sign 1) or its deletion (sign -1): its key, the
// length of its value as stored (sealed), and its n points.
func (t *tally) add(bucket, k []byte, stored int, n uint64, sign int64) {
	t.bytes += sign * int64(len(k)+stored)
	if bytes.Equal(bucket, bucketArchive) {
		t.archChunks += sign
		t.archPoints += sign * int64(n)
		return
	}
	t.chunks += sign
	t.points += sign * int64(n)
}

// tail counts a series' tail of size bytes (sign 1) or its removal (-1):
// each piece as a chunk.
func (t *tally) tail(size int, ti tailInfo, sign int64) {
	t.bytes += sign * int64(size)
	t.chunks += sign * int64(ti.pieces)
	t.points += sign * int64(ti.points)
}

// addStored is add for a chunk read from the database, whose points its
// header gives.
func (t *tally) addStored(bucket, k, stored []byte, sign int64) error {
	n, _, _, err := header(bucket, k, stored)
	if err != nil {
		return err
	}
	t.add(bucket, k, len(stored), n, sign)
	return nil
}

func (t tally) apply(h HistoryTotals) HistoryTotals {
	h.Chunks += t.chunks
	h.Points += t.points
	h.ArchiveChunks += t.archChunks
	h.ArchivePoints += t.archPoints
	h.Bytes += t.bytes
	return h
}

// saveTotals writes the totals t leaves in tx and returns them; the
// caller installs them once tx has committed.
func (s *Store) saveTotals(tx *bolt.Tx, t tally) (HistoryTotals, error) {
	h := t.apply(*s.totals.Load())
	if t == (tally{}) {
		return h, nil
	}
	v := binary.AppendUvarint(nil, uint64(h.Chunks))
	v = binary.AppendUvarint(v, uint64(h.Points))
	v = binary.AppendUvarint(v, uint64(h.ArchiveChunks))
	v = binary.AppendUvarint(v, uint64(h.ArchivePoints))
	v = binary.AppendUvarint(v, uint64(h.Bytes))
	if err := tx.Bucket(bucketMeta).Put(keyTotals, seal(bucketMeta, keyTotals, v)); err != nil {
		return h, fmt.Errorf("put history totals: %w", err)
	}
	return h, nil
}

// loadTotals reads the stored totals in tx, or counts every chunk (and
// stores the count) when there are none.
func (s *Store) loadTotals(tx *bolt.Tx) error {
	var h HistoryTotals
	if v := tx.Bucket(bucketMeta).Get(keyTotals); v != nil {
		v, err := unseal(bucketMeta, keyTotals, v)
		if err != nil {
			return err
		}
		var f [5]uint64
		for i := range f {
			var k int
			if f[i], k = binary.Uvarint(v); k <= 0 {
				return damaged(bucketMeta, keyTotals, fmt.Errorf("field %d of 5", i+1))
			}
			v = v[k:]
		}
		h = HistoryTotals{Chunks: int64(f[0]), Points: int64(f[1]), ArchiveChunks: int64(f[2]), ArchivePoints: int64(f[3]), Bytes: int64(f[4])}
		s.totals.Store(&h)
		return nil
	}
	var t tally
	var st State
	err := tx.Bucket(bucketSeries).ForEach(func(k, v []byte) error {
		if err := readState(k, v, &st); err != nil {
			return err
		}
		ti, err := readTail(st.Tail)
		if err != nil {
			return damaged(bucketSeries, k, err)
		}
		t.tail(len(st.Tail), ti, 1)
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bucketHistory, bucketArchive} {
		if b := tx.Bucket(name); b != nil {
			if err := b.ForEach(func(k, v []byte) error { return t.addStored(name, k, v, 1) }); err != nil {
				return err
			}
		}
	}
	s.totals.Store(&HistoryTotals{})
	h, err = s.saveTotals(tx, t)
	if err != nil {
		return err
	}
	s.totals.Store(&h)
	return nil
}

// Totals returns the size of the stored history as of the last commit:
// exact, kept by every transaction that changes it. The pages in use and
// the file's size are read now.
func (s *Store) Totals() (_ HistoryTotals, err error) {
	defer caught(&err)
	h := *s.totals.Load()
	if st, err := os.Stat(s.db.Path()); err == nil {
		h.FileBytes = st.Size()
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		h.UsedBytes = tx.Size() - int64(s.db.Stats().FreeAlloc)
		return nil
	})
	return h, err
}
