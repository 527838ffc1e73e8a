package engine

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Heartbeats (docs/semantics.md, "Heartbeats"). A service pulses: "I am
// alive, expect me again within nextIn". Every change is a WAL record
// written by the committer (PULSE, CANCEL, ALERT, DELIVERED), so a
// restart keeps every heartbeat and every alert not yet delivered. The
// committer also decides lateness: when a heartbeat's due time passes it
// writes, in one group, the event "Service X has not pulsed", an ALERT
// record (the alert's id is its WAL index) and heartbeat.X.late = 1. The
// next pulse writes "Service X is pulsing again", an ALERT of kind back
// and heartbeat.X.late = 0. A delivery worker outside the engine takes
// the pending alerts (PendingAlerts) and reports each attempt
// (AlertAttempt, AlertDone); DELIVERED takes an alert off the queue.
//
// The state is a function of the records alone (applyStatus, used by
// apply and replay alike): each record sets what it covers, so replaying
// records over a state that already holds them (a snapshot that stored
// the status and failed before its index) ends in the same state.

// ErrTooManyHeartbeats is returned for a pulse of a new service past
// Options.MaxHeartbeats.
var ErrTooManyHeartbeats = sample.ErrTooManyHeartbeats

// forgetCancelled is how long a cancelled heartbeat stays listed.
const forgetCancelled = 7 * 24 * time.Hour

// Heartbeat states.
const (
	hbOnTime uint8 = iota
	hbLate
	hbCancelled
)

// hb is one heartbeat.
type hb struct {
	service   string
	nextIn    int64 // ms
	channel   string
	last      int64  // the last pulse, ms
	due       int64  // late unless it pulses by then, ms (the grace end after a restart)
	state     uint8  // hbOnTime, hbLate, hbCancelled
	lateAlert uint64 // the id of the ALERT record that made it late
	changed   int64  // when the state last changed, ms
}

func (h *hb) gone(now int64) bool {
	return h.state == hbCancelled && now-h.changed > forgetCancelled.Milliseconds()
}

// status is the heartbeat table and the alert queue. The committer
// changes them (apply, replay) under mu; readers copy out under it.
type status struct {
	mu     sync.RWMutex
	hbs    map[string]*hb
	checks map[string]*sample.Check
	alerts map[uint64]sample.Alert // decided, not yet delivered
	notify chan struct{}           // closed and replaced when an alert is queued
	dirty  bool                    // changed since the last snapshot took them
	// Committer-owned: the group's view of the heartbeats it changes, and
	// the alerts it takes off the queue (prepareStatus), and the due
	// times (heap).
	group map[string]*hb
	done  map[uint64]bool
	due   hbHeap
}

// statusOp is one heartbeat request.
type statusOp struct {
	kind    uint8 // opPulse, opCancel, opDone, opAttempt, opCheck
	failing bool  // opCheck
	service string
	nextIn  int64
	channel string
	alert   uint64
	note    string
	err     error
}

const (
	opPulse uint8 = iota + 1
	opCancel
	opDone
	opAttempt
	opCheck
)

// hbEntry is a heap entry: the heartbeat of service is due at due, unless
// it changed since (stale).
type hbEntry struct {
	due     int64
	service string
}

type hbHeap []hbEntry

func (h hbHeap) Len() int           { return len(h) }
func (h hbHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h hbHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *hbHeap) Push(x any)        { *h = append(*h, x.(hbEntry)) }
func (h *hbHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// lateKey is the GAUGE that charts a heartbeat's state: 1 while late.
func lateKey(service string) string { return "heartbeat." + service + ".late" }

// Pulse records that service is alive and will pulse again within
// nextIn; channel names the alert channel told when it does not (the
// caller checks that it is configured). It returns once durable.
func (db *DB) Pulse(ctx context.Context, service string, nextIn time.Duration, channel string) error {
	if err := checkKey(service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if len(service) > sample.MaxService {
		return fmt.Errorf("%w: service longer than %d bytes", ErrKey, sample.MaxService)
	}
	if nextIn < time.Second || nextIn > 366*24*time.Hour {
		return fmt.Errorf("%w: nextIn %s is not from 1s to 366 days", ErrValue, nextIn)
	}
	if len(channel) > record.MaxChannelLen {
		return fmt.Errorf("%w: channel name longer than %d bytes", ErrValue, record.MaxChannelLen)
	}
	return db.statusOp(ctx, statusOp{kind: opPulse, service: service, nextIn: nextIn.Milliseconds(), channel: channel})
}

// CancelHeartbeat cancels service's heartbeat: no alert until it pulses
// again. ErrNotFound when there is none.
func (db *DB) CancelHeartbeat(ctx context.Context, service string) error {
	return db.statusOp(ctx, statusOp{kind: opCancel, service: service})
}

// AlertDone takes alert id off the queue (delivered, or given up on) and
// records note as an event of its service. ErrNotFound when it is not
// queued (done already).
func (db *DB) AlertDone(ctx context.Context, id uint64, note string) error {
	return db.statusOp(ctx, statusOp{kind: opDone, alert: id, note: note})
}

// AlertAttempt records note, the outcome of a failed attempt to deliver
// alert id, as an event of its service; the alert stays queued.
func (db *DB) AlertAttempt(ctx context.Context, id uint64, note string) error {
	return db.statusOp(ctx, statusOp{kind: opAttempt, alert: id, note: note})
}

// CheckResult records the result of an HTTP check (-check) named name,
// which runs every `every` and alerts channel. Only a change is written:
// the first result, and a pass after a failure or the other way round.
// A failure after a pass (or as the first result) writes the event
// "Check X is failing: detail", an alert and check.X.failing = 1; a pass
// after a failure "Check X passes again", an alert and 0. So a check
// alerts once when it fails, and once when it recovers, across restarts.
func (db *DB) CheckResult(ctx context.Context, name string, failing bool, detail string, every time.Duration, channel string) error {
	if err := checkKey(name); err != nil {
		return fmt.Errorf("check name: %w", err)
	}
	if len(name) > sample.MaxService || len(channel) > record.MaxChannelLen {
		return fmt.Errorf("%w: check name or channel too long", ErrValue)
	}
	return db.statusOp(ctx, statusOp{kind: opCheck, service: name, failing: failing, note: detail, nextIn: every.Milliseconds(), channel: channel})
}

func (db *DB) statusOp(ctx context.Context, op statusOp) error {
	op.note = clipText(op.note, sample.MaxMessage)
	if err := db.blocked(); err != nil {
		return err
	}
	ops := []statusOp{op}
	if err := db.submit(ctx, "heartbeat", func(req *request) { req.status, req.acked = ops, true }); err != nil {
		return err
	}
	return ops[0].err
}

// clipText makes s valid UTF-8 of at most n bytes, cut at a character's
// start: an event's text from elsewhere (an HTTP status line, an error).
func clipText(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// hbView returns the heartbeat of service as the group sees it, nil when
// there is none (a forgotten one is none).
func (db *DB) hbView(service string, now int64) *hb {
	st := &db.status
	if h, ok := st.group[service]; ok {
		return h
	}
	if h := st.hbs[service]; h != nil && !h.gone(now) {
		return h
	}
	return nil
}

// hbChange returns the group's copy of the heartbeat of service, made on
// first use; nil when there is none.
func (db *DB) hbChange(service string, now int64) *hb {
	st := &db.status
	if h, ok := st.group[service]; ok {
		return h
	}
	h := db.hbView(service, now)
	if h == nil {
		return nil
	}
	c := *h
	st.group[service] = &c
	return &c
}

// liveHeartbeats counts the heartbeats not forgotten, the group's new
// ones included.
func (db *DB) liveHeartbeats(now int64) int {
	n := 0
	for _, h := range db.status.hbs {
		if !h.gone(now) {
			n++
		}
	}
	for s, h := range db.status.group {
		if old := db.status.hbs[s]; (old == nil || old.gone(now)) && h != nil {
			n++
		}
	}
	return n
}

// prepareStatus queues the records of op (the committer's).
func (db *DB) prepareStatus(op *statusOp, now int64) error {
	st := &db.status
	switch op.kind {
	case opPulse:
		h := db.hbChange(op.service, now)
		if h == nil {
			if db.liveHeartbeats(now) >= db.opts.MaxHeartbeats {
				return fmt.Errorf("%w: %d heartbeats", ErrTooManyHeartbeats, db.opts.MaxHeartbeats)
			}
			h = &hb{service: op.service, state: hbCancelled}
			st.group[op.service] = h
		}
		was := h.state
		db.queueRecord(&record.Record{Code: record.Pulse, Time: now, Key: op.service, Interval: op.nextIn, Channel: op.channel})
		if was == hbLate {
			msg := fmt.Sprintf("Service %s is pulsing again", op.service)
			ch := db.alertChannel(h, now)
			db.queueEvent(&sample.Event{Service: op.service, Level: sample.LevelBack, Message: msg, Alert: ch != ""}, now)
			if ch != "" {
				db.queueRecord(&record.Record{Code: record.Alert, Time: now, Key: op.service, Level: int64(sample.AlertBack),
					Channel: ch, Message: msg})
			}
		}
		if was != hbOnTime {
			db.setLate(op.service, 0, now)
		}
		*h = hb{service: op.service, nextIn: op.nextIn, channel: op.channel, last: now, due: now + op.nextIn, state: hbOnTime, changed: h.changed}
		if was != hbOnTime {
			h.changed = now
		}
		heap.Push(&st.due, hbEntry{due: h.due, service: h.service})
	case opCancel:
		h := db.hbChange(op.service, now)
		if h == nil || h.state == hbCancelled {
			return fmt.Errorf("%w: no heartbeat of %q", ErrNotFound, op.service)
		}
		db.queueRecord(&record.Record{Code: record.Cancel, Time: now, Key: op.service})
		if h.state == hbLate {
			db.setLate(op.service, 0, now)
		}
		h.state, h.changed, h.lateAlert = hbCancelled, now, 0
	case opCheck:
		c := st.checks[op.service]
		if c != nil && c.Failing == op.failing && c.Channel == op.channel && c.Every.Milliseconds() == op.nextIn {
			return nil // no change
		}
		lvl := int64(0)
		if op.failing {
			lvl = 1
		}
		db.queueRecord(&record.Record{Code: record.Check, Time: now, Key: op.service, Level: lvl, Interval: op.nextIn,
			Channel: op.channel, Message: op.note})
		if c == nil && !op.failing || c != nil && c.Failing == op.failing {
			if c == nil {
				db.setFlag("check."+op.service+".failing", 0, now)
			}
			return nil // the first pass, or a new setting: no event
		}
		msg, kind, level, v := fmt.Sprintf("Check %s passes again", op.service), sample.AlertPassing, int64(sample.LevelBack), 0.0
		if op.failing {
			msg, kind, level, v = fmt.Sprintf("Check %s is failing: %s", op.service, op.note), sample.AlertFailing, sample.LevelLate, 1
		}
		msg = clipText(msg, sample.MaxMessage)
		ch := db.alertChannel(&hb{service: op.service, channel: op.channel}, now)
		db.queueEvent(&sample.Event{Service: op.service, Level: level, Message: msg, Alert: ch != ""}, now)
		if ch != "" {
			db.queueRecord(&record.Record{Code: record.Alert, Time: now, Key: op.service, Level: int64(kind), Channel: ch, Message: msg})
		}
		db.setFlag("check."+op.service+".failing", v, now)
	case opDone, opAttempt:
		a, ok := st.alerts[op.alert]
		if !ok || st.done[op.alert] {
			return fmt.Errorf("%w: no alert %d is queued", ErrNotFound, op.alert)
		}
		level := sample.LevelWarning
		if op.kind == opDone {
			db.queueRecord(&record.Record{Code: record.Delivered, Time: now, Key: a.Service, Ordinal: op.alert})
			st.done[op.alert] = true
			level = sample.LevelInfo
		}
		db.queueEvent(&sample.Event{Service: a.Service, Level: int64(level), Message: op.note}, now)
	default:
		return fmt.Errorf("%w: heartbeat operation %d", ErrValue, op.kind)
	}
	return nil
}

// alertChannel is the channel an alert of h goes to: h's, unless the
// queue holds MaxAlerts already; then none, and an event says so.
func (db *DB) alertChannel(h *hb, now int64) string {
	if h.channel == "" || len(db.status.alerts) < db.opts.MaxAlerts {
		return h.channel
	}
	db.queueEvent(&sample.Event{Service: h.service, Level: sample.LevelWarning,
		Message: fmt.Sprintf("alert not sent: %d alerts wait for delivery already", db.opts.MaxAlerts)}, now)
	return ""
}

// setLate writes heartbeat.<service>.late = v.
func (db *DB) setLate(service string, v float64, now int64) { db.setFlag(lateKey(service), v, now) }

// setFlag writes the GAUGE key = v, which charts a state.
func (db *DB) setFlag(key string, v float64, now int64) {
	op := sample.Op{Code: sample.Set, Key: key, Value: v}
	if err := db.prepare(&op, now, nil); err != nil {
		db.logger.Warn("heartbeat series not written", "key", op.Key, "err", err)
	}
}

// queueRecord queues a record that changes no series (an event, a
// heartbeat or client record) and returns its WAL index (the
// committer's).
func (db *DB) queueRecord(r *record.Record) uint64 {
	db.body = record.Append(db.body[:0], r)
	idx := db.wal.Add(db.body)
	db.pend = append(db.pend, pending{rec: *r, idx: idx})
	return idx
}

// checkHeartbeats makes late every heartbeat whose due time has passed
// (the committer's, in a group).
func (db *DB) checkHeartbeats(now int64) {
	st := &db.status
	for len(st.due) > 0 && st.due[0].due <= now {
		e := heap.Pop(&st.due).(hbEntry)
		h := db.hbView(e.service, now)
		if h == nil || h.state != hbOnTime || h.due != e.due {
			continue // stale: it pulsed, was cancelled, or is gone
		}
		h = db.hbChange(e.service, now)
		msg := fmt.Sprintf("Service %s has not pulsed", h.service)
		ch := db.alertChannel(h, now)
		db.queueEvent(&sample.Event{Service: h.service, Level: sample.LevelLate, Message: msg, Alert: ch != ""}, now)
		// An ALERT with no channel makes it late with nobody to tell.
		h.lateAlert = db.queueRecord(&record.Record{Code: record.Alert, Time: now, Key: h.service, Level: int64(sample.AlertLate),
			Channel: ch, Message: msg})
		h.state, h.changed = hbLate, now
		db.setLate(h.service, 1, now)
	}
}

// nextDue is when the next heartbeat falls due (ms), or false.
func (db *DB) nextDue() (int64, bool) {
	if len(db.status.due) == 0 {
		return 0, false
	}
	return db.status.due[0].due, true
}

// applyStatus applies one heartbeat record at WAL index idx (apply and
// replay; under status.mu).
func (st *status) applyStatus(r *record.Record, idx uint64) {
	st.dirty = true
	kind := sample.AlertKind(r.Level)
	var h *hb
	if r.Code == record.Pulse || r.Code == record.Cancel || r.Code == record.Alert && (kind == sample.AlertLate || kind == sample.AlertBack) {
		if h = st.hbs[r.Key]; h == nil {
			h = &hb{service: r.Key, state: hbCancelled}
			st.hbs[r.Key] = h
		}
	}
	switch r.Code {
	case record.Pulse:
		if h.state != hbOnTime {
			h.changed = r.Time
		}
		h.nextIn, h.channel, h.last, h.due, h.state, h.lateAlert = r.Interval, r.Channel, r.Time, r.Time+r.Interval, hbOnTime, 0
	case record.Cancel:
		h.state, h.changed, h.lateAlert = hbCancelled, r.Time, 0
	case record.Check:
		st.checks[r.Key] = &sample.Check{Name: r.Key, Every: time.Duration(r.Interval) * time.Millisecond, Channel: r.Channel,
			Failing: r.Level == 1, Since: r.Time, Detail: r.Message}
	case record.Alert:
		if kind == sample.AlertLate {
			h.state, h.changed, h.lateAlert = hbLate, r.Time, idx
		}
		if r.Channel != "" {
			st.alerts[idx] = sample.Alert{ID: idx, Time: r.Time, Service: r.Key, Kind: sample.AlertKind(r.Level), Channel: r.Channel, Message: r.Message}
		}
	case record.Delivered:
		delete(st.alerts, r.Ordinal)
	}
}

// isStatus reports whether code is a heartbeat record's.
func isStatus(code sample.Code) bool {
	return code == record.Pulse || code == record.Cancel || code == record.Alert || code == record.Delivered || code == record.Check
}

// Checks returns the stored state of every HTTP check, by name.
func (db *DB) Checks() []sample.Check {
	st := &db.status
	st.mu.RLock()
	out := make([]sample.Check, 0, len(st.checks))
	for _, c := range st.checks {
		out = append(out, *c)
	}
	st.mu.RUnlock()
	slices.SortFunc(out, func(a, b sample.Check) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// applyGroupStatus applies the group's heartbeat records and wakes the
// delivery worker when it queued an alert (the committer's, in apply).
func (db *DB) applyGroupStatus() {
	st := &db.status
	queued := false
	st.mu.Lock()
	for i := range db.pend {
		if p := &db.pend[i]; isStatus(p.rec.Code) {
			st.applyStatus(&p.rec, p.idx)
			queued = queued || p.rec.Code == record.Alert && p.rec.Channel != ""
		}
	}
	if queued {
		close(st.notify)
		st.notify = make(chan struct{})
	}
	st.mu.Unlock()
}

// endGroupStatus forgets the group's view of the heartbeats at the end of
// every group: what it wrote is in the table now (applyGroupStatus), and
// what it only looked at (a refused cancel) must not shadow the table.
func (db *DB) endGroupStatus() {
	if st := &db.status; len(st.group) > 0 || len(st.done) > 0 {
		clear(st.group)
		clear(st.done)
	}
}

// dropGroupStatus forgets the group's view after a failed write. The
// group may have popped due entries (a late decision it did not write):
// the heap is built again from the table.
func (db *DB) dropGroupStatus() {
	st := &db.status
	if len(st.group) == 0 && len(st.done) == 0 {
		return
	}
	clear(st.group)
	clear(st.done)
	st.due = st.due[:0]
	for _, h := range st.hbs {
		if h.state == hbOnTime {
			st.due = append(st.due, hbEntry{due: h.due, service: h.service})
		}
	}
	heap.Init(&st.due)
}

// Heartbeats returns every heartbeat, by service.
func (db *DB) Heartbeats() []sample.Heartbeat {
	now := db.nowMs()
	st := &db.status
	st.mu.RLock()
	out := make([]sample.Heartbeat, 0, len(st.hbs))
	for _, h := range st.hbs {
		if !h.gone(now) {
			out = append(out, h.info())
		}
	}
	st.mu.RUnlock()
	slices.SortFunc(out, func(a, b sample.Heartbeat) int { return cmp.Compare(a.Service, b.Service) })
	return out
}

// Heartbeat returns the heartbeat of service; false when there is none.
func (db *DB) Heartbeat(service string) (sample.Heartbeat, bool) {
	st := &db.status
	st.mu.RLock()
	defer st.mu.RUnlock()
	h := st.hbs[service]
	if h == nil || h.gone(db.nowMs()) {
		return sample.Heartbeat{}, false
	}
	return h.info(), true
}

// info is h as readers see it.
func (h *hb) info() sample.Heartbeat {
	out := sample.Heartbeat{Service: h.service, NextIn: time.Duration(h.nextIn) * time.Millisecond, Channel: h.channel,
		Last: h.last, Expected: h.due, State: "on-time"}
	switch h.state {
	case hbLate:
		out.State, out.Alerted = "late", h.channel != ""
	case hbCancelled:
		out.State = "cancelled"
	}
	return out
}

// PendingAlerts appends the alerts decided and not yet done, by id.
func (db *DB) PendingAlerts(dst []sample.Alert) []sample.Alert {
	st := &db.status
	st.mu.RLock()
	for _, a := range st.alerts {
		dst = append(dst, a)
	}
	st.mu.RUnlock()
	slices.SortFunc(dst, func(a, b sample.Alert) int { return cmp.Compare(a.ID, b.ID) })
	return dst
}

// NotifyAlerts returns a channel closed once an alert is queued.
func (db *DB) NotifyAlerts() <-chan struct{} {
	db.status.mu.RLock()
	defer db.status.mu.RUnlock()
	return db.status.notify
}

// recoverStatus loads the stored heartbeats and alerts (Open, before
// replay).
func (db *DB) loadStatus() error {
	st := &db.status
	hbs, alerts, checks, err := db.store.LoadStatus()
	if err != nil {
		return fmt.Errorf("load heartbeats: %w", err)
	}
	for _, s := range hbs {
		st.hbs[s.Service] = &hb{service: s.Service, nextIn: s.NextIn, channel: s.Channel, last: s.Last, due: s.Last + s.NextIn,
			state: s.State, lateAlert: s.LateAlert, changed: s.Changed}
	}
	for _, a := range alerts {
		st.alerts[a.ID] = a
	}
	for _, c := range checks {
		st.checks[c.Name] = &c
	}
	return nil
}

// startHeartbeats schedules the heartbeats after recovery. One that fell
// due while Sonde was down gets a grace period of its own nextIn from
// now: its service could not pulse to a dead server.
func (db *DB) startHeartbeats() {
	now := db.nowMs()
	st := &db.status
	for _, h := range st.hbs {
		if h.state != hbOnTime {
			continue
		}
		if h.due <= now {
			h.due = now + h.nextIn
		}
		st.due = append(st.due, hbEntry{due: h.due, service: h.service})
	}
	heap.Init(&st.due)
}

// captureStatus copies the heartbeats and the alert queue for a snapshot
// when they changed since the last one took them (the committer's); nil
// when not. Forgotten heartbeats are dropped here.
func (db *DB) captureStatus() *snapshot.Status {
	st := &db.status
	now := db.nowMs()
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.dirty {
		return nil
	}
	st.dirty = false
	out := &snapshot.Status{}
	maps.DeleteFunc(st.hbs, func(_ string, h *hb) bool { return h.gone(now) })
	for _, h := range st.hbs {
		out.Heartbeats = append(out.Heartbeats, snapshot.HeartbeatState{Service: h.service, NextIn: h.nextIn, Channel: h.channel,
			Last: h.last, State: h.state, LateAlert: h.lateAlert, Changed: h.changed})
	}
	for _, a := range st.alerts {
		out.Alerts = append(out.Alerts, a)
	}
	for _, c := range st.checks {
		out.Checks = append(out.Checks, *c)
	}
	return out
}

// statusFailed marks the status changed again after a snapshot failed to
// store it.
func (db *DB) statusFailed() {
	db.status.mu.Lock()
	db.status.dirty = true
	db.status.mu.Unlock()
}
