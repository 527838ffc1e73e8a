package engine

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestEpochs: each Open starts an epoch at the index recovery ended at. A
// client of an earlier epoch can trust ids up to the lowest start after
// it; an epoch the store does not know (another store, a wiped or damaged
// file) vouches for nothing. The file keeps the newest 64.
func TestEpochs(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour})
	e1 := db.Epoch()
	if th, ok := db.TrustedThrough(e1); !ok || th != math.MaxUint64 {
		t.Fatalf("the current epoch: %d %v", th, ok)
	}
	for i := range 5 {
		mustApply(t, db, set("k", float64(i)))
	}
	db.Close()
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
	e2 := db.Epoch()
	mustApply(t, db, set("k", 9))
	abandon(t, db) // a crash: the WAL keeps id 6, and the next epoch starts there
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
	e3 := db.Epoch()
	if e1 == e2 || e2 == e3 || e1 == 0 || e3 >= 1<<53 {
		t.Fatalf("epochs %d %d %d", e1, e2, e3)
	}
	for _, c := range []struct {
		id   uint64
		want uint64
		ok   bool
	}{{e1, 5, true}, {e2, 6, true}, {e3, math.MaxUint64, true}, {12345, 0, false}} {
		if th, ok := db.TrustedThrough(c.id); th != c.want || ok != c.ok {
			t.Errorf("TrustedThrough(%d) = %d %v, want %d %v", c.id, th, ok, c.want, c.ok)
		}
	}
	db.Close()
	eps, err := readEpochs(dir)
	if err != nil || len(eps) != 3 || eps[0].id != e1 || eps[1].start != 5 || eps[2].start != 6 {
		t.Fatalf("epochs file %+v %v", eps, err)
	}
	// The newest 64 are kept.
	for range 70 {
		if _, err := startEpoch(dir, 6); err != nil {
			t.Fatal(err)
		}
	}
	if eps, _ := readEpochs(dir); len(eps) != maxEpochs {
		t.Fatalf("%d epochs kept", len(eps))
	}
	// A damaged file vouches for nothing, and is written anew.
	if err := os.WriteFile(filepath.Join(dir, epochsFile), []byte("x y\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
	defer db.Close()
	if _, ok := db.TrustedThrough(e3); ok {
		t.Fatal("a damaged epochs file vouched for an old epoch")
	}
	if eps, err := readEpochs(dir); err != nil || len(eps) != 1 || eps[0].id != db.Epoch() {
		t.Fatalf("the file after a damaged one: %+v %v", eps, err)
	}
}
