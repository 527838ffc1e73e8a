package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/retention"
)

// TestRetention, with a fake clock: raw points are averaged into each
// archive exactly, expire after their keep once every archive has them,
// archives expire after theirs, and a range read across raw points and
// archives is one ordered series without duplicates.
func TestRetention(t *testing.T) {
	pols, err := retention.Parse("* raw:2m,10s:40m,1m:1h avg")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	var clock atomic.Int64
	clock.Store(t0 + 30*60_000)
	dir := t.TempDir()
	opts := Options{Now: func() time.Time { return time.UnixMilli(clock.Load()) }, SnapshotInterval: time.Hour,
		ChunkPoints: 100, Retention: pols, RingSize: 4}
	db := openDB(t, dir, opts)
	defer func() { db.Close() }()
	retainAll := func() {
		t.Helper()
		db.snapMu.Lock()
		db.retention.next = nil          // a pass from the start,
		db.retention.ended = time.Time{} // a minute after the last
		db.snapMu.Unlock()
		if err := db.retain(); err != nil {
			t.Fatal(err)
		}
	}
	// 1800 points, one a second from t0, value = seconds since t0; a
	// snapshot every 100 points, so raw history is 18 chunks of 100, and
	// a retention pass after each (the clock stands still: passes run a
	// minute apart by themselves).
	for i := range 1800 {
		mustApply(t, db, sample.Op{Code: sample.Set, Key: "g", Value: float64(i), Time: t0 + int64(i)*1000})
		if (i+1)%100 == 0 {
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
			retainAll()
		}
	}
	read := func() []sample.Point {
		t.Helper()
		pts, err := db.Range(context.Background(), "g", 0, 1<<62, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(pts); i++ {
			if pts[i].T <= pts[i-1].T {
				t.Fatalf("points out of order or doubled at %d: %v %v", i, pts[i-1], pts[i])
			}
		}
		return pts
	}
	// want builds the expected series: per segment, archive points of
	// step seconds with starts in [from, to) seconds, then raw points from
	// rawFrom seconds on.
	type seg struct{ step, from, to int }
	want := func(rawFrom int, segs ...seg) string {
		var w []sample.Point
		for _, g := range segs {
			for st := g.from; st < g.to; st += g.step {
				w = append(w, sample.Point{T: t0 + int64(st)*1000, V: float64(st) + float64(g.step-1)/2}) // the mean of st..st+step-1
			}
		}
		for s := rawFrom; s < 1800; s++ {
			w = append(w, sample.Point{T: t0 + int64(s)*1000, V: float64(s)})
		}
		return fmt.Sprint(w)
	}
	check := func(when string, w string) {
		t.Helper()
		if got := fmt.Sprint(read()); got != w {
			t.Fatalf("%s:\n%s\nwant\n%s", when, got, w)
		}
	}

	// Retention ran after every snapshot: each wrote the 10 s steps
	// completed by its 100 points, so the 10 s archive is in chunks of
	// steps [100k-10, 100k+90) s, and the 1 m archive in chunks too.

	// At t0+30m: raw is kept from now-2m (1680 s); before that the 10 s
	// archive, whole (kept 40 m).
	retainAll()
	check("at +30m", want(1680, seg{10, 0, 1680}))
	st := db.Stats()
	if st.Archived != 179+29 || st.Expired != 16 { // 10 s steps to 1790, 1 m steps to 1740; raw chunks ending before 1680
		t.Fatalf("archived %d points, expired %d chunks; want 208 and 16", st.Archived, st.Expired)
	}

	// At t0+50m: 10 s chunks ending 40 m ago are gone (the one starting
	// at 590 s stays); the 1 m archive serves before them. Raw stays from
	// the 1 m watermark (1740 s), the oldest of every archive's.
	clock.Store(t0 + 50*60_000)
	retainAll()
	w50 := want(1740, seg{60, 0, 590}, seg{10, 590, 1740})
	check("at +50m", w50)

	// A restart changes nothing.
	db.Close()
	db = openDB(t, dir, opts)
	check("after a restart", w50)

	// At t0+2h: both archives are gone, their points all older than
	// their keep. The raw points after the last complete step stay until
	// newer points complete it.
	clock.Store(t0 + 120*60_000)
	retainAll()
	check("at +2h", want(1740))

	// Deleting the key removes its archives and watermarks with it.
	mustApply(t, db, del("g"))
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustApply(t, db, sample.Op{Code: sample.Set, Key: "g", Value: 5})
	if pts := read(); len(pts) != 1 || pts[0].V != 5 {
		t.Fatalf("after DELETE and SET: %v", pts)
	}
}

// TestSteadyStateFileStopsGrowing: under a steady load with retention,
// space freed by expiry is reused, so after the keeps have been reached
// the database file no longer grows. Fake clock: 200 series, a point every
// 10 s, raw kept 10 minutes and 1-minute means an hour, 8 hours in all.
func TestSteadyStateFileStopsGrowing(t *testing.T) {
	pols, err := retention.Parse("* raw:10m,1m:1h avg")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	var clock atomic.Int64
	clock.Store(t0)
	dir := t.TempDir()
	db := openDB(t, dir, Options{Now: func() time.Time { return time.UnixMilli(clock.Load()) }, SnapshotInterval: time.Hour,
		Retention: pols, RingSize: 4, Fsync: FsyncNever}) // durability is not under test
	defer db.Close()
	const series = 200
	ops := make([]sample.Op, series)
	errs := make([]error, series)
	size := func() int64 {
		st, err := os.Stat(filepath.Join(dir, "snapshot.db"))
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	var sizes, used []int64
	for p := range 8 * 360 { // 8 hours at 10 s
		clock.Store(t0 + int64(p)*10_000)
		for s := range ops {
			ops[s] = sample.Op{Code: sample.Set, Key: fmt.Sprintf("s%02d", s), Value: float64((p*7+s*13)%1000) / 10}
		}
		if err := db.Append(context.Background(), ops, errs); err != nil {
			t.Fatal(err)
		}
		if (p+1)%30 == 0 { // a snapshot every 5 minutes, then compaction and retention
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
			db.compact()
			db.retain()
		}
		if (p+1)%360 == 0 {
			sizes = append(sizes, size())
			used = append(used, db.Stats().History.UsedBytes)
		}
	}
	t.Logf("snapshot.db at each hour: file %v, pages in use %v", sizes, used)
	// Pages in use stay level too (within a fifth), not just the file,
	// which bbolt grows in doubling steps.
	for h := 3; h < len(used); h++ {
		if float64(used[h]) > 1.2*float64(used[2]) {
			t.Fatalf("pages in use grew from %d bytes at hour 3 to %d at hour %d", used[2], used[h], h+1)
		}
	}
	// The keeps are reached after an hour and ten minutes; from the third
	// hour on the file must not grow.
	for h := 3; h < len(sizes); h++ {
		if sizes[h] > sizes[2] {
			t.Fatalf("the file grew from %d bytes at hour 3 to %d at hour %d: freed space is not reused", sizes[2], sizes[h], h+1)
		}
	}
	if st := db.Stats(); st.Expired == 0 || st.Archived == 0 {
		t.Fatalf("retention did not run: %+v", st)
	}
}
