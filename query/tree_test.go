package query

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// sortedKeys is a key index over a sorted slice, counting its work: one
// per search, and one per key it visits.
type sortedKeys struct {
	keys []string
	work int
}

func (s *sortedKeys) Keys(from string, fn func(string) bool) {
	s.work++
	i, _ := slices.BinarySearch(s.keys, from)
	for ; i < len(s.keys); i++ {
		s.work++
		if !fn(s.keys[i]) {
			return
		}
	}
}

func (s *sortedKeys) Series(prefix string, match func(string) bool, dst []sample.Series) []sample.Series {
	s.work++
	i, _ := slices.BinarySearch(s.keys, prefix)
	for ; i < len(s.keys) && strings.HasPrefix(s.keys[i], prefix); i++ {
		s.work++
		if match == nil || match(s.keys[i]) {
			dst = append(dst, sample.Series{Key: s.keys[i]})
		}
	}
	return dst
}

// bruteRender is what /render listed before the walk: every key whose
// name the whole pattern matches.
func bruteRender(t *testing.T, pattern string, keys []string) []string {
	re, err := oldGraphiteGlob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if re.MatchString(keyName(k)) {
			out = append(out, k)
		}
	}
	return out
}

// bruteFind is what /metrics/find listed before the walk.
func bruteFind(t *testing.T, pattern string, keys []string) map[string]node {
	re, err := oldGraphiteGlob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	depth := strings.Count(pattern, ".") + 1
	out := map[string]node{}
	for _, k := range keys {
		parts := strings.SplitN(keyName(k), ".", depth+1)
		if len(parts) < depth {
			continue
		}
		id := strings.Join(parts[:depth], ".")
		if !re.MatchString(id) {
			continue
		}
		n := out[id]
		if len(parts) > depth {
			n.branch = true
		} else {
			n.leaf = true
		}
		out[id] = n
	}
	return out
}

func checkWalk(t *testing.T, pattern string, idx *sortedKeys) {
	t.Helper()
	pat, err := compileGraphite(pattern)
	if err != nil {
		t.Fatalf("%q: %v", pattern, err)
	}
	list, full, err := graphiteKeys(idx, pat, len(idx.keys), func() error { return nil })
	if err != nil || full {
		t.Fatalf("%q: %v, full %v", pattern, err, full)
	}
	var got []string
	for _, se := range list {
		got = append(got, se.Key)
	}
	if want := bruteRender(t, pattern, idx.keys); !slices.Equal(got, want) {
		t.Fatalf("render %q over %q:\n got %q\nwant %q", pattern, idx.keys, got, want)
	}
	if pat.levels == nil {
		return
	}
	w := &walker{store: idx, check: func() error { return nil }}
	paths, kinds, full := w.nodes(pat, len(idx.keys), false)
	if full || w.err != nil {
		t.Fatalf("find %q: full %v, %v", pattern, full, w.err)
	}
	want := bruteFind(t, pattern, idx.keys)
	if len(paths) != len(want) {
		t.Fatalf("find %q over %q: got %v, want %v", pattern, idx.keys, kinds, want)
	}
	for _, p := range paths {
		if kinds[p] != want[p] {
			t.Fatalf("find %q over %q: %q is %+v, want %+v", pattern, idx.keys, p, kinds[p], want[p])
		}
	}
}

// TestGraphiteWalkMatchesBruteForce checks the walk of the key hierarchy
// against matching every key, on keys made to sit between a node and its
// subtree in byte order ("a.b", "a.b-x", "a.b.c", "a.b;t=1", "a.b0").
func TestGraphiteWalkMatchesBruteForce(t *testing.T) {
	segs := []string{"a", "b", "ab", "b-x", "b0", "", "c/d", "é"}
	tags := []string{"", "", "", ";t=1", ";t=a.b", ";u=2;t=1"}
	levels := []string{"*", "a", "b*", "{a,b}", "[ab]", "?", "*b", "b-*", "a*b", "{ab,c/d}", "é", "", "b?", "{b,b-x}*"}
	odd := []string{"{a.b,c}.*", "a.[.b]", "*.b;t=1", "a;t=1", "{a,b}.{b.c,ab}"}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 40 {
		set := map[string]bool{}
		for range 80 {
			n := 1 + rng.IntN(4)
			parts := make([]string, n)
			for i := range parts {
				parts[i] = segs[rng.IntN(len(segs))]
			}
			set[strings.Join(parts, ".")+tags[rng.IntN(len(tags))]] = true
		}
		idx := &sortedKeys{}
		for k := range set {
			idx.keys = append(idx.keys, k)
		}
		slices.Sort(idx.keys)
		for range 60 {
			n := 1 + rng.IntN(4)
			parts := make([]string, n)
			for i := range parts {
				parts[i] = levels[rng.IntN(len(levels))]
			}
			checkWalk(t, strings.Join(parts, "."), idx)
		}
		for _, p := range odd {
			checkWalk(t, p, idx)
		}
		_ = round
	}
}

// TestGraphiteWalkCostsWhatItMatches counts the work of a walk (seeks,
// scans and the keys they visit): it grows with the nodes the pattern
// visits, not with the number of series.
func TestGraphiteWalkCostsWhatItMatches(t *testing.T) {
	work := func(hosts int, pattern string) int {
		idx := &sortedKeys{}
		for h := range hosts {
			for _, m := range []string{"cpu.user", "cpu.system", "mem.free", "disk.sda.reads"} {
				idx.keys = append(idx.keys, fmt.Sprintf("host%05d.%s", h, m))
			}
		}
		slices.Sort(idx.keys)
		pat, err := compileGraphite(pattern)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := graphiteKeys(idx, pat, 1<<30, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		return idx.work
	}
	for _, pattern := range []string{"host00042.cpu.user", "host00042.cpu.*", "host0004*.cpu.user", "host00042.*.*"} {
		small, large := work(1000, pattern), work(100000, pattern)
		if small != large || small == 0 {
			t.Errorf("%s: work %d over 1000 hosts, %d over 100000: the walk should cost what it visits", pattern, small, large)
		}
	}
	// A level that lists every host costs a seek per host, as Graphite's
	// tree costs a directory listing (a search and a key read per host),
	// and the literal levels below a scan of one key each (the same).
	if n := work(1000, "*.mem.free"); n < 1000 || n > 4*1000+1 {
		t.Errorf("*.mem.free over 1000 hosts: work %d, want two searches and two keys read per host", n)
	}
}

// FuzzGraphiteWalk checks the walk against matching every key for any
// pattern over a fixed set of awkward keys.
func FuzzGraphiteWalk(f *testing.F) {
	keys := []string{"a", "a.b", "a.b-x", "a.b.c", "a.b;t=1", "a.b0", "a.b/", "a..b", "b.a;t=x.y", "ab.c.d", "é.a"}
	slices.Sort(keys)
	for _, p := range []string{"*", "a.*", "a.b*", "*.*.*", "{a,b}.[ab]*", "a.{b.c,b}", "?.b", ""} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, pattern string) {
		if _, err := oldGraphiteGlob(pattern); err != nil {
			return
		}
		if _, err := compileGraphite(pattern); err != nil {
			return // refused for its size: TestPatternLimits
		}
		checkWalk(t, pattern, &sortedKeys{keys: keys})
	})
}
