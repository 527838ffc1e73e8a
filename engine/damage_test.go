package engine

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// A damaged WAL record that the snapshot already holds does not stop
// startup, and the records after it, which the snapshot does not hold,
// are all replayed. Before, startup was refused, and moving the segment
// aside (as the message advised) lost those records.
func TestDamagedRecordCoveredBySnapshot(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour})
	for i := 1; i <= 40; i++ {
		mustApply(t, db, set("early", float64(i)))
	}
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	covered := db.Index()
	for i := 1; i <= 30; i++ {
		mustApply(t, db, set("late", float64(i)))
	}
	want := state(db)
	abandon(t, db)
	// Damage record 20's body (the snapshot holds it), not its length.
	seg := tailSegment(t, dir)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	for range 19 {
		off += entryLen(data[off:])
	}
	data[off+entryLen(data[off:])-2] ^= 0xff
	if err := os.WriteFile(seg, data, 0o640); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
	defer db.Close()
	sameState(t, "after the restart", state(db), want)
	if got := history(t, db, "late"); len(got) != 30 {
		t.Fatalf("late has %d points after the restart, want 30", len(got))
	}
	// A subscriber resuming before the damaged record starts from a dump.
	if _, err := db.Changes(10, nil, 100); !errors.Is(err, ErrGone) {
		t.Fatalf("changes across the damaged record: %v, want ErrGone", err)
	}
	if covered < 20 {
		t.Fatalf("the snapshot covers %d: the test damaged an uncovered record", covered)
	}
}

// entryLen is the length of the tidwall entry at the start of b.
func entryLen(b []byte) int {
	size, n := uvarint(b)
	return n + int(size)
}

func uvarint(b []byte) (uint64, int) {
	var x uint64
	for i, c := range b {
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return x, i + 1
		}
	}
	return 0, 0
}

// A flipped byte in a stored value is found by its seal: startup (a series
// state) or a read (a history chunk) fails with an error naming the bucket
// and the key and the way out, never with wrong data or a panic.
func TestDamagedSnapshotValue(t *testing.T) {
	for _, c := range []struct {
		name string
		find []byte // bytes just before the value to damage
		when string
	}{
		{"series state", []byte("victim"), "open"},
		{"history chunk", append([]byte("victim\x00"), 0), "read"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			// Chunks of 8 points: history gets chunks, not only the tail.
			db := openDB(t, dir, Options{SnapshotInterval: time.Hour, RingSize: 4, ChunkPoints: 8})
			for i := range 20 {
				mustApply(t, db, set("victim", float64(i)), set("other", float64(i)))
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "snapshot.db")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for i := bytes.Index(data, c.find); i >= 0; {
				at := i + len(c.find)
				if c.name == "history chunk" {
					at = i + len("victim") + 17 // past 0x00|created|ordinal
				}
				data[at+8] ^= 0x40 // inside the value, past its seal
				n++
				j := bytes.Index(data[i+1:], c.find)
				if j < 0 {
					break
				}
				i += 1 + j
			}
			if n == 0 {
				t.Fatal("the key is not in the file")
			}
			if err := os.WriteFile(path, data, 0o640); err != nil {
				t.Fatal(err)
			}
			db, err = Open(dir, Options{SnapshotInterval: time.Hour, RingSize: 4})
			if c.when == "open" {
				if !errors.Is(err, snapshot.ErrDamaged) || !strings.Contains(err.Error(), "sonde repair") ||
					!strings.Contains(err.Error(), `"victim"`) {
					t.Fatalf("open: %v, want the damage named", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			_, err = db.Range(context.Background(), "victim", 0, math.MaxInt64, 0, nil)
			if !errors.Is(err, snapshot.ErrDamaged) || !strings.Contains(err.Error(), "bucket history") {
				t.Fatalf("range: %v, want the damage named", err)
			}
			if pts, err := db.Range(context.Background(), "other", 0, math.MaxInt64, 0, nil); err != nil || len(pts) != 20 {
				t.Fatalf("the other series: %d points, %v", len(pts), err)
			}
		})
	}
}

// A damaged page of snapshot.db (bbolt panics reading it) ends startup
// with an error that names the file and the way out.
func TestDamagedSnapshotPage(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour})
	for i := range 3000 {
		mustApply(t, db, sample.Op{Code: sample.Set, Key: "key." + strings.Repeat("x", i%50) + string(rune('a'+i%26)), Value: float64(i)})
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "snapshot.db")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Garbage over every page but the two meta pages: whatever bbolt
	// meets first, it cannot read.
	for p := 2 * 4096; p+4096 <= len(data); p += 4096 {
		for i := p + 16; i < p+64; i++ {
			data[i] = 0xa5
		}
	}
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{})
	if !errors.Is(err, snapshot.ErrDamaged) || !strings.Contains(err.Error(), "sonde repair") {
		t.Fatalf("open: %v", err)
	}
}
