package engine

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
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
		db.compactNext = nil
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
	if h.UsedBytesPerPoint > 2 {
		t.Fatalf("%.3f bytes a point on disk, want at most 2", h.UsedBytesPerPoint)
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
