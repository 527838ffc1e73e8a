package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func keysOf(list []sample.Series) []string {
	out := make([]string, len(list))
	for i, se := range list {
		out[i] = se.Key
	}
	return out
}

// TestIndexPrefixAndSeek checks Series, Each and Seek against a sorted
// list of the keys, across batches of the scan, deletes and a restart.
func TestIndexPrefixAndSeek(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{})
	var want []string
	var ops []sample.Op
	for h := range 40 {
		for _, m := range []string{"cpu", "cpu.user", "cpu-x", "cpu;t=1", "mem"} {
			k := fmt.Sprintf("web%02d.%s", h, m)
			ops = append(ops, set(k, float64(h)))
			want = append(want, k)
		}
	}
	mustApply(t, db, ops...)
	mustApply(t, db, del("web07.cpu"), del("web31.mem"))
	want = slices.DeleteFunc(want, func(k string) bool { return k == "web07.cpu" || k == "web31.mem" })
	slices.Sort(want)

	check := func(db *DB) {
		t.Helper()
		if got := keysOf(db.Series("", nil, nil)); !slices.Equal(got, want) {
			t.Fatalf("all series: got %d keys, want %d\n got %q\nwant %q", len(got), len(want), got, want)
		}
		for _, prefix := range []string{"web0", "web07.", "web07.cpu", "web3", "zzz", "web39.mem"} {
			var exp []string
			for _, k := range want {
				if strings.HasPrefix(k, prefix) && strings.Contains(k, "u") {
					exp = append(exp, k)
				}
			}
			match := func(k string) bool { return strings.Contains(k, "u") }
			if got := keysOf(db.Series(prefix, match, nil)); !slices.Equal(got, exp) {
				t.Fatalf("prefix %q: got %q, want %q", prefix, got, exp)
			}
			var each []string
			db.Each(prefix, match, func(se sample.Series) bool { each = append(each, se.Key); return true })
			if !slices.Equal(each, exp) {
				t.Fatalf("each %q: got %q, want %q", prefix, each, exp)
			}
		}
		for _, from := range []string{"", "web07.cpu", "web07.cpu\x00", "web31.mem", "web39.mem", "web39.mem\x00", "a", "z"} {
			i, _ := slices.BinarySearch(want, from)
			k, ok := "", false
			db.Keys(from, func(key string) bool { k, ok = key, true; return false })
			if ok != (i < len(want)) || ok && k != want[i] {
				t.Fatalf("seek %q: got %q %v, want the key at %d of %d", from, k, ok, i, len(want))
			}
		}
		var run []string
		db.Keys("web07.cpu", func(k string) bool { run = append(run, k); return true })
		if i, _ := slices.BinarySearch(want, "web07.cpu"); !slices.Equal(run, want[i:]) {
			t.Fatalf("keys from web07.cpu: got %d keys, want the %d from there on", len(run), len(want)-i)
		}
		n := 0
		db.Each("", nil, func(sample.Series) bool { n++; return n < 300 })
		if n != 198 {
			t.Fatalf("each stopped by fn: called %d times, want all 198", n)
		}
		n = 0
		db.Each("", nil, func(sample.Series) bool { n++; return n < 3 })
		if n != 3 {
			t.Fatalf("each stopped after 3: called %d times", n)
		}
	}
	check(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, Options{})
	defer db.Close()
	check(db)
}

// TestIndexWhileWriting scans the index while the committer creates,
// deletes and re-creates series: every scan is in key order, and a key
// that exists throughout is always seen (run with -race).
func TestIndexWhileWriting(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{})
	defer db.Close()
	var stable []sample.Op
	for i := range 1000 {
		stable = append(stable, set(fmt.Sprintf("s.%04d", i), 1))
	}
	mustApply(t, db, stable...)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs := make([]error, 1)
		for i := 0; ctx.Err() == nil; i++ {
			k := fmt.Sprintf("s.%04d.x%d", i%1000, i%3)
			for _, op := range []sample.Op{set(k, 1), del(k)} {
				err := db.Append(ctx, []sample.Op{op}, errs)
				if err != nil && ctx.Err() != nil {
					// The test is over. The SET may not have been queued,
					// so a DEL after it would find no key: stop here.
					return
				}
				if err != nil || errs[0] != nil {
					t.Errorf("%+v: %v %v", op, err, errs[0]) // not Fatal: another goroutine
					return
				}
			}
		}
	}()
	for range 200 {
		list := db.Series("s.", nil, nil)
		stableSeen := 0
		for i, se := range list {
			if i > 0 && list[i-1].Key >= se.Key {
				t.Fatalf("scan out of order: %q then %q", list[i-1].Key, se.Key)
			}
			if len(se.Key) == 6 {
				stableSeen++
			}
		}
		if stableSeen != 1000 {
			t.Fatalf("a scan saw %d of the 1000 keys that exist throughout", stableSeen)
		}
	}
	cancel()
	wg.Wait()
}

// TestTagPostings checks the tag postings through creates, deletes and a
// restart: every "tag=value" of every key, once, in order.
func TestTagPostings(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{})
	mustApply(t, db, set("cpu;dc=eu;host=a", 1), set("cpu;dc=us;host=b", 1), set("cpu", 1),
		set("mem;host=a", 1), set("odd;=x;t;u=", 1), set("gone;dc=eu", 1))
	mustApply(t, db, del("gone;dc=eu"))
	want := "dc=eu cpu;dc=eu;host=a|dc=us cpu;dc=us;host=b|host=a cpu;dc=eu;host=a|host=a mem;host=a|host=b cpu;dc=us;host=b|u= odd;=x;t;u="
	check := func(db *DB) {
		t.Helper()
		var got []string
		db.Postings("", func(pair, key string) bool { got = append(got, pair+" "+key); return true })
		if g := strings.Join(got, "|"); g != want {
			t.Fatalf("postings:\n got %s\nwant %s", g, want)
		}
		got = got[:0]
		db.Postings("host=", func(pair, key string) bool { got = append(got, key); return len(got) < 2 })
		if g := strings.Join(got, "|"); g != "cpu;dc=eu;host=a|mem;host=a" {
			t.Fatalf("postings from host= for 2: %s", g)
		}
	}
	check(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, Options{})
	defer db.Close()
	check(db)
}

// BenchmarkIndexGet: an exact key at a million series, through the
// index's B-tree, beside a Go map of the same keys (what the index held
// before for exact keys, for 45 MiB more at this size).
func BenchmarkIndexGet(b *testing.B) {
	const n = 1_000_000
	x := newIndex()
	m := make(map[string]*series, n)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("host%04d.cpu.%03d", i/1000, i%1000)
		s := &series{key: keys[i]}
		x.put(s)
		m[keys[i]] = s
	}
	order := rand.Perm(n)
	b.Run("btree", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if x.get(keys[order[i%n]]) == nil {
				b.Fatal("missing")
			}
		}
	})
	b.Run("map", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if m[keys[order[i%n]]] == nil {
				b.Fatal("missing")
			}
		}
	})
}
