package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/chunk"
	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// snapshotLoop owns periodic snapshots: every SnapshotInterval, early
// when the WAL grew by SnapshotRecords (snapKick), when writes went quiet
// (Options.SnapshotQuiet), and on request.
func (db *DB) snapshotLoop() {
	defer close(db.snapDone)
	t := time.NewTicker(db.opts.SnapshotInterval)
	defer t.Stop()
	var quietC <-chan time.Time
	if db.opts.SnapshotQuiet > 0 {
		q := time.NewTicker(db.opts.SnapshotQuiet)
		defer q.Stop()
		quietC = q.C
	}
	// The published index at the last quiet tick, and the one a quiet
	// snapshot last started at: a failed one is tried again by the
	// interval, not at every quiet tick.
	var seen, quietAt uint64
	for {
		var err error
		select {
		case <-db.stopSnap:
			return
		case <-t.C:
			err = db.snapshotNow()
		case <-quietC:
			pub := db.published.Load()
			start := pub == seen && pub != quietAt && pub >= db.store.Index()+uint64(db.opts.SnapshotQuietRecords)
			seen = pub
			if start {
				quietAt = pub
			}
			if f := db.opts.faults; f != nil && f.quiet != nil {
				f.quiet(start)
			}
			if !start {
				continue
			}
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
		if err := db.retainEvents(); err != nil {
			db.logger.Error("apply event retention", "err", db.storeFailed(err))
		}
	}
}

// pass is where a background pass over the stored history (compaction,
// retention) stands. A compaction pass is due while one is in progress
// or when snapshots stored records since the last one started (due);
// retention's rule also follows the clock (retainDue). An idle store with
// a million series does not walk them all at each tick.
// Snapshotter-owned (under snapMu).
type pass struct {
	next    []byte    // where the pass in progress goes on; nil: none
	started int64     // db.stored when the pass in progress or the last one started
	ended   time.Time // when the last one ended
	done    atomic.Int64
	// Retention's: the soonest time (ms) the stored history may have work
	// for it (snapshot.RetainResult.Due), over the last pass (at) and the
	// one in progress (soonest).
	at, soonest int64
}

func (p *pass) due(stored int64) bool {
	return p.next != nil || p.done.Load() == 0 || stored != p.started
}

// retainDue says whether a retention pass is due: one is in progress,
// or none ran yet, or the last one ended `every` ago or more and since
// then either snapshots stored records (they may bring work: a point
// older than its keep, an archive batch completed) or the time came when
// the stored history may have work (at). A walk of every series costs
// about a microsecond each: a loaded store runs one every `every`, not
// one per snapshot (with many series, some series' work is nearly always
// due), and an idle one none until work is due.
func (p *pass) retainDue(stored int64, every time.Duration, now time.Time) bool {
	if p.next != nil || p.done.Load() == 0 {
		return true
	}
	return now.Sub(p.ended) >= every && (stored != p.started || now.UnixMilli() >= p.at)
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
	if !db.compaction.due(db.stored) {
		return nil // nothing new since the last pass: nothing to merge
	}
	deadline := time.Now().Add(db.opts.CompactTime)
	for time.Now().Before(deadline) {
		res, err := db.store.Compact(db.compaction.next, db.opts.ChunkPoints, db.opts.CompactBudget, db.maxChunkSpan)
		if err != nil {
			return err
		}
		db.releasePages()
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

// snapshotNow stores every change made so far: the state and new history
// points of each series changed since the last snapshot, in key order, in
// transactions that each hold at most Options.SnapshotMemory/4 bytes of
// encoded data, and then the WAL index they cover, after which the WAL
// is cut in front of that index.
//
// The committer keeps the list of changed series (dirty). A snapshot takes
// the list and the newest published index, target, in one call between
// the committer's groups: every record up to target changed a series on
// this list or an earlier one, all stored. It then asks the committer for
// the state of a few thousand series at a time (capture); a series may
// have moved past target by then, and its stored state says which record
// it covers (State.Covers), so that replay skips what it holds. Nothing
// is stored before the WAL is fsynced past it. A DELETE is stored (the
// incarnation dropped) in the last transaction, with target, unless the
// key was created again; a key deleted after target keeps its state until
// the next snapshot, which finds it on the next list.
//
// Memory: 8 bytes per changed series for the list, the batch, and bbolt's
// pages for one transaction; never a copy of the WAL's records.
func (db *DB) snapshotNow() error {
	db.snapMu.Lock()
	defer db.snapMu.Unlock()
	if p := db.snapErr.Load(); p != nil {
		return *p
	}
	start := time.Now()
	var target uint64
	var status *snapshot.Status
	var clients *snapshot.Clients
	db.onCommitter(func() {
		db.snapQueue = append(db.snapQueue, db.dirty...)
		clear(db.dirty)
		db.dirty = db.dirty[:0]
		db.dirtyGen++
		target = db.published.Load()
		status = db.captureStatus() // as of target
		clients = db.captureClients()
	})
	// What was captured and is not stored (this returns early, or fails)
	// is marked changed again: the next snapshot stores it.
	stored := false
	defer func() {
		if !stored && status != nil {
			db.statusFailed()
		}
		if !stored && clients != nil {
			db.clientsFailed(clients)
		}
	}()
	from := db.store.Index()
	if target <= from && len(db.snapQueue) == 0 && clients == nil {
		db.snapshots.Add(1)
		return nil
	}
	q := db.snapQueue
	slices.SortFunc(q, func(a, b *series) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.created, b.created)
	})
	// A failed snapshot's list and the next overlap. What is kept for the
	// next one, should this one fail too, is the compacted list: Compact
	// zeroes the entries it drops.
	q = slices.Compact(q)
	db.snapQueue = q
	w := &db.snapBatch
	w.reset(db, target)
	step := captureBatch
	if db.opts.captureBatch > 0 {
		step = db.opts.captureBatch
	}
	caps := make([]capture, 0, step)
	for i := 0; i < len(q); {
		j := min(i+step, len(q))
		for j < len(q) && q[j].key == q[j-1].key {
			j++ // the series of one key go together
		}
		caps = db.capture(q[i:j], caps[:0])
		for k := 0; k < len(caps); {
			n := k + 1
			for n < len(caps) && caps[n].s.key == caps[k].s.key {
				n++
			}
			if err := w.key(caps[k:n]); err != nil {
				return err
			}
			k = n
		}
		i = j
	}
	if err := db.storeEvents(target); err != nil {
		return err
	}
	if status != nil || clients != nil {
		if err := db.syncTo(target); err != nil {
			return err
		}
	}
	if status != nil {
		if err := db.store.PutStatus(status); err != nil {
			return db.storeFailed(err)
		}
	}
	if clients != nil {
		if err := db.store.PutClients(clients); err != nil {
			return db.storeFailed(err)
		}
	}
	if err := w.finish(); err != nil {
		return err
	}
	stored = true
	clear(db.snapQueue)
	db.snapQueue = db.snapQueue[:0]
	db.stored += int64(target - from)
	first, err := db.wal.TruncateFront(db.walKeep(db.store.Index()))
	if err != nil {
		return fmt.Errorf("truncate wal after snapshot: %w", err)
	}
	db.snapshots.Add(1)
	db.snapLast.Store(int64(time.Since(start)))
	db.logger.Debug("snapshot", "series", len(q), "records", target-from, "index", db.store.Index(),
		"wal_first", first, "transactions", w.txs, "took", time.Since(start))
	return nil
}

// tailEstimate is what a snapshot transaction is taken to hold for the
// tail of a series it stores (snapshot/tail.go): half a tail.
const tailEstimate = 256

// captureBatch is how many series one call to the committer captures.
const captureBatch = 2048

// capture is a series' committer state, as a snapshot stores it.
type capture struct {
	s     *series
	c     committed
	index uint64 // the published index when it was captured
}

// capture copies the committer state of the series in q, skipping none,
// in one call between the committer's groups.
func (db *DB) capture(q []*series, dst []capture) []capture {
	db.onCommitter(func() {
		idx := db.published.Load()
		for _, s := range q {
			dst = append(dst, capture{s: s, c: s.c, index: idx})
		}
	})
	return dst
}

// onCommitter runs fn on the committer goroutine, between two groups,
// and returns once it ran; once the committer has stopped, it runs fn
// itself.
func (db *DB) onCommitter(fn func()) {
	done := make(chan struct{})
	select {
	case db.calls <- func() { fn(); close(done) }:
		<-done
	case <-db.committerDone:
		fn()
	}
}

// syncTo makes sure the WAL is fsynced at least up to idx.
func (db *DB) syncTo(idx uint64) error {
	if db.synced.Load() >= idx {
		return nil
	}
	ch := make(chan error, 1)
	select {
	case db.syncReq <- ch:
		if err := <-ch; err != nil {
			return fmt.Errorf("sync wal before snapshot: %w", err)
		}
	case <-db.committerDone:
	}
	if s := db.synced.Load(); s < idx {
		return fmt.Errorf("sync wal before snapshot: synced to %d, the snapshot holds %d", s, idx)
	}
	return nil
}

// batch is one snapshot transaction being filled.
type batch struct {
	db      *DB
	target  uint64
	ups     []snapshot.Update
	states  []snapshot.State
	flushed []flushedTo // what the transaction stores, for the series' rings
	drops   []snapshot.Update
	arena   []byte
	pts     []sample.Point
	bytes   int
	index   uint64 // the newest published index of the captures in ups
	txs     int
}

type flushedTo struct {
	s       *series
	ordinal uint64
}

func (b *batch) reset(db *DB, target uint64) {
	b.db, b.target, b.txs = db, target, 0
	b.clear()
	clear(b.drops)
	b.drops = b.drops[:0]
}

func (b *batch) clear() {
	clear(b.ups)
	clear(b.flushed)
	b.ups, b.states, b.flushed, b.arena = b.ups[:0], b.states[:0], b.flushed[:0], b.arena[:0]
	b.bytes, b.index = 0, 0
}

// key adds the captured series of one key, oldest incarnation first.
// The newest one is stored unless it was deleted by target (then every
// one is dropped in the last transaction); the older ones are dropped
// with it.
func (b *batch) key(caps []capture) error {
	for len(caps) > 0 && caps[len(caps)-1].c.gone() {
		caps = caps[:len(caps)-1]
	}
	if len(caps) == 0 {
		return nil
	}
	last := &caps[len(caps)-1]
	if del := last.c.delIdx; del != 0 && del <= b.target {
		for _, c := range caps {
			if !c.c.gone() {
				b.drops = append(b.drops, snapshot.Update{Key: c.s.key, Drop: c.s.created})
			}
		}
		return nil
	}
	for _, c := range caps[:len(caps)-1] {
		if !c.c.gone() {
			b.ups = append(b.ups, snapshot.Update{Key: c.s.key, Drop: c.s.created})
			b.bytes += 2*len(c.s.key) + 64
		}
	}
	b.add(last)
	if b.bytes >= max(b.db.opts.SnapshotMemory/4, 1) {
		return b.commit(b.db.store.Index())
	}
	return nil
}

// add adds the state of c's series, and its points the store lacks.
func (b *batch) add(c *capture) {
	s := c.s
	st := snapshot.State{
		Key: s.key, Kind: s.kind, Value: c.c.value, Running: c.c.running, Shown: c.c.shown,
		WinStart: c.c.winStart, Interval: s.interval, Updated: c.c.updated,
		Ordinal: c.c.ordinal, Created: s.created, Covers: c.c.lastIdx,
	}
	b.states = append(b.states, st)
	u := snapshot.Update{Key: s.key}
	if flushed := s.flushed.Load(); c.c.ordinal > flushed {
		b.pts = s.ring.Range(flushed, c.c.ordinal, b.pts[:0])
		at := len(b.arena)
		u.Chunks, b.arena = b.db.store.EncodeChunks(nil, b.arena, b.pts, flushed+1)
		b.bytes += len(b.arena) - at + len(u.Chunks)*(len(s.key)+48)
	}
	b.ups = append(b.ups, u)
	b.flushed = append(b.flushed, flushedTo{s: s, ordinal: c.c.ordinal})
	// The state, and the tail the store rewrites beside it (unknown here:
	// up to snapshot.TailPoints points, a few hundred bytes).
	b.bytes += 2*len(s.key) + 96 + tailEstimate
	b.index = max(b.index, c.index)
}

// commit writes the batch in one transaction that records index.
func (b *batch) commit(index uint64) error {
	// The states were appended after the updates that point at them were:
	// point them now that the slice no longer moves.
	n := 0
	for i := range b.ups {
		if u := &b.ups[i]; u.Drop == 0 {
			u.State = &b.states[n]
			n++
		}
	}
	if err := b.db.syncTo(max(b.index, index)); err != nil {
		return err
	}
	if err := b.db.store.Commit(index, b.ups); err != nil {
		return b.db.storeFailed(err)
	}
	for _, f := range b.flushed {
		f.s.flushed.Store(f.ordinal)
	}
	b.db.releasePages()
	b.txs++
	b.db.snapTxs.Add(1)
	b.clear()
	return nil
}

// finish writes what is left with the drops, and the index the snapshot
// covers.
func (b *batch) finish() error {
	if len(b.ups) == 0 && len(b.drops) == 0 && b.target == b.db.store.Index() {
		return nil
	}
	b.ups = append(b.ups, b.drops...)
	return b.commit(b.target)
}

// maxChunkSpan is the most time one compacted chunk of key may cover: a
// quarter of its raw keep, so that expiry, which deletes whole chunks,
// frees space soon after the keep.
func (db *DB) maxChunkSpan(key string) int64 {
	pol := db.opts.Retention.Keep(key, sample.Gauge)
	return max(pol.Raw.Milliseconds()/4, 1)
}

// releasePages gives back the pages of the snapshot database that the
// last transaction mapped into the process (snapshot.Store.Release): a
// snapshot at a million series walks hundreds of MiB of the file, which
// would otherwise stay in the process's resident set until the kernel
// runs short. Run after each write transaction, it bounds what the
// mapping holds to what one transaction and the reads since touch.
// Failing only costs memory; it is logged once.
func (db *DB) releasePages() {
	if err := db.store.Release(); err != nil && db.releaseFailed.CompareAndSwap(false, true) {
		db.logger.Warn("giving back the snapshot database's mapped pages failed; they stay resident", "err", err)
	}
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
	p := &db.retention
	if !p.retainDue(db.stored, db.opts.RetainEvery, db.opts.Now()) {
		return nil
	}
	deadline := time.Now().Add(db.opts.CompactTime)
	for time.Now().Before(deadline) {
		if p.next == nil {
			p.soonest = math.MaxInt64
		}
		res, err := db.store.Retain(p.next, db.nowMs(), retainBudget, db.retentionOf)
		if err != nil {
			return err
		}
		db.releasePages()
		p.soonest = min(p.soonest, res.Due)
		if res.Next == nil {
			p.at = p.soonest
		}
		p.step(db.stored, res.Next, db.opts.Now())
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
