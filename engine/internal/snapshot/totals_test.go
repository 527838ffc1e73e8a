package snapshot

import (
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// checkTotals counts every chunk of s anew and fails unless the kept
// totals say the same; it returns them.
func checkTotals(t *testing.T, s *Store) HistoryTotals {
	t.Helper()
	got, err := s.Totals()
	if err != nil {
		t.Fatal(err)
	}
	var want HistoryTotals
	err = s.db.View(func(tx *bolt.Tx) error {
		// Tails: each piece counts as a chunk, the tail's bytes as its bytes.
		err := tx.Bucket(bucketSeries).ForEach(func(k, v []byte) error {
			var st State
			if err := readState(k, v, &st); err != nil {
				return err
			}
			want.Bytes += int64(len(st.Tail))
			return eachPiece(st.Tail, func(data []byte) error {
				pts, err := DecodeChunk(data, nil)
				want.Chunks++
				want.Points += int64(len(pts))
				return err
			})
		})
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketHistory, bucketArchive} {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			err := b.ForEach(func(k, v []byte) error {
				n, _, _, err := header(name, k, v)
				if err != nil {
					return err
				}
				want.Bytes += int64(len(k) + len(v))
				if name[0] == 'a' {
					want.ArchiveChunks++
					want.ArchivePoints += int64(n)
				} else {
					want.Chunks++
					want.Points += int64(n)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got.UsedBytes, got.FileBytes = 0, 0
	if got != want {
		t.Fatalf("kept totals %+v, counted %+v", got, want)
	}
	return got
}

// TestTotalsAreExact checks the kept history totals against a count after
// every kind of write (chunks added, a series wiped and made again,
// archives written, raw and archive chunks expired, compaction), and after
// a restart; and that a file without them (salvaged, or older) is counted
// at open.
func TestTotalsAreExact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	checkTotals(t, s)
	const minute = 60_000
	idx := uint64(0)
	ord := map[string]uint64{}
	write := func(keys []string, from, n int64, wipe bool) {
		t.Helper()
		var ups []Update
		for _, k := range keys {
			if wipe {
				ord[k] = 0
			}
			var pts []sample.Point
			for i := range n {
				pts = append(pts, sample.Point{T: (from + i) * 10_000, V: float64(i%7) / 10})
			}
			st := &State{Key: k, Kind: sample.Gauge, Value: 1, Updated: pts[len(pts)-1].T, Ordinal: ord[k] + uint64(n), Created: 1}
			var drop uint64
			if wipe {
				drop = 1
			}
			ups = append(ups, Update{Key: k, Drop: drop, State: st, Points: pts, FirstOrdinal: ord[k] + 1})
			ord[k] += uint64(n)
		}
		idx++
		if err := s.Commit(idx, ups); err != nil {
			t.Fatal(err)
		}
		checkTotals(t, s)
	}
	keys := []string{"a", "b", "c"}
	write(keys, 0, 1, true)
	for i := int64(1); i < 40; i++ {
		write(keys, i*6, 6, false) // a minute of 10 s points each
	}
	write([]string{"b"}, 10_000, 5, true) // b deleted and made again
	pol := func(string, sample.Kind) Retention {
		return Retention{Raw: 20 * minute, Archives: []ArchiveSpec{{Step: minute, Keep: 30 * minute}},
			Fold: func(p []sample.Point) float64 { return p[0].V }}
	}
	archived, expiredRaw, expiredArch := false, false, false
	for _, now := range []int64{40 * minute, 60 * minute, 80 * minute, 200 * minute} {
		for next := []byte(nil); ; {
			res, err := s.Retain(next, now, 2, pol)
			if err != nil {
				t.Fatal(err)
			}
			archived = archived || checkTotals(t, s).ArchiveChunks > 0
			expiredRaw = expiredRaw || res.ExpiredRaw > 0
			expiredArch = expiredArch || res.ExpiredArch > 0
			if next = res.Next; next == nil {
				break
			}
		}
	}
	if !archived || !expiredRaw || !expiredArch {
		t.Fatalf("retention wrote archives %v, expired raw chunks %v, archive chunks %v: the test does not cover them", archived, expiredRaw, expiredArch)
	}
	write(keys, 20_000, 30, false) // history to compact after all that
	for next := []byte(nil); ; {
		res, err := s.Compact(next, 64, 5, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkTotals(t, s)
		if next = res.Next; next == nil {
			break
		}
	}
	want := checkTotals(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	if got := checkTotals(t, s); got != want {
		t.Fatalf("after a restart %+v, before %+v", got, want)
	}
	// A file without stored totals is counted at open.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyTotals) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := checkTotals(t, s); got != want {
		t.Fatalf("counted at open %+v, before %+v", got, want)
	}
}
