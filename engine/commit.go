package engine

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Append writes ops and waits until they are acknowledged under the fsync
// policy. errs must be at least as long as ops; errs[i] receives the
// outcome of ops[i] (nil on success, or an error wrapping ErrNotFound,
// ErrKind, ErrValue, ErrKey or ErrTooManySeries). The returned error is
// for the whole batch: ErrClosed, a context error before queueing, or a
// WAL failure. Once queued, Append waits for the outcome.
func (db *DB) Append(ctx context.Context, ops []sample.Op, errs []error) error {
	return db.append(ctx, ops, errs, true)
}

// AppendUnacked is Append for writes whose sender gets no reply that
// depends on them: Graphite plaintext, statsd. It returns once
// the batch is applied and in the WAL's file, with the same outcomes and
// errors as Append. Under FsyncAlways its group is fsynced with the next
// acknowledged group or at most FsyncInterval later, whichever comes
// first, as under FsyncInterval: a process crash loses none of it, a
// power loss at most that interval of it. Under the other policies it is
// Append.
func (db *DB) AppendUnacked(ctx context.Context, ops []sample.Op, errs []error) error {
	return db.append(ctx, ops, errs, false)
}

func (db *DB) append(ctx context.Context, ops []sample.Op, errs []error, acked bool) error {
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
	return db.submit(ctx, "write", func(req *request) { req.ops, req.errs, req.acked = ops, errs, acked })
}

// submit queues a request that fill sets up, waits for its outcome and
// returns it. what names the request in a context error.
func (db *DB) submit(ctx context.Context, what string, fill func(*request)) error {
	req := reqPool.Get().(*request)
	fill(req)
	defer func() {
		req.ops, req.errs, req.events, req.status, req.client, req.acked = nil, nil, nil, nil, nil, false
		reqPool.Put(req)
	}()
	db.sendMu.RLock()
	if db.closed {
		db.sendMu.RUnlock()
		return ErrClosed
	}
	select {
	case db.reqs <- req:
	case <-ctx.Done():
		db.sendMu.RUnlock()
		return fmt.Errorf("queue %s: %w", what, ctx.Err())
	}
	db.sendMu.RUnlock()
	return <-req.done
}

// run is the committer: the only goroutine that writes the WAL or changes
// the hot state.
func (db *DB) run() {
	defer close(db.committerDone)
	// syncTimer runs while a group written to the WAL is not fsynced yet
	// (FsyncInterval, and unacknowledged groups under FsyncAlways): it
	// fsyncs at most FsyncInterval after the first such group.
	syncTimer := time.NewTimer(time.Hour)
	syncTimer.Stop()
	defer syncTimer.Stop()
	syncArmed := false
	winTimer := time.NewTimer(time.Hour)
	defer winTimer.Stop()
	hbTimer := time.NewTimer(time.Hour)
	defer hbTimer.Stop()
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
		var hbC <-chan time.Time
		if due, ok := db.nextDue(); ok && db.failed.Load() == nil {
			d := time.Duration(due-db.nowMs()) * time.Millisecond
			if p := db.paused.Load(); p != nil {
				d = max(d, time.Until(p.until)) // a late decision waits for the disk too
			}
			hbTimer.Reset(max(d, 0))
			hbC = hbTimer.C
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
			n := r.size()
		drain:
			for n < db.opts.MaxGroup {
				select {
				case r, ok := <-db.reqs:
					if !ok {
						closing = true
						break drain
					}
					group = append(group, r)
					n += r.size()
				default:
					break drain
				}
			}
		case <-winC:
		case <-hbC:
		case <-syncTimer.C:
			syncArmed = false
			db.syncWAL()
			continue
		case ch := <-db.syncReq:
			ch <- db.syncWAL()
			continue
		case fn := <-db.calls:
			fn()
			continue
		}
		db.commit(group)
		if closing {
			db.syncWAL()
			return
		}
		if !syncArmed && db.opts.Fsync != FsyncNever && db.synced.Load() < db.published.Load() {
			syncTimer.Reset(db.opts.FsyncInterval)
			syncArmed = true
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
	if err == nil {
		db.find(group)
	}
	n := 0
	for _, req := range group {
		for i := range req.ops {
			if err != nil {
				req.errs[i] = err
				continue
			}
			req.errs[i] = db.prepare(&req.ops[i], now, db.found[n])
			n++
		}
		for i := range req.events {
			if err == nil {
				db.queueEvent(&req.events[i], now)
			}
		}
		for i := range req.status {
			if err == nil {
				req.status[i].err = db.prepareStatus(&req.status[i], now)
			}
		}
		if req.client != nil && err == nil {
			req.client.err = db.prepareClient(req.client, now)
		}
	}
	clear(db.found)
	if err != nil {
		if errors.Is(err, ErrPaused) {
			db.refused.Add(int64(countOps(group)))
		}
	} else {
		db.closeWindows(now)
		db.checkHeartbeats(now)
	}
	if err == nil && len(db.pend) > 0 {
		start := time.Now()
		sync := db.opts.Fsync == FsyncAlways && anyAcked(group)
		err = db.wal.Commit(sync)
		if d := time.Since(start); d > time.Second {
			db.logger.Warn("slow wal commit", "took", d, "records", len(db.pend))
		}
		if err != nil {
			err = db.writeFailed(err)
		} else {
			db.apply(sync)
			db.resume()
		}
	} else if err == nil && len(db.ticks) > 0 {
		db.publish(db.published.Load())
	}
	// A resend stored nothing, but its +OK says its point is durable: the
	// point it repeats may be in a group not fsynced yet (unacknowledged,
	// or under FsyncInterval, which then keeps its own promise).
	if err == nil && db.resent && db.opts.Fsync == FsyncAlways && anyAcked(group) {
		err = db.syncWAL()
	}
	db.resent = false
	db.endGroupStatus()
	db.endGroupClients()
	for _, req := range group {
		req.done <- err
	}
}

// find looks up the series of every op of the group in the committer's
// map, into db.found, before prepare takes them one by one. At 100k
// series and more a lookup is a cache miss or two (the map's group of
// slots, then the stored key's bytes); in a loop that does nothing else
// the processor has several of them in flight at once, where prepare
// would wait for each in turn (BenchmarkAppendManyKeys). A series the
// group creates, or deletes and creates again, is found by prepare.
func (db *DB) find(group []*request) {
	db.found = db.found[:0]
	for _, req := range group {
		for i := range req.ops {
			db.found = append(db.found, db.series[req.ops[i].Key])
		}
	}
}

// anyAcked reports whether a request of the group waits for an
// acknowledgement (Append rather than AppendUnacked).
func anyAcked(group []*request) bool {
	for _, r := range group {
		if r.acked {
			return true
		}
	}
	return false
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
	db.dropGroupStatus()
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
			// Its window entry goes stale, and a snapshot skips it: deleted
			// by no DELETE (gone).
			s.c.deleted, s.c.delIdx = true, 0
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

// apply publishes the prepared records to readers and subscribers; synced
// says the WAL was fsynced past them.
func (db *DB) apply(synced bool) {
	reindex, status, clients := false, false, false
	var events []sample.Event
	for i := range db.pend {
		p := &db.pend[i]
		if p.s == nil { // a status event, a heartbeat or client record: no series
			switch {
			case p.rec.Code == record.Event:
				events = append(events, eventOf(&p.rec, p.idx))
			case isClientRec(p.rec.Code):
				clients = true // applyGroupClients
			default:
				status = true // applyGroupStatus
			}
			continue
		}
		if p.rec.Code == sample.Delete {
			reindex = true
			db.changes = append(db.changes, sample.Change{ID: p.idx, Key: p.rec.Key, Deleted: true})
			continue
		}
		p.s.publish(&p.rec)
		reindex = reindex || p.rec.Ordinal == 1 && p.rec.Code != sample.Window
		db.changes = append(db.changes, sample.Change{ID: p.idx, Key: p.rec.Key, Value: viewOf(&p.rec)})
	}
	if reindex {
		// Created and deleted series, in the group's order, under one hold
		// of the index's lock: a new incarnation is visible once it has
		// its value.
		db.index.mu.Lock()
		for i := range db.pend {
			switch p := &db.pend[i]; {
			case p.s == nil: // no series (a Delivered record's Ordinal is an alert id)
			case p.rec.Code == sample.Delete:
				db.index.remove(p.s)
			case p.rec.Ordinal == 1 && p.rec.Code != sample.Window:
				db.index.put(p.s)
			}
		}
		db.index.mu.Unlock()
	}
	last := db.pend[len(db.pend)-1].idx
	if status {
		db.applyGroupStatus() // a lock and a walk of the group: only when it has heartbeat records
	}
	if clients {
		db.applyGroupClients()
	}
	if len(events) > 0 {
		// Before the index is published: a reader that sees it finds them.
		db.events.add(events)
		if db.events.size() >= db.opts.EventMemory/2 {
			select {
			case db.snapKick <- struct{}{}:
			default:
			}
		}
	}
	db.publish(last)
	if synced {
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
func (db *DB) prepare(op *sample.Op, now int64, found *series) error {
	if err := checkKey(op.Key); err != nil {
		return err
	}
	v := op.Value
	if op.Code != sample.Delete && (math.IsNaN(v) || math.IsInf(v, 0)) {
		return fmt.Errorf("%w: not a finite number", ErrValue)
	}
	// found is the key's series when the group began: still the map's
	// entry unless an earlier op of the group deleted it (a deleted series
	// stays deleted) or created one (found is nil).
	s := found
	if s == nil || s.c.deleted {
		s = db.series[op.Key]
	}
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
	if op.Resend && op.Time != 0 && op.Code == sample.Set && !op.Delta && s != nil && s.kind == sample.Gauge && t == s.c.updated {
		if math.Float64bits(v) != math.Float64bits(s.c.value) {
			return fmt.Errorf("%w: %q has a point at %d ms with another value (%g)", ErrOutOfOrder, op.Key, t, s.c.value)
		}
		db.resent = true // stored already: the reply waits for that point's fsync (commit)
		return nil
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
	db.changed(s, r.Code, idx)
}

// changed notes that the record at WAL index idx, with code, changes s:
// the next snapshot stores s.
func (db *DB) changed(s *series, code sample.Code, idx uint64) {
	if code == sample.Delete {
		s.c.delIdx = idx
	} else {
		s.c.lastIdx = idx
	}
	if s.dirtyGen != db.dirtyGen {
		s.dirtyGen = db.dirtyGen
		db.dirty = append(db.dirty, s)
	}
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
