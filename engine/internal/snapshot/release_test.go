package snapshot

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// mappedKiB returns the resident KiB of the mapping that holds addr, from
// /proc/self/smaps.
func mappedKiB(t *testing.T, addr uintptr) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			var lo, hi uintptr
			if _, err := fmt.Sscanf(fields[0], "%x-%x", &lo, &hi); err == nil {
				in = lo <= addr && addr < hi
			}
			continue
		}
		if in && len(fields) >= 2 && fields[0] == "Rss:" {
			n, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return 0
}

// TestReleaseDropsMappedPages: pages read through bbolt's map leave the
// process's resident set at Release, and reads after it see the same data.
func TestReleaseDropsMappedPages(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const keys, per = 2000, 400
	for base := 0; base < keys; base += 500 {
		var ups []Update
		for k := base; k < base+500; k++ {
			pts := make([]sample.Point, per)
			for i := range pts {
				pts[i] = sample.Point{T: int64(1000 * (i + 1)), V: float64(k*per+i) * 1.37}
			}
			key := fmt.Sprintf("k%05d", k)
			st := &State{Key: key, Kind: sample.Gauge, Value: pts[per-1].V, Updated: pts[per-1].T, Ordinal: per, Created: 1}
			ups = append(ups, Update{Key: key, State: st, FirstOrdinal: 1, Points: pts})
		}
		if err := s.Commit(uint64(base+1), ups); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() {
		t.Helper()
		for k := 0; k < keys; k++ {
			pts, err := s.History(fmt.Sprintf("k%05d", k), 1, per+1, 0, 1<<40, nil, nil)
			if err != nil || len(pts) != per || pts[per-1].V != float64(k*per+per-1)*1.37 {
				t.Fatalf("key %d: %d points, %v", k, len(pts), err)
			}
		}
	}
	readAll()
	addr := s.db.Info().Data
	before := mappedKiB(t, addr)
	if before < 1024 {
		t.Fatalf("only %d KiB of the database resident after reading all of it", before)
	}
	if err := s.Release(); err != nil {
		t.Fatal(err)
	}
	after := mappedKiB(t, addr)
	if after > before/10 {
		t.Fatalf("%d KiB resident after Release, %d before", after, before)
	}
	readAll() // the pages come back from the file
	if again := mappedKiB(t, addr); again < before/2 {
		t.Fatalf("%d KiB resident after reading again, %d the first time", again, before)
	}
}

// TestCommitReleasesAsItGoes: a commit over many series gives back the
// pages it read every releaseEvery updates, not only once it is over.
func TestCommitReleasesAsItGoes(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const keys = 4*releaseEvery + releaseEvery/2
	ups := func(round int) []Update {
		var out []Update
		for k := range keys {
			key := fmt.Sprintf("k%06d", k)
			pts := []sample.Point{{T: int64(1000 * (round + 1)), V: float64(k) * 1.37}}
			st := &State{Key: key, Kind: sample.Gauge, Value: pts[0].V, Updated: pts[0].T, Ordinal: uint64(round + 1), Created: 1,
				Running: float64(k)} // a state of a few dozen bytes: 4k of them fill MiBs of leaves
			out = append(out, Update{Key: key, State: st, FirstOrdinal: uint64(round + 1), Points: pts})
		}
		return out
	}
	if err := s.Commit(1, ups(0)); err != nil {
		t.Fatal(err)
	}
	size := releasedSize(t, s)
	var resident int
	s.afterUpdates = func() { resident = mappedKiB(t, s.db.Info().Data) }
	if err := s.Commit(2, ups(1)); err != nil { // reads every state and tail
		t.Fatal(err)
	}
	if limit := int(size>>10) / 4; resident > limit {
		t.Fatalf("%d KiB of a %d KiB database resident at the end of a commit that read all of it; want under %d", resident, size>>10, limit)
	}
}

// TestCompactReleasesAsItWalks: a compaction pass that finds nothing to
// merge reads every chunk in one transaction, and gives their pages back
// as it goes.
func TestCompactReleasesAsItWalks(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetChunkPoints(2) // every update's two points go to history as one chunk
	const keys = 4*releaseWalk + releaseWalk/2
	var ups []Update
	for k := range keys {
		key := fmt.Sprintf("k%06d", k)
		pts := []sample.Point{{T: 1000, V: float64(k) * 1.37}, {T: 2000, V: float64(k) * 2.71}}
		st := &State{Key: key, Kind: sample.Gauge, Value: pts[1].V, Updated: pts[1].T, Ordinal: 2, Created: 1}
		ups = append(ups, Update{Key: key, State: st, FirstOrdinal: 1, Points: pts})
	}
	if err := s.Commit(1, ups); err != nil {
		t.Fatal(err)
	}
	size := releasedSize(t, s)
	resident := -1
	s.afterUpdates = func() { resident = mappedKiB(t, s.db.Info().Data) }
	res, err := s.Compact(nil, 2, 1<<20, nil)
	if err != nil || res.Next != nil {
		t.Fatalf("compact: %+v, %v", res, err)
	}
	if limit := int(size>>10) / 4; resident < 0 || resident > limit {
		t.Fatalf("%d KiB of a %d KiB database resident at the end of a compaction walk over all of it; want under %d", resident, size>>10, limit)
	}
}

// releasedSize releases s's mapped pages and returns the size of its file.
func releasedSize(t *testing.T, s *Store) int64 {
	t.Helper()
	if err := s.Release(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
