package engine

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Status events (docs/semantics.md, "Events"). An event is one WAL record
// (record.Event), written by the committer like any write and
// acknowledged once durable; its id is its WAL index. Until a snapshot
// stores it in snapshot.db it is held in memory (eventMem), in id order;
// the snapshot that stores it drops it from there. Reads merge the two.

// eventMem holds the events the snapshot database does not hold yet.
type eventMem struct {
	mu      sync.RWMutex   // guards the fields below; held briefly, never while a client's filter runs.
	list    []sample.Event // in id order, every one with ID > through; elements never change once appended
	bytes   int            // their cost (eventCost)
	through uint64         // every event with an id ≤ through is in snapshot.db
	notify  chan struct{}  // closed and replaced when events are added
}

// eventCost is what an event is taken to hold in memory.
func eventCost(ev *sample.Event) int { return len(ev.Service) + len(ev.Message) + 64 }

func (m *eventMem) add(evs []sample.Event) {
	m.mu.Lock()
	m.list = append(m.list, evs...)
	for i := range evs {
		m.bytes += eventCost(&evs[i])
	}
	close(m.notify)
	m.notify = make(chan struct{})
	m.mu.Unlock()
}

// heldList returns the held events. The caller reads them without the
// lock: they never change (dropThrough re-slices).
func (m *eventMem) heldList() []sample.Event {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.list
}

func (m *eventMem) size() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.bytes
}

// upTo appends the held events with ids up to idx, at most limit bytes of
// them (at least one).
func (m *eventMem) upTo(idx uint64, dst []sample.Event, limit int) []sample.Event {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := 0
	for i := range m.list {
		if m.list[i].ID > idx || n >= limit {
			break
		}
		n += eventCost(&m.list[i])
		dst = append(dst, m.list[i])
	}
	return dst
}

// dropThrough forgets the events with ids up to idx: snapshot.db holds
// them.
func (m *eventMem) dropThrough(idx uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, _ := slices.BinarySearchFunc(m.list, idx+1, func(e sample.Event, id uint64) int { return cmp.Compare(e.ID, id) })
	for j := range m.list[:i] {
		m.bytes -= eventCost(&m.list[j])
	}
	// Re-sliced, never shifted in place: a reader that took the list's
	// header under the lock reads its elements after letting go of it
	// (heldList), and append only writes past every header's length.
	m.list = m.list[i:]
	if len(m.list) == 0 || cap(m.list) > 1024 && len(m.list) < cap(m.list)/4 {
		m.list = slices.Clone(m.list) // give back what a burst grew
	}
	m.through = max(m.through, idx)
}

// CheckEvent checks an event before it is written: its service (the rules
// of a key, at most sample.MaxService bytes), its message (valid UTF-8, at
// most sample.MaxMessage bytes) and its time (0 for now; else after 1970,
// at most MaxFuture ahead, and within the event retention).
func (db *DB) CheckEvent(ev *sample.Event, now int64) error {
	if err := checkKey(ev.Service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if len(ev.Service) > sample.MaxService {
		return fmt.Errorf("%w: service longer than %d bytes", ErrKey, sample.MaxService)
	}
	if len(ev.Message) > sample.MaxMessage {
		return fmt.Errorf("%w: message longer than %d bytes", ErrValue, sample.MaxMessage)
	}
	if !utf8.ValidString(ev.Message) {
		return fmt.Errorf("%w: message is not valid UTF-8", ErrValue)
	}
	if ev.Time == 0 {
		return nil
	}
	if ev.Time <= 0 {
		return fmt.Errorf("%w: time %d ms is not after 1970", ErrValue, ev.Time)
	}
	if ev.Time > now+MaxFuture.Milliseconds() {
		return fmt.Errorf("%w: time %d ms is more than %s ahead of the server clock", ErrValue, ev.Time, MaxFuture)
	}
	if keep := db.opts.EventRetention.Milliseconds(); ev.Time < now-keep {
		return fmt.Errorf("%w: time %d ms is older than the event retention (%s)", ErrValue, ev.Time, db.opts.EventRetention)
	}
	return nil
}

// AppendEvents writes evs and waits until they are durable (as Append
// under the fsync policy). On success each event's ID is its WAL index
// and its Time is set (to the commit's time when it was 0). The batch is
// all or nothing: an event that fails CheckEvent fails it, with an error
// naming the event's position, and so do ErrBacklog, ErrClosed and a WAL
// failure.
func (db *DB) AppendEvents(ctx context.Context, evs []sample.Event) error {
	if len(evs) == 0 {
		return nil
	}
	now := db.nowMs()
	for i := range evs {
		if err := db.CheckEvent(&evs[i], now); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
	}
	if n := db.events.size(); n >= db.opts.EventMemory {
		return fmt.Errorf("%w: %d bytes of events are held in memory, the limit is %d; nothing was applied", ErrBacklog, n, db.opts.EventMemory)
	}
	if err := db.blocked(); err != nil {
		return err
	}
	return db.submit(ctx, "events", func(req *request) { req.events, req.acked = evs, true })
}

// queueEvent queues the record of ev (the committer's).
func (db *DB) queueEvent(ev *sample.Event, now int64) {
	t := ev.Time
	if t == 0 {
		t = now
	}
	r := record.Record{Code: record.Event, Time: t, Key: ev.Service, Level: ev.Level, Alert: ev.Alert, Message: ev.Message}
	ev.ID, ev.Time = db.queueRecord(&r), t
}

// eventOf is the event of an EVENT record at WAL index idx.
func eventOf(r *record.Record, idx uint64) sample.Event {
	return sample.Event{ID: idx, Time: r.Time, Service: r.Key, Level: r.Level, Message: r.Message, Alert: r.Alert}
}

// NotifyEvents returns a channel closed once an event is added.
func (db *DB) NotifyEvents() <-chan struct{} {
	db.events.mu.RLock()
	defer db.events.mu.RUnlock()
	return db.events.notify
}

// eventsAfterBytes bounds the text one EventsAfter call returns (beyond
// one event): what an event stream holds while its client is slow.
const eventsAfterBytes = 64 << 10

// EventsAfter appends to dst up to max events with ids after id, in id
// order, and at most about eventsAfterBytes of their text: what a stream
// resumed after id reads next.
func (db *DB) EventsAfter(id uint64, dst []sample.Event, max int) ([]sample.Event, error) {
	if max <= 0 {
		return dst, nil
	}
	m := &db.events
	m.mu.RLock()
	through := m.through
	i, _ := slices.BinarySearchFunc(m.list, id+1, func(e sample.Event, id uint64) int { return cmp.Compare(e.ID, id) })
	held := m.list[i:min(len(m.list), i+max)]
	m.mu.RUnlock()
	// At most eventsAfterBytes of text: what a stalled stream holds.
	for j, size := 0, 0; j < len(held); j++ {
		if size += len(held[j].Service) + len(held[j].Message); size > eventsAfterBytes && j > 0 {
			held = held[:j]
			break
		}
	}
	if id >= through {
		return append(dst, held...), nil
	}
	// Events up to through are in snapshot.db (read after memory: an
	// event dropped from memory meanwhile was stored before).
	n, size := 0, 0
	err := db.store.EventsAfter(id, func(ev *sample.Event) bool {
		if ev.ID > through || n == max || size >= eventsAfterBytes {
			return false
		}
		size += len(ev.Service) + len(ev.Message)
		ev.Service, ev.Message = strings.Clone(ev.Service), strings.Clone(ev.Message) // they view the store's pages
		dst = append(dst, *ev)
		n++
		return true
	})
	if err != nil {
		return dst, fmt.Errorf("read stored events: %w", err)
	}
	return append(dst, held[:min(len(held), max-n)]...), nil
}

// eventBefore orders events newest first: by time, then by id.
func eventBefore(a, b *sample.Event) bool {
	return a.Time > b.Time || a.Time == b.Time && a.ID > b.ID
}

// Events lists the events q selects, newest first (by time, then id),
// from memory and snapshot.db.
func (db *DB) Events(ctx context.Context, q sample.EventQuery) (sample.EventPage, error) {
	var page sample.EventPage
	q.Limit = max(q.Limit, 1)
	to := q.To
	if to == 0 {
		to = math.MaxInt64
	}
	// The bound the events must be before: (upT, upID), exclusive.
	upT, upID := to, uint64(math.MaxUint64)
	if q.BeforeID != 0 && q.BeforeTime <= upT { // (BeforeTime, BeforeID) < (to, MaxUint64)
		upT, upID = q.BeforeTime, q.BeforeID
	}
	if q.From > upT {
		return page, nil
	}
	up := sample.Event{Time: upT, ID: upID}
	keep := func(ev *sample.Event) bool {
		return ev.Time >= q.From && eventBefore(&up, ev) && (q.Match == nil || q.Match(ev))
	}
	// Memory first, then the store: an event dropped from memory meanwhile
	// was stored before. The filter runs on the list without the lock:
	// a slow regex must not hold up the committer, which appends under it.
	var held []sample.Event
	for i, ev := range db.events.heldList() { // bounded by EventMemory
		if i%256 == 255 && ctx.Err() != nil {
			return page, fmt.Errorf("list events: %w", ctx.Err())
		}
		if keep(&ev) {
			held = append(held, ev)
		}
	}
	slices.SortFunc(held, func(a, b sample.Event) int {
		if eventBefore(&a, &b) {
			return -1
		}
		return 1
	})
	bytes, scanned, scanBytes := 0, 0, 0 // the scan bounds count stored events
	// emit adds ev to the page; false once the page is full. A page takes
	// one event more than its limit, to know whether there are more.
	emit := func(ev *sample.Event) bool {
		if len(page.Events) == q.Limit || q.MaxBytes > 0 && bytes > q.MaxBytes {
			page.More = true
			last := page.Events[len(page.Events)-1]
			page.NextTime, page.NextID = last.Time, last.ID
			return false
		}
		page.Events = append(page.Events, *ev)
		bytes += len(ev.Service) + len(ev.Message)
		return true
	}
	stopped := false
	err := db.store.EventsBefore(upT, upID, q.From, func(ev *sample.Event) bool {
		for len(held) > 0 && !eventBefore(ev, &held[0]) {
			same := held[0].ID == ev.ID
			if !emit(&held[0]) {
				stopped = true
				return false
			}
			held = held[1:]
			if same {
				return true // memory and the store both held it
			}
		}
		if q.Match == nil || q.Match(ev) {
			ev.Service, ev.Message = strings.Clone(ev.Service), strings.Clone(ev.Message) // they view the store's pages
			if !emit(ev) {
				stopped = true
				return false
			}
		}
		scanned++
		scanBytes += len(ev.Service) + len(ev.Message)
		if q.MaxScan > 0 && scanned >= q.MaxScan || q.MaxScanBytes > 0 && scanBytes >= q.MaxScanBytes || scanned%256 == 0 && ctx.Err() != nil {
			// The next page goes on after this event; the held events
			// not emitted yet are older, so they are the next page's.
			page.More, page.NextTime, page.NextID = true, ev.Time, ev.ID
			stopped = true
			return false
		}
		return true
	})
	if err != nil {
		return page, fmt.Errorf("read stored events: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return page, fmt.Errorf("list events: %w", err)
	}
	for !stopped && len(held) > 0 && emit(&held[0]) {
		held = held[1:]
	}
	return page, nil
}

// storeEvents stores the held events with ids up to target in snapshot.db,
// in transactions of about 4 MiB.
// Each is dropped from memory once stored: reads then find it in the
// store (EventsAfter reads the store up to eventMem.through). Like the
// series, they go to the store only once the WAL holds them durably.
func (db *DB) storeEvents(target uint64) error {
	var buf []sample.Event
	for {
		buf = db.events.upTo(target, buf[:0], 4<<20)
		if len(buf) == 0 {
			return nil
		}
		last := buf[len(buf)-1].ID
		if err := db.syncTo(last); err != nil {
			return err
		}
		if err := db.store.PutEvents(buf); err != nil {
			return db.storeFailed(err)
		}
		db.events.dropThrough(last)
	}
}

// retainEvents deletes the stored events older than the event retention,
// and the oldest past EventMaxBytes, for up to CompactTime.
func (db *DB) retainEvents() error {
	if db.snapErr.Load() != nil {
		return nil
	}
	db.snapMu.Lock()
	defer db.snapMu.Unlock()
	cutoff := db.nowMs() - db.opts.EventRetention.Milliseconds()
	deadline := time.Now().Add(db.opts.CompactTime)
	for time.Now().Before(deadline) {
		n, more, err := db.store.RetainEvents(cutoff, max(db.opts.EventMaxBytes, 0), 8192)
		if err != nil {
			return err
		}
		db.eventsExpired.Add(int64(n))
		if n > 0 {
			db.releasePages()
		}
		if !more {
			return nil
		}
	}
	return nil
}
