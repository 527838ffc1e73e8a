package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/chunk"
	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// foldBatch caps the records folded into one bbolt transaction, so a
// snapshot after a long burst is several transactions, not one huge one.
// Each transaction rewrites every page its keys touch, so splitting a
// snapshot multiplies the writing; the cap trades that against the fold's
// memory (16 bytes per point) after a long burst. At 100k keys, 1 << 18 made a server's
// stop take 76.5 s and ingest 788k SET/s; 1 << 21 made them 4.6 s and
// 1.12M/s (sonde-bench -keys-list 100000 mem).
const foldBatch = 1 << 21

// snapshotLoop owns periodic snapshots.
func (db *DB) snapshotLoop() {
	defer close(db.snapDone)
	t := time.NewTicker(db.opts.SnapshotInterval)
	defer t.Stop()
	for {
		var err error
		select {
		case <-db.stopSnap:
			return
		case <-t.C:
			err = db.snapshotNow()
		case <-db.snapKick:
			err = db.snapshotNow()
		case ch := <-db.snapReq:
			err = db.snapshotNow()
			ch <- err
		}
		if err != nil {
			if !errors.Is(err, errSnapshotsOff) {
				db.logger.Warn("snapshot failed; the wal keeps every change", "err", err)
			}
			continue
		}
		if err := db.compact(); err != nil {
			db.logger.Error("compact history", "err", db.storeFailed(err))
		}
		if err := db.retain(); err != nil {
			db.logger.Error("apply retention", "err", db.storeFailed(err))
		}
	}
}

// pass is where a background pass over the stored history (compaction,
// retention) stands. A pass is due while one is in progress, when
// snapshots stored records since the last one started, or, for a pass
// that also follows the clock (retention's expiry), every `every`: an
// idle store with a million series does not walk them all at each tick.
// Snapshotter-owned (under snapMu).
type pass struct {
	next    []byte    // where the pass in progress goes on; nil: none
	started int64     // db.stored when the pass in progress or the last one started
	ended   time.Time // when the last one ended
	done    atomic.Int64
}

func (p *pass) due(stored int64, every time.Duration, now time.Time) bool {
	return p.next != nil || p.done.Load() == 0 || stored != p.started || (every > 0 && now.Sub(p.ended) >= every)
}

// step records a call of the pass that ended at next (nil: the pass is
// over).
func (p *pass) step(stored int64, next []byte, now time.Time) {
	if p.next == nil {
		p.started = stored
	}
	if p.next = next; next == nil {
		p.ended = now
		p.done.Add(1)
	}
}

// retainEvery is how often an idle store runs a retention pass, for the
// expiry that time alone brings.
const retainEvery = time.Minute

// errSnapshotsOff wraps the error returned by snapshots once they are off.
var errSnapshotsOff = errors.New("snapshots are off until restart")

// storeFailed applies the policy for a failed write to the snapshot
// database. Lack of space is retried at the next snapshot: bbolt writes
// the meta page last, so a transaction that failed before it left the
// file as it was. Any other failure may be a failed fsync, after which
// the file's state is unknown (bbolt may even have written the meta
// page): the engine stops writing it until a restart. Nothing is lost
// either way, because the WAL is truncated only after a successful
// snapshot.
func (db *DB) storeFailed(err error) error {
	db.snapFail.Add(1)
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return err
	}
	off := fmt.Errorf("%w: %w", errSnapshotsOff, err)
	if db.snapErr.CompareAndSwap(nil, &off) {
		db.logger.Error("writing the snapshot database failed; snapshots, compaction and retention stop until restart; the wal keeps every change", "err", err)
	}
	return off
}

// compact goes on with the compaction pass for up to CompactTime, in
// transactions of at most CompactBudget chunk rewrites, so ingest and
// reads never wait on it (bbolt readers do not block on a writer).
func (db *DB) compact() error {
	if db.opts.ChunkPoints < 0 || db.snapErr.Load() != nil {
		return nil
	}
	db.snapMu.Lock()
	defer db.snapMu.Unlock()
	if !db.compaction.due(db.stored, 0, time.Now()) {
		return nil // nothing new since the last pass: nothing to merge
	}
	deadline := time.Now().Add(db.opts.CompactTime)
	for time.Now().Before(deadline) {
		res, err := db.store.Compact(db.compaction.next, db.opts.ChunkPoints, db.opts.CompactBudget, db.maxChunkSpan)
		if err != nil {
			return err
		}
		db.compaction.step(db.stored, res.Next, time.Now())
		db.merged.Add(int64(res.Merged))
		if res.Merged > 0 {
			db.logger.Debug("compacted history", "merged", res.Merged, "into", res.Written)
		}
		if res.Next == nil {
			return nil // one pass per snapshot at most
		}
	}
	return nil
}

// Snapshot folds every change made so far into the snapshot database and
// truncates the WAL in front of it.
func (db *DB) Snapshot(ctx context.Context) error {
	ch := make(chan error, 1)
	select {
	case db.snapReq <- ch:
	case <-db.snapDone:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("request snapshot: %w", ctx.Err())
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for snapshot: %w", ctx.Err())
	}
}

// snapshotNow folds the WAL records after the stored index into the store.
// Only fsynced records are folded, so the store never runs ahead of the WAL.
func (db *DB) snapshotNow() error {
	db.snapMu.Lock()
	defer db.snapMu.Unlock()
	if p := db.snapErr.Load(); p != nil {
		return *p
	}
	target := db.published.Load()
	if db.synced.Load() < target {
		ch := make(chan error, 1)
		select {
		case db.syncReq <- ch:
			if err := <-ch; err != nil {
				return fmt.Errorf("sync wal before snapshot: %w", err)
			}
		case <-db.committerDone:
		}
		target = min(target, db.synced.Load())
	}
	start := time.Now()
	from := db.store.Index() + 1
	folded := 0
	var foldTook, commitTook time.Duration
	for from <= target {
		to := min(target, from+foldBatch-1)
		t0 := time.Now()
		ups, err := db.fold(from, to)
		if err != nil {
			return err
		}
		t1 := time.Now()
		if err := db.store.Commit(to, ups); err != nil {
			return db.storeFailed(err)
		}
		foldTook, commitTook = foldTook+t1.Sub(t0), commitTook+time.Since(t1)
		for i := range ups {
			u := &ups[i]
			if u.State == nil {
				continue
			}
			if s := db.index.get(u.Key); s != nil && s.created == u.State.Created {
				s.flushed.Store(u.State.Ordinal)
			}
		}
		folded += int(to - from + 1)
		db.stored += int64(to - from + 1)
		from = to + 1
	}
	first, err := db.wal.TruncateFront(db.store.Index() + 1)
	if err != nil {
		return fmt.Errorf("truncate wal after snapshot: %w", err)
	}
	db.snapshots.Add(1)
	if folded > 0 {
		db.logger.Debug("snapshot", "records", folded, "index", db.store.Index(), "wal_first", first,
			"took", time.Since(start), "fold", foldTook, "commit", commitTook)
	}
	return nil
}

type foldEntry struct {
	wipe   bool
	has    bool // state is set
	state  snapshot.State
	points []sample.Point
	first  uint64 // ordinal of points[0]
}

// fold reads WAL records [from, to] and reduces them to one update per key:
// its final state and the history points it gained.
func (db *DB) fold(from, to uint64) ([]snapshot.Update, error) {
	// Keys are looked up by their bytes in the record: a key costs one
	// string and one entry per fold, not one per record.
	m := make(map[string]int, db.foldKeys)
	var entries []foldEntry
	var r record.Record
	for i := from; i <= to; i++ {
		body, err := db.wal.Read(i)
		if err != nil {
			return nil, fmt.Errorf("fold wal: %w", err)
		}
		key, err := record.DecodeView(body, &r)
		if err != nil {
			return nil, fmt.Errorf("fold wal index %d: %w", i, err)
		}
		j, ok := m[string(key)]
		if !ok {
			j = len(entries)
			r.Key = string(key)
			m[r.Key] = j
			entries = append(entries, foldEntry{state: snapshot.State{Key: r.Key}})
		}
		e := &entries[j]
		k := e.state.Key
		if r.Code == sample.Delete {
			*e = foldEntry{wipe: true, state: snapshot.State{Key: k}}
			continue
		}
		created := e.state.Created
		if r.AddsPoint() && r.Ordinal == 1 {
			// A new incarnation: whatever was stored for the key goes.
			*e = foldEntry{wipe: true, state: snapshot.State{Key: k}, points: e.points[:0]}
			created = i
		}
		kind := sample.Gauge
		if record.IsCounter(r.Code) {
			kind = sample.Counter
		}
		e.has = true
		e.state = snapshot.State{
			Key: k, Kind: kind, Value: r.Value, Running: r.Running, Shown: r.Shown,
			WinStart: r.WinStart, Interval: r.Interval, Updated: r.Time,
			Ordinal: r.Ordinal, Created: created,
		}
		if r.AddsPoint() {
			if len(e.points) == 0 {
				e.first = r.Ordinal
			}
			e.points = append(e.points, sample.Point{T: r.Time, V: r.Value})
		}
	}
	db.foldKeys = len(entries)
	ups := make([]snapshot.Update, 0, len(entries))
	for j := range entries {
		e := &entries[j]
		u := snapshot.Update{Key: e.state.Key, Wipe: e.wipe, Points: e.points, FirstOrdinal: e.first}
		if e.has {
			u.State = &e.state
		}
		ups = append(ups, u)
	}
	return ups, nil
}

// maxChunkSpan is the most time one compacted chunk of key may cover: a
// quarter of its raw keep, so that expiry, which deletes whole chunks,
// frees space soon after the keep.
func (db *DB) maxChunkSpan(key string) int64 {
	pol := db.opts.Retention.Keep(key, sample.Gauge)
	return max(pol.Raw.Milliseconds()/4, 1)
}

// retainBudget caps the series one retention transaction looks at.
const retainBudget = 512

// retain goes on with the retention pass (downsampling into archives,
// expiry) for up to CompactTime, in transactions of at most retainBudget
// series.
func (db *DB) retain() error {
	if db.snapErr.Load() != nil {
		return nil
	}
	db.snapMu.Lock()
	defer db.snapMu.Unlock()
	if !db.retention.due(db.stored, retainEvery, db.opts.Now()) {
		return nil
	}
	deadline := time.Now().Add(db.opts.CompactTime)
	for time.Now().Before(deadline) {
		res, err := db.store.Retain(db.retention.next, db.nowMs(), retainBudget, db.retentionOf)
		if err != nil {
			return err
		}
		db.retention.step(db.stored, res.Next, db.opts.Now())
		db.archived.Add(int64(res.ArchivedPts))
		db.expired.Add(int64(res.ExpiredRaw + res.ExpiredArch))
		if res.ArchivedPts+res.ExpiredRaw+res.ExpiredArch > 0 {
			db.logger.Debug("retention", "series", res.Series, "archived_points", res.ArchivedPts,
				"expired_raw_chunks", res.ExpiredRaw, "expired_archive_chunks", res.ExpiredArch)
		}
		if res.Next == nil {
			return nil // one pass per snapshot at most
		}
	}
	return nil
}

// retentionOf turns a key's policy into what the snapshot store needs.
func (db *DB) retentionOf(key string, kind sample.Kind) snapshot.Retention {
	pol := db.opts.Retention.Keep(key, kind)
	r := snapshot.Retention{Raw: pol.Raw.Milliseconds(), Fold: foldFunc(pol.Agg)}
	for _, a := range pol.Archives {
		r.Archives = append(r.Archives, snapshot.ArchiveSpec{Step: a.Step.Milliseconds(), Keep: a.Keep.Milliseconds()})
	}
	return r
}

func foldFunc(agg sample.Agg) func([]sample.Point) float64 {
	if agg == sample.Avg || agg == 0 {
		return chunk.Mean // as a chunk stores it best: sums of decimals over counts
	}
	return func(p []sample.Point) float64 { return sample.Fold(agg, p) }
}
