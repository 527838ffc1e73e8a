package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// faults is a Hooks set whose members fail on demand.
type faults struct {
	write   func(write func() error) error
	sync    func(sync func() error) error
	syncDir func(sync func() error) error
	cut     func(cut func() error) error
}

func (f *faults) hooks() *Hooks {
	return &Hooks{
		Write:   func(w func() error) error { return call(f.write, w) },
		Sync:    func(s func() error) error { return call(f.sync, s) },
		SyncDir: func(s func() error) error { return call(f.syncDir, s) },
		Cut:     func(c func() error) error { return call(f.cut, c) },
	}
}

// openFaulty opens a log in a new directory with f's hooks.
func openFaulty(t *testing.T, f *faults, opts *Options) (string, *Log) {
	t.Helper()
	dir := t.TempDir()
	opts.Hooks = f.hooks()
	l, err := Open(dir, *opts)
	if err != nil {
		t.Fatal(err)
	}
	return dir, l
}

// once fails the next call with err, after running it when run is true.
func once(err error, run bool) func(func() error) error {
	used := false
	return func(f func() error) error {
		if used {
			return f()
		}
		used = true
		if run {
			if e := f(); e != nil {
				return e
			}
		}
		return err
	}
}

func addN(l *Log, from, n int) {
	for i := from; i < from+n; i++ {
		l.Add([]byte(fmt.Sprintf("record-%06d", i)))
	}
}

// tailPath is the newest segment file of the log in dir.
func tailPath(t *testing.T, dir string) string {
	t.Helper()
	segs, _, err := listSegments(dir)
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	return filepath.Join(dir, segmentName(segs[len(segs)-1]))
}

// checkCut asserts the log holds exactly records 1..n, with nothing after,
// both as open and after a reopen, and takes a new record at n+1.
func checkCut(t *testing.T, dir string, l *Log, n int, opts Options) *Log {
	t.Helper()
	for pass := range 2 {
		if last, err := l.LastIndex(); err != nil || last != uint64(n) {
			t.Fatalf("pass %d: last index %d (%v), want %d", pass, last, err, n)
		}
		checkAll(t, l, n)
		if _, err := l.Read(uint64(n + 1)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("pass %d: the refused record %d reads: %v", pass, n+1, err)
		}
		if pass == 0 {
			l.Close()
			var err error
			if l, err = Open(dir, opts); err != nil {
				t.Fatalf("reopen: %v", err)
			}
		}
	}
	return l
}

// A batch whose write fails is cut off the log, whatever part of it
// reached the file: none of it is read, replayed after a reopen, or in
// the way of the next write, which takes its indexes.
func TestFailedWriteIsCutOff(t *testing.T) {
	enospc := &os.PathError{Op: "write", Path: "segment", Err: syscall.ENOSPC}
	for _, c := range []struct {
		name string
		fail func(dir string) func(func() error) error
	}{
		{"nothing written", func(string) func(func() error) error { return once(enospc, false) }},
		{"all of it written", func(string) func(func() error) error { return once(enospc, true) }},
		{"a short write", func(dir string) func(func() error) error {
			// The batch reaches the file, then the file ends in the middle
			// of one of its records, as a short write leaves it.
			return once(enospc, true)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &faults{}
			opts := Options{SegmentSize: 1 << 20}
			dir, l := openFaulty(t, f, &opts)
			writeN(t, l, 0, 30)
			f.write = c.fail(dir)
			if c.name == "a short write" {
				inner := f.write
				f.write = func(w func() error) error {
					err := inner(w)
					p := tailPath(t, dir)
					fi, _ := os.Stat(p)
					os.Truncate(p, fi.Size()-7)
					return err
				}
			}
			addN(l, 30, 10)
			err := l.Commit(true)
			if !errors.Is(err, ErrRolledBack) || !errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrSyncFailed) {
				t.Fatalf("commit: %v, want a rolled back ENOSPC", err)
			}
			f.write = nil
			if l.Failed() != nil {
				t.Fatalf("the log refuses writes after a cut: %v", l.Failed())
			}
			// The next batch takes the refused batch's indexes.
			if idx := l.Add([]byte(fmt.Sprintf("record-%06d", 30))); idx != 31 {
				t.Fatalf("next index %d, want 31", idx)
			}
			if err := l.Commit(true); err != nil {
				t.Fatal(err)
			}
			l = checkCut(t, dir, l, 31, opts)
			l.Close()
		})
	}
}

// A failed batch that rolled segments over: the new segments go too.
func TestFailedWriteAcrossSegments(t *testing.T) {
	f := &faults{}
	opts := Options{SegmentSize: 256}
	dir, l := openFaulty(t, f, &opts)
	writeN(t, l, 0, 25)
	before, _, _ := listSegments(dir)
	f.write = once(syscall.ENOSPC, true)
	addN(l, 25, 60)
	if err := l.Commit(true); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("commit: %v", err)
	}
	after, _, _ := listSegments(dir)
	if len(after) != len(before) {
		t.Fatalf("segments %v after the cut, %v before the failed batch", after, before)
	}
	l = checkCut(t, dir, l, 25, opts)
	writeN(t, l, 25, 60)
	checkAll(t, l, 85)
	l.Close()
}

// A failed fsync cuts its batch off and then refuses every write: it is
// never retried. Reopened, the log holds what was acknowledged.
func TestFailedFsyncRefusesWrites(t *testing.T) {
	f := &faults{}
	opts := Options{SegmentSize: 1 << 20}
	dir, l := openFaulty(t, f, &opts)
	writeN(t, l, 0, 20)
	f.sync = once(syscall.EIO, true)
	addN(l, 20, 5)
	err := l.Commit(true)
	if !errors.Is(err, ErrRolledBack) || !errors.Is(err, ErrSyncFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("commit: %v, want a rolled back fsync failure", err)
	}
	l.Add([]byte("more"))
	if err := l.Commit(true); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("a write after a failed fsync: %v, want ErrSyncFailed", err)
	}
	if err := l.Sync(); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("a Sync after a failed fsync: %v", err)
	}
	l.Close()
	l, err = Open(dir, Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	l = checkCut(t, dir, l, 20, Options{SegmentSize: 1 << 20})
	l.Close()
}

// With fsync=interval a record is acknowledged once written; a failed
// periodic Sync refuses later writes but cuts nothing off.
func TestFailedPeriodicSyncKeepsAcknowledged(t *testing.T) {
	f := &faults{}
	dir, l := openFaulty(t, f, &Options{})
	addN(l, 0, 12)
	if err := l.Commit(false); err != nil {
		t.Fatal(err)
	}
	f.sync = once(syscall.EIO, true)
	if err := l.Sync(); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("sync: %v", err)
	}
	l.Add([]byte("more"))
	if err := l.Commit(false); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("write after failed sync: %v", err)
	}
	l.Close()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, l, 12)
	l.Close()
}

// When the cut itself fails, the batch's outcome is unknown: the error
// does not say it was cut off, and the log refuses writes.
func TestFailedCutBreaksTheLog(t *testing.T) {
	f := &faults{}
	_, l := openFaulty(t, f, &Options{})
	writeN(t, l, 0, 5)
	f.write = once(syscall.ENOSPC, true)
	f.cut = once(syscall.EIO, false)
	addN(l, 5, 3)
	err := l.Commit(true)
	if errors.Is(err, ErrRolledBack) || !errors.Is(err, ErrBroken) {
		t.Fatalf("commit: %v, want ErrBroken and not ErrRolledBack", err)
	}
	l.Add([]byte("more"))
	if err := l.Commit(true); !errors.Is(err, ErrBroken) {
		t.Fatalf("write after a failed cut: %v", err)
	}
}

// A failed directory fsync after a roll is a failed fsync.
func TestFailedDirSyncAfterRoll(t *testing.T) {
	f := &faults{}
	opts := Options{SegmentSize: 200}
	dir, l := openFaulty(t, f, &opts)
	writeN(t, l, 0, 3)
	f.syncDir = once(syscall.EIO, false)
	addN(l, 3, 30) // rolls
	if err := l.Commit(true); !errors.Is(err, ErrRolledBack) || !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("commit: %v", err)
	}
	l.Close()
	l, err := Open(dir, Options{SegmentSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	checkCut(t, dir, l, 3, Options{SegmentSize: 200}).Close()
}

// FuzzScan reads arbitrary bytes as a segment: Scan never panics, every
// record it returns has a good frame, and the indexes it gives go up.
func FuzzScan(f *testing.F) {
	var good []byte
	for i := range 5 {
		fr := frame([]byte(fmt.Sprintf("record-%06d", i)))
		good = append(good, byte(len(fr)))
		good = append(good, fr...)
	}
	f.Add(good)
	f.Add(append(append([]byte{}, good[:30]...), good...))
	f.Add([]byte{0xff, 0xff, 0xff})
	cont := append([]byte(nil), good...)
	cont[1] = frameContinues // the first record's group goes on
	f.Add(cont)
	f.Fuzz(func(t *testing.T, seg []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName(7)), seg, 0o640); err != nil {
			t.Fatal(err)
		}
		recs, probs, _, err := Scan(dir)
		if err != nil {
			t.Fatal(err)
		}
		last := uint64(6)
		for _, r := range recs {
			if r.Index <= last {
				t.Fatalf("index %d after %d", r.Index, last)
			}
			last = r.Index
		}
		for _, p := range probs {
			if p.String() == "" {
				t.Fatal("a problem that says nothing")
			}
		}
	})
}

// TestOpenSyncsTail: Open fsyncs the tail segment, so that records a
// killed process wrote and never fsynced are on disk before the engine
// counts them as synced; a failed fsync there fails Open.
func TestOpenSyncsTail(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addN(l, 1, 10)
	if err := l.Commit(false); err != nil {
		t.Fatal(err)
	}
	l.Close()
	syncs := 0
	f := &faults{sync: func(s func() error) error { syncs++; return s() }}
	l, err = Open(dir, Options{Hooks: f.hooks()})
	if err != nil {
		t.Fatal(err)
	}
	if syncs != 1 {
		t.Fatalf("Open fsynced the tail %d times, want 1", syncs)
	}
	l.Close()
	f = &faults{sync: once(syscall.EIO, false)}
	if _, err := Open(dir, Options{Hooks: f.hooks()}); err == nil || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Open with a failing fsync: %v", err)
	}
}
