package wal

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// cutLastEntry takes the last entry off the tail segment, as a process
// killed before the write that carried a group's end leaves the log.
func cutLastEntry(t *testing.T, dir string) {
	t.Helper()
	path := tailPath(t, dir)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, total := groupEnds(data)
	if total == 0 {
		t.Fatalf("%s holds no entry", path)
	}
	off, err := offsetAfter(data, total-1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// TestGroupMarks: every record of a Commit but its last is marked as
// continuing, and Scan reports the marks.
func TestGroupMarks(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 3, 5} {
		addN(l, 0, n)
		if err := l.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	recs, probs, _, err := Scan(dir)
	if err != nil || len(probs) > 0 {
		t.Fatalf("scan: %v %v", probs, err)
	}
	var got []bool
	for _, r := range recs {
		got = append(got, r.Continues)
	}
	want := []bool{false, true, true, false, true, true, true, true, false}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("continues marks %v, want %v", got, want)
		}
	}
	if n := IncompleteGroup(recs); n != 0 {
		t.Fatalf("IncompleteGroup of whole groups = %d", n)
	}
}

// TestIncompleteGroupDropped: a log whose last group lost its end (the
// process was killed between two writes of one Commit) opens without any
// record of that group, within one segment, across segment rolls, when
// the group is all the log holds, and never below what the snapshot
// covers.
func TestIncompleteGroupDropped(t *testing.T) {
	for _, c := range []struct {
		name           string
		segSize        int
		before, group  int    // records in the whole group written first, and in the cut one
		covered        uint64 // Options.Covered at the open after the cut
		want           int    // records the log holds after it
		segsAfter      int    // segment files after it (0: not checked)
		scanIncomplete int    // IncompleteGroup before the open
	}{
		{name: "one segment", segSize: 1 << 20, before: 3, group: 4, want: 3, segsAfter: 1, scanIncomplete: 3},
		{name: "across rolls", segSize: 200, before: 5, group: 20, want: 5, scanIncomplete: 19},
		{name: "the whole log", segSize: 200, before: 0, group: 20, want: 0, segsAfter: 1, scanIncomplete: 19},
		{name: "covered", segSize: 1 << 20, before: 3, group: 4, covered: 5, want: 5, scanIncomplete: 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentSize: c.segSize}
			l, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			if c.before > 0 {
				addN(l, 0, c.before)
				if err := l.Commit(true); err != nil {
					t.Fatal(err)
				}
			}
			addN(l, c.before, c.group)
			if err := l.Commit(true); err != nil {
				t.Fatal(err)
			}
			l.Close()
			segsBefore, _, _ := listSegments(dir)
			cutLastEntry(t, dir)
			recs, _, _, err := Scan(dir)
			if err != nil {
				t.Fatal(err)
			}
			if n := IncompleteGroup(recs); n != c.scanIncomplete {
				t.Fatalf("IncompleteGroup = %d, want %d", n, c.scanIncomplete)
			}
			opts.Covered = c.covered
			if l, err = Open(dir, opts); err != nil {
				t.Fatal(err)
			}
			if c.segSize == 200 && len(segsBefore) < 2 {
				t.Fatalf("the group spans %d segments: the case tests no roll", len(segsBefore))
			}
			if segs, _, _ := listSegments(dir); c.segsAfter > 0 && len(segs) != c.segsAfter {
				t.Fatalf("%d segments after the cut, want %d", len(segs), c.segsAfter)
			}
			l = checkCut(t, dir, l, c.want, opts)
			// The log takes the next group at the freed indexes, and it
			// reads back after a reopen.
			addN(l, c.want, 3)
			if err := l.Commit(true); err != nil {
				t.Fatal(err)
			}
			l.Close()
			if l, err = Open(dir, opts); err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			checkAll(t, l, c.want+3)
			if last, _ := l.LastIndex(); last != uint64(c.want+3) {
				t.Fatalf("last index %d, want %d", last, c.want+3)
			}
		})
	}
}

// TestIncompleteGroupEmptyTail: a roll's new segment file, created and
// killed before anything was written to it, is left alone when the group
// before it is whole (it always was: tidwall/wal opens it).
func TestIncompleteGroupEmptyTail(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	addN(l, 0, 4)
	if err := l.Commit(true); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := os.WriteFile(filepath.Join(dir, segmentName(5)), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := dropPartialGroup(dir, 0, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if segs, _, _ := listSegments(dir); len(segs) != 2 {
		t.Fatalf("segments %v, want the empty tail kept", segs)
	}
}
