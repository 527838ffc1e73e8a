package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// disk is a set of injected failures for one DB: a full disk that still
// lets part of a write reach the file, failing fsyncs, failing cuts and
// failing snapshot commits.
type disk struct {
	full       atomic.Bool  // writes reach the file, then fail with ENOSPC
	writes     atomic.Int64 // batch writes tried
	syncFails  atomic.Int64 // fsyncs left to fail with EIO (after running)
	cutFails   atomic.Bool
	commitFail atomic.Pointer[error] // snapshot commits fail with this, before running
}

func (d *disk) faults() *faults {
	return &faults{
		wal: wal.Hooks{
			Write: func(w func() error) error {
				d.writes.Add(1)
				if err := w(); err != nil {
					return err
				}
				if d.full.Load() {
					return syscall.ENOSPC
				}
				return nil
			},
			Sync: func(s func() error) error {
				if err := s(); err != nil {
					return err
				}
				if d.syncFails.Load() > 0 {
					d.syncFails.Add(-1)
					return syscall.EIO
				}
				return nil
			},
			Cut: func(c func() error) error {
				if d.cutFails.Load() {
					return syscall.EIO
				}
				return c()
			},
		},
		commit: func(c func() error) error {
			if p := d.commitFail.Load(); p != nil {
				return *p
			}
			return c()
		},
	}
}

// state is what a test remembers of the store: each key's value.
func state(db *DB) map[string]float64 {
	m := map[string]float64{}
	for _, s := range db.Series("", nil, nil) {
		m[s.Key] = s.Value
	}
	return m
}

func sameState(t *testing.T, when string, got, want map[string]float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %v, want %v", when, got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("%s: %v, want %v", when, got, want)
		}
	}
}

// A full disk: the batch that hits it is refused and cut off the log even
// though part of it reached the file; writes are then refused without
// touching the disk until the backoff passes; once there is room they go
// on, and after a crash the store holds exactly what was acknowledged.
func TestFullDiskRefusedWritesNeverApply(t *testing.T) {
	dir := t.TempDir()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	d := &disk{}
	opts := Options{SnapshotInterval: time.Hour, faults: d.faults(),
		Now: func() time.Time { return time.UnixMilli(clock.Load()) }}
	db := openDB(t, dir, opts)
	mustApply(t, db, set("a", 1), set("b", 2), sample.Op{Code: sample.Incr, Key: "c", Value: 10, Interval: 1000})
	acked := state(db)
	index := db.Index()
	// Window ends due in the failing group are refused with it.
	clock.Add(1500)

	d.full.Store(true)
	ops := []sample.Op{set("a", 99), incr("c", 5), del("b"), set("new", 1), incr("newc", 3)}
	errs := make([]error, len(ops))
	err := db.Append(context.Background(), ops, errs)
	// The committer may take the due window end on its own first (it
	// rearms its timer from the clock between groups): then that group
	// hits the full disk, and this one is refused as paused.
	if errors.Is(err, ErrPaused) && strings.Contains(err.Error(), "no space left on device") && db.Stats().WAL.WriteFailures == 1 {
		t.Log("the window end's own group hit the full disk first")
	} else if !errors.Is(err, ErrNotApplied) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v, want ErrNotApplied wrapping ENOSPC", err)
	}
	sameState(t, "after the refused batch", state(db), acked)
	if db.Index() != index {
		t.Fatalf("index moved to %d from %d", db.Index(), index)
	}
	// Paused: refused at once, the disk untouched.
	tried, refused := d.writes.Load(), db.Stats().WAL.Refused
	err = db.Append(context.Background(), ops[:1], errs)
	if !errors.Is(err, ErrPaused) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("append while paused: %v", err)
	}
	if d.writes.Load() != tried {
		t.Fatal("a write was tried while paused")
	}
	if st := db.Stats().WAL; st.State != "paused" || st.WriteFailures != 1 || st.Refused != refused+1 || st.RetryInMs <= 0 {
		t.Fatalf("stats while paused: %+v", st)
	}
	// Still full at the next try (this append's, or the due window end's):
	// refused again, and the pause grows.
	if err := retry(t, db, ops[:1]); err == nil {
		t.Fatal("a write was taken on a full disk")
	}
	if st := db.Stats().WAL; st.WriteFailures < 2 || st.State != "paused" {
		t.Fatalf("stats after the second try: %+v", st)
	}
	sameState(t, "after the second refused batch", state(db), acked)
	// Room again: the next try goes through, on the acknowledged state.
	d.full.Store(false)
	if err := retry(t, db, []sample.Op{incr("c", 5), set("a", 3)}); err != nil {
		t.Fatalf("write once there is room: %v", err)
	}
	acked["c"], acked["a"] = 15, 3
	sameState(t, "after the writes resumed", state(db), acked)
	if st := db.Stats().WAL; st.State != "ok" || st.WriteFailures < 2 {
		t.Fatalf("stats after resuming: %+v", st)
	}
	// The changes subscribers see are the acknowledged ones, densely.
	cs, err := db.Changes(index, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		if c.ID != index+1+uint64(i) || c.Key == "new" || c.Key == "newc" || c.Deleted {
			t.Fatalf("change %d: %+v (after %d)", i, c, index)
		}
	}
	abandon(t, db)
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour, Now: opts.Now})
	defer db.Close()
	sameState(t, "after a crash and a restart", state(db), acked)
	pts, err := db.Range(context.Background(), "a", math.MinInt64, math.MaxInt64, 0, nil)
	if err != nil || !equalFloats(values(pts), []float64{1, 3}) {
		t.Fatalf("history of a: %v %v, want [1 3]", values(pts), err)
	}
}

// retry appends ops to a paused store once its pause is over. A window
// end may take the try first: then ops are refused (ErrPaused) until
// the following one, if that try failed too, and go in if it did not.
// It returns the outcome of ops' own try, or the last refusal once a try
// has failed since the call.
func retry(t *testing.T, db *DB, ops []sample.Op) error {
	t.Helper()
	failures := db.Stats().WAL.WriteFailures
	for range 5 {
		st := db.Stats().WAL
		if st.State != "paused" {
			t.Fatalf("not paused: %+v", st)
		}
		time.Sleep(time.Duration(st.RetryInMs+1) * time.Millisecond) // the backoff is a deadline, not an event
		err := db.Append(context.Background(), ops, make([]error, len(ops)))
		if !errors.Is(err, ErrPaused) || db.Stats().WAL.WriteFailures > failures {
			return err
		}
	}
	t.Fatal("no try in 5 pauses")
	return nil
}

// A failed fsync is never retried: the batch is refused and cut off, and
// every later write is refused until a restart; reads go on. After the
// restart the store holds what was acknowledged and takes writes.
func TestFailedFsyncRefusesUntilRestart(t *testing.T) {
	dir := t.TempDir()
	d := &disk{}
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour, faults: d.faults()})
	mustApply(t, db, set("a", 1), incr("c", 4))
	acked := state(db)
	d.syncFails.Store(1)
	errs := make([]error, 2)
	err := db.Append(context.Background(), []sample.Op{set("a", 2), set("b", 5)}, errs)
	if !errors.Is(err, ErrNotApplied) || !errors.Is(err, wal.ErrSyncFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("append with a failing fsync: %v", err)
	}
	err = db.Append(context.Background(), []sample.Op{set("a", 3)}, errs)
	if err == nil || !strings.Contains(err.Error(), "restart to recover") {
		t.Fatalf("append after a failed fsync: %v", err)
	}
	if st := db.Stats().WAL; st.State != "failed" {
		t.Fatalf("stats: %+v", st)
	}
	sameState(t, "reads after the failed fsync", state(db), acked)
	abandon(t, db)
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
	defer db.Close()
	sameState(t, "after the restart", state(db), acked)
	mustApply(t, db, set("a", 7))
}

// When the failed batch cannot be cut off, its outcome is unknown: the
// writers are not told it was not applied, OnFatal is called, and writes
// are refused.
func TestFailedCutIsFatal(t *testing.T) {
	d := &disk{}
	var fatal atomic.Pointer[error]
	db := openDB(t, t.TempDir(), Options{SnapshotInterval: time.Hour, faults: d.faults(),
		OnFatal: func(err error) { fatal.Store(&err) }})
	defer db.Close()
	mustApply(t, db, set("a", 1))
	d.full.Store(true)
	d.cutFails.Store(true)
	err := db.Append(context.Background(), []sample.Op{set("a", 2)}, make([]error, 1))
	if err == nil || errors.Is(err, ErrNotApplied) || !strings.Contains(err.Error(), "outcome of this batch is unknown") {
		t.Fatalf("append: %v", err)
	}
	if p := fatal.Load(); p == nil || !errors.Is(*p, wal.ErrBroken) {
		t.Fatalf("OnFatal got %v", p)
	}
	if err := db.Append(context.Background(), []sample.Op{set("a", 3)}, make([]error, 1)); err == nil {
		t.Fatal("a write after a failed cut was taken")
	}
}

// Snapshot commits: lack of space is retried at the next snapshot; any
// other failure turns snapshots off until a restart. The WAL is never
// truncated past what a snapshot stored, so nothing is lost either way.
func TestSnapshotFailures(t *testing.T) {
	dir := t.TempDir()
	d := &disk{}
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour, faults: d.faults()})
	mustApply(t, db, set("a", 1))
	enospc := error(syscall.ENOSPC)
	d.commitFail.Store(&enospc)
	if err := db.Snapshot(context.Background()); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("snapshot on a full disk: %v", err)
	}
	if st := db.Stats().Snapshots; st.State != "ok" || st.Failures != 1 {
		t.Fatalf("stats after a full-disk snapshot: %+v", st)
	}
	d.commitFail.Store(nil)
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatalf("snapshot once there is room: %v", err)
	}
	if st := db.Stats(); st.SnapshotIndex != db.Index() {
		t.Fatalf("snapshot index %d, want %d", st.SnapshotIndex, db.Index())
	}
	mustApply(t, db, set("a", 2), set("b", 3))
	eio := error(syscall.EIO)
	d.commitFail.Store(&eio)
	if err := db.Snapshot(context.Background()); !errors.Is(err, syscall.EIO) {
		t.Fatalf("snapshot with a failing disk: %v", err)
	}
	d.commitFail.Store(nil)
	if err := db.Snapshot(context.Background()); !errors.Is(err, errSnapshotsOff) {
		t.Fatalf("snapshot after a failed one: %v, want them off", err)
	}
	if st := db.Stats().Snapshots; st.State != "off" {
		t.Fatalf("stats: %+v", st)
	}
	mustApply(t, db, set("c", 4)) // writes go on
	want := state(db)
	if err := db.Close(); err == nil {
		t.Fatal("close took a final snapshot with snapshots off")
	}
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
	defer db.Close()
	sameState(t, "after the restart", state(db), want)
}

// Writers racing a full disk on several goroutines: every write either
// succeeds, and is there after a crash, or is refused, and is not.
func TestFullDiskConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	d := &disk{}
	db := openDB(t, dir, Options{SnapshotInterval: 20 * time.Millisecond, faults: d.faults()})
	const writers, per = 4, 400
	var mu sync.Mutex
	last := map[string]float64{} // the newest acknowledged value per key
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				key := string(rune('a' + w))
				if i == per/3 && w == 0 {
					d.full.Store(true)
				}
				if i == 2*per/3 && w == 0 {
					d.full.Store(false)
				}
				errs := make([]error, 1)
				if err := db.Append(context.Background(), []sample.Op{set(key, float64(i))}, errs); err != nil {
					if !errors.Is(err, ErrNotApplied) && !errors.Is(err, ErrPaused) {
						t.Errorf("append: %v", err)
					}
					continue
				}
				mu.Lock()
				last[key] = float64(i)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if db.Stats().WAL.WriteFailures == 0 {
		t.Fatal("no write failed: the test proved nothing")
	}
	abandon(t, db)
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
	defer db.Close()
	sameState(t, "after a crash", state(db), last)
}

// Snapshots that fail on a full disk, again and again while the same
// series keep changing, keep their lists without losing or doubling a
// series (a failed snapshot's list and the next overlap), and the one
// that succeeds stores every change.
func TestRepeatedFullDiskSnapshots(t *testing.T) {
	dir := t.TempDir()
	d := &disk{}
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour, faults: d.faults()})
	enospc := error(syscall.ENOSPC)
	d.commitFail.Store(&enospc)
	for round := range 4 {
		mustApply(t, db, set("a", float64(round)), set("b", float64(round)), set(fmt.Sprintf("k%d", round), 1))
		if err := db.Snapshot(context.Background()); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("round %d: snapshot on a full disk: %v", round, err)
		}
		if n := len(db.snapQueue); n != 3+round {
			t.Fatalf("round %d: %d series kept for the next snapshot, want %d", round, n, 3+round)
		}
	}
	d.commitFail.Store(nil)
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatalf("snapshot once there is room: %v", err)
	}
	want := state(db)
	abandon(t, db)
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
	defer db.Close()
	if st := db.Stats().Recovery; st.Replayed != 0 {
		t.Fatalf("the snapshot left %d records to replay", st.Replayed)
	}
	sameState(t, "after the restart", state(db), want)
}

// TestFsyncUnacked: under FsyncAlways an acknowledged write (Append) is
// fsynced before it returns and an unacknowledged one (AppendUnacked) is
// not; the next acknowledged group or FsyncInterval later fsyncs it, and
// a crash loses none of it. Under FsyncInterval, Append is not fsynced
// either until the interval.
func TestFsyncUnacked(t *testing.T) {
	var syncs atomic.Int64
	synced := make(chan struct{}, 16)
	f := &faults{wal: wal.Hooks{Sync: func(s func() error) error {
		syncs.Add(1)
		select {
		case synced <- struct{}{}:
		default:
		}
		return s()
	}}}
	between := func(db *DB) { // waits until the committer is between groups
		done := make(chan struct{})
		db.calls <- func() { close(done) }
		<-done
	}
	opts := Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1, FsyncInterval: time.Hour, faults: f}
	dir := t.TempDir()
	db := openDB(t, dir, opts)
	before := syncs.Load()
	errs := make([]error, 1)
	if err := db.AppendUnacked(context.Background(), []sample.Op{set("quiet", 1)}, errs); err != nil || errs[0] != nil {
		t.Fatalf("append unacked: %v %v", err, errs[0])
	}
	if st := db.Stats(); syncs.Load() != before || st.SyncedIndex >= st.Index {
		t.Fatalf("an unacknowledged write was fsynced: %d fsyncs, synced to %d of %d", syncs.Load()-before, st.SyncedIndex, st.Index)
	}
	mustApply(t, db, set("acked", 2))
	if st := db.Stats(); syncs.Load() != before+1 || st.SyncedIndex != st.Index {
		t.Fatalf("an acknowledged write: %d fsyncs, synced to %d of %d; want 1 and all", syncs.Load()-before, st.SyncedIndex, st.Index)
	}
	if err := db.AppendUnacked(context.Background(), []sample.Op{set("quiet", 3)}, errs); err != nil || errs[0] != nil {
		t.Fatalf("append unacked: %v %v", err, errs[0])
	}
	abandon(t, db)
	db = openDB(t, dir, opts)
	if got := state(db); got["quiet"] != 3 || got["acked"] != 2 {
		t.Fatalf("after a crash: %v, want quiet=3 acked=2", got)
	}
	closeDB(t, db)

	// The interval: the first unsynced group starts it.
	for _, policy := range []FsyncPolicy{FsyncAlways, FsyncInterval} {
		opts.Fsync, opts.FsyncInterval = policy, 20*time.Millisecond
		db = openDB(t, t.TempDir(), opts)
		between(db)
		for len(synced) > 0 {
			<-synced
		}
		if err := db.AppendUnacked(context.Background(), []sample.Op{set("quiet", 1)}, errs); err != nil || errs[0] != nil {
			t.Fatalf("%v: append unacked: %v %v", policy, err, errs[0])
		}
		if policy == FsyncInterval {
			mustApply(t, db, set("acked", 1)) // not fsynced either
		}
		select {
		case <-synced:
		case <-time.After(time.Minute):
			t.Fatalf("%v: no fsync a minute after an unsynced write (interval 20ms)", policy)
		}
		between(db)
		if st := db.Stats(); st.SyncedIndex != st.Index {
			t.Fatalf("%v: after the interval, synced to %d of %d", policy, st.SyncedIndex, st.Index)
		}
		closeDB(t, db)
	}
}

func closeDB(t *testing.T, db *DB) {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}
