package engine

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// MaxKeyLen is the longest key the engine accepts.
const MaxKeyLen = 255

// MaxFuture is how far ahead of the server clock a write's own time
// (Op.Time) may be. Further ahead it is refused: a point in the future
// would make every write of its key until then out of order.
const MaxFuture = 10 * time.Minute

// DB is an open Sonde store. All exported methods may be called
// concurrently.
type DB struct {
	opts   Options
	logger *slog.Logger
	dir    string
	lock   *os.File
	wal    *wal.Log
	store  *snapshot.Store

	hot       sync.Map      // key → *series: what readers see
	published atomic.Uint64 // newest WAL index applied to the hot state
	synced    atomic.Uint64 // newest WAL index known to be fsynced
	feed      *feed

	notifyMu sync.Mutex    // guards notifyCh.
	notifyCh chan struct{} // closed and replaced when the feed grows

	sendMu sync.RWMutex // guards closed against sends on reqs.
	closed bool
	reqs   chan *request

	syncReq  chan chan error // snapshotter → committer: fsync now
	snapReq  chan chan error // anyone → snapshotter: snapshot now
	snapKick chan struct{}   // committer → snapshotter: many records since the last one
	snapMu   sync.Mutex      // serialises snapshots.
	stopSnap chan struct{}
	// compactNext is where the compaction pass goes on (guarded by
	// snapMu); history holds the totals of the last finished pass.
	compactNext []byte
	history     atomic.Pointer[snapshot.HistoryTotals]
	merged      atomic.Int64 // chunks compaction merged away since Open
	retainNext  []byte       // where the retention pass goes on (guarded by snapMu)
	archived    atomic.Int64 // archive points written since Open
	expired     atomic.Int64 // chunks retention deleted since Open

	committerDone chan struct{}
	snapDone      chan struct{}

	// When the disk fails (docs/semantics.md, "When the disk fails"):
	failed   atomic.Pointer[error] // set for good: an fsync failed, or a failed write could not be cut off
	paused   atomic.Pointer[pause] // set while writes are paused after a write was cut off
	failures atomic.Int64          // WAL writes that failed
	refused  atomic.Int64          // writes refused while paused
	snapErr  atomic.Pointer[error] // set for good when a snapshot failed other than for space
	snapFail atomic.Int64          // snapshots that failed

	// Committer-owned:
	series  map[string]*series
	windows windowHeap
	pend    []pending
	ticks   []string    // keys whose idle window ended in this group
	undo    []undoEntry // committer state before the group's changes
	group   uint64      // numbers the groups, for touch
	backoff time.Duration
	changes []sample.Change
	body    []byte

	foldKeys int // snapshotter-owned: keys in the last fold, to size the next
}

type request struct {
	ops  []sample.Op
	errs []error
	done chan error
}

type pending struct {
	s   *series
	rec record.Record
	idx uint64
}

var reqPool = sync.Pool{New: func() any { return &request{done: make(chan error, 1)} }}

// pause is the state of writes after a WAL write was cut off: until
// `until`, writes are refused without touching the disk; then the next
// group is tried.
type pause struct {
	until time.Time
	since time.Time
	cause error
}

func (p *pause) refusal() error {
	return fmt.Errorf("%w after a failed wal write (%v); nothing was applied; next try in %s",
		ErrPaused, p.cause, time.Until(p.until).Round(time.Millisecond))
}

// Backoff between tries of a paused WAL.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// undoEntry is a series' committer state before a group changed it.
type undoEntry struct {
	s       *series
	c       committed
	created bool // the group created s
}

// Open opens the store in dir, creating it when needed, and recovers it:
// the snapshot is loaded and the WAL replayed after the index it covers.
// A torn WAL tail is cut off (and logged); corruption elsewhere makes Open
// fail with an error wrapping a *wal.CorruptionError.
func Open(dir string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	db := &DB{
		opts: opts, logger: opts.Logger, dir: dir,
		series:        make(map[string]*series),
		notifyCh:      make(chan struct{}),
		reqs:          make(chan *request, 1024),
		syncReq:       make(chan chan error),
		snapReq:       make(chan chan error),
		snapKick:      make(chan struct{}, 1),
		stopSnap:      make(chan struct{}),
		committerDone: make(chan struct{}),
		snapDone:      make(chan struct{}),
	}
	var err error
	if db.lock, err = lockDir(dir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			db.closeFiles()
		}
	}()
	if db.store, err = snapshot.Open(filepath.Join(dir, "snapshot.db")); err != nil {
		return nil, err
	}
	db.store.SetChunkPoints(db.opts.ChunkPoints)
	var hooks *wal.Hooks
	if opts.faults != nil {
		hooks = &opts.faults.wal
		db.store.SetCommitHook(opts.faults.commit)
	}
	db.wal, err = wal.Open(filepath.Join(dir, "wal"), wal.Options{
		SegmentSize: opts.SegmentSize,
		Logger:      db.logger.With("component", "wal"),
		Hooks:       hooks,
		Covered:     db.store.Index(),
	})
	if err != nil {
		return nil, fmt.Errorf("open wal: %w", err)
	}
	start := time.Now()
	if err := db.recover(); err != nil {
		return nil, err
	}
	db.logger.Info("recovered", "series", len(db.series), "snapshot_index", db.store.Index(),
		"wal_index", db.published.Load(), "took", time.Since(start))
	db.feed = newFeed(opts.EventBuffer, db.published.Load())
	go db.run()
	go db.snapshotLoop()
	ok = true
	return db, nil
}

// lockDir takes the data directory's lock (flock on dir/LOCK), held
// until the file returned is closed.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return f, nil
}

func (db *DB) closeFiles() {
	if db.wal != nil {
		if err := db.wal.Close(); err != nil {
			db.logger.Error("close wal", "err", err)
		}
	}
	if db.store != nil {
		if err := db.store.Close(); err != nil {
			db.logger.Error("close snapshot", "err", err)
		}
	}
	if db.lock != nil {
		db.lock.Close() // releases the flock
	}
}

// recover loads the snapshot and replays the WAL after it.
func (db *DB) recover() error {
	err := db.store.Load(func(st *snapshot.State) error {
		s := newSeries(st.Key, st.Kind, st.Interval, st.Created, db.opts.RingSize, st.Ordinal+1)
		s.c.value, s.c.running, s.c.shown = st.Value, st.Running, st.Shown
		s.c.winStart, s.c.ordinal, s.c.updated = st.WinStart, st.Ordinal, st.Updated
		s.flushed.Store(st.Ordinal)
		s.value.Store(math.Float64bits(st.Value))
		view := st.Value
		if st.Kind == sample.Counter {
			view = st.Shown
		}
		s.view.Store(math.Float64bits(view))
		s.updated.Store(st.Updated)
		db.series[st.Key] = s
		return nil
	})
	if err != nil {
		return fmt.Errorf("load snapshot: %w", err)
	}
	snapIdx := db.store.Index()
	first, err := db.wal.FirstIndex()
	if err != nil {
		return fmt.Errorf("read wal first index: %w", err)
	}
	last, err := db.wal.LastIndex()
	if err != nil {
		return fmt.Errorf("read wal last index: %w", err)
	}
	if last < snapIdx {
		return fmt.Errorf("recover: the snapshot covers wal index %d but the wal ends at %d: wal segments are missing", snapIdx, last)
	}
	if last > snapIdx && first > snapIdx+1 {
		return fmt.Errorf("recover: the wal starts at index %d but the snapshot ends at %d: wal segments are missing", first, snapIdx)
	}
	var r record.Record
	for i := snapIdx + 1; i <= last; i++ {
		body, err := db.wal.Read(i)
		if err != nil {
			return fmt.Errorf("replay wal: %w", err)
		}
		key, err := record.DecodeView(body, &r)
		if err != nil {
			return fmt.Errorf("replay wal: %w", &wal.CorruptionError{Index: i, Offset: -1, Err: err})
		}
		if err := db.replay(&r, key, i); err != nil {
			return fmt.Errorf("replay wal index %d: %w", i, err)
		}
	}
	for k, s := range db.series {
		db.hot.Store(k, s)
		if s.kind == sample.Counter {
			db.windows.schedule(s)
		}
	}
	db.published.Store(last)
	db.synced.Store(last)
	return nil
}

// replay applies one WAL record, whose key is key, during recovery.
func (db *DB) replay(r *record.Record, key []byte, idx uint64) error {
	s := db.series[string(key)]
	if s != nil {
		r.Key = s.key
	} else {
		r.Key = string(key)
	}
	switch r.Code {
	case sample.Delete:
		delete(db.series, r.Key)
		return nil
	case sample.Window:
		if s == nil {
			return fmt.Errorf("window record for missing key %q", r.Key)
		}
	default:
		if r.Ordinal == 1 {
			kind := sample.Gauge
			if record.IsCounter(r.Code) {
				kind = sample.Counter
			}
			s = newSeries(r.Key, kind, r.Interval, idx, db.opts.RingSize, 1)
			db.series[r.Key] = s
		} else if s == nil {
			return fmt.Errorf("record for missing key %q", r.Key)
		}
		if s.ring.Next() != r.Ordinal {
			return fmt.Errorf("key %q: record ordinal %d, expected %d", r.Key, r.Ordinal, s.ring.Next())
		}
	}
	s.fromRecord(r)
	s.publish(r)
	return nil
}

// Append writes ops and waits until they are acknowledged under the fsync
// policy. errs must be at least as long as ops; errs[i] receives the
// outcome of ops[i] (nil on success, or an error wrapping ErrNotFound,
// ErrKind, ErrValue, ErrKey or ErrTooManySeries). The returned error is
// for the whole batch: ErrClosed, a context error before queueing, or a
// WAL failure. Once queued, Append waits for the outcome.
func (db *DB) Append(ctx context.Context, ops []sample.Op, errs []error) error {
	if len(ops) == 0 {
		return nil
	}
	if len(errs) < len(ops) {
		return fmt.Errorf("engine: append %d ops with %d error slots", len(ops), len(errs))
	}
	if err := db.blocked(); err != nil {
		if errors.Is(err, ErrPaused) {
			db.refused.Add(int64(len(ops)))
		}
		return err
	}
	req := reqPool.Get().(*request)
	req.ops, req.errs = ops, errs
	db.sendMu.RLock()
	if db.closed {
		db.sendMu.RUnlock()
		reqPool.Put(req)
		return ErrClosed
	}
	select {
	case db.reqs <- req:
	case <-ctx.Done():
		db.sendMu.RUnlock()
		reqPool.Put(req)
		return fmt.Errorf("queue write: %w", ctx.Err())
	}
	db.sendMu.RUnlock()
	err := <-req.done
	req.ops, req.errs = nil, nil
	reqPool.Put(req)
	return err
}

// run is the committer: the only goroutine that writes the WAL or changes
// the hot state.
func (db *DB) run() {
	defer close(db.committerDone)
	var syncTick <-chan time.Time
	if db.opts.Fsync == FsyncInterval {
		t := time.NewTicker(db.opts.FsyncInterval)
		defer t.Stop()
		syncTick = t.C
	}
	winTimer := time.NewTimer(time.Hour)
	defer winTimer.Stop()
	group := make([]*request, 0, 64)
	for {
		var winC <-chan time.Time
		if len(db.windows) > 0 && db.failed.Load() == nil {
			d := time.Duration(db.windows[0].due-db.nowMs()) * time.Millisecond
			if p := db.paused.Load(); p != nil {
				d = max(d, time.Until(p.until)) // window ends wait for the disk too
			}
			winTimer.Reset(max(d, 0))
			winC = winTimer.C
		}
		group = group[:0]
		closing := false
		select {
		case r, ok := <-db.reqs:
			if !ok {
				closing = true
				break
			}
			group = append(group, r)
			n := len(r.ops)
		drain:
			for n < db.opts.MaxGroup {
				select {
				case r, ok := <-db.reqs:
					if !ok {
						closing = true
						break drain
					}
					group = append(group, r)
					n += len(r.ops)
				default:
					break drain
				}
			}
		case <-winC:
		case <-syncTick:
			db.syncWAL()
			continue
		case ch := <-db.syncReq:
			ch <- db.syncWAL()
			continue
		}
		db.commit(group)
		if closing {
			db.syncWAL()
			return
		}
	}
}

func (db *DB) nowMs() int64 { return db.opts.Now().UnixMilli() }

func (db *DB) syncWAL() error {
	if p := db.failed.Load(); p != nil {
		return *p
	}
	pub := db.published.Load()
	if db.synced.Load() >= pub {
		return nil
	}
	if err := db.wal.Sync(); err != nil {
		db.fail(err)
		return err
	}
	db.synced.Store(pub)
	return nil
}

func (db *DB) fail(err error) {
	err = fmt.Errorf("engine: wal failed, restart to recover: %w", err)
	if db.failed.CompareAndSwap(nil, &err) {
		db.logger.Error("wal failed; refusing further writes", "err", err)
	}
}

// blocked returns why writes are refused right now without trying the
// disk: the WAL failed for good, or writes are paused and not yet due for
// another try. nil when they may go on.
func (db *DB) blocked() error {
	if p := db.failed.Load(); p != nil {
		return *p
	}
	if p := db.paused.Load(); p != nil && time.Now().Before(p.until) {
		return p.refusal()
	}
	return nil
}

// commit prepares the group's records (and any due window ends), writes
// them in one batch, publishes them and answers the callers.
func (db *DB) commit(group []*request) {
	now := db.nowMs()
	db.pend = db.pend[:0]
	db.ticks = db.ticks[:0]
	db.undo = db.undo[:0]
	db.group++
	err := db.blocked()
	for _, req := range group {
		for i := range req.ops {
			if err != nil {
				req.errs[i] = err
				continue
			}
			req.errs[i] = db.prepare(&req.ops[i], now)
		}
	}
	if err != nil {
		if errors.Is(err, ErrPaused) {
			db.refused.Add(int64(countOps(group)))
		}
	} else {
		db.closeWindows(now)
	}
	if err == nil && len(db.pend) > 0 {
		start := time.Now()
		err = db.wal.Commit(db.opts.Fsync == FsyncAlways)
		if d := time.Since(start); d > time.Second {
			db.logger.Warn("slow wal commit", "took", d, "records", len(db.pend))
		}
		if err != nil {
			err = db.writeFailed(err)
		} else {
			db.apply()
			db.resume()
		}
	} else if err == nil && len(db.ticks) > 0 {
		db.publish(db.published.Load())
	}
	for _, req := range group {
		req.done <- err
	}
}

func countOps(group []*request) int {
	n := 0
	for _, r := range group {
		n += len(r.ops)
	}
	return n
}

// writeFailed handles a failed WAL write: the committer state goes back to
// what the log holds, and the writers get an error saying what became of
// their batch.
func (db *DB) writeFailed(err error) error {
	db.failures.Add(1)
	db.undoGroup()
	for i := range db.pend {
		db.pend[i] = pending{}
	}
	db.pend = db.pend[:0]
	switch {
	case errors.Is(err, wal.ErrRolledBack) && !errors.Is(err, wal.ErrSyncFailed):
		// A write failed (a full disk): pause, then try again.
		db.backoff = min(max(2*db.backoff, minBackoff), maxBackoff)
		p := &pause{until: time.Now().Add(db.backoff), since: time.Now(), cause: err}
		if old := db.paused.Load(); old != nil {
			p.since = old.since
		} else {
			db.logger.Warn("wal write failed; writes are paused and retried with a backoff", "err", err)
		}
		db.paused.Store(p)
		db.logger.Debug("wal write failed", "err", err, "retry_in", db.backoff)
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	case errors.Is(err, wal.ErrRolledBack):
		// An fsync failed: the batch is off the log, but the log takes no
		// more writes until a restart.
		db.fail(err)
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	// The failed batch could not be cut off: it may come back at the next
	// start, so its writers must not be told it was not applied.
	db.fail(err)
	if db.opts.OnFatal != nil {
		db.opts.OnFatal(err)
	}
	return fmt.Errorf("engine: the outcome of this batch is unknown (it may be applied after a restart): %w", err)
}

// resume ends a pause after a successful write.
func (db *DB) resume() {
	p := db.paused.Load()
	if p == nil {
		return
	}
	db.paused.Store(nil)
	db.backoff = 0
	db.logger.Info("wal writes resumed", "paused_for", time.Since(p.since).Round(time.Millisecond),
		"refused_writes", db.refused.Load())
}

// touch saves the committer state of s before the group changes it, the
// first time the group does.
func (db *DB) touch(s *series, created bool) {
	if s.c.touched == db.group {
		return
	}
	s.c.touched = db.group
	db.undo = append(db.undo, undoEntry{s: s, c: s.c, created: created})
}

// undoGroup puts the committer state back to before the group: series the
// group created are gone, deleted ones are back, and every other change
// is reverted, newest first.
func (db *DB) undoGroup() {
	for i := len(db.undo) - 1; i >= 0; i-- {
		u := &db.undo[i]
		s := u.s
		if u.created {
			if db.series[s.key] == s {
				delete(db.series, s.key)
			}
			s.c.deleted = true // its window entry goes stale
			continue
		}
		moved := s.c.winStart != u.c.winStart
		s.c = u.c
		db.series[s.key] = s
		if s.kind == sample.Counter && moved {
			db.windows.schedule(s) // closeWindows popped its entry
		}
	}
	clear(db.undo)
	db.undo = db.undo[:0]
}

// apply publishes the prepared records to readers and subscribers.
func (db *DB) apply() {
	for i := range db.pend {
		p := &db.pend[i]
		switch p.rec.Code {
		case sample.Delete:
			db.hot.CompareAndDelete(p.rec.Key, p.s)
			db.changes = append(db.changes, sample.Change{ID: p.idx, Key: p.rec.Key, Deleted: true})
			continue
		}
		p.s.publish(&p.rec)
		if p.rec.Ordinal == 1 && p.rec.Code != sample.Window {
			db.hot.Store(p.rec.Key, p.s) // a new incarnation: visible once it has its value
		}
		db.changes = append(db.changes, sample.Change{ID: p.idx, Key: p.rec.Key, Value: viewOf(&p.rec)})
	}
	last := db.pend[len(db.pend)-1].idx
	db.publish(last)
	if db.opts.Fsync == FsyncAlways {
		db.synced.Store(last)
	}
	if last-db.store.Index() >= uint64(db.opts.SnapshotRecords) {
		select {
		case db.snapKick <- struct{}{}:
		default:
		}
	}
	for i := range db.pend {
		db.pend[i] = pending{} // drop references
	}
}

// publish adds the group's changes and then its ticks (with the ID of the
// group's last record, last) to the feed, makes last the published index
// and wakes the subscribers.
func (db *DB) publish(last uint64) {
	for _, k := range db.ticks {
		db.changes = append(db.changes, sample.Change{ID: last, Key: k, Tick: true})
	}
	db.feed.appendAll(db.changes)
	clear(db.changes)
	db.changes = db.changes[:0]
	db.published.Store(last)
	db.notifyMu.Lock()
	close(db.notifyCh)
	db.notifyCh = make(chan struct{})
	db.notifyMu.Unlock()
}

func checkKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: empty", ErrKey)
	}
	if len(k) > MaxKeyLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrKey, MaxKeyLen)
	}
	if strings.IndexByte(k, 0) >= 0 {
		return fmt.Errorf("%w: holds a zero byte", ErrKey)
	}
	if !utf8.ValidString(k) {
		// JSON shows every invalid byte as U+FFFD: two such keys would look
		// the same in /data and /events.
		return fmt.Errorf("%w: not valid UTF-8", ErrKey)
	}
	return nil
}

// prepare validates op against the committer state, advances that state
// and queues the record. The hot state is untouched until apply.
func (db *DB) prepare(op *sample.Op, now int64) error {
	if err := checkKey(op.Key); err != nil {
		return err
	}
	v := op.Value
	if op.Code != sample.Delete && (math.IsNaN(v) || math.IsInf(v, 0)) {
		return fmt.Errorf("%w: not a finite number", ErrValue)
	}
	s := db.series[op.Key]
	t := now
	if op.Time != 0 && op.Code != sample.Delete {
		if op.Time > now+MaxFuture.Milliseconds() {
			return fmt.Errorf("%w: time %d ms is more than %s ahead of the server clock", ErrValue, op.Time, MaxFuture)
		}
		if op.Time <= 0 {
			return fmt.Errorf("%w: time %d ms is not after 1970", ErrValue, op.Time)
		}
		t = op.Time
	}
	if s != nil && t < s.c.updated && op.Code != sample.Delete {
		if op.Time != 0 {
			return fmt.Errorf("%w: %q has a point at %d ms, this one is at %d ms", ErrOutOfOrder, op.Key, s.c.updated, t)
		}
		t = s.c.updated // the clock stepped back: keep the history in order
	}
	r := record.Record{Code: op.Code, Time: t, Key: op.Key}
	switch op.Code {
	case sample.Set:
		if s == nil {
			if s = db.create(op.Key, sample.Gauge, 0); s == nil {
				return fmt.Errorf("%w: %d keys", ErrTooManySeries, db.opts.MaxSeries)
			}
		} else if s.kind != sample.Gauge {
			return fmt.Errorf("%w: %q is a %s (DELETE it first)", ErrKind, op.Key, s.kind)
		} else {
			db.touch(s, false)
		}
		if op.Delta {
			if v += s.c.value; math.IsInf(v, 0) {
				return fmt.Errorf("%w: the gauge overflows", ErrValue)
			}
		}
		s.c.value = v
		r.Value = v
	case sample.Incr, sample.CounterSet:
		if v < 0 {
			return fmt.Errorf("%w: a COUNTER never goes down (got %g)", ErrValue, v)
		}
		if op.Interval > 0 && op.Interval < db.opts.MinWindow.Milliseconds() {
			return fmt.Errorf("%w: a window of %d ms is shorter than the minimum of %d ms (-min-window)",
				ErrValue, op.Interval, db.opts.MinWindow.Milliseconds())
		}
		if s == nil {
			iv := op.Interval
			if iv <= 0 {
				iv = db.opts.DefaultWindow.Milliseconds()
			}
			if s = db.create(op.Key, sample.Counter, iv); s == nil {
				return fmt.Errorf("%w: %d keys", ErrTooManySeries, db.opts.MaxSeries)
			}
			s.c.winStart = now
			db.windows.schedule(s)
		} else if s.kind != sample.Counter {
			return fmt.Errorf("%w: %q is a %s (DELETE it first)", ErrKind, op.Key, s.kind)
		} else {
			db.touch(s, false)
		}
		delta := v
		total := s.c.value + v
		if op.Code == sample.CounterSet {
			total = v
			switch {
			case v >= s.c.value:
				delta = v - s.c.value
			case op.Wrap && s.c.value <= math.MaxUint32:
				delta = math.MaxUint32 - s.c.value + v + 1 // collectd's counter_diff
			case op.Wrap:
				delta = math.MaxUint64 - s.c.value + v + 1
			} // else a reset: the counter restarted from 0 and counted v
		}
		if math.IsInf(total, 0) {
			return fmt.Errorf("%w: the total overflows", ErrValue)
		}
		s.c.value = total
		s.c.running += delta
		r.Value = total
	case sample.Delete:
		if s == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, op.Key)
		}
		db.touch(s, false)
		delete(db.series, op.Key)
		s.c.deleted = true
		r.Key = s.key
		db.queue(s, &r)
		return nil
	default:
		return fmt.Errorf("%w: operation %d", ErrValue, op.Code)
	}
	s.c.ordinal++
	s.c.updated = t
	db.fill(s, &r)
	db.queue(s, &r)
	return nil
}

// create adds a new series to the committer state; nil when the series
// limit is reached. Its created index is the index its record will get.
func (db *DB) create(key string, kind sample.Kind, interval int64) *series {
	if len(db.series) >= db.opts.MaxSeries {
		return nil
	}
	s := newSeries(strings.Clone(key), kind, interval, db.wal.Next(), db.opts.RingSize, 1)
	db.series[s.key] = s
	db.touch(s, true)
	return s
}

// fill copies the committer state of s into r as a post-image.
func (db *DB) fill(s *series, r *record.Record) {
	r.Key = s.key
	r.Ordinal = s.c.ordinal
	if s.kind == sample.Counter {
		r.Value = s.c.value
		r.Running, r.Shown, r.WinStart, r.Interval = s.c.running, s.c.shown, s.c.winStart, s.interval
	}
}

func (db *DB) queue(s *series, r *record.Record) {
	db.body = record.Append(db.body[:0], r)
	idx := db.wal.Add(db.body)
	db.pend = append(db.pend, pending{s: s, rec: *r, idx: idx})
}

// closeWindows ends every counting window that is due: the count of the
// window becomes the key's view value. A window that changes the view
// (it counted something, or the one before did) is a WINDOW record, and
// so a stored change. An idle window after an idle one changes nothing:
// it is not stored, only published as a tick, so that subscribers still
// get an event at every window end, as mesures sends, while an idle
// counter costs no disk however long it stays idle.
func (db *DB) closeWindows(now int64) {
	for len(db.windows) > 0 && db.windows[0].due <= now {
		e := heap.Pop(&db.windows).(windowEntry)
		s := e.s
		if s.c.deleted || e.due != s.c.winStart+s.interval {
			continue // stale entry
		}
		db.touch(s, false)
		// Windows that passed while the process was down (or writes were
		// paused) count as one.
		next := s.c.winStart + max((now-s.c.winStart)/s.interval, 1)*s.interval
		if s.c.running == 0 && s.c.shown == 0 {
			s.c.winStart = next
			db.ticks = append(db.ticks, s.key)
			db.windows.schedule(s)
			continue
		}
		s.c.shown = s.c.running
		s.c.running = 0
		s.c.winStart = next
		r := record.Record{Code: sample.Window, Time: s.c.updated}
		db.fill(s, &r)
		db.queue(s, &r)
		db.windows.schedule(s)
	}
}

// Index returns the WAL index of the newest change readers can see.
func (db *DB) Index() uint64 { return db.published.Load() }

// Get returns the current state of key.
func (db *DB) Get(key string) (sample.Series, bool) {
	v, ok := db.hot.Load(key)
	if !ok {
		return sample.Series{}, false
	}
	return v.(*series).snapshot(), true
}

// Series appends to dst every series whose key match accepts (all when
// match is nil), sorted by key.
func (db *DB) Series(match func(string) bool, dst []sample.Series) []sample.Series {
	start := len(dst)
	db.hot.Range(func(k, v any) bool {
		if match == nil || match(k.(string)) {
			dst = append(dst, v.(*series).snapshot())
		}
		return true
	})
	out := dst[start:]
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return dst
}

// Each calls fn with every series match accepts (all when match is nil),
// from the live state, in no particular order, until fn returns false. No
// lock is held while fn runs, so it may block; a series written meanwhile
// is seen before or after the write, and one created meanwhile may not be
// seen at all.
func (db *DB) Each(match func(string) bool, fn func(sample.Series) bool) {
	db.hot.Range(func(k, v any) bool {
		if match != nil && !match(k.(string)) {
			return true
		}
		return fn(v.(*series).snapshot())
	})
}

// Notify returns a channel that is closed once Index() passes after. It
// may also be closed earlier, when the feed gains a tick.
func (db *DB) Notify(after uint64) <-chan struct{} {
	return db.notifyUnless(func() bool { return db.published.Load() > after })
}

// NotifyFeed returns a channel that is closed once the feed holds an entry
// after position pos.
func (db *DB) NotifyFeed(pos uint64) <-chan struct{} {
	return db.notifyUnless(func() bool { return db.feed.head() > pos })
}

// notifyUnless returns the channel the next publish closes, or a closed
// one when passed already holds. The channel is taken first, so a publish
// between the two is not missed.
func (db *DB) notifyUnless(passed func() bool) <-chan struct{} {
	db.notifyMu.Lock()
	ch := db.notifyCh
	db.notifyMu.Unlock()
	if passed() {
		return closedChan
	}
	return ch
}

// Feed appends to dst up to max entries of the change feed after position
// pos, oldest first: every stored change, and the idle window ends
// (Change.Tick) after them. ok is false when the feed no longer holds the
// entry after pos: the caller reads stored changes by ID (Changes), then
// finds its place again with FeedPos.
func (db *DB) Feed(pos uint64, dst []sample.Change, max int) ([]sample.Change, bool) {
	return db.feed.copyAfter(pos, dst, max)
}

// FeedPos returns the feed position after which a subscriber that has seen
// the stored change id goes on; ok is false when the feed no longer holds
// what follows id.
func (db *DB) FeedPos(id uint64) (uint64, bool) { return db.feed.posOf(id) }

// FeedHead returns the position of the newest entry of the feed.
func (db *DB) FeedHead() uint64 { return db.feed.head() }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Changes appends to dst up to max stored changes after the WAL index
// after, oldest first (no ticks). Recent changes come from memory, older
// ones from the WAL. It returns ErrGone when the WAL no longer holds them:
// the caller must start again from a full dump.
func (db *DB) Changes(after uint64, dst []sample.Change, max int) ([]sample.Change, error) {
	pub := db.published.Load()
	if after >= pub || max <= 0 {
		return dst, nil
	}
	if out, ok := db.feed.storedAfter(after, dst, max); ok {
		return out, nil
	}
	// Behind the memory feed: read the WAL up to where the feed starts
	// (its start only moves forward); the caller asks again for the rest.
	var r record.Record
	for i, end := after+1, min(pub, db.feed.oldestID()-1); i <= end && max > 0; i++ {
		body, err := db.wal.Read(i)
		if err != nil {
			if errors.Is(err, wal.ErrNotFound) || (errors.Is(err, wal.ErrCorrupt) && i <= db.store.Index()) {
				return dst, ErrGone // a damaged record the snapshot holds: start from a dump
			}
			return dst, fmt.Errorf("read change %d: %w", i, err)
		}
		if err := record.Decode(body, &r); err != nil {
			return dst, fmt.Errorf("decode change %d: %w", i, err)
		}
		c := sample.Change{ID: i, Key: r.Key, Deleted: r.Code == sample.Delete}
		if !c.Deleted {
			c.Value = viewOf(&r)
		}
		dst = append(dst, c)
		max--
	}
	return dst, nil
}

// Range appends to dst the history points of key with times in
// [from, to], oldest first; limit > 0 keeps only the newest limit points.
// Points come from the ring and, for older ones, the snapshot database.
// The read takes the points it decodes from the sample.Budget in ctx, if
// any, and stops with an error wrapping sample.ErrTooMany before it would
// pass it; it also stops when ctx ends.
func (db *DB) Range(ctx context.Context, key string, from, to int64, limit int, dst []sample.Point) ([]sample.Point, error) {
	s, ringPts, lo, err := db.startRead(ctx, key)
	if err != nil {
		return dst, err
	}
	take := taker(ctx)
	start := len(dst)
	if limit > 0 {
		// The ring holds the newest points: when it has limit of them in
		// range, all within the raw keep (older ones are read from the
		// archives), those are the answer, and nothing older is read.
		pol, _ := db.opts.Retention.For(s.key, s.kind)
		first, n := len(ringPts), 0 // the oldest of the newest limit ring points in range
		for i := len(ringPts) - 1; i >= 0 && n < limit; i-- {
			if p := ringPts[i]; p.T >= from && p.T <= to {
				first, n = i, n+1
			}
		}
		if n == limit && ringPts[first].T >= db.nowMs()-pol.Raw.Milliseconds() {
			if err := take(limit); err != nil {
				return dst, fmt.Errorf("range %q: %w", key, err)
			}
			for _, p := range ringPts[first:] {
				if p.T >= from && p.T <= to {
					dst = append(dst, p)
				}
			}
			return dst, nil
		}
	}
	if lo > 1 {
		dst, err = db.store.History(key, s.created, lo, from, to, dst, take)
		if err != nil {
			return dst[:start], fmt.Errorf("range %q: %w", key, err)
		}
	}
	if err := take(len(ringPts)); err != nil {
		return dst[:start], fmt.Errorf("range %q: %w", key, err)
	}
	for _, p := range ringPts {
		if p.T >= from && p.T <= to {
			dst = append(dst, p)
		}
	}
	if dst, err = db.withArchives(s, from, to, start, dst, take); err != nil {
		return dst[:start], fmt.Errorf("range %q: %w", key, err)
	}
	if limit > 0 && len(dst)-start > limit {
		n := copy(dst[start:], dst[len(dst)-limit:])
		dst = dst[:start+n]
	}
	return dst, nil
}

// Recent appends to dst the newest n raw points of key, oldest first:
// from the ring and, for older ones, the snapshot database, read from the
// newest chunk back. It takes from the ctx's budget as Range does.
func (db *DB) Recent(ctx context.Context, key string, n int, dst []sample.Point) ([]sample.Point, error) {
	s, ringPts, lo, err := db.startRead(ctx, key)
	if err != nil {
		return dst, err
	}
	take := taker(ctx)
	if len(ringPts) < n && lo > 1 {
		if dst, err = db.store.Newest(key, s.created, lo, n-len(ringPts), dst, take); err != nil {
			return dst, fmt.Errorf("recent points of %q: %w", key, err)
		}
	}
	ringPts = ringPts[max(len(ringPts)-n, 0):]
	if err := take(len(ringPts)); err != nil {
		return dst, fmt.Errorf("recent points of %q: %w", key, err)
	}
	return append(dst, ringPts...), nil
}

// taker returns what a read calls before it holds n more points: it takes
// them from the ctx's sample.Budget, and fails once ctx has ended.
func taker(ctx context.Context) func(n int) error {
	budget := sample.BudgetOf(ctx)
	return func(n int) error {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return budget.Take(n)
	}
}

// startRead starts a history read of key: its series, and a copy of its
// ring with the lowest ordinal the ring holds. When the ring has wrapped
// past what the snapshot database holds, it takes a snapshot first, so
// that no point is missing from either.
func (db *DB) startRead(ctx context.Context, key string) (s *series, pts []sample.Point, lo uint64, err error) {
	if ctx.Err() != nil {
		return nil, nil, 0, fmt.Errorf("read %q: %w", key, context.Cause(ctx))
	}
	v, ok := db.hot.Load(key)
	if !ok {
		return nil, nil, 0, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	s = v.(*series)
	pts, lo, err = db.ringPoints(ctx, s)
	return s, pts, lo, err
}

// ringPoints copies the ring of s and returns the lowest ordinal it holds;
// see startRead.
func (db *DB) ringPoints(ctx context.Context, s *series) ([]sample.Point, uint64, error) {
	var pts []sample.Point
	var lo uint64
	for attempt := 0; ; attempt++ {
		pts, lo = s.ring.Points(pts[:0])
		if lo <= 1 || s.flushed.Load()+1 >= lo {
			return pts, lo, nil
		}
		if attempt == 2 {
			return nil, 0, fmt.Errorf("range %q: history points %d to %d are not in the snapshot yet", s.key, s.flushed.Load()+1, lo-1)
		}
		if err := db.Snapshot(ctx); err != nil {
			return nil, 0, fmt.Errorf("range %q: %w", s.key, err)
		}
	}
}

// withArchives completes a read of dst[start:] (raw points in [from, to])
// with the archives of the key's retention policy when the read reaches
// back past the raw points' keep. Raw points are served from the raw cut
// on: the older of the raw keep and every archive's watermark, which is
// where expiry may have deleted them. Before the cut come the finest
// archive's points, before its oldest the next one's, and so on: one
// ordered series without duplicates.
func (db *DB) withArchives(s *series, from, to int64, start int, dst []sample.Point, take func(int) error) ([]sample.Point, error) {
	pol, _ := db.opts.Retention.For(s.key, s.kind)
	cut := db.nowMs() - pol.Raw.Milliseconds()
	if from >= cut || len(pol.Archives) == 0 {
		return dst, nil
	}
	type tier struct {
		pts    []sample.Point
		oldest int64
	}
	tiers := make([]tier, len(pol.Archives))
	for i, a := range pol.Archives {
		pts, oldest, wm, err := db.store.Archive(s.key, s.created, a.Step.Milliseconds(), from, to, nil, take)
		if err != nil {
			return dst, err
		}
		tiers[i] = tier{pts, oldest}
		cut = min(cut, wm)
	}
	raw := dst[start:]
	i := 0
	for i < len(raw) && raw[i].T < cut {
		i++
	}
	raw = append([]sample.Point(nil), raw[i:]...)
	var parts [][]sample.Point
	for _, t := range tiers {
		j := 0
		for j < len(t.pts) && t.pts[j].T < cut {
			j++
		}
		parts = append(parts, t.pts[:j])
		cut = min(cut, t.oldest)
	}
	dst = dst[:start]
	for k := len(parts) - 1; k >= 0; k-- {
		dst = append(dst, parts[k]...)
	}
	return append(dst, raw...), nil
}

// Stats is a summary of the engine's state.
type Stats struct {
	Series        int    `json:"series"`
	Index         uint64 `json:"wal_index"`
	SyncedIndex   uint64 `json:"synced_index"`
	SnapshotIndex uint64 `json:"snapshot_index"`
	WALFirstIndex uint64 `json:"wal_first_index"`
	// History is the stored history as of the last compaction pass: chunks,
	// points, bytes of chunks, the database file, and file bytes per point.
	History *HistoryStats `json:"history,omitempty"`
	// Compacted counts the chunks compaction merged into others since the
	// store opened.
	Compacted int64 `json:"compacted_chunks"`
	// Archived counts the archive points retention wrote, Expired the raw
	// and archive chunks it deleted, since the store opened.
	Archived int64 `json:"archived_points"`
	Expired  int64 `json:"expired_chunks"`
	// IdleWindows counts the ends of idle counting windows since the store
	// opened: published to subscribers, not stored.
	IdleWindows uint64 `json:"idle_windows"`
	// WAL says whether writes are taken (docs/semantics.md, "When the
	// disk fails").
	WAL WALState `json:"wal"`
	// Snapshots counts failed snapshot database writes, and says why
	// snapshots stopped when they did.
	Snapshots SnapshotState `json:"snapshots"`
}

// WALState is the state of writes.
type WALState struct {
	// State is "ok"; "paused" after a write failed and was cut off (a
	// full disk): writes are refused until the next try (RetryInMs);
	// or "failed" until a restart (a failed fsync).
	State         string `json:"state"`
	Error         string `json:"error,omitempty"`
	RetryInMs     int64  `json:"retry_in_ms,omitempty"`
	WriteFailures int64  `json:"write_failures"`
	// Refused counts writes refused while paused, without trying the disk.
	Refused int64 `json:"refused_while_paused"`
}

// SnapshotState is the state of snapshots.
type SnapshotState struct {
	State    string `json:"state"` // "ok", or "off" until a restart
	Error    string `json:"error,omitempty"`
	Failures int64  `json:"failures"`
}

// HistoryStats is the size of the stored history; bytes per point are
// over raw and archive points together.
type HistoryStats struct {
	snapshot.HistoryTotals
	BytesPerPoint     float64 `json:"bytes_per_point"`      // chunk keys and values
	UsedBytesPerPoint float64 `json:"used_bytes_per_point"` // the snapshot database's pages in use
	FileBytesPerPoint float64 `json:"file_bytes_per_point"` // its file
}

// Stats returns a summary of the engine's state.
func (db *DB) Stats() Stats {
	st := Stats{Index: db.published.Load(), SyncedIndex: db.synced.Load(), SnapshotIndex: db.store.Index(), Compacted: db.merged.Load(),
		Archived: db.archived.Load(), Expired: db.expired.Load()}
	st.WALFirstIndex, _ = db.wal.FirstIndex()
	if h := db.history.Load(); h != nil {
		st.History = &HistoryStats{HistoryTotals: *h}
		if n := float64(h.Points + h.ArchivePoints); n > 0 {
			st.History.BytesPerPoint = float64(h.Bytes) / n
			st.History.UsedBytesPerPoint = float64(h.UsedBytes) / n
			st.History.FileBytesPerPoint = float64(h.FileBytes) / n
		}
	}
	db.hot.Range(func(_, _ any) bool { st.Series++; return true })
	db.feed.mu.RLock()
	st.IdleWindows = db.feed.ticks
	db.feed.mu.RUnlock()
	st.WAL = WALState{State: "ok", WriteFailures: db.failures.Load(), Refused: db.refused.Load()}
	if p := db.failed.Load(); p != nil {
		st.WAL.State, st.WAL.Error = "failed", (*p).Error()
	} else if p := db.paused.Load(); p != nil {
		st.WAL.State, st.WAL.Error = "paused", p.cause.Error()
		st.WAL.RetryInMs = max(time.Until(p.until).Milliseconds(), 0)
	}
	st.Snapshots = SnapshotState{State: "ok", Failures: db.snapFail.Load()}
	if p := db.snapErr.Load(); p != nil {
		st.Snapshots.State, st.Snapshots.Error = "off", (*p).Error()
	}
	return st
}

// Close stops taking writes, finishes the queued ones, takes a final
// snapshot and closes the files.
func (db *DB) Close() error {
	if !db.stop() {
		return ErrClosed
	}
	err := db.snapshotNow()
	db.closeFiles()
	if err != nil {
		return fmt.Errorf("final snapshot: %w", err)
	}
	return nil
}

// stop refuses new writes, lets the committer finish the queued ones and
// stops the snapshotter. It reports false when already stopped.
func (db *DB) stop() bool {
	db.sendMu.Lock()
	if db.closed {
		db.sendMu.Unlock()
		return false
	}
	db.closed = true
	close(db.reqs)
	db.sendMu.Unlock()
	<-db.committerDone
	close(db.stopSnap)
	<-db.snapDone
	return true
}
