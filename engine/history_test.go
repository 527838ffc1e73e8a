package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/ring"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/retention"
)

// dayLoad writes a day of points at 10 s for the given series through the
// engine, with a snapshot every snapEvery points per series: slowly
// varying gauges (a 0.01 random walk), counters (totals growing at a
// steady rate with 10 % noise) and constants, 6 : 3 : 1, with times
// jittering by up to 2 ms as collectd's do.
func dayLoad(tb testing.TB, db *DB, series, points, snapEvery int) int64 {
	tb.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	start := time.Now().Add(-24 * time.Hour).UnixMilli()
	walk := make([]float64, series)
	total := make([]float64, series)
	rate := make([]int, series) // a counter's mean increase per interval
	for i := range walk {
		walk[i] = float64(rng.IntN(10000)) / 100
		rate[i] = 10 + rng.IntN(10000)
	}
	ops := make([]sample.Op, series)
	errs := make([]error, series)
	for p := range points {
		t := start + int64(p)*10_000 + rng.Int64N(3) // collectd's clock jitters by a ms or two
		for s := range series {
			key := fmt.Sprintf("host%02d.metric%03d", s%20, s)
			switch s % 10 {
			case 0:
				ops[s] = sample.Op{Code: sample.Set, Key: key, Value: 100, Time: t}
			case 1, 2, 3:
				total[s] += float64(rate[s] + rng.IntN(rate[s]/10+1)) // requests, bytes: a rate with 10 % noise
				ops[s] = sample.Op{Code: sample.CounterSet, Key: key, Value: total[s], Time: t}
			default:
				walk[s] = math.Round((walk[s]+float64(rng.IntN(3)-1)*0.01)*100) / 100
				ops[s] = sample.Op{Code: sample.Set, Key: key, Value: walk[s], Time: t}
			}
		}
		if err := db.Append(context.Background(), ops, errs); err != nil {
			tb.Fatal(err)
		}
		for _, err := range errs {
			if err != nil {
				tb.Fatal(err)
			}
		}
		if (p+1)%snapEvery == 0 {
			if err := db.Snapshot(context.Background()); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := db.Snapshot(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return int64(series) * int64(points)
}

// compactAll runs compaction passes until one merges nothing.
func compactAll(tb testing.TB, db *DB) {
	tb.Helper()
	for {
		before := db.merged.Load()
		db.snapMu.Lock()
		db.compaction.next = nil   // a pass from the start,
		db.compaction.started = -1 // due now
		db.snapMu.Unlock()
		if err := db.compact(); err != nil {
			tb.Fatal(err)
		}
		if db.merged.Load() == before {
			return
		}
	}
}

// TestHistoryBytesPerPoint: a realistic day (slowly varying gauges,
// counters, constants at 10 s, a snapshot every 10 minutes) costs at most
// 2 bytes a point on disk once compacted: every page of the snapshot
// database in use (series states, branch pages and all), over the points
// it holds. Free pages, which bbolt reuses, are not counted; the file is
// logged.
func TestHistoryBytesPerPoint(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{SnapshotInterval: time.Hour, RingSize: 16, Fsync: FsyncNever}) // durability is not under test
	defer db.Close()
	n := dayLoad(t, db, 40, 8640, 60)
	compactAll(t, db)
	h := db.Stats().History
	if h == nil || h.Points != n {
		t.Fatalf("history %+v, want %d points", h, n)
	}
	t.Logf("%d raw points in %d chunks, %d archive points in %d chunks; bytes/point: %.3f in chunks, %.3f in the database's pages in use (%d bytes), %.3f for its file (%d bytes)",
		h.Points, h.Chunks, h.ArchivePoints, h.ArchiveChunks, h.BytesPerPoint, h.UsedBytesPerPoint, h.UsedBytes, h.FileBytesPerPoint, h.FileBytes)
	if h.UsedBytesPerPoint > 1.5 { // 1.27 with chunk version 3, 1.88 with version 2
		t.Fatalf("%.3f bytes a point on disk, want at most 1.5", h.UsedBytesPerPoint)
	}
}

// BenchmarkRangeOneDay reads one series' day at 10 s (8640 points) from
// the snapshot database, compacted.
func BenchmarkRangeOneDay(b *testing.B) {
	db, err := Open(b.TempDir(), Options{SnapshotInterval: time.Hour, RingSize: 16, Fsync: FsyncNever})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	dayLoad(b, db, 10, 8640, 60)
	compactAll(b, db)
	key := "host04.metric004" // a random walk
	from, to := time.Now().Add(-25*time.Hour).UnixMilli(), time.Now().UnixMilli()
	var dst []sample.Point
	b.ResetTimer()
	b.ReportAllocs()
	for b.Loop() {
		if dst, err = db.Range(context.Background(), key, from, to, 0, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
	if len(dst) != 8640 {
		b.Fatalf("%d points", len(dst))
	}
}

// Range and Recent take what they read from the query's budget and stop
// before passing it; a limit the ring can answer reads nothing older, and
// Recent reads the newest chunks first.
func TestReadBudgetAndRecent(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{RingSize: 8, SnapshotInterval: time.Hour, ChunkPoints: 16})
	defer db.Close()
	t0 := time.Now().UnixMilli() - 1000
	for i := range 300 {
		mustApply(t, db, sample.Op{Code: sample.Set, Key: "g", Value: float64(i), Time: t0 + int64(i)})
		if i%50 == 49 {
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(max int, f func(ctx context.Context) ([]sample.Point, error)) ([]sample.Point, *sample.Budget, error) {
		b := &sample.Budget{Max: max}
		pts, err := f(sample.WithBudget(context.Background(), b))
		return pts, b, err
	}
	_, _, err := read(100, func(ctx context.Context) ([]sample.Point, error) {
		return db.Range(ctx, "g", 0, 1<<62, 0, nil)
	})
	if !errors.Is(err, sample.ErrTooMany) {
		t.Fatalf("a 300-point range with a budget of 100: %v", err)
	}
	pts, b, err := read(100, func(ctx context.Context) ([]sample.Point, error) {
		return db.Range(ctx, "g", 0, 1<<62, 5, nil)
	})
	if err != nil || !equalFloats(values(pts), []float64{295, 296, 297, 298, 299}) || b.Left() != 95 {
		t.Fatalf("limit 5: %v %v, budget left %d", values(pts), err, b.Left())
	}
	pts, _, err = read(1000, func(ctx context.Context) ([]sample.Point, error) {
		return db.Recent(ctx, "g", 50, nil)
	})
	if err != nil || len(pts) != 50 || pts[0].V != 250 || pts[49].V != 299 {
		t.Fatalf("recent 50: %v %v", values(pts), err)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].T != pts[i-1].T+1 {
			t.Fatalf("recent points not in order: %v", pts)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.Range(ctx, "g", 0, 1<<62, 0, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("a range whose context ended: %v", err)
	}
}

// TestReadsNeverSnapshot reads a history whose ring has long passed its
// capacity while no snapshot has run: the ring keeps every point the
// snapshot database does not hold, so the read is whole and takes no
// snapshot; once one ran, the ring lets the stored points go.
func TestReadsNeverSnapshot(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{RingSize: 8, SnapshotInterval: time.Hour})
	defer db.Close()
	for i := 1; i <= 1000; i++ {
		mustApply(t, db, set("k", float64(i)))
	}
	if got := history(t, db, "k"); !equalFloats(got, seq(1000)) {
		t.Fatalf("history before any snapshot: %d points, want 1..1000", len(got))
	}
	if idx := db.store.Index(); idx != 0 {
		t.Fatalf("a read took a snapshot: the store covers index %d", idx)
	}
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustApply(t, db, set("k", 1001)) // the ring drops what is stored as it takes points
	s := db.index.get("k")
	if pts, lo := s.ring.Points(nil); len(pts) > 8+ring.BlockPoints || lo+uint64(len(pts)) != 1002 {
		t.Fatalf("after a snapshot the ring holds %d points from %d, capacity 8", len(pts), lo)
	}
	if got := history(t, db, "k"); !equalFloats(got, seq(1001)) {
		t.Fatalf("history after the snapshot: %d points, want 1..1001", len(got))
	}
}

// TestStatsHistoryIsExact reads the stored history's totals right after
// each snapshot: they count every point stored, with no compaction pass
// in between (issue 11: they lagged a pass behind).
func TestStatsHistoryIsExact(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{SnapshotInterval: time.Hour, ChunkPoints: -1})
	defer db.Close()
	for round := 1; round <= 3; round++ {
		for i := range 100 {
			mustApply(t, db, set(fmt.Sprintf("k%d", i%7), float64(i)))
		}
		if err := db.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
		h := db.Stats().History
		if h == nil || h.Points != int64(100*round) || h.Chunks < 7 || h.BytesPerPoint <= 0 {
			t.Fatalf("after %d points stored: history %+v", 100*round, h)
		}
	}
}

// TestIdleStoreRunsNoPasses checks that snapshots with nothing new to
// store start no compaction or retention pass, that new data starts a
// compaction pass at the next snapshot and a retention pass a minute
// after the last one at most (fake clock).
func TestIdleStoreRunsNoPasses(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	db := openDB(t, t.TempDir(), Options{SnapshotInterval: time.Hour, ChunkPoints: 16,
		Now: func() time.Time { return time.UnixMilli(clock.Load()) }})
	defer db.Close()
	// Snapshot returns after the snapshot; the passes after it run before
	// the snapshotter takes the next request, so a second one waits for
	// them.
	snapshots := func(n int) SnapshotState {
		t.Helper()
		for range n {
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		return db.Stats().Snapshots
	}
	for i := range 100 {
		mustApply(t, db, set(fmt.Sprintf("k%d", i%5), float64(i)))
	}
	before := snapshots(2)
	if before.CompactionPasses < 1 || before.RetentionPasses < 1 {
		t.Fatalf("after new data and two snapshots: %+v", before)
	}
	// Idle, even for hours: nothing is kept for less than for ever here.
	for range 30 {
		clock.Add(10 * 60_000)
		snapshots(1)
	}
	idle := db.Stats().Snapshots
	if idle.Taken < before.Taken+30 || idle.CompactionPasses != before.CompactionPasses || idle.RetentionPasses != before.RetentionPasses {
		t.Fatalf("30 idle snapshots ran passes: before %+v, after %+v", before, idle)
	}
	mustApply(t, db, set("k0", 1000))
	after := snapshots(2)
	if after.CompactionPasses <= idle.CompactionPasses {
		t.Fatalf("new data ran no compaction pass: idle %+v, after %+v", idle, after)
	}
	if after.RetentionPasses <= idle.RetentionPasses {
		t.Fatalf("new data ran no retention pass, the last an hour and more ago: idle %+v, after %+v", idle, after)
	}
	// More new data within the minute: no retention pass until it is over.
	mustApply(t, db, set("k0", 1001))
	soon := snapshots(2)
	if soon.RetentionPasses != after.RetentionPasses {
		t.Fatalf("a retention pass within a minute of the last: %+v, then %+v", after, soon)
	}
	clock.Add(60_000)
	if later := snapshots(2); later.RetentionPasses <= soon.RetentionPasses {
		t.Fatalf("new data ran no retention pass a minute on: %+v, then %+v", soon, later)
	}
}

// TestRetentionPassWhenDue: an idle store runs a retention pass when the
// stored history may have work, not before, and a minute after the last
// one at the soonest (fake clock).
func TestRetentionPassWhenDue(t *testing.T) {
	pols, err := retention.Parse("* raw:2m")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	var clock atomic.Int64
	clock.Store(t0)
	db := openDB(t, t.TempDir(), Options{SnapshotInterval: time.Hour, Retention: pols,
		Now: func() time.Time { return time.UnixMilli(clock.Load()) }})
	defer db.Close()
	// b's newest point is t0-31s, a's t0-1s: past their keep of 2 minutes
	// (a point is kept while t+1ms > now-keep) from t0+89.001s and
	// t0+119.001s.
	for i := range 10 {
		mustApply(t, db, sample.Op{Code: sample.Set, Key: "a", Value: float64(i), Time: t0 - 10_000 + int64(i)*1000},
			sample.Op{Code: sample.Set, Key: "b", Value: float64(i), Time: t0 - 40_000 + int64(i)*1000})
	}
	// The passes after a snapshot run before the snapshotter takes the
	// next request: the second waits for the first's. It runs none of its
	// own (nothing new, the same clock).
	step := func(at int64, passes, points int64) {
		t.Helper()
		clock.Store(t0 + at)
		for range 2 {
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		st := db.Stats()
		if st.Snapshots.RetentionPasses != passes || st.History == nil || st.History.Points != points {
			t.Fatalf("at t0+%d ms: %d retention passes and %+v stored; want %d passes and %d points",
				at, st.Snapshots.RetentionPasses, st.History, passes, points)
		}
	}
	step(0, 1, 20)       // stores the points; the first pass
	step(61_000, 1, 20)  // a minute on, nothing due yet
	step(89_000, 1, 20)  // still not
	step(90_000, 2, 10)  // b's points are past their keep
	step(120_000, 2, 10) // a's are too, but the last pass ended 30 s ago
	step(150_000, 3, 0)  // a minute after it
	step(600_000, 3, 0)  // nothing is stored: nothing is ever due
}
