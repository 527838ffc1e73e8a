package snapshot

import (
	"fmt"
	"math/bits"
	"path/filepath"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Compaction merges contiguous chunks of one incarnation, in passes of
// small transactions, and changes no history read.
func TestCompact(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Tails of at most 6 points: the snapshots below leave history many
	// small chunks to merge.
	s.SetChunkPoints(6)
	keys := []string{"a", "b", "c"}
	ord := map[string]uint64{}
	created := map[string]uint64{"a": 1, "b": 2, "c": 3}
	idx := uint64(10)
	for snap := range 40 {
		var ups []Update
		for ki, k := range keys {
			if k == "c" && snap == 20 { // c is deleted and created again
				ups = append(ups, Update{Key: k, Drop: created["c"]})
				created["c"], ord["c"] = idx, 0
				// the new incarnation's first chunk comes in the same update
			}
			var pts []sample.Point
			for i := range 1 + (snap+ki)%5 {
				o := ord[k] + uint64(i) + 1
				pts = append(pts, sample.Point{T: int64(o) * 10_000, V: float64(o) / 100})
			}
			st := &State{Key: k, Kind: sample.Gauge, Value: pts[len(pts)-1].V, Ordinal: ord[k] + uint64(len(pts)), Created: created[k]}
			if k == "c" && snap == 20 {
				ups[len(ups)-1].State, ups[len(ups)-1].Points, ups[len(ups)-1].FirstOrdinal = st, pts, 1
			} else {
				ups = append(ups, Update{Key: k, State: st, Points: pts, FirstOrdinal: ord[k] + 1})
			}
			ord[k] += uint64(len(pts))
		}
		idx++
		if err := s.Commit(idx, ups); err != nil {
			t.Fatal(err)
		}
	}
	history := func() map[string]string {
		out := map[string]string{}
		for _, k := range keys {
			pts, err := s.History(k, created[k], 1<<62, 0, 1<<62, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			out[k] = fmt.Sprint(pts)
		}
		return out
	}
	before := history()
	var total HistoryTotals
	calls, merged := 0, 0
	for next := []byte(nil); ; {
		res, err := s.Compact(next, 32, 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		merged += res.Merged
		if res.Written > 0 && res.Merged+res.Written > 10+31 {
			t.Fatalf("one call rewrote %d chunks, budget 10 (plus the run in progress)", res.Merged+res.Written)
		}
		checkTotals(t, s)
		if next = res.Next; next == nil {
			var err error
			if total, err = s.Totals(); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	after := history()
	for _, k := range keys {
		if before[k] != after[k] {
			t.Fatalf("%s changed:\n%s\n%s", k, before[k], after[k])
		}
	}
	if calls < 3 || merged == 0 {
		t.Fatalf("%d calls merged %d chunks", calls, merged)
	}
	points := int64(ord["a"] + ord["b"] + ord["c"])
	if total.Points != points || total.Chunks <= 0 || total.Bytes <= 0 || total.FileBytes < total.Bytes {
		t.Fatalf("totals %+v, want %d points", total, points)
	}
	// Chunks now hold up to 32 points: a second pass finds little to do.
	if _, err := s.Compact(nil, 32, 1_000_000, nil); err != nil {
		t.Fatal(err)
	}
	second := checkTotals(t, s)
	if second.Chunks > total.Chunks || second.Points != points {
		t.Fatalf("second pass %+v after %+v", second, total)
	}
	t.Logf("%d points: %d chunks, %d bytes after compaction (%d merged in %d calls)", points, total.Chunks, total.Bytes, merged, calls)
}

// A series whose history grows a chunk at a time, compacted after each:
// each point is re-encoded about log2(target/chunk) times, not once per
// new chunk (merging the whole run each time re-encoded what the series
// had, again and again).
func TestCompactGrowingSeries(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetChunkPoints(10) // history chunks of 10 points, from the tail
	const chunks, per, target = 128, 10, 640
	var all []sample.Point
	reencoded := 0
	for i := range chunks {
		var pts []sample.Point
		for j := range per {
			o := i*per + j + 1
			pts = append(pts, sample.Point{T: int64(o) * 1000, V: float64(o % 9)})
		}
		all = append(all, pts...)
		st := &State{Key: "g", Kind: sample.Gauge, Ordinal: uint64(len(all)), Created: 1}
		if err := s.Commit(uint64(i+1), []Update{{Key: "g", State: st, Points: pts, FirstOrdinal: uint64(i*per + 1)}}); err != nil {
			t.Fatal(err)
		}
		for next := []byte(nil); ; {
			res, err := s.Compact(next, target, 1000, nil)
			if err != nil {
				t.Fatal(err)
			}
			reencoded += res.Points
			if next = res.Next; next == nil {
				break
			}
		}
		checkTotals(t, s)
	}
	t.Logf("%d points re-encoded for %d stored", reencoded, len(all))
	if got, _ := s.History("g", 1, 1<<62, 0, 1<<62, nil, nil); len(got) != len(all) {
		t.Fatalf("%d points after compaction, want %d", len(got), len(all))
	}
	// A group at least half again as big at each merge: log1.5(64) ≈ 10
	// re-encodings a point; merging the whole run each time was 32.
	if limit := len(all) * 12; reencoded > limit {
		t.Fatalf("%d points re-encoded for %d stored, want at most %d", reencoded, len(all), limit)
	}
	// Whole groups hold at least half the target; the newest few, still
	// growing, halve in size one after the other at most.
	got := storedChunks(t, s, "g")
	growing := bits.Len(target / per)
	for i, n := range got[:max(len(got)-growing, 0)] {
		if n < target/2 {
			t.Fatalf("chunk %d of %v holds %d points, want at least %d", i, got, n, target/2)
		}
	}
	if len(got) > 2*len(all)/target+growing {
		t.Fatalf("%d chunks left %v", len(got), got)
	}
}
