package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Problem is one piece of damage found in snapshot.db.
type Problem struct {
	Bucket string // empty for damage to the file's structure
	Key    string // empty when no key is known
	Err    error
}

func (p Problem) String() string {
	if p.Bucket == "" {
		return fmt.Sprintf("snapshot.db: %v", p.Err)
	}
	return fmt.Sprintf("snapshot.db: %s: %v", describeKey(p.Bucket, []byte(p.Key)), p.Err)
}

// describeKey names a stored entry for a person: the series key, and what
// of it the entry holds.
func describeKey(bucket string, k []byte) string {
	i := bytes.IndexByte(k, 0)
	be := binary.BigEndian
	switch {
	case bucket == string(bucketSeries):
		return fmt.Sprintf("the state of series %q", k)
	case bucket == string(bucketHistory) && i >= 0 && len(k) == i+17:
		return fmt.Sprintf("a history chunk of series %q (incarnation %d, from point %d)", k[:i], be.Uint64(k[i+1:]), be.Uint64(k[i+9:]))
	case bucket == string(bucketArchive) && i >= 0 && len(k) == i+25:
		return fmt.Sprintf("an archive chunk of series %q (incarnation %d, step %d ms)", k[:i], be.Uint64(k[i+1:]), be.Uint64(k[i+9:]))
	case bucket == string(bucketWatermark) && i >= 0 && len(k) == i+17:
		return fmt.Sprintf("an archive watermark of series %q (incarnation %d, step %d ms)", k[:i], be.Uint64(k[i+1:]), be.Uint64(k[i+9:]))
	}
	return fmt.Sprintf("bucket %s, key %q", bucket, k)
}

// FileReport is what a check of snapshot.db found.
type FileReport struct {
	Index    uint64         // the WAL index the stored state covers (0: unknown or none)
	Entries  map[string]int // readable entries per bucket
	Problems []Problem
	Pages    FilePages // CheckFile's: how the pages are used
}

// knownBuckets are the buckets Sonde writes, in the order a salvage
// copies them.
var knownBuckets = [][]byte{bucketMeta, bucketSeries, bucketHistory, bucketArchive, bucketWatermark, bucketEvents, bucketEventIDs, bucketHeartbeats, bucketAlerts, bucketChecks, bucketClients}

// checkEntry checks one stored entry: its seal, and that its payload
// decodes as what its bucket holds.
func checkEntry(bucket, k, v []byte) error {
	payload, err := unseal(bucket, k, v)
	if err != nil {
		return err
	}
	switch {
	case bytes.Equal(bucket, bucketSeries):
		var st State
		if err := decodeState(payload, &st); err != nil {
			return err
		}
		return checkTail(&st)
	case bytes.Equal(bucket, bucketHistory), bytes.Equal(bucket, bucketArchive):
		_, err := DecodeChunk(payload, nil)
		return err
	case bytes.Equal(bucket, bucketEvents):
		var ev sample.Event
		return decodeEvent(k, payload, &ev)
	case bytes.Equal(bucket, bucketHeartbeats), bytes.Equal(bucket, bucketAlerts), bytes.Equal(bucket, bucketChecks):
		return checkStatus(bucket, k, payload)
	case bytes.Equal(bucket, bucketClients):
		var c ClientState
		return decodeClient(k, payload, &c)
	case bytes.Equal(bucket, bucketEventIDs):
		if len(k) != 8 || len(payload) != 8 {
			return fmt.Errorf("an id entry of %d and %d bytes, want 8 and 8", len(k), len(payload))
		}
	case bytes.Equal(bucket, bucketWatermark), bytes.Equal(bucket, bucketMeta) && bytes.Equal(k, keyIndex):
		if len(payload) != 8 {
			return fmt.Errorf("%d bytes, want 8", len(payload))
		}
	}
	return nil
}

// CheckFile checks snapshot.db at path without bbolt: its meta pages, the
// tree of every bucket, and every value (its seal, and that it decodes).
// It reports all the damage it finds; the file is not changed.
func CheckFile(path string) (FileReport, error) {
	rep := FileReport{Entries: map[string]int{}}
	err := salvageWalk(path, &rep, func(bucket, k, v []byte) error { return nil })
	return rep, err
}

// salvageWalk walks the file at path leniently and calls keep with every
// entry of a known bucket that checks out; the damage goes into rep.
func salvageWalk(path string, rep *FileReport, keep func(bucket, k, v []byte) error) error {
	damage, pages, err := walkPages(path, true, true, func(bucket, k, v []byte) error {
		if !slices.ContainsFunc(knownBuckets, func(b []byte) bool { return bytes.Equal(b, bucket) }) {
			rep.Problems = append(rep.Problems, Problem{Bucket: string(bucket), Err: fmt.Errorf("a bucket Sonde does not write")})
			return nil
		}
		if err := checkEntry(bucket, k, v); err != nil {
			var de *DamageError
			if errors.As(err, &de) {
				err = de.Err // the problem names the bucket and key itself
			}
			rep.Problems = append(rep.Problems, Problem{Bucket: string(bucket), Key: string(k), Err: err})
			return nil
		}
		if bytes.Equal(bucket, bucketMeta) && bytes.Equal(k, keyIndex) {
			payload, _ := unseal(bucket, k, v)
			rep.Index = binary.BigEndian.Uint64(payload)
		}
		rep.Entries[string(bucket)]++
		return keep(bucket, k, v)
	})
	for _, d := range damage {
		rep.Problems = append(rep.Problems, Problem{Err: d})
	}
	rep.Pages = pages
	return err
}

// Salvage writes to a new file at dst every entry of the snapshot.db at
// src that checks out (see CheckFile), each sealed again, and reports what
// it could not keep. A series whose state was lost loses its history and
// archives too: nothing could read them. dst must not exist. It walks src
// twice (series states first, for that), and writes in transactions of
// at most salvageBatch entries, so that its memory does not grow with the
// file.
func Salvage(src, dst string) (FileReport, error) {
	rep := FileReport{Entries: map[string]int{}}
	type entry struct{ k, v []byte }
	var series, meta []entry
	err := salvageWalk(src, &rep, func(bucket, k, v []byte) error {
		payload, _ := unseal(bucket, k, v)
		switch {
		case bytes.Equal(bucket, bucketSeries):
			series = append(series, entry{bytes.Clone(k), bytes.Clone(payload)})
		case bytes.Equal(bucket, bucketMeta) && !bytes.Equal(k, keyVersion) && !bytes.Equal(k, keyTotals) && !bytes.Equal(k, keyEventTotals):
			// The totals are counted again at open: what is salvaged
			// is not what they counted.
			meta = append(meta, entry{bytes.Clone(k), bytes.Clone(payload)})
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("salvage %s: %w", src, err)
	}
	states := map[string]uint64{} // series key → created
	for _, e := range series {
		var st State
		decodeState(e.v, &st) // checked by the walk
		states[string(e.k)] = st.Created
	}
	// A history, archive or watermark entry belongs to an incarnation:
	// key | 0x00 | created | ...; without that incarnation's state it is
	// garbage the engine never reads.
	owned := func(k []byte) bool {
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) < i+9 {
			return false
		}
		created, ok := states[string(k[:i])]
		return ok && created == binary.BigEndian.Uint64(k[i+1:])
	}
	db, err := bolt.Open(dst, 0o640, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return rep, fmt.Errorf("create %s: %w", dst, err)
	}
	db.AllocSize = allocSize // the file keeps whatever slack it is given
	defer db.Close()
	var batch []struct {
		bucket []byte
		e      entry
	}
	flush := func() error {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, b := range batch {
				bk, err := tx.CreateBucketIfNotExists(b.bucket)
				if err != nil {
					return err
				}
				bk.FillPercent = historyFill
				if err := bk.Put(b.e.k, seal(b.bucket, b.e.k, b.e.v)); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	add := func(bucket []byte, e entry) error {
		batch = append(batch, struct {
			bucket []byte
			e      entry
		}{bucket, e})
		if len(batch) >= salvageBatch {
			return flush()
		}
		return nil
	}
	for _, e := range meta {
		if err := add(bucketMeta, e); err != nil {
			return rep, fmt.Errorf("write %s: %w", dst, err)
		}
	}
	for _, e := range series {
		if err := add(bucketSeries, e); err != nil {
			return rep, fmt.Errorf("write %s: %w", dst, err)
		}
	}
	type orphan struct{ bucket, series string }
	orphans := map[orphan]int{}
	var order []orphan
	var discard FileReport
	discard.Entries = map[string]int{}
	err = salvageWalk(src, &discard, func(bucket, k, v []byte) error {
		switch {
		case bytes.Equal(bucket, bucketSeries), bytes.Equal(bucket, bucketMeta), bytes.Equal(bucket, bucketEventIDs):
			return nil // the id index is rebuilt at open, from the events kept
		case bytes.Equal(bucket, bucketEvents), bytes.Equal(bucket, bucketHeartbeats), bytes.Equal(bucket, bucketAlerts), bytes.Equal(bucket, bucketChecks),
			bytes.Equal(bucket, bucketClients):
			payload, _ := unseal(bucket, k, v)
			// bucket points into the mapped file, which is gone after the walk.
			name := knownBuckets[slices.IndexFunc(knownBuckets, func(b []byte) bool { return bytes.Equal(b, bucket) })]
			return add(name, entry{bytes.Clone(k), bytes.Clone(payload)})
		}
		if !owned(k) {
			o := orphan{string(bucket), string(k)}
			if i := bytes.IndexByte(k, 0); i >= 0 {
				o.series = string(k[:i])
			}
			if orphans[o] == 0 {
				order = append(order, o)
			}
			orphans[o]++
			return nil
		}
		payload, _ := unseal(bucket, k, v)
		// bucket points into the mapped file, which is gone after the walk.
		name := knownBuckets[slices.IndexFunc(knownBuckets, func(b []byte) bool { return bytes.Equal(b, bucket) })]
		return add(name, entry{bytes.Clone(k), bytes.Clone(payload)})
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, name := range knownBuckets {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(keyVersion, []byte{formatVersion})
		})
	}
	if err != nil {
		return rep, fmt.Errorf("write %s: %w", dst, err)
	}
	for _, o := range order {
		rep.Problems = append(rep.Problems, Problem{
			Err: fmt.Errorf("%d %s entries of series %q dropped: the state of the series was lost", orphans[o], o.bucket, o.series)})
	}
	if err := db.Close(); err != nil {
		return rep, fmt.Errorf("close %s: %w", dst, err)
	}
	return rep, nil
}

// salvageBatch caps the entries of one transaction of a salvage.
const salvageBatch = 8192
