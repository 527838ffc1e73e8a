package snapshot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// These bucket names are part of the on-disk format.
var (
	bucketArchive   = []byte("archive")   // series|0|created|step|first step start → chunk
	bucketWatermark = []byte("watermark") // series|0|created|step → ms up to which the archive is written
)

// Retention is what Retain needs to know of one series' policy.
type Retention struct {
	Raw      int64         // ms raw points are kept
	Archives []ArchiveSpec // finest first
	// Fold aggregates the points of one step (at least one) into a value.
	Fold func(pts []sample.Point) float64
}

// ArchiveSpec is one archive: its step and keep in ms.
type ArchiveSpec struct {
	Step, Keep int64
}

// RetainResult says what one Retain call did.
type RetainResult struct {
	Series      int    // series looked at
	ArchivedPts int    // archive points written
	ExpiredRaw  int    // raw chunks deleted
	ExpiredArch int    // archive chunks deleted
	Next        []byte // the series key to resume from; nil: the pass is over
	// Due is the soonest time (ms) at which a series this call looked at
	// may have retention work again, given what is stored now:
	// math.MaxInt64 when none ever will. Points stored later are not in
	// it (the caller's to follow). It errs early, never late: a pass that
	// starts before it finds nothing to do, one that waited for it has
	// missed nothing.
	Due int64
}

func archivePrefix(key string, created uint64, step int64) []byte {
	p := binary.BigEndian.AppendUint64(seriesPrefix(nil, key), created)
	return binary.BigEndian.AppendUint64(p, uint64(step))
}

// orderedTime maps a signed ms time to bytes that sort like it.
func orderedTime(dst []byte, t int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(t)^1<<63)
}

// Retain applies the retention of up to budget series, from the series key
// from (nil: the first), in one transaction: for each archive, the
// complete steps of raw points past its watermark are aggregated into an
// archive chunk and the watermark moves on; raw chunks wholly older than
// both the raw keep and every watermark are deleted, and archive chunks
// wholly older than their keep. A crash leaves all of a series' changes
// or none of them.
func (s *Store) Retain(from []byte, now int64, budget int, policy func(key string, kind sample.Kind) Retention) (_ RetainResult, err error) {
	defer caught(&err)
	var res RetainResult
	var totals HistoryTotals
	err = s.db.Update(func(tx *bolt.Tx) (err error) {
		series := tx.Bucket(bucketSeries)
		hist := tx.Bucket(bucketHistory)
		arch, err := tx.CreateBucketIfNotExists(bucketArchive)
		if err != nil {
			return err
		}
		wms, err := tx.CreateBucketIfNotExists(bucketWatermark)
		if err != nil {
			return err
		}
		c := series.Cursor()
		var k, v []byte
		if from == nil {
			k, v = c.First()
		} else {
			k, v = c.Seek(from)
		}
		var st State
		var t tally
		res.Due = math.MaxInt64
		var expired [][]byte // series whose tails expired
		defer func() {
			if err == nil {
				totals, err = s.saveTotals(tx, t)
			}
		}()
		// The series bucket changes only after the walk: a put moves a
		// cursor.
		defer func() {
			for _, k := range expired {
				if err != nil {
					return
				}
				err = dropTail(series, k, &t)
			}
		}()
		for ; k != nil; k, v = c.Next() {
			if res.Series >= budget {
				res.Next = bytes.Clone(k)
				break
			}
			res.Series++
			if err := readState(k, v, &st); err != nil {
				return err
			}
			key := string(k)
			r := policy(key, st.Kind)
			tailGone, due, err := retainSeries(hist, arch, wms, key, &st, now, r, &res, &t)
			if err != nil {
				return fmt.Errorf("retain %q: %w", key, err)
			}
			res.Due = min(res.Due, due)
			if tailGone {
				expired = append(expired, bytes.Clone(k))
			}
		}
		return nil
	})
	if err != nil {
		return RetainResult{}, fmt.Errorf("apply retention: %w", err)
	}
	s.totals.Store(&totals)
	return res, nil
}

// retainSeries applies retention to one series; it reports whether its
// tail expired, which the caller drops once its walk of the series is
// over, and when the series may have work again (RetainResult.Due).
func retainSeries(hist, arch, wms *bolt.Bucket, key string, st *State, now int64, r Retention, res *RetainResult, t *tally) (tailGone bool, due int64, err error) {
	due = math.MaxInt64
	// soon notes work that may come once now reaches at+keep.
	soon := func(at, keep int64) {
		if at != math.MaxInt64 {
			due = min(due, addSat(at, keep))
		}
	}
	prefix := binary.BigEndian.AppendUint64(seriesPrefix(nil, key), st.Created)
	tail, err := readTail(st.Tail)
	if err != nil {
		return false, 0, damaged(bucketSeries, []byte(key), err)
	}
	firstT, ok, err := firstRawTime(hist, prefix)
	if err != nil {
		return false, 0, err
	}
	if !ok && tail.pieces > 0 {
		firstT, ok = tail.first, true
	}
	limit := now - r.Raw         // raw points before it may go, once every archive has them
	gate := int64(math.MaxInt64) // the oldest watermark: raw points from it on wait for archives
	for _, a := range r.Archives {
		wk := archivePrefix(key, st.Created, a.Step)
		wm, stored, err := readWatermark(wms, wk)
		if err != nil {
			return false, 0, err
		}
		if !stored {
			wm = int64(math.MinInt64)
			if ok {
				wm = sample.FloorStep(firstT, a.Step)
			}
		}
		// Steps up to the one holding the newest stored point are complete:
		// every later point is at or after it.
		boundary := min(sample.FloorStep(st.Updated, a.Step), sample.FloorStep(now, a.Step))
		// Write an archive in big chunks (up to 1024 steps), but soon enough
		// that raw points are never held past their keep waiting for it.
		batch := min(1024*a.Step, max(r.Raw/2, a.Step))
		if ok && wm != math.MinInt64 && boundary-wm >= batch {
			pts, err := rawPoints(hist, prefix, st.Tail, wm, boundary-1)
			if err != nil {
				return false, 0, err
			}
			var out []sample.Point
			for i := 0; i < len(pts); {
				start := sample.FloorStep(pts[i].T, a.Step)
				j := i
				for j < len(pts) && pts[j].T < start+a.Step {
					j++
				}
				out = append(out, sample.Point{T: start, V: r.Fold(pts[i:j])})
				i = j
			}
			if len(out) > 0 {
				// bbolt holds keys until commit: a key of its own.
				ak := orderedTime(bytes.Clone(wk), out[0].T)
				if old := arch.Get(ak); old != nil {
					if err := t.addStored(bucketArchive, ak, old, -1); err != nil {
						return false, 0, err
					}
				}
				av := seal(bucketArchive, ak, AppendChunk(nil, out))
				if err := arch.Put(ak, av); err != nil {
					return false, 0, err
				}
				t.add(bucketArchive, ak, len(av), uint64(len(out)), 1)
				res.ArchivedPts += len(out)
			}
			wm = boundary
			if err := wms.Put(wk, seal(bucketWatermark, wk, binary.BigEndian.AppendUint64(nil, uint64(wm)))); err != nil {
				return false, 0, err
			}
		}
		// The boundary reaches wm+batch once the step of now does; and
		// never, until the series gets newer points, if the step of its
		// newest is short of it (then the snapshot storing them makes a
		// pass due).
		if ok && wm != math.MinInt64 && sample.FloorStep(st.Updated, a.Step)-wm >= batch {
			soon(sample.FloorStep(addSat(wm, batch+a.Step-1), a.Step), 0)
		}
		limit = min(limit, wm)
		gate = min(gate, wm)
		// Expire the archive's chunks wholly older than its keep.
		n, kept, err := deleteOlder(bucketArchive, arch, wk, now-a.Keep, a.Step, t)
		if err != nil {
			return false, 0, err
		}
		res.ExpiredArch += n
		soon(kept, a.Keep)
	}
	// Raw points past the oldest watermark wait for the archive that
	// moves it, whose own time is counted above.
	n, kept, err := deleteOlder(bucketHistory, hist, prefix, limit, 1, t)
	res.ExpiredRaw += n
	if err != nil {
		return false, 0, err
	}
	if kept <= gate {
		soon(kept, r.Raw)
	}
	// The tail holds the newest points: it goes once all of them are
	// older than the limit (then so are every history chunk's).
	if tail.pieces > 0 && tail.last+1 <= limit {
		res.ExpiredRaw += tail.pieces
		return true, due, nil
	}
	if tail.pieces > 0 && tail.last+1 <= gate {
		soon(tail.last+1, r.Raw)
	}
	return false, due, nil
}

// addSat returns a+b, or math.MaxInt64 past it (b >= 0).
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// dropTail rewrites the state of series k without its tail.
func dropTail(series *bolt.Bucket, k []byte, t *tally) error {
	var st State
	if err := readState(k, series.Get(k), &st); err != nil {
		return err
	}
	ti, err := readTail(st.Tail)
	if err != nil {
		return damaged(bucketSeries, k, err)
	}
	t.tail(len(st.Tail), ti, -1)
	st.Tail, st.TailFirst = nil, 0
	if err := series.Put(k, sealState(k, &st)); err != nil {
		return fmt.Errorf("put series %q: %w", k, err)
	}
	return nil
}

// readWatermark returns the watermark stored under wk, if any.
func readWatermark(wms *bolt.Bucket, wk []byte) (int64, bool, error) {
	v := wms.Get(wk)
	if v == nil {
		return 0, false, nil
	}
	v, err := unseal(bucketWatermark, wk, v)
	if err != nil {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, damaged(bucketWatermark, wk, fmt.Errorf("a watermark of %d bytes", len(v)))
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

// header returns the point count and first and last times of the stored
// chunk v under key k of bucket b.
func header(b, k, v []byte) (n uint64, first, last int64, err error) {
	if v, err = unseal(b, k, v); err != nil {
		return 0, 0, 0, err
	}
	if n, first, last, err = chunkHeader(v); err != nil {
		err = damaged(b, k, err)
	}
	return n, first, last, err
}

// decode appends the points of the stored chunk v under key k of bucket b.
func decode(b, k, v []byte, dst []sample.Point) ([]sample.Point, error) {
	v, err := unseal(b, k, v)
	if err != nil {
		return dst, err
	}
	if dst, err = DecodeChunk(v, dst); err != nil {
		err = damaged(b, k, err)
	}
	return dst, err
}

// firstRawTime returns the time of the oldest stored raw point under prefix.
func firstRawTime(hist *bolt.Bucket, prefix []byte) (int64, bool, error) {
	k, v := hist.Cursor().Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return 0, false, nil
	}
	// The header alone, without checking the seal (a chunk of thousands
	// of points, at every pass over every series): the points are read
	// through the seal when they are downsampled.
	_, first, _, err := chunkHeader(peek(v))
	if err != nil {
		return 0, false, damaged(bucketHistory, k, err)
	}
	return first, true, nil
}

// rawPoints returns the stored raw points under prefix, and in tail, with
// times in [from, to].
func rawPoints(hist *bolt.Bucket, prefix, tail []byte, from, to int64) ([]sample.Point, error) {
	var out []sample.Point
	c := hist.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		_, first, last, err := header(bucketHistory, k, v)
		if err != nil {
			return nil, err
		}
		if first > to {
			break
		}
		if last < from {
			continue
		}
		start := len(out)
		if out, err = decode(bucketHistory, k, v, out); err != nil {
			return nil, err
		}
		keep := out[:start]
		for _, p := range out[start:] {
			if p.T >= from && p.T <= to {
				keep = append(keep, p)
			}
		}
		out = keep
	}
	start := len(out)
	out, err := tailPoints(tail, out)
	if err != nil {
		return nil, err
	}
	keep := out[:start]
	for _, p := range out[start:] {
		if p.T >= from && p.T <= to {
			keep = append(keep, p)
		}
	}
	return keep, nil
}

// deleteOlder deletes the chunks under prefix whose newest point (plus
// span, the time one point covers) is at or before limit; chunks are in
// time order, so it stops at the first it keeps, and returns that one's
// newest point plus span (math.MaxInt64: it kept none).
func deleteOlder(name []byte, b *bolt.Bucket, prefix []byte, limit, span int64, t *tally) (n int, kept int64, err error) {
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Seek(prefix) {
		// The newest chunk of a series is looked at by every pass: its
		// header only; the seal is checked before a chunk goes.
		_, _, last, err := chunkHeader(peek(v))
		if err != nil {
			return n, 0, damaged(name, k, err)
		}
		if last+span > limit {
			return n, last + span, nil
		}
		pts, _, _, err := header(name, k, v)
		if err != nil {
			return n, 0, err
		}
		t.add(name, k, len(v), pts, -1)
		if err := c.Delete(); err != nil {
			return n, 0, err
		}
		n++
	}
	return n, math.MaxInt64, nil
}

// Archive appends the points of the archive of step ms of an incarnation
// with step starts in [from, to], oldest first, and returns the start of
// its oldest point (math.MaxInt64: none) and its watermark (the end of
// what it holds; math.MinInt64: nothing yet).
func (s *Store) Archive(key string, created uint64, step, from, to int64, dst []sample.Point, take func(n int) error) (out []sample.Point, oldest, watermark int64, err error) {
	defer caught(&err)
	oldest, watermark = math.MaxInt64, math.MinInt64
	err = s.db.View(func(tx *bolt.Tx) error {
		arch, wms := tx.Bucket(bucketArchive), tx.Bucket(bucketWatermark)
		if arch == nil || wms == nil {
			return nil
		}
		wk := archivePrefix(key, created, step)
		if wm, ok, err := readWatermark(wms, wk); err != nil {
			return err
		} else if ok {
			watermark = wm
		}
		c := arch.Cursor()
		for k, v := c.Seek(wk); k != nil && bytes.HasPrefix(k, wk); k, v = c.Next() {
			n, first, last, err := header(bucketArchive, k, v)
			if err != nil {
				return err
			}
			oldest = min(oldest, first)
			if last < from || first > to {
				continue
			}
			if take != nil {
				if err := take(int(min(n, 1<<30))); err != nil {
					return err
				}
			}
			start := len(dst)
			if dst, err = decode(bucketArchive, k, v, dst); err != nil {
				return err
			}
			keep := dst[:start]
			for _, p := range dst[start:] {
				if p.T >= from && p.T <= to {
					keep = append(keep, p)
				}
			}
			dst = keep
		}
		return nil
	})
	return dst, oldest, watermark, err
}
