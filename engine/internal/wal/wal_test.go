package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

func writeN(t *testing.T, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		l.Add([]byte(fmt.Sprintf("record-%06d", i)))
		if i%7 == 0 || i == from+n-1 {
			if err := l.Commit(true); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func checkAll(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		b, err := l.Read(uint64(i))
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if want := fmt.Sprintf("record-%06d", i-1); string(b) != want {
			t.Fatalf("read %d = %q, want %q", i, b, want)
		}
	}
}

// TestRollMirror checks that Add predicts tidwall/wal's segment rolls: the
// number of predicted rolls matches the segment files created.
func TestRollMirror(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentSize: 300})
	if err != nil {
		t.Fatal(err)
	}
	rolls := 0
	for i := range 500 {
		l.Add([]byte(fmt.Sprintf("record-%06d", i)))
		if l.dirDirty {
			rolls++
			l.dirDirty = false
		}
		if i%5 == 4 {
			if err := l.Commit(false); err != nil {
				t.Fatal(err)
			}
		}
	}
	segs, err := l.segments()
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != rolls+1 {
		t.Fatalf("%d segment files, %d rolls predicted", len(segs), rolls)
	}
	checkAll(t, l, 500)
	l.Close()
	// Reopened, the mirror starts from the tail's size and still agrees.
	l, err = Open(dir, Options{SegmentSize: 300})
	if err != nil {
		t.Fatal(err)
	}
	for i := 500; i < 900; i++ {
		l.Add([]byte(fmt.Sprintf("record-%06d", i)))
		if l.dirDirty {
			rolls++
			l.dirDirty = false
		}
		if err := l.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	segs, _ = l.segments()
	if len(segs) != rolls+1 {
		t.Fatalf("after reopen: %d segment files, %d rolls predicted", len(segs), rolls)
	}
	checkAll(t, l, 900)
	l.Close()
}

func TestTruncateFrontKeepsWholeSegments(t *testing.T) {
	l, err := Open(t.TempDir(), Options{SegmentSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writeN(t, l, 0, 200)
	first, err := l.TruncateFront(150)
	if err != nil {
		t.Fatal(err)
	}
	if first > 150 || first < 100 {
		t.Fatalf("first index %d after truncating to keep 150", first)
	}
	for i := first; i <= 200; i++ {
		if _, err := l.Read(i); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if _, err := l.Read(first - 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read below first: %v", err)
	}
	// Keeping past the end never empties the log.
	if _, err := l.TruncateFront(10000); err != nil {
		t.Fatal(err)
	}
	if last, _ := l.LastIndex(); last != 200 {
		t.Fatalf("last index %d", last)
	}
}

// TestTruncateFrontRewritesNothing: a front truncation removes the whole
// segments below the cut and leaves the segment it falls in as it was
// (tidwall/wal's own TruncateFront rewrites that segment under the lock
// writes take); writes go on, tidwall/wal forgets the removed segments at
// the next roll, and a reopened log starts at the cut.
func TestTruncateFrontRewritesNothing(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 0, 200)
	before, err := l.segments()
	if err != nil {
		t.Fatal(err)
	}
	stat := func(s uint64) os.FileInfo {
		t.Helper()
		fi, err := os.Stat(filepath.Join(dir, segmentName(s)))
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	infos := map[uint64]os.FileInfo{}
	for _, s := range before {
		infos[s] = stat(s)
	}
	first, err := l.TruncateFront(150)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := l.FirstIndex(); got != first || first > 150 || first < 100 {
		t.Fatalf("first index %d (FirstIndex %d) after keeping 150", first, got)
	}
	after, err := l.segments()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range before {
		switch {
		case s < first && slices.Contains(after, s):
			t.Errorf("segment %d below the cut %d is still there", s, first)
		case s >= first && !os.SameFile(infos[s], stat(s)):
			t.Errorf("segment %d was rewritten", s)
		}
	}
	if _, err := l.Read(first - 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read below first: %v", err)
	}
	if l.dropped.Load() == 0 {
		t.Fatal("no segment counted as dropped")
	}
	writeN(t, l, 200, 100) // rolls: tidwall/wal is opened again
	if n := l.dropped.Load(); n != 0 {
		t.Fatalf("%d dropped segments still listed by tidwall/wal after rolls", n)
	}
	check := func(l *Log) {
		t.Helper()
		for i := first; i <= 300; i++ {
			b, err := l.Read(i)
			if want := fmt.Sprintf("record-%06d", i-1); err != nil || string(b) != want {
				t.Fatalf("read %d = %q, %v; want %q", i, b, err, want)
			}
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(dir, Options{SegmentSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, _ := l.FirstIndex(); got != first {
		t.Fatalf("first index %d after reopening, want %d", got, first)
	}
	check(l)
}

// FuzzOpenTail appends arbitrary bytes to a log's tail segment and opens
// it: Open must either keep every record written before, or refuse with a
// corruption error, and never panic.
func FuzzOpenTail(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Add([]byte{0x10, 1, 0, 0, 0, 0})
	var good bytes.Buffer
	fr := frame([]byte("record-extra-0"))
	good.WriteByte(byte(len(fr)))
	good.Write(fr)
	f.Add(good.Bytes())
	f.Add(append([]byte{3, 1, 2, 3}, good.Bytes()...))
	// Records of a group whose end was never written, after a whole one.
	cont := frame([]byte("record-extra-1"))
	cont[0] = frameContinues
	f.Add(append(append(slices.Clone(good.Bytes()), byte(len(cont))), cont...))
	f.Fuzz(func(t *testing.T, tail []byte) {
		if len(tail) > 4096 {
			return
		}
		dir := t.TempDir()
		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		writeN(t, l, 0, 20)
		l.Close()
		seg := filepath.Join(dir, segmentName(1))
		fh, err := os.OpenFile(seg, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.Write(tail)
		fh.Close()
		l, err = Open(dir, Options{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v is not a corruption error", err)
			}
			return
		}
		defer l.Close()
		checkAll(t, l, 20)
		// What is left ends with a whole group.
		if recs, _, _, err := Scan(dir); err != nil || IncompleteGroup(recs) != 0 {
			t.Fatalf("the log ends in an incomplete group after Open (%v)", err)
		}
		last, _ := l.LastIndex()
		for i := uint64(21); i <= last; i++ {
			if _, err := l.Read(i); err != nil {
				t.Fatalf("record %d kept after repair does not read: %v", i, err)
			}
		}
		// The repaired log takes appends.
		idx := l.Add([]byte("after"))
		if err := l.Commit(true); err != nil {
			t.Fatal(err)
		}
		if b, err := l.Read(idx); err != nil || string(b) != "after" {
			t.Fatalf("append after repair: %q %v", b, err)
		}
	})
}

// frame builds a frame the way Add does, for seeds.
func frame(body []byte) []byte {
	l := &Log{}
	l.segSize = 1 << 30
	l.Add(body)
	return l.frame
}

// Readers on several goroutines at once (the snapshotter folding the WAL,
// SSE subscribers catching up) over many segments. tidwall/wal loads and
// evicts cached segments under its read lock, so two concurrent Reads can
// see a segment emptied under them and panic (tidwall/wal issue #34);
// Read must serialise them.
func TestConcurrentReadsAcrossSegments(t *testing.T) {
	l, err := Open(t.TempDir(), Options{SegmentSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const n = 4000
	writeN(t, l, 0, n)
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			idx := uint64(g*977 + 1)
			for range 5000 {
				idx = idx*6364136223846793005 + 1442695040888963407
				i := idx%n + 1
				b, err := l.Read(i)
				if err != nil {
					done <- fmt.Errorf("read %d: %w", i, err)
					return
				}
				if want := fmt.Sprintf("record-%06d", i-1); string(b) != want {
					done <- fmt.Errorf("read %d = %q, want %q", i, b, want)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestRollsLetClosedSegmentsGo: the segments a roll closes are not kept in
// memory. tidwall/wal caches the last two with their whole content; at
// 4 MiB segments of small records that is over 20 MiB more heap than the
// tail segment alone.
func TestRollsLetClosedSegmentsGo(t *testing.T) {
	const seg = 4 << 20
	l, err := Open(t.TempDir(), Options{SegmentSize: seg})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	body := make([]byte, 24)
	for i := 0; i < 5*seg/32; i++ {
		binary.LittleEndian.PutUint64(body, uint64(i))
		l.Add(body)
		if i%1000 == 999 {
			if err := l.Commit(false); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Commit(true); err != nil {
		t.Fatal(err)
	}
	// The tail segment: its content (a buffer of up to twice the segment)
	// and 16 bytes of position per record.
	tail := uint64(2*seg + 16*seg/32)
	if grew := heap() - before; grew > tail+tail/4 {
		t.Fatalf("the heap grew by %d MiB over 5 segments; the tail alone holds at most %d MiB", grew>>20, tail>>20)
	}
	// Every record is still there.
	for _, i := range []uint64{1, 2, uint64(5 * seg / 64), uint64(5*seg/32 - 1)} {
		b, err := l.Read(i)
		if err != nil || binary.LittleEndian.Uint64(b) != i-1 {
			t.Fatalf("read %d: %x %v", i, b, err)
		}
	}
}

// TestReadMany: a batch read across segment rolls gives what Read gives,
// stops at n, and reports a record truncated away as ErrNotFound with
// the bodies before it.
func TestReadMany(t *testing.T) {
	l, err := Open(t.TempDir(), Options{SegmentSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writeN(t, l, 0, 200)
	got, err := l.ReadMany(1, 1000, nil)
	if !errors.Is(err, ErrNotFound) || len(got) != 200 {
		t.Fatalf("ReadMany past the end: %d bodies, %v", len(got), err)
	}
	for i, b := range got {
		if want := fmt.Sprintf("record-%06d", i); string(b) != want {
			t.Fatalf("body %d = %q, want %q", i, b, want)
		}
	}
	if got, err = l.ReadMany(50, 10, got[:0]); err != nil || len(got) != 10 || string(got[0]) != "record-000049" || string(got[9]) != "record-000058" {
		t.Fatalf("ReadMany(50, 10): %q %v", got, err)
	}
	first, err := l.TruncateFront(150)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = l.ReadMany(first-1, 5, got[:0]); !errors.Is(err, ErrNotFound) || len(got) != 0 {
		t.Fatalf("ReadMany below the first index: %d bodies, %v", len(got), err)
	}
}
