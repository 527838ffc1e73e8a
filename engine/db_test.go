package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

func openDB(t *testing.T, dir string, opts Options) *DB {
	t.Helper()
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return db
}

// abandon stops db the way a crash would: the WAL stays as written, no
// final snapshot is taken.
func abandon(t *testing.T, db *DB) {
	t.Helper()
	if !db.stop() {
		t.Fatal("abandon: already closed")
	}
	db.closeFiles()
}

func apply(t *testing.T, db *DB, ops ...sample.Op) []error {
	t.Helper()
	errs := make([]error, len(ops))
	if err := db.Append(context.Background(), ops, errs); err != nil {
		t.Fatalf("append: %v", err)
	}
	return errs
}

func mustApply(t *testing.T, db *DB, ops ...sample.Op) {
	t.Helper()
	for i, err := range apply(t, db, ops...) {
		if err != nil {
			t.Fatalf("op %d (%+v): %v", i, ops[i], err)
		}
	}
}

func set(k string, v float64) sample.Op  { return sample.Op{Code: sample.Set, Key: k, Value: v} }
func incr(k string, v float64) sample.Op { return sample.Op{Code: sample.Incr, Key: k, Value: v} }
func del(k string) sample.Op             { return sample.Op{Code: sample.Delete, Key: k} }

func values(pts []sample.Point) []float64 {
	out := make([]float64, len(pts))
	for i, p := range pts {
		out[i] = p.V
	}
	return out
}

func history(t *testing.T, db *DB, key string) []float64 {
	t.Helper()
	pts, err := db.Range(context.Background(), key, 0, 1<<62, 0, nil)
	if err != nil {
		t.Fatalf("range %s: %v", key, err)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].T < pts[i-1].T {
			t.Fatalf("range %s: points out of order at %d: %v", key, i, pts)
		}
	}
	return values(pts)
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

func TestOperationsAndErrors(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{})
	defer db.Close()
	errs := apply(t, db,
		set("a", 1), set("a", 2.5), incr("c", 3), incr("c", 4),
		del("missing"), incr("a", 1), set("c", 1), incr("c", -1),
		sample.Op{Code: sample.Set, Key: "", Value: 1},
		sample.Op{Code: sample.Set, Key: "nan"},
		del("a"), set("a", 7),
		set("\xff\xfe", 1), set("ok\xfd", 2),
	)
	want := []error{nil, nil, nil, nil, ErrNotFound, ErrKind, ErrKind, ErrValue, ErrKey, nil, nil, nil, ErrKey, ErrKey}
	for i := range want {
		if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
			t.Errorf("op %d: err %v, want %v", i, errs[i], want[i])
		}
	}
	a, ok := db.Get("a")
	if !ok || a.Value != 7 || a.Kind != sample.Gauge || a.Points != 1 {
		t.Errorf("a = %+v, want 7 with one point (deleted then set again)", a)
	}
	c, _ := db.Get("c")
	if c.Kind != sample.Counter || c.Value != 7 || c.View != 0 || c.Interval != 60000 {
		t.Errorf("c = %+v, want COUNTER total 7, view 0 until its window closes", c)
	}
	if got := history(t, db, "c"); !equalFloats(got, []float64{3, 7}) {
		t.Errorf("history c = %v, want [3 7]", got)
	}
}

// TestDeleteAndCreateInOneGroup: the committer looks up a group's series
// before it takes the ops (find); an op after a DELETE of a series that
// existed before the group must see the new incarnation, or none.
func TestDeleteAndCreateInOneGroup(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{})
	defer db.Close()
	if errs := apply(t, db, set("a", 1), set("a", 2), incr("c", 1)); errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("setup: %v", errs)
	}
	errs := apply(t, db,
		del("a"), del("a"), set("a", 7), incr("a", 1),
		del("c"), set("c", 2), set("c", 3),
	)
	want := []error{nil, ErrNotFound, nil, ErrKind, nil, nil, nil}
	for i := range want {
		if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
			t.Errorf("op %d: err %v, want %v", i, errs[i], want[i])
		}
	}
	if a, ok := db.Get("a"); !ok || a.Value != 7 || a.Kind != sample.Gauge || a.Points != 1 {
		t.Errorf("a = %+v, want 7 with one point (deleted then set again)", a)
	}
	if c, ok := db.Get("c"); !ok || c.Value != 3 || c.Kind != sample.Gauge || c.Points != 2 {
		t.Errorf("c = %+v, want a GAUGE 3 with two points (a COUNTER deleted, then set)", c)
	}
	if got := history(t, db, "c"); !equalFloats(got, []float64{2, 3}) {
		t.Errorf("history c = %v, want [2 3]", got)
	}
}

func TestSeriesLimit(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{MaxSeries: 2})
	defer db.Close()
	errs := apply(t, db, set("a", 1), set("b", 1), set("c", 1), set("a", 2))
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrTooManySeries) || errs[3] != nil {
		t.Fatalf("errs = %v, want only the third to hit the limit", errs)
	}
}

func TestCleanRestartRestoresValuesAndHistory(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{RingSize: 8})
	for i := 1; i <= 50; i++ {
		mustApply(t, db, set("g", float64(i)), incr("n", 1))
	}
	mustApply(t, db, set("gone", 1), del("gone"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, Options{RingSize: 8})
	defer db.Close()
	if g, _ := db.Get("g"); g.Value != 50 || g.Points != 50 {
		t.Errorf("g = %+v", g)
	}
	if n, _ := db.Get("n"); n.Value != 50 || n.Kind != sample.Counter {
		t.Errorf("n = %+v", n)
	}
	if _, ok := db.Get("gone"); ok {
		t.Error("deleted key came back")
	}
	if got := history(t, db, "g"); !equalFloats(got, seq(50)) {
		t.Errorf("history g = %v", got)
	}
	// New points continue the history.
	mustApply(t, db, set("g", 51))
	if got := history(t, db, "g"); !equalFloats(got, seq(51)) {
		t.Errorf("history g after a new point = %v", got)
	}
}

// TestCrashReplay: without a final snapshot, the WAL alone restores state,
// and replaying over a partial snapshot duplicates nothing.
func TestCrashReplay(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{RingSize: 4})
	for i := 1; i <= 20; i++ {
		mustApply(t, db, set("g", float64(i)), incr("n", 2))
	}
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 21; i <= 30; i++ {
		mustApply(t, db, set("g", float64(i)), incr("n", 2))
	}
	mustApply(t, db, del("n"), incr("n", 5))
	abandon(t, db)
	for round := range 2 { // replaying twice must give the same result
		db = openDB(t, dir, Options{RingSize: 4})
		if got := history(t, db, "g"); !equalFloats(got, seq(30)) {
			t.Errorf("round %d: history g = %v", round, got)
		}
		if got := history(t, db, "n"); !equalFloats(got, []float64{5}) {
			t.Errorf("round %d: history n = %v, want [5] (deleted, then a new counter)", round, got)
		}
		abandon(t, db)
	}
}

func walDir(dir string) string { return filepath.Join(dir, "wal") }

func tailSegment(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(walDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if len(e.Name()) == 20 {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return filepath.Join(walDir(dir), names[len(names)-1])
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestTornTailRecovers(t *testing.T) {
	for name, tear := range map[string]func(t *testing.T, seg string){
		"truncated record": func(t *testing.T, seg string) {
			// A whole record written after the acknowledged ones, then cut.
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			appendFile(t, seg, data[len(data)-20:len(data)-7])
		},
		"zero-filled tail": func(t *testing.T, seg string) {
			appendFile(t, seg, make([]byte, 4096))
		},
		"garbage tail": func(t *testing.T, seg string) {
			appendFile(t, seg, []byte{40, 1, 2, 3, 4, 5, 6, 7, 8, 9})
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db := openDB(t, dir, Options{})
			for i := 1; i <= 100; i++ {
				mustApply(t, db, set("k"+strconv.Itoa(i%7), float64(i)))
			}
			abandon(t, db)
			seg := tailSegment(t, dir)
			before := fileSize(t, seg)
			tear(t, seg)
			if fileSize(t, seg) == before {
				t.Fatal("the tear changed nothing")
			}
			db = openDB(t, dir, Options{})
			defer db.Close()
			if got := fileSize(t, seg); got != before {
				t.Fatalf("repaired segment is %d bytes, want the %d acknowledged bytes", got, before)
			}
			for k := range 7 {
				var want []float64
				for i := 1; i <= 100; i++ {
					if i%7 == k {
						want = append(want, float64(i))
					}
				}
				if got := history(t, db, "k"+strconv.Itoa(k)); !equalFloats(got, want) {
					t.Errorf("k%d history = %v, want %v", k, got, want)
				}
			}
			// The repaired log takes new writes and keeps them.
			mustApply(t, db, set("k1", 1000))
			if db.Index() != 101 {
				t.Errorf("index after repair and a write = %d, want 101", db.Index())
			}
		})
	}
}

func TestCorruptionInTheMiddleRefusesToStart(t *testing.T) {
	t.Run("tail segment", func(t *testing.T) {
		dir := t.TempDir()
		db := openDB(t, dir, Options{})
		for i := 1; i <= 50; i++ {
			mustApply(t, db, set("k", float64(i)))
		}
		abandon(t, db)
		seg := tailSegment(t, dir)
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0xff
		if err := os.WriteFile(seg, data, 0o640); err != nil {
			t.Fatal(err)
		}
		_, err = Open(dir, Options{})
		if !errors.Is(err, wal.ErrCorrupt) {
			t.Fatalf("open = %v, want a corruption error", err)
		}
		var ce *wal.CorruptionError
		if !errors.As(err, &ce) || ce.Path == "" || ce.Offset <= 0 {
			t.Fatalf("error %v does not say where", err)
		}
		t.Logf("error: %v", err)
	})
	t.Run("older segment", func(t *testing.T) {
		dir := t.TempDir()
		db := openDB(t, dir, Options{SegmentSize: 1024, SnapshotInterval: time.Hour})
		for i := 1; i <= 300; i++ {
			mustApply(t, db, set("k", float64(i)))
		}
		abandon(t, db)
		seg := filepath.Join(walDir(dir), "00000000000000000001")
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		data[200] ^= 0x55
		if err := os.WriteFile(seg, data, 0o640); err != nil {
			t.Fatal(err)
		}
		_, err = Open(dir, Options{SegmentSize: 1024})
		if !errors.Is(err, wal.ErrCorrupt) {
			t.Fatalf("open = %v, want a corruption error", err)
		}
		t.Logf("error: %v", err)
	})
}

func dirSize(t *testing.T, dir string) (int64, int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n, len(ents)
}

// TestWALBoundedUnderLoad: with snapshots running, the WAL keeps only the
// segments after the snapshot, however much is written.
func TestWALBoundedUnderLoad(t *testing.T) {
	dir := t.TempDir()
	const seg = 32 << 10
	db := openDB(t, dir, Options{SegmentSize: seg, SnapshotRecords: 2000, SnapshotInterval: time.Hour})
	defer db.Close()
	var maxSize int64
	ops := make([]sample.Op, 100)
	for round := range 200 {
		for i := range ops {
			ops[i] = set("key"+strconv.Itoa(i), float64(round))
		}
		mustApply(t, db, ops...)
		if round%20 == 19 {
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
			size, _ := dirSize(t, walDir(dir))
			maxSize = max(maxSize, size)
		}
	}
	st := db.Stats()
	if st.Index != 20000 || st.SnapshotIndex != 20000 {
		t.Fatalf("stats = %+v", st)
	}
	total := int64(20000 * 25) // ~25 bytes a record
	if maxSize > 3*seg || maxSize*4 > total {
		t.Errorf("wal grew to %d bytes for %d written; want at most a few %d-byte segments", maxSize, total, seg)
	}
	if st.WALFirstIndex < 15000 {
		t.Errorf("wal first index %d: front not truncated", st.WALFirstIndex)
	}
	// Stats says what the WAL holds on disk, and how long a snapshot took.
	if size, _ := dirSize(t, walDir(dir)); st.WALBytes != size || size == 0 {
		t.Errorf("stats say %d wal bytes, the directory holds %d", st.WALBytes, size)
	}
	if st.Snapshots.LastSeconds <= 0 || st.Snapshots.LastSeconds > 60 {
		t.Errorf("last snapshot took %v s", st.Snapshots.LastSeconds)
	}
	t.Logf("max wal size %d bytes, %+v", maxSize, st)
}

func TestChangesFromMemoryAndWAL(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{EventBuffer: 16, SegmentSize: 1024, SnapshotInterval: time.Hour})
	defer db.Close()
	for i := 1; i <= 100; i++ {
		mustApply(t, db, set("k"+strconv.Itoa(i%3), float64(i)))
	}
	mustApply(t, db, del("k1"))
	var got []sample.Change
	after := uint64(0)
	for {
		cs, err := db.Changes(after, nil, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 0 {
			break
		}
		got = append(got, cs...)
		after = cs[len(cs)-1].ID
	}
	if len(got) != 101 {
		t.Fatalf("%d changes, want 101", len(got))
	}
	for i, c := range got {
		if c.ID != uint64(i+1) {
			t.Fatalf("change %d has id %d", i, c.ID)
		}
		if i < 100 && (c.Value != float64(i+1) || c.Key != "k"+strconv.Itoa((i+1)%3) || c.Deleted) {
			t.Fatalf("change %d = %+v", i, c)
		}
	}
	if last := got[100]; !last.Deleted || last.Key != "k1" {
		t.Fatalf("last change = %+v, want the delete of k1", last)
	}
	// Once snapshotted and truncated, old changes are gone.
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Changes(0, nil, 10); !errors.Is(err, ErrGone) {
		t.Fatalf("changes after truncation: err %v, want ErrGone", err)
	}
}

func TestCounterWindows(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{MinWindow: time.Millisecond})
	defer db.Close()
	// Every entry of the feed from the start: on a busy machine the first
	// window may close before this goroutine could read the feed after the
	// INCRs.
	pos := db.FeedHead()
	mustApply(t, db, sample.Op{Code: sample.Incr, Key: "hits", Value: 2, Interval: 50}, incr("hits", 3))
	var feed []sample.Change
	for len(feed) < 8 {
		<-db.NotifyFeed(pos)
		cs, ok := db.Feed(pos, nil, 100)
		if !ok {
			t.Fatal("the feed dropped entries")
		}
		for _, c := range cs {
			feed = append(feed, c)
			pos = c.Pos
		}
	}
	var views []float64
	for _, c := range feed[:8] {
		views = append(views, c.Value)
	}
	if !equalFloats(views, []float64{0, 0, 5, 0, 0, 0, 0, 0}) {
		t.Fatalf("events = %v, want [0 0 5 0 0 0 0 0]: the two INCRs (no window closed yet), the count, then empty windows", views)
	}
	// The INCRs, the count and the first empty window (the view went from
	// 5 to 0) are stored; later empty windows change nothing: ticks, with
	// the ID of the last stored change and no WAL record.
	for i, c := range feed[:8] {
		if tick := i >= 4; c.Tick != tick || (tick && c.ID != feed[3].ID) || (!tick && c.ID != feed[0].ID+uint64(i)) {
			t.Fatalf("feed entry %d: %+v", i, c)
		}
	}
	if idx := db.Index(); idx != feed[3].ID {
		t.Fatalf("index %d after idle windows, want %d: they were stored", idx, feed[3].ID)
	}
	cs, err := db.Changes(feed[0].ID-1, nil, 100)
	if err != nil || len(cs) != 4 {
		t.Fatalf("stored changes %v %v, want the 4 stored ones", cs, err)
	}
	if h, _ := db.Get("hits"); h.View != 0 || h.Value != 5 {
		t.Fatalf("hits = %+v", h)
	}
}

// An INCR may not ask for a window shorter than MinWindow: each window end
// costs the committer work, so a 1 ms window would make one key cost a
// thousand operations a second.
func TestMinWindow(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{})
	defer db.Close()
	errs := apply(t, db, sample.Op{Code: sample.Incr, Key: "tick", Value: 1, Interval: 1},
		sample.Op{Code: sample.Incr, Key: "ok", Value: 1, Interval: 1000},
		sample.Op{Code: sample.Incr, Key: "ok", Value: 1, Interval: 999})
	if !errors.Is(errs[0], ErrValue) || !strings.Contains(errs[0].Error(), "shorter than the minimum of 1000 ms") {
		t.Errorf("INCR with a 1 ms window: %v", errs[0])
	}
	if errs[1] != nil || !errors.Is(errs[2], ErrValue) {
		t.Errorf("a 1 s window: %v; then 999 ms on the same key: %v", errs[1], errs[2])
	}
	if _, ok := db.Get("tick"); ok {
		t.Error("the refused INCR created its key")
	}
}

// TestRangeAfterRingWraps: history older than the ring comes from the
// snapshot database, even when the ring wrapped before a snapshot ran.
func TestRangeAfterRingWraps(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{RingSize: 4, SnapshotInterval: time.Hour})
	defer db.Close()
	for i := 1; i <= 30; i++ {
		mustApply(t, db, set("g", float64(i)))
	}
	if got := history(t, db, "g"); !equalFloats(got, seq(30)) {
		t.Fatalf("history = %v", got)
	}
	pts, err := db.Range(context.Background(), "g", 0, 1<<62, 5, nil)
	if err != nil || !equalFloats(values(pts), []float64{26, 27, 28, 29, 30}) {
		t.Fatalf("limit 5 = %v, %v", values(pts), err)
	}
}

func TestCounterSetReset(t *testing.T) {
	// A frozen clock: with a real one, the committer can see the window due
	// (and close it) before the last write arrives.
	var clock atomic.Int64
	clock.Store(1_000_000)
	db := openDB(t, t.TempDir(), Options{Now: func() time.Time { return time.UnixMilli(clock.Load()) }})
	defer db.Close()
	cs := func(v float64) sample.Op { return sample.Op{Code: sample.CounterSet, Key: "c", Value: v} }
	mustApply(t, db, cs(10), cs(15), cs(3), cs(8), cs(9))
	if got := history(t, db, "c"); !equalFloats(got, []float64{10, 15, 3, 8, 9}) {
		t.Fatalf("history = %v", got)
	}
	clock.Add(int64(2 * time.Minute / time.Millisecond))
	// Any write makes the committer look at the clock and close the window.
	mustApply(t, db, sample.Op{Code: sample.Set, Key: "other", Value: 1})
	if c, _ := db.Get("c"); c.View != 24 { // 10 + 5 + 3 (a reset) + 5 + 1
		t.Fatalf("window count = %v, want 24", c.View)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{})
	defer db.Close()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestWindowsMissedWhileDown: windows that ended while the process was
// down close as one at startup, and the next window stays on the grid.
func TestWindowsMissedWhileDown(t *testing.T) {
	var clock atomic.Int64
	clock.Store(1_000_000)
	opts := Options{Now: func() time.Time { return time.UnixMilli(clock.Load()) }}
	dir := t.TempDir()
	db := openDB(t, dir, opts)
	mustApply(t, db, sample.Op{Code: sample.Incr, Key: "hits", Value: 5, Interval: 1000}, incr("hits", 2))
	// Changes after the last write before the crash: the committer of the
	// reopened store may close the overdue window before Open returns.
	after := db.Index()
	abandon(t, db)

	clock.Store(1_005_500) // five windows later, mid-window
	db = openDB(t, dir, opts)
	defer db.Close()
	wait := func() sample.Change {
		t.Helper()
		for {
			<-db.Notify(after)
			cs, err := db.Changes(after, nil, 1) // stored changes: window ends that count
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) > 0 {
				after = cs[0].ID
				return cs[0]
			}
		}
	}
	if c := wait(); c.Key != "hits" || c.Value != 7 {
		t.Fatalf("first window after restart = %+v, want all 7 counted while down", c)
	}
	mustApply(t, db, incr("hits", 1))
	wait()                 // the INCR itself
	clock.Store(1_006_000) // the grid: windows end at 1_000_000 + k*1000
	if c := wait(); c.Value != 1 {
		t.Fatalf("next window = %+v, want 1", c)
	}
	if h, _ := db.Get("hits"); h.View != 1 || h.Value != 8 {
		t.Fatalf("hits = %+v", h)
	}
}

// Writes that carry their own time are stored at it, kept in order, and
// survive a crash; the server's own times never go backwards.
func TestExplicitTimes(t *testing.T) {
	var clock atomic.Int64
	clock.Store(10_000_000)
	dir := t.TempDir()
	opts := Options{Now: func() time.Time { return time.UnixMilli(clock.Load()) }, SnapshotInterval: time.Hour}
	db := openDB(t, dir, opts)
	at := func(k string, v float64, ms int64) sample.Op {
		return sample.Op{Code: sample.Set, Key: k, Value: v, Time: ms}
	}
	mustApply(t, db, at("g", 1, 9_000_000), at("g", 2, 9_000_000), at("g", 3, 9_500_000))
	errs := apply(t, db,
		at("g", 4, 9_400_000), // older than the newest point
		at("g", 5, 10_000_000+MaxFuture.Milliseconds()+1),
		at("g", 6, -5),
		at("g", 7, 10_000_000+MaxFuture.Milliseconds()), // at the limit: taken
	)
	for i, want := range []error{ErrOutOfOrder, ErrValue, ErrValue, nil} {
		if !errors.Is(errs[i], want) {
			t.Errorf("write %d: %v, want %v", i, errs[i], want)
		}
	}
	// A write without a time now lands at the newest point's time, not
	// before it.
	mustApply(t, db, set("g", 8))
	future := 10_000_000 + MaxFuture.Milliseconds()
	want := []sample.Point{{T: 9_000_000, V: 1}, {T: 9_000_000, V: 2}, {T: 9_500_000, V: 3}, {T: future, V: 7}, {T: future, V: 8}}
	check := func(db *DB) {
		t.Helper()
		pts, err := db.Range(context.Background(), "g", 0, 1<<62, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) != len(want) {
			t.Fatalf("history %v, want %v", pts, want)
		}
		for i := range want {
			if pts[i] != want[i] {
				t.Fatalf("history %v, want %v", pts, want)
			}
		}
		if g, _ := db.Get("g"); g.Updated != want[len(want)-1].T || g.Value != 8 {
			t.Fatalf("state %+v", g)
		}
	}
	check(db)
	abandon(t, db)
	db = openDB(t, dir, opts)
	defer db.Close()
	check(db)
	// The order holds after a restart too.
	if errs := apply(t, db, at("g", 9, 9_999_999)); !errors.Is(errs[0], ErrOutOfOrder) {
		t.Fatalf("after restart: %v", errs[0])
	}
}

// A timestamped SET marked as a resend (the command protocol's "SET key
// value @ms") that repeats the key's newest point succeeds and stores
// nothing, before and after a crash; the same time with another value, or
// an older time, is refused.
func TestResend(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SnapshotInterval: time.Hour, Fsync: FsyncAlways, FsyncInterval: time.Hour}
	db := openDB(t, dir, opts)
	now := time.Now().UnixMilli()
	resend := func(k string, v float64, ms int64) sample.Op {
		return sample.Op{Code: sample.Set, Key: k, Value: v, Time: ms, Resend: true}
	}
	// The first write comes unacknowledged: with FsyncInterval an hour it
	// is not fsynced when the resend arrives, and the resend's +OK waits
	// for that fsync.
	errs := make([]error, 1)
	if err := db.AppendUnacked(context.Background(), []sample.Op{resend("g", 1.5, now-2000)}, errs); err != nil || errs[0] != nil {
		t.Fatalf("unacked write: %v %v", err, errs[0])
	}
	if st := db.Stats(); st.SyncedIndex >= st.Index {
		t.Fatalf("the unacked write is fsynced already (%d of %d): the test shows nothing", st.SyncedIndex, st.Index)
	}
	mustApply(t, db, resend("g", 1.5, now-2000))
	if st := db.Stats(); st.SyncedIndex < st.Index || st.Index != 1 {
		t.Fatalf("after the resend's reply: index %d, synced %d; want 1, 1", st.Index, st.SyncedIndex)
	}
	mustApply(t, db, resend("g", 2.5, now-1000), resend("g", 2.5, now-1000)) // in one group too
	errs = apply(t, db, resend("g", 3, now-1000), resend("g", 1.5, now-2000), resend("g", 4, now-3000))
	for i, err := range errs {
		if !errors.Is(err, ErrOutOfOrder) {
			t.Errorf("write %d: %v, want ErrOutOfOrder", i, err)
		}
	}
	// Without the mark a write at the newest time is another point, as
	// before (Graphite, collectd).
	mustApply(t, db, sample.Op{Code: sample.Set, Key: "g", Value: 2.5, Time: now - 1000})
	want := []sample.Point{{T: now - 2000, V: 1.5}, {T: now - 1000, V: 2.5}, {T: now - 1000, V: 2.5}}
	check := func(db *DB) {
		t.Helper()
		pts, err := db.Range(context.Background(), "g", 0, 1<<62, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(pts, want) {
			t.Fatalf("history %v, want %v", pts, want)
		}
	}
	check(db)
	if st := db.Stats(); st.Index != 3 {
		t.Fatalf("wal index %d: want 3 records, the resends storing none", st.Index)
	}
	abandon(t, db)
	db = openDB(t, dir, opts)
	defer db.Close()
	mustApply(t, db, resend("g", 2.5, now-1000))
	check(db)
}

// A wrapping counter (collectd's COUNTER) counts across a wrap the way
// collectd does, where a plain COUNTER-SET sees a reset.
func TestCounterSetWrap(t *testing.T) {
	var clock atomic.Int64
	clock.Store(1_000_000)
	db := openDB(t, t.TempDir(), Options{Now: func() time.Time { return time.UnixMilli(clock.Load()) }})
	defer db.Close()
	w := func(k string, v float64) sample.Op {
		return sample.Op{Code: sample.CounterSet, Key: k, Value: v, Wrap: true}
	}
	mustApply(t, db, w("c32", 4294967000), w("c32", 500), w("c64", 1e19), w("c64", 100),
		sample.Op{Code: sample.CounterSet, Key: "reset", Value: 4294967000}, sample.Op{Code: sample.CounterSet, Key: "reset", Value: 500})
	clock.Add(int64(2 * time.Minute / time.Millisecond))
	mustApply(t, db, set("other", 1))
	for key, want := range map[string]float64{
		"c32":   4294967000 + (4294967295 - 4294967000 + 500 + 1),
		"c64":   1e19 + (18446744073709551615 - 1e19 + 100 + 1),
		"reset": 4294967000 + 500,
	} {
		if c, _ := db.Get(key); c.View != want {
			t.Errorf("%s: window count %v, want %v", key, c.View, want)
		}
	}
	if got := history(t, db, "c32"); !equalFloats(got, []float64{4294967000, 500}) {
		t.Errorf("c32 history %v: the observed values", got)
	}
}

// A delta gauge (statsd's +N|g) adds to the current value, from 0 for a
// new key, and stores the result as an ordinary point.
func TestGaugeDelta(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{})
	defer db.Close()
	d := func(v float64) sample.Op { return sample.Op{Code: sample.Set, Key: "g", Value: v, Delta: true} }
	mustApply(t, db, d(5), d(-2), set("g", 10), d(0.5))
	if got := history(t, db, "g"); !equalFloats(got, []float64{5, 3, 10, 10.5}) {
		t.Fatalf("history %v", got)
	}
	if errs := apply(t, db, d(math.MaxFloat64), d(math.MaxFloat64)); errs[0] != nil || !errors.Is(errs[1], ErrValue) {
		t.Fatalf("overflow: %v", errs)
	}
}

// After snapshots, compaction merges each series' small chunks; history
// reads are unchanged and the stats report the stored size.
func TestCompactionAfterSnapshots(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{RingSize: 4, SnapshotInterval: time.Hour, ChunkPoints: 64})
	var want []float64
	for snap := range 30 {
		for i := range 5 {
			v := float64(snap*5+i) / 100
			mustApply(t, db, set("g", v), incr("c", 1))
			want = append(want, v)
		}
		if err := db.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := db.compact(); err != nil {
			t.Fatal(err)
		}
	}
	if got := history(t, db, "g"); !equalFloats(got, want) {
		t.Fatalf("history after compaction %v", got)
	}
	st := db.Stats().History
	// A chunk per snapshot would be 60. Tails move to history in chunks of
	// at least half the 64 points; a tail holds a few pieces.
	if max := int64(2 * (150/32 + 1)); st == nil || st.Points != 300 || st.Chunks > max || st.BytesPerPoint <= 0 || st.FileBytesPerPoint < st.BytesPerPoint {
		t.Fatalf("history stats %+v: want 300 points in at most %d chunks", st, max)
	}
	db.Close()
	db = openDB(t, dir, Options{RingSize: 4})
	defer db.Close()
	if got := history(t, db, "g"); !equalFloats(got, want) {
		t.Fatalf("history after a restart %v", got)
	}
	if got := history(t, db, "c"); len(got) != 150 || got[149] != 150 {
		t.Fatalf("counter history %v", got)
	}
}

// quietOptions are Options whose snapshots start only on quiet (checked
// every 5 ms, at least records waiting): each check's outcome is sent on
// the returned channel, and each snapshot transaction goes through commit.
func quietOptions(records int, commit func(c func() error) error) (Options, chan bool) {
	checks := make(chan bool, 64)
	return Options{
		SnapshotInterval:     time.Hour,
		SnapshotQuiet:        5 * time.Millisecond,
		SnapshotQuietRecords: records,
		faults: &faults{
			quiet: func(started bool) {
				select {
				case checks <- started:
				default:
				}
			},
			commit: commit,
		},
	}, checks
}

// TestQuietSnapshot: once writes stop, a burst of SnapshotQuietRecords
// records or more is stored at the next quiet check, without waiting for
// SnapshotInterval; a smaller one waits for the interval.
func TestQuietSnapshot(t *testing.T) {
	stored := make(chan struct{}, 64)
	opts, checks := quietOptions(100, func(c func() error) error {
		err := c()
		stored <- struct{}{}
		return err
	})
	db := openDB(t, t.TempDir(), opts)
	defer db.Close()
	var ops []sample.Op
	for i := range 99 {
		ops = append(ops, set(fmt.Sprintf("q.%d", i), float64(i)))
	}
	mustApply(t, db, ops...)
	drain := func() {
		for {
			select {
			case <-checks:
			default:
				return
			}
		}
	}
	drain() // checks that may have seen the writes land
	for range 3 {
		if <-checks {
			t.Fatal("a quiet snapshot started with 99 records waiting, under SnapshotQuietRecords (100)")
		}
	}
	if got := db.Stats().SnapshotIndex; got != 0 {
		t.Fatalf("snapshot index %d before any snapshot", got)
	}
	mustApply(t, db, set("q.last", 1))
	for n := 0; !<-checks; n++ {
		if n == 1000 {
			t.Fatal("no quiet snapshot after 1000 checks with 100 records waiting")
		}
	}
	<-stored
	for i := range 3 {
		if <-checks {
			t.Fatal("a quiet snapshot started again with nothing new to store")
		}
		// The snapshotter checks again only once the snapshot is over.
		if st := db.Stats(); i == 0 && (st.SnapshotIndex != st.Index || st.Index != 100) {
			t.Fatalf("after the quiet snapshot: snapshot index %d, index %d; want both 100", st.SnapshotIndex, st.Index)
		}
	}
}

// TestQuietSnapshotFailureWaitsForInterval: a quiet snapshot that fails
// (a full disk) is not tried again at every quiet check while nothing new
// comes; the next write makes it due again.
func TestQuietSnapshotFailureWaitsForInterval(t *testing.T) {
	var commits atomic.Int64
	opts, checks := quietOptions(1, func(c func() error) error {
		if commits.Add(1) == 1 {
			return fmt.Errorf("write snapshot: %w", syscall.ENOSPC)
		}
		return c()
	})
	db := openDB(t, t.TempDir(), opts)
	defer db.Close()
	mustApply(t, db, set("q.a", 1))
	for n := 0; !<-checks; n++ {
		if n == 1000 {
			t.Fatal("no quiet snapshot after 1000 checks")
		}
	}
	for range 5 {
		if <-checks {
			t.Fatal("a failed quiet snapshot was tried again with nothing new written")
		}
	}
	if got := commits.Load(); got != 1 {
		t.Fatalf("%d snapshot transactions, want the one that failed", got)
	}
	mustApply(t, db, set("q.a", 2))
	for n := 0; !<-checks; n++ {
		if n == 1000 {
			t.Fatal("no quiet snapshot after a new write")
		}
	}
	<-checks // the snapshot is over
	if st := db.Stats(); st.SnapshotIndex != st.Index {
		t.Fatalf("snapshot index %d, index %d after the second quiet snapshot", st.SnapshotIndex, st.Index)
	}
}
