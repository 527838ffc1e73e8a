package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// damageDir builds a data directory: 30 keys with 10 points each, a
// snapshot of the first 20 keys' points, then 10 more points of every key
// and a DELETE, only in the WAL. It returns the directory and the state
// each key's history ends in.
func damageDir(t *testing.T) (string, map[string][]float64) {
	t.Helper()
	dir := t.TempDir()
	// Chunks of 4 points: the snapshot writes history chunks, not only
	// the series' tails.
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour, ChunkPoints: 4})
	for i := range 10 {
		for k := range 30 {
			mustApply(t, db, set(fmt.Sprintf("k%02d", k), float64(k*100+i)))
		}
	}
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 20; i++ {
		for k := range 30 {
			mustApply(t, db, set(fmt.Sprintf("k%02d", k), float64(k*100+i)))
		}
	}
	mustApply(t, db, del("k29"))
	want := map[string][]float64{}
	for k := range 29 {
		key := fmt.Sprintf("k%02d", k)
		want[key] = history(t, db, key)
	}
	abandon(t, db)
	return dir, want
}

// checkRepaired opens a repaired directory and compares every key's
// history with want, except for the keys in hurt, whose history must be a
// subsequence of want's (the damage took points away, nothing else).
func checkRepaired(t *testing.T, dir string, want map[string][]float64, hurt ...string) {
	t.Helper()
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour})
	defer db.Close()
	if _, ok := db.Get("k29"); ok {
		t.Error("k29 was deleted, yet is back")
	}
	for key, w := range want {
		s, ok := db.Get(key)
		got := []float64{}
		if ok {
			pts, err := db.Range(context.Background(), key, 0, math.MaxInt64, 0, nil)
			if err != nil {
				t.Fatalf("history of %s: %v", key, err)
			}
			got = values(pts)
		}
		if !strings.Contains(strings.Join(hurt, " "), key) {
			if !ok || !equalFloats(got, w) || s.Value != w[len(w)-1] {
				t.Errorf("%s = %v (present %v), want %v: the damage did not touch it", key, got, ok, w)
			}
			continue
		}
		j := 0
		for _, v := range got {
			for j < len(w) && w[j] != v {
				j++
			}
			if j == len(w) {
				t.Errorf("%s = %v is not a part of %v", key, got, w)
				break
			}
		}
		if len(got) >= len(w) {
			t.Errorf("%s lost nothing (%v): the damage was not where the test put it", key, got)
		}
	}
	mustApply(t, db, set("after.repair", 1))
}

func runRepair(t *testing.T, dir string) *Report {
	t.Helper()
	before, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if before.Clean() {
		t.Fatal("check found nothing wrong with the damaged directory")
	}
	rep, err := Repair(dir)
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	if len(rep.Lost) == 0 {
		t.Fatal("repair says nothing was lost")
	}
	if _, err := os.Stat(filepath.Join(rep.Backup, "snapshot.db")); err != nil {
		t.Fatalf("the damaged snapshot.db was not kept: %v", err)
	}
	after, err := Check(dir)
	if err != nil || !after.Clean() {
		t.Fatalf("check after the repair: %v %v", err, after.Problems)
	}
	return rep
}

// flipEvery damages the byte off bytes past every copy of mark in the
// file: freed pages keep older copies of an entry, so the live one is hit.
func flipEvery(t *testing.T, path string, mark []byte, off int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; ; i++ {
		j := bytes.Index(data[i:], mark)
		if j < 0 {
			break
		}
		i += j
		data[i+len(mark)+off] ^= 0x24
		n++
	}
	if n == 0 {
		t.Fatalf("%q is not in %s", mark, path)
	}
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string, at func([]byte) int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := at(data)
	if i < 0 || i >= len(data) {
		t.Fatalf("nothing to flip in %s", path)
	}
	data[i] ^= 0x24
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

// A flipped byte in a WAL record after the snapshot: startup refuses, check
// names the record and its key, repair keeps every other record, and the
// key's later points follow on.
func TestRepairDamagedWALRecord(t *testing.T) {
	dir, want := damageDir(t)
	flip(t, tailSegment(t, dir), func(data []byte) int {
		// The record that sets k07 to 714: find its value bytes.
		v := make([]byte, 8)
		putFloat(v, 714)
		return bytes.Index(data, v) + 2
	})
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "sonde repair") {
		t.Fatalf("open of the damaged directory: %v", err)
	}
	rep := runRepair(t, dir)
	if !strings.Contains(strings.Join(rep.Lost, "\n"), `"k07"`) {
		t.Errorf("the report does not name k07: %v", rep.Lost)
	}
	checkRepaired(t, dir, want, "k07")
}

// A flipped byte in a stored series state: check names the series; repair
// drops that series' stored state and history, and its WAL records after
// the snapshot start its history again; every other series is whole.
func TestRepairDamagedSeriesState(t *testing.T) {
	dir, want := damageDir(t)
	// The series bucket's entry is the key, then its sealed value.
	flipEvery(t, filepath.Join(dir, "snapshot.db"), []byte("k13\xc3"), 10)
	rep := runRepair(t, dir)
	if !strings.Contains(strings.Join(rep.Lost, "\n"), `"k13"`) {
		t.Errorf("the report does not name k13: %v", rep.Lost)
	}
	checkRepaired(t, dir, want, "k13")
}

// Garbage over a page of snapshot.db's tree: the pages that are intact are
// salvaged; the report says what was not.
func TestRepairDamagedSnapshotPage(t *testing.T) {
	dir, want := damageDir(t)
	path := filepath.Join(dir, "snapshot.db")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The history leaf that holds k05's first chunk (a branch page may
	// hold its key too: bbolt's page header has the flags at byte 8, 0x02
	// for a leaf).
	page := -1
	for i := 0; page < 0; {
		j := bytes.Index(data[i:], []byte("k05\x00"))
		if j < 0 {
			t.Fatal("no leaf page holds k05's first chunk")
		}
		if p := (i + j) / 4096 * 4096; binary.LittleEndian.Uint16(data[p+8:]) == 0x02 {
			page = p
		}
		i += j + 1
	}
	for j := page + 16; j < page+32; j++ {
		data[j] = 0xee
	}
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "sonde repair") {
		t.Fatalf("open: %v", err)
	}
	rep := runRepair(t, dir)
	t.Logf("lost: %v", rep.Lost)
	// The report names the series a lost page held: one by one, or as the
	// range of keys the page held.
	named := regexp.MustCompile(`series "([^"]+)"`)
	var hurt []string
	for key := range want {
		for _, l := range rep.Lost {
			ns := named.FindAllStringSubmatch(l, -1)
			in := !strings.Contains(l, "keys from") && strings.Contains(l, `"`+key+`"`)
			if strings.Contains(l, "keys from") && len(ns) > 0 {
				lo, hi := ns[0][1], "\xff"
				switch {
				case strings.Contains(l, "from the first up to"):
					lo, hi = "", ns[0][1]
				case len(ns) > 1:
					hi = ns[1][1]
				}
				// hi is the series of the next readable entry, which may have
				// lost its earlier chunks.
				in = in || (key >= lo && key <= hi)
			}
			if in {
				hurt = append(hurt, key)
				break
			}
		}
	}
	if len(hurt) == 0 || len(hurt) > 10 {
		t.Fatalf("the report names %d series as hurt (%v): it does not say what the page held", len(hurt), hurt)
	}
	checkRepaired(t, dir, want, hurt...)
}

// A damaged length in the middle of the WAL: the records after it are
// found again; how many were lost is a guess, and the report says so.
func TestRepairDamagedWALLength(t *testing.T) {
	dir, want := damageDir(t)
	flip(t, tailSegment(t, dir), func(data []byte) int {
		off := 0
		for range 400 {
			off += entryLen(data[off:])
		}
		return off // the length prefix of record 401
	})
	rep := runRepair(t, dir)
	lost := strings.Join(rep.Lost, "\n")
	if !strings.Contains(lost, "not records") {
		t.Errorf("the report does not say what was skipped: %v", rep.Lost)
	}
	db := openDB(t, dir, Options{})
	defer db.Close()
	for key, w := range want {
		s, ok := db.Get(key)
		if !ok || s.Value != w[len(w)-1] {
			t.Errorf("%s = %+v, want its last value %v: the records after the damage are lost", key, s, w[len(w)-1])
		}
	}
}

func putFloat(b []byte, v float64) {
	u := math.Float64bits(v)
	for i := range 8 {
		b[i] = byte(u >> (8 * i))
	}
}

// check and repair refuse a directory a running store holds.
func TestRepairRefusesARunningStore(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{})
	defer db.Close()
	mustApply(t, db, sample.Op{Code: sample.Set, Key: "a", Value: 1})
	if _, err := Check(dir); err == nil || !strings.Contains(err.Error(), "stop the sonde") {
		t.Fatalf("check of an open directory: %v", err)
	}
	if _, err := Repair(dir); err == nil || !strings.Contains(err.Error(), "stop the sonde") {
		t.Fatalf("repair of an open directory: %v", err)
	}
}

// TestIncompleteGroup: a batch the process was killed while writing (its
// last record never reached the file) is replayed not at all, never in
// part; sonde check names it, and sonde repair drops it as a start does.
func TestIncompleteGroup(t *testing.T) {
	for _, mode := range []string{"open", "repair"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			db := openDB(t, dir, Options{SnapshotInterval: time.Hour})
			mustApply(t, db, set("before", 1))
			mustApply(t, db, set("a", 1), set("b", 2), set("c", 3), set("cursor", 3))
			abandon(t, db)
			// The batch's last record, the one that ends its group, never
			// got written.
			path := tailSegment(t, dir)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			off := 0
			for range 4 { // "before", then a, b and c
				off += entryLen(data[off:])
			}
			if err := os.Truncate(path, int64(off)); err != nil {
				t.Fatal(err)
			}
			rep, err := Check(dir)
			if err != nil {
				t.Fatal(err)
			}
			if p := strings.Join(rep.Problems, "\n"); !strings.Contains(p, "records 2 to 4 are the start of a commit group") {
				t.Fatalf("check does not name the incomplete group: %q", p)
			}
			if mode == "repair" {
				if rep := runRepair(t, dir); !strings.Contains(strings.Join(rep.Lost, "\n"), "commit group") {
					t.Fatalf("repair does not say it dropped the group: %v", rep.Lost)
				}
			}
			db = openDB(t, dir, Options{SnapshotInterval: time.Hour})
			if _, ok := db.Get("before"); !ok {
				t.Fatal("the whole group before it is gone")
			}
			for _, k := range []string{"a", "b", "c"} {
				if s, ok := db.Get(k); ok {
					t.Fatalf("%s = %v: part of an incomplete group was replayed", k, s.Value)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if rep, err := Check(dir); err != nil || !rep.Clean() {
				t.Fatalf("check after the start: %v %+v", err, rep)
			}
		})
	}
}
