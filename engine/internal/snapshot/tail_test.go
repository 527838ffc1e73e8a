package snapshot

import (
	"bytes"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// storedChunks returns the point counts of the history chunks of key.
func storedChunks(t *testing.T, s *Store, key string) []uint64 {
	t.Helper()
	var out []uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHistory).Cursor()
		prefix := seriesPrefix(nil, key)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			n, _, _, err := header(bucketHistory, k, v)
			if err != nil {
				return err
			}
			out = append(out, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// storedState returns the stored state of key, its tail copied.
func storedState(t *testing.T, s *Store, key string) State {
	t.Helper()
	var st State
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSeries).Get([]byte(key))
		if v == nil {
			return fmt.Errorf("no state for %q", key)
		}
		if err := readState([]byte(key), v, &st); err != nil {
			return err
		}
		st.Tail = bytes.Clone(st.Tail)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Snapshots of a few points each go into the series' tail, which moves
// into history as whole chunks of at most the limit; every read (History,
// Newest, below an ordinal) sees the history and the tail as one run, and
// the totals stay exact.
func TestTailMovesToHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 10
	s.SetChunkPoints(limit)
	keys := []string{"a", "b"}
	all := map[string][]sample.Point{}
	for snap := range 60 {
		var ups []Update
		for ki, k := range keys {
			n := 1 + (snap*3+ki)%4 // 1..4 points a snapshot
			first := uint64(len(all[k])) + 1
			var pts []sample.Point
			for i := range n {
				o := first + uint64(i)
				pts = append(pts, sample.Point{T: int64(o) * 1000, V: float64(o%17) / 10})
			}
			all[k] = append(all[k], pts...)
			st := &State{Key: k, Kind: sample.Gauge, Value: pts[n-1].V, Updated: pts[n-1].T, Ordinal: uint64(len(all[k])), Created: 1}
			ups = append(ups, Update{Key: k, State: st, Points: pts, FirstOrdinal: first})
		}
		if err := s.Commit(uint64(snap+1), ups); err != nil {
			t.Fatal(err)
		}
		checkTotals(t, s)
		for _, k := range keys {
			want := all[k]
			got, err := s.History(k, 1, 1<<62, 0, 1<<62, nil, nil)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("snapshot %d: history of %s %v (%v), want %v", snap, k, got, err, want)
			}
			before := uint64(len(want)) - uint64(snap%5) // inside the tail, at times
			if got, _ := s.History(k, 1, before, 0, 1<<62, nil, nil); !slices.Equal(got, want[:before-1]) {
				t.Fatalf("snapshot %d: history of %s below %d: %v", snap, k, before, got)
			}
			for _, n := range []int{1, 3, 11, 25} {
				got, err := s.Newest(k, 1, before, n, nil, nil)
				w := want[:before-1]
				w = w[max(len(w)-n, 0):]
				if err != nil || !slices.Equal(got, w) {
					t.Fatalf("snapshot %d: newest %d of %s below %d: %v (%v), want %v", snap, n, k, before, got, err, w)
				}
			}
			st := storedState(t, s, k)
			ti, err := readTail(st.Tail)
			if err != nil {
				t.Fatal(err)
			}
			if ti.points >= limit || (ti.pieces > 0 && st.TailFirst+ti.points-1 != st.Ordinal) {
				t.Fatalf("snapshot %d: tail of %s: %+v from %d, state at %d", snap, k, ti, st.TailFirst, st.Ordinal)
			}
			var inHistory uint64
			for _, n := range storedChunks(t, s, k) {
				// The old tail moves alone when the new points (at most 4)
				// would take it past the limit.
				if n > limit || n < limit-4 {
					t.Fatalf("snapshot %d: a history chunk of %s holds %d points", snap, k, n)
				}
				inHistory += n
			}
			if inHistory+ti.points != uint64(len(want)) {
				t.Fatalf("snapshot %d: %d points in history and %d in the tail of %s, want %d", snap, inHistory, ti.points, k, len(want))
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := CheckFile(path)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("check: %v %v", err, rep.Problems)
	}
	// Reopened, a file counts the same totals when it has to count them.
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kept := checkTotals(t, s)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyTotals) }); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(s.loadTotals); err != nil {
		t.Fatal(err)
	}
	if got := checkTotals(t, s); got != kept {
		t.Fatalf("counted at open %+v, kept %+v", got, kept)
	}
}

// A series that gets one point a snapshot keeps its tail in few pieces
// (merged as a binary counter), each point re-encoded a few times at
// most, not once per snapshot.
func TestTailPiecesOfASlowSeries(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var all []sample.Point
	for i := range uint64(TailPoints - 1) {
		p := sample.Point{T: int64(i) * 10_000, V: float64(i % 5)}
		all = append(all, p)
		st := &State{Key: "g", Kind: sample.Gauge, Ordinal: i + 1, Created: 1}
		if err := s.Commit(i+1, []Update{{Key: "g", State: st, Points: []sample.Point{p}, FirstOrdinal: i + 1}}); err != nil {
			t.Fatal(err)
		}
		ti, err := readTail(storedState(t, s, "g").Tail)
		if err != nil || ti.points != i+1 {
			t.Fatalf("after %d points: a tail of %+v (%v)", i+1, ti, err)
		}
		// Pieces under smallPiece form a binary counter: at most one of
		// each power of two; bigger ones hold smallPiece points or more.
		if limit := bits.Len64(i+1) + int(i+1)/smallPiece; ti.pieces > limit {
			t.Fatalf("after %d points: %d pieces, want at most %d", i+1, ti.pieces, limit)
		}
	}
	if got, _ := s.History("g", 1, 1<<62, 0, 1<<62, nil, nil); !slices.Equal(got, all) {
		t.Fatalf("history %v", got)
	}
	checkTotals(t, s)
}

// A tail moves to history once its points cover the series' span, however
// few: expiry deletes whole chunks and must follow time.
func TestTailSpan(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetMaxSpan(func(key string) int64 { return 100 })
	for i := range uint64(12) {
		st := &State{Key: "g", Kind: sample.Gauge, Ordinal: i + 1, Created: 1}
		p := sample.Point{T: int64(i) * 40, V: 1}
		if err := s.Commit(i+1, []Update{{Key: "g", State: st, Points: []sample.Point{p}, FirstOrdinal: i + 1}}); err != nil {
			t.Fatal(err)
		}
	}
	// 40 ms apart: a chunk covers at most 100 ms, three points.
	if got := storedChunks(t, s, "g"); !slices.Equal(got, []uint64{3, 3, 3}) {
		t.Fatalf("history chunks %v, want three of 3 points", got)
	}
	checkTotals(t, s)
}

// Retention expires a tail whose every point is past the raw keep, as it
// expires history chunks; the series takes new points after that.
func TestTailExpires(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	commit := func(idx, first uint64, ts ...int64) {
		t.Helper()
		var pts []sample.Point
		for _, ts := range ts {
			pts = append(pts, sample.Point{T: ts, V: 2})
		}
		st := &State{Key: "g", Kind: sample.Gauge, Value: 2, Updated: ts[len(ts)-1], Ordinal: first + uint64(len(ts)) - 1, Created: 1}
		if err := s.Commit(idx, []Update{{Key: "g", State: st, Points: pts, FirstOrdinal: first}}); err != nil {
			t.Fatal(err)
		}
	}
	commit(1, 1, 1000, 2000, 3000)
	pol := func(string, sample.Kind) Retention { return Retention{Raw: 10_000} }
	if res, err := s.Retain(nil, 12_000, 100, pol); err != nil || res.ExpiredRaw != 0 {
		t.Fatalf("retain before the keep: %+v %v", res, err)
	}
	if pts, _ := s.History("g", 1, 100, 0, 1<<62, nil, nil); len(pts) != 3 {
		t.Fatalf("history before the keep: %v", pts)
	}
	res, err := s.Retain(nil, 13_001, 100, pol)
	if err != nil || res.ExpiredRaw != 1 {
		t.Fatalf("retain past the keep: %+v %v", res, err)
	}
	if pts, _ := s.History("g", 1, 100, 0, 1<<62, nil, nil); len(pts) != 0 {
		t.Fatalf("history after the keep: %v", pts)
	}
	if st := storedState(t, s, "g"); len(st.Tail) != 0 || st.Ordinal != 3 || st.Value != 2 {
		t.Fatalf("state after expiry %+v", st)
	}
	checkTotals(t, s)
	commit(2, 4, 20_000)
	if pts, _ := s.History("g", 1, 100, 0, 1<<62, nil, nil); len(pts) != 1 || pts[0].T != 20_000 {
		t.Fatalf("history of a point after expiry: %v", pts)
	}
	checkTotals(t, s)
}

// Retention's downsampling reads the points in the tail too.
func TestTailDownsampled(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var pts []sample.Point
	for i := range int64(30) {
		pts = append(pts, sample.Point{T: i * 1000, V: float64(i)})
	}
	st := &State{Key: "g", Kind: sample.Gauge, Updated: pts[29].T, Ordinal: 30, Created: 1}
	if err := s.Commit(1, []Update{{Key: "g", State: st, Points: pts, FirstOrdinal: 1}}); err != nil {
		t.Fatal(err)
	}
	if got := storedChunks(t, s, "g"); len(got) != 0 {
		t.Fatalf("history chunks %v: the points should be in the tail", got)
	}
	pol := func(string, sample.Kind) Retention {
		return Retention{Raw: 20_000, Archives: []ArchiveSpec{{Step: 10_000, Keep: 1 << 40}},
			Fold: func(p []sample.Point) float64 { return sample.Fold(sample.Sum, p) }}
	}
	if _, err := s.Retain(nil, 40_000, 100, pol); err != nil {
		t.Fatal(err)
	}
	got, _, _, err := s.Archive("g", 1, 10_000, 0, 1<<62, nil, nil)
	want := []sample.Point{{T: 0, V: 45}, {T: 10_000, V: 145}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("archive %v (%v), want %v", got, err, want)
	}
}

// A state whose tail does not decode is damage that check reports.
func TestTailDamage(t *testing.T) {
	good := encodeState(nil, &State{Kind: sample.Gauge, Ordinal: 2, Created: 1, TailFirst: 1,
		Tail: appendPiece(nil, AppendChunk(nil, []sample.Point{{T: 1, V: 1}, {T: 2, V: 2}}))})
	var st State
	if err := decodeState(good, &st); err != nil || checkTail(&st) != nil {
		t.Fatalf("a good state: %v %v", err, checkTail(&st))
	}
	for i := 27; i < len(good); i++ {
		bad := bytes.Clone(good)
		bad[i] ^= 0xff
		if err := checkEntry(bucketSeries, []byte("g"), seal(bucketSeries, []byte("g"), bad)); err != nil {
			continue
		}
		// A flip the decoders cannot see must still read as a state.
		if err := decodeState(bad, &st); err != nil {
			t.Fatalf("byte %d: check passed, decode failed: %v", i, err)
		}
	}
	bad := bytes.Clone(good)
	bad = append(bad[:len(bad)-3], 0xff) // a piece longer than what is left
	if err := checkEntry(bucketSeries, []byte("g"), seal(bucketSeries, []byte("g"), bad)); err == nil {
		t.Fatal("a cut tail passed the check")
	}
	wrong := encodeState(nil, &State{Kind: sample.Gauge, Ordinal: 5, Created: 1, TailFirst: 1,
		Tail: appendPiece(nil, AppendChunk(nil, []sample.Point{{T: 1, V: 1}}))})
	if err := checkEntry(bucketSeries, []byte("g"), seal(bucketSeries, []byte("g"), wrong)); err == nil {
		t.Fatal("a tail that ends before the state's ordinal passed the check")
	}
}

// FuzzDecodeState: a stored state decodes or fails, never panics, and
// what decodes encodes back to the same state.
func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState(nil, &State{Kind: sample.Gauge, Value: 1, Ordinal: 3, Created: 2, Covers: 9}))
	f.Add(encodeState(nil, &State{Kind: sample.Counter, Ordinal: 2, Created: 1, TailFirst: 1,
		Tail: appendPiece(nil, AppendChunk(nil, []sample.Point{{T: 1, V: 1}, {T: 2, V: 2}}))}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var st State
		if decodeState(b, &st) != nil {
			return
		}
		_ = checkTail(&st)
		var again State
		if err := decodeState(encodeState(nil, &st), &again); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if !bytes.Equal(again.Tail, st.Tail) || again.TailFirst != st.TailFirst && len(st.Tail) > 0 || again.Ordinal != st.Ordinal {
			t.Fatalf("round trip %+v -> %+v", st, again)
		}
	})
}

// A state put over another incarnation's (no Drop before it, which a
// snapshot never does) takes that one's tail with it, and the totals
// say so.
func TestTailOfAReplacedIncarnation(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for created := uint64(1); created <= 2; created++ {
		st := &State{Key: "g", Kind: sample.Gauge, Ordinal: 2, Created: created}
		pts := []sample.Point{{T: 1, V: 1}, {T: 2, V: 2}}
		if err := s.Commit(created, []Update{{Key: "g", State: st, Points: pts, FirstOrdinal: 1}}); err != nil {
			t.Fatal(err)
		}
		if got := checkTotals(t, s); got.Points != 2 {
			t.Fatalf("incarnation %d: totals %+v, want 2 points", created, got)
		}
	}
	if pts, _ := s.History("g", 1, 100, 0, 100, nil, nil); len(pts) != 0 {
		t.Fatalf("the replaced incarnation's points: %v", pts)
	}
}

// TestRetainDueIsNeverLate: Retain's Due errs early, never late. For
// random policies and histories (chunks, tails, archives), a pass at any
// time before the Due of the pass before it finds nothing to do; passes
// at each Due then carry the history through all of its retention.
func TestRetainDueIsNeverLate(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	fold := func(p []sample.Point) float64 { return sample.Fold(sample.Sum, p) }
	worked := 0
	for trial := range 40 {
		s, err := Open(filepath.Join(t.TempDir(), "s.db"))
		if err != nil {
			t.Fatal(err)
		}
		r := Retention{Raw: int64(30+rng.IntN(600)) * 1000, Fold: fold}
		for step := int64(10_000); step <= 60_000 && rng.IntN(3) > 0; step *= 6 {
			r.Archives = append(r.Archives, ArchiveSpec{Step: step, Keep: int64(1+rng.IntN(60)) * 60_000})
		}
		pol := func(string, sample.Kind) Retention { return r }
		// Points with gaps of 1 to 20 s, stored by 1 to 5 commits.
		n := 50 + rng.IntN(550)
		pts := make([]sample.Point, n)
		at := int64(1_000_000)
		for i := range pts {
			at += int64(1+rng.IntN(20)) * 1000
			pts[i] = sample.Point{T: at, V: float64(i)}
		}
		commits := 1 + rng.IntN(5)
		for c, from := 0, 0; c < commits; c++ {
			to := n * (c + 1) / commits
			st := &State{Key: "g", Kind: sample.Gauge, Updated: pts[to-1].T, Ordinal: uint64(to), Created: 1}
			if err := s.Commit(uint64(c+1), []Update{{Key: "g", State: st, Points: pts[from:to], FirstOrdinal: uint64(from + 1)}}); err != nil {
				t.Fatal(err)
			}
			from = to
		}
		now := pts[0].T
		res, err := s.Retain(nil, now, 100, pol)
		if err != nil {
			t.Fatal(err)
		}
		for pass := 0; res.Due != math.MaxInt64; pass++ {
			if pass > 10_000 {
				t.Fatalf("trial %d: passes never end: due %d, now %d", trial, res.Due, now)
			}
			due := res.Due
			if due <= now {
				t.Fatalf("trial %d: a pass at %d says work is due at %d, no later than itself", trial, now, due)
			}
			// Any time before due: nothing to do.
			for range 3 {
				before := now + rng.Int64N(due-now)
				got, err := s.Retain(nil, before, 100, pol)
				if err != nil {
					t.Fatal(err)
				}
				if got.ArchivedPts+got.ExpiredRaw+got.ExpiredArch != 0 {
					t.Fatalf("trial %d (%+v): a pass at %d, before the due %d, did %+v", trial, r, before, due, got)
				}
			}
			now = due
			if res, err = s.Retain(nil, now, 100, pol); err != nil {
				t.Fatal(err)
			}
			worked += res.ArchivedPts + res.ExpiredRaw + res.ExpiredArch
		}
		// Nothing due ever again: every raw point and archive has expired
		// (no archive, or one whose newest step is incomplete, keeps them).
		later, err := s.Retain(nil, now+1<<40, 100, pol)
		if err != nil || later.ArchivedPts+later.ExpiredRaw+later.ExpiredArch != 0 {
			t.Fatalf("trial %d (%+v): after the last due, a pass much later did %+v (%v)", trial, r, later, err)
		}
		s.Close()
	}
	if worked == 0 {
		t.Fatal("the passes at each due never did anything: the test tests nothing")
	}
}
