package engine

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) ms() int64           { return c.now().UnixMilli() }
func hbOpts(c *fakeClock, o Options) Options {
	o.Now, o.SnapshotInterval, o.SnapshotQuiet = c.now, time.Hour, -1
	return o
}
func pulse(t *testing.T, db *DB, svc string, nextIn time.Duration, ch string) {
	t.Helper()
	if err := db.Pulse(context.Background(), svc, nextIn, ch); err != nil {
		t.Fatalf("pulse %s: %v", svc, err)
	}
}

// tick makes the committer run a group at the clock's time, as its timer
// would: a write of another key.
func tick(t *testing.T, db *DB) { t.Helper(); mustApply(t, db, set("tick", 1)) }

func heartbeatOf(t *testing.T, db *DB, svc string) sample.Heartbeat {
	t.Helper()
	for _, h := range db.Heartbeats() {
		if h.Service == svc {
			return h
		}
	}
	t.Fatalf("no heartbeat of %s in %+v", svc, db.Heartbeats())
	return sample.Heartbeat{}
}

func eventsOf(t *testing.T, db *DB, svc string) []sample.Event {
	t.Helper()
	page, err := db.Events(context.Background(), sample.EventQuery{Limit: 1000, Match: func(ev *sample.Event) bool { return ev.Service == svc }})
	if err != nil {
		t.Fatal(err)
	}
	return page.Events
}

func gauge(t *testing.T, db *DB, key string) float64 {
	t.Helper()
	se, ok := db.Get(key)
	if !ok {
		t.Fatalf("no series %s", key)
	}
	return se.Value
}

// TestHeartbeatLateAndBack: a heartbeat that is not renewed goes late once
// (one event, one alert, the series at 1), however long it stays late;
// the next pulse brings it back (an event, an alert, the series at 0).
// Alerts leave the queue when done, and stay through failed attempts;
// everything holds across a crash and a clean restart.
func TestHeartbeatLateAndBack(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	db := openDB(t, dir, hbOpts(clock, Options{}))
	defer func() { db.Close() }()
	pulse(t, db, "cron", 10*time.Second, "ops")
	h := heartbeatOf(t, db, "cron")
	if h.State != "on-time" || h.Expected != clock.ms()+10_000 || h.Channel != "ops" || h.NextIn != 10*time.Second {
		t.Fatalf("after a pulse: %+v", h)
	}
	clock.add(9 * time.Second)
	tick(t, db)
	if h := heartbeatOf(t, db, "cron"); h.State != "on-time" {
		t.Fatalf("before its due time: %+v", h)
	}
	clock.add(2 * time.Second)
	tick(t, db)
	h = heartbeatOf(t, db, "cron")
	if h.State != "late" || !h.Alerted {
		t.Fatalf("after its due time: %+v", h)
	}
	alerts := db.PendingAlerts(nil)
	if len(alerts) != 1 || alerts[0].Kind != sample.AlertLate || alerts[0].Channel != "ops" || alerts[0].Service != "cron" ||
		alerts[0].Message != "Service cron has not pulsed" {
		t.Fatalf("alerts: %+v", alerts)
	}
	late := alerts[0].ID
	if v := gauge(t, db, "heartbeat.cron.late"); v != 1 {
		t.Fatalf("heartbeat.cron.late = %v while late", v)
	}
	// Still late an hour on: no second alert, no second event.
	clock.add(time.Hour)
	tick(t, db)
	if n := len(db.PendingAlerts(nil)); n != 1 {
		t.Fatalf("%d alerts an hour later, want 1", n)
	}
	evs := eventsOf(t, db, "cron")
	if len(evs) != 1 || evs[0].Message != "Service cron has not pulsed" || evs[0].Level != sample.LevelLate || !evs[0].Alert {
		t.Fatalf("events: %+v", evs)
	}
	// A crash: the state and the queue come back from the WAL, same ids.
	abandon(t, db)
	db = openDB(t, dir, hbOpts(clock, Options{}))
	if h := heartbeatOf(t, db, "cron"); h.State != "late" {
		t.Fatalf("after a crash: %+v", h)
	}
	if a := db.PendingAlerts(nil); len(a) != 1 || a[0] != alerts[0] {
		t.Fatalf("after a crash, alerts %+v, want %+v", a, alerts)
	}
	pulse(t, db, "cron", 10*time.Second, "ops")
	if h := heartbeatOf(t, db, "cron"); h.State != "on-time" || h.Alerted {
		t.Fatalf("after the next pulse: %+v", h)
	}
	if v := gauge(t, db, "heartbeat.cron.late"); v != 0 {
		t.Fatalf("heartbeat.cron.late = %v after the pulse", v)
	}
	alerts = db.PendingAlerts(nil)
	if len(alerts) != 2 || alerts[1].Kind != sample.AlertBack || alerts[1].Message != "Service cron is pulsing again" {
		t.Fatalf("alerts after the pulse: %+v", alerts)
	}
	if evs := eventsOf(t, db, "cron"); len(evs) != 2 || evs[0].Message != "Service cron is pulsing again" {
		t.Fatalf("events after the pulse: %+v", evs)
	}
	// Delivery: a failed attempt keeps it queued, done takes it off once.
	if err := db.AlertAttempt(context.Background(), late, "webhook ops: 503, retry in 1s"); err != nil {
		t.Fatal(err)
	}
	if err := db.AlertDone(context.Background(), late, "delivered to ops"); err != nil {
		t.Fatal(err)
	}
	if err := db.AlertDone(context.Background(), late, "again"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("done twice: %v", err)
	}
	if a := db.PendingAlerts(nil); len(a) != 1 || a[0].ID != alerts[1].ID {
		t.Fatalf("after delivery: %+v", a)
	}
	evs = eventsOf(t, db, "cron")
	if len(evs) != 4 || evs[0].Message != "delivered to ops" || evs[1].Level != sample.LevelWarning {
		t.Fatalf("events after delivery: %+v", evs)
	}
	// A clean restart: the snapshot holds them.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, hbOpts(clock, Options{}))
	if a := db.PendingAlerts(nil); len(a) != 1 || a[0] != alerts[1] {
		t.Fatalf("after a restart: %+v, want %+v", a, alerts[1])
	}
	if h := heartbeatOf(t, db, "cron"); h.State != "on-time" || h.Channel != "ops" {
		t.Fatalf("after a restart: %+v", h)
	}
}

// TestHeartbeatGrace: a heartbeat that fell due while Sonde was down gets
// its own nextIn from the restart before it goes late.
func TestHeartbeatGrace(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	db := openDB(t, dir, hbOpts(clock, Options{}))
	pulse(t, db, "backup", 10*time.Second, "")
	pulse(t, db, "web", time.Hour, "")
	abandon(t, db)
	clock.add(time.Minute) // backup fell due while down; web did not
	db = openDB(t, dir, hbOpts(clock, Options{}))
	defer db.Close()
	tick(t, db)
	if h := heartbeatOf(t, db, "backup"); h.State != "on-time" || h.Expected != clock.ms()+10_000 {
		t.Fatalf("just after the restart: %+v, want on time until %d", h, clock.ms()+10_000)
	}
	if h := heartbeatOf(t, db, "web"); h.Expected != h.Last+time.Hour.Milliseconds() {
		t.Fatalf("a heartbeat not due yet moved: %+v", h)
	}
	clock.add(11 * time.Second)
	tick(t, db)
	if h := heartbeatOf(t, db, "backup"); h.State != "late" || h.Alerted {
		t.Fatalf("after the grace: %+v (no channel: not alerted)", h)
	}
	if a := db.PendingAlerts(nil); len(a) != 0 {
		t.Fatalf("alerts without a channel: %+v", a)
	}
}

// TestHeartbeatCancel: a cancelled heartbeat never goes late; cancel
// names a missing one; a pulse brings a cancelled one back; the limit
// counts them.
func TestHeartbeatCancel(t *testing.T) {
	clock := newClock()
	db := openDB(t, t.TempDir(), hbOpts(clock, Options{MaxHeartbeats: 2}))
	defer db.Close()
	ctx := context.Background()
	pulse(t, db, "a", 10*time.Second, "ops")
	if err := db.CancelHeartbeat(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	clock.add(time.Minute)
	tick(t, db)
	if h := heartbeatOf(t, db, "a"); h.State != "cancelled" {
		t.Fatalf("cancelled: %+v", h)
	}
	if len(db.PendingAlerts(nil)) != 0 || len(eventsOf(t, db, "a")) != 0 {
		t.Fatal("a cancelled heartbeat alerted")
	}
	for _, svc := range []string{"a", "nobody"} {
		if err := db.CancelHeartbeat(ctx, svc); !errors.Is(err, ErrNotFound) {
			t.Fatalf("cancel %s: %v, want ErrNotFound", svc, err)
		}
	}
	pulse(t, db, "b", time.Minute, "")
	if err := db.Pulse(ctx, "c", time.Minute, ""); !errors.Is(err, ErrTooManyHeartbeats) {
		t.Fatalf("a third heartbeat: %v", err)
	}
	pulse(t, db, "a", time.Minute, "") // a cancelled one counts: it comes back
	clock.add(forgetCancelled + time.Hour)
	if err := db.CancelHeartbeat(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	pulse(t, db, "a", time.Minute, "")
	if err := db.CancelHeartbeat(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	clock.add(forgetCancelled + time.Hour) // forgotten: room for c
	pulse(t, db, "c", time.Minute, "")
	if hs := db.Heartbeats(); len(hs) != 1 || hs[0].Service != "c" {
		t.Fatalf("heartbeats: %+v", hs)
	}
	for _, bad := range []struct {
		svc    string
		nextIn time.Duration
	}{{"", time.Minute}, {"x", time.Millisecond}, {"x", 400 * 24 * time.Hour}, {strings.Repeat("s", 201), time.Minute}} {
		if err := db.Pulse(ctx, bad.svc, bad.nextIn, ""); err == nil {
			t.Errorf("pulse %q %s taken", bad.svc, bad.nextIn)
		}
	}
}

// TestCheckResults: an HTTP check's results write only changes; a failure
// alerts once and a recovery once, across a crash and a restart.
func TestCheckResults(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	db := openDB(t, dir, hbOpts(clock, Options{}))
	defer func() { db.Close() }()
	ctx := context.Background()
	result := func(failing bool, detail string) {
		t.Helper()
		if err := db.CheckResult(ctx, "web", failing, detail, 30*time.Second, "ops"); err != nil {
			t.Fatal(err)
		}
	}
	result(false, "200 OK")
	idx := db.published.Load()
	result(false, "200 OK")
	if db.published.Load() != idx {
		t.Fatal("a repeated pass wrote a record")
	}
	if v := gauge(t, db, "check.web.failing"); v != 0 || len(eventsOf(t, db, "web")) != 0 {
		t.Fatalf("first pass: failing = %v, events %+v", v, eventsOf(t, db, "web"))
	}
	result(true, "503 Service Unavailable")
	result(true, "connection refused")
	evs := eventsOf(t, db, "web")
	if len(evs) != 1 || evs[0].Message != "Check web is failing: 503 Service Unavailable" || evs[0].Level != sample.LevelLate {
		t.Fatalf("events after failures: %+v", evs)
	}
	if a := db.PendingAlerts(nil); len(a) != 1 || a[0].Kind != sample.AlertFailing || a[0].Service != "web" {
		t.Fatalf("alerts: %+v", a)
	}
	if v := gauge(t, db, "check.web.failing"); v != 1 {
		t.Fatalf("check.web.failing = %v", v)
	}
	if hs := db.Heartbeats(); len(hs) != 0 {
		t.Fatalf("a check made heartbeats: %+v", hs)
	}
	abandon(t, db)
	db = openDB(t, dir, hbOpts(clock, Options{}))
	result(true, "still down") // known failing: nothing new
	if n := len(eventsOf(t, db, "web")); n != 1 {
		t.Fatalf("%d events after a failure following a crash", n)
	}
	result(false, "200 OK")
	if evs := eventsOf(t, db, "web"); len(evs) != 2 || evs[0].Message != "Check web passes again" {
		t.Fatalf("events after recovery: %+v", evs)
	}
	if a := db.PendingAlerts(nil); len(a) != 2 || a[1].Kind != sample.AlertPassing {
		t.Fatalf("alerts after recovery: %+v", a)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, hbOpts(clock, Options{}))
	cs := db.Checks()
	if len(cs) != 1 || cs[0].Failing || cs[0].Every != 30*time.Second || cs[0].Channel != "ops" || cs[0].Detail != "200 OK" {
		t.Fatalf("checks after a restart: %+v", cs)
	}
}

func TestClipText(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{{"abc", 5, "abc"}, {"héllo", 2, "h"}, {"héllo", 3, "hé"}, {"a\xffb", 10, "a\uFFFDb"}, {"😀😀", 5, "😀"}} {
		if got := clipText(c.in, c.n); got != c.want {
			t.Errorf("clipText(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// TestRefusedCancelLeavesNoView: a cancel refused (the heartbeat is
// cancelled already) writes nothing, and what the committer looked at
// does not stand in for the heartbeat afterwards.
func TestRefusedCancelLeavesNoView(t *testing.T) {
	clock := newClock()
	db := openDB(t, t.TempDir(), hbOpts(clock, Options{}))
	defer db.Close()
	ctx := context.Background()
	pulse(t, db, "a", 10*time.Second, "")
	if err := db.CancelHeartbeat(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := db.CancelHeartbeat(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a second cancel: %v", err)
	}
	if n := len(db.status.group); n != 0 {
		t.Fatalf("the committer kept a view of %d heartbeats after a refused cancel", n)
	}
	pulse(t, db, "a", 10*time.Second, "")
	clock.add(11 * time.Second)
	tick(t, db)
	if h := heartbeatOf(t, db, "a"); h.State != "late" {
		t.Fatalf("after a pulse and its due time: %+v", h)
	}
}
