package query

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// taggedIndex is sortedKeys with the postings of its keys' tags.
type taggedIndex struct {
	sortedKeys
	posts [][2]string // (pair, key), sorted
}

func newTaggedIndex(keys []string) *taggedIndex {
	x := &taggedIndex{sortedKeys: sortedKeys{keys: slices.Clone(keys)}}
	slices.Sort(x.keys)
	for _, k := range x.keys {
		_, rest, ok := strings.Cut(k, ";")
		for ok {
			var pair string
			pair, rest, ok = strings.Cut(rest, ";")
			if i := strings.IndexByte(pair, '='); i > 0 {
				x.posts = append(x.posts, [2]string{pair, k})
			}
		}
	}
	slices.SortFunc(x.posts, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	x.posts = slices.Compact(x.posts)
	return x
}

func (x *taggedIndex) Postings(from string, fn func(pair, key string) bool) {
	x.work++
	i, _ := slices.BinarySearchFunc(x.posts, from, func(p [2]string, t string) int { return strings.Compare(p[0], t) })
	for ; i < len(x.posts); i++ {
		x.work++
		if !fn(x.posts[i][0], x.posts[i][1]) {
			return
		}
	}
}

// bruteTagged applies every expression to every key.
func bruteTagged(keys []string, exprs []tagExpr) []string {
	var out []string
	for _, k := range keys {
		ok := true
		for i := range exprs {
			v, has := tagOf(k, exprs[i].tag)
			ok = ok && exprs[i].matches(v, has)
		}
		if ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestTaggedKeysMatchBruteForce(t *testing.T) {
	names := []string{"cpu", "mem", "cpu.user", "disk"}
	tagv := []string{"dc=eu", "dc=us", "dc=", "host=a", "host=ab", "host=b", "env=prod", "dc=eu-west"}
	exprs := []string{"dc=eu", "dc!=eu", "dc=~e", "dc!=~u", "host=~a.*", "host=", "name=cpu", "name=~cp", "name!=mem",
		"env=prod", "env!=", "dc=~(eu|us)$", "host=~[ab]$", "name=~cpu\\.", "nosuch=x", "dc=us"}
	rng := rand.New(rand.NewPCG(11, 12))
	for range 30 {
		var keys []string
		for range 200 {
			k := names[rng.IntN(len(names))]
			for range rng.IntN(4) {
				k += ";" + tagv[rng.IntN(len(tagv))]
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		idx := newTaggedIndex(keys)
		for range 50 {
			var args []string
			for range 1 + rng.IntN(3) {
				args = append(args, exprs[rng.IntN(len(exprs))])
			}
			parsed, err := parseTagExprs(args)
			if err != nil {
				continue // nothing selects: TestTagExprErrors
			}
			got, full, err := taggedKeys(idx, parsed, len(keys)+1, func() error { return nil })
			if err != nil || full {
				t.Fatalf("%q: %v %v", args, err, full)
			}
			if want := bruteTagged(keys, parsed); !slices.Equal(got, want) {
				t.Fatalf("%q over %q:\n got %q\nwant %q", args, keys, got, want)
			}
		}
	}
}

// TestTaggedKeysCostWhatTheyRead counts the work of a filter: an exact
// tag value reads its own postings, whatever the number of series.
func TestTaggedKeysCostWhatTheyRead(t *testing.T) {
	work := func(hosts int, args ...string) int {
		var keys []string
		for h := range hosts {
			keys = append(keys, fmt.Sprintf("cpu;host=h%06d;dc=dc%d", h, h%10), fmt.Sprintf("mem;host=h%06d", h))
		}
		idx := newTaggedIndex(keys)
		exprs, err := parseTagExprs(args)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := taggedKeys(idx, exprs, 1<<30, func() error { return nil })
		if err != nil || len(got) == 0 {
			t.Fatalf("%q: %d keys, %v", args, len(got), err)
		}
		return idx.work
	}
	for _, args := range [][]string{{"host=h000042"}, {"name=cpu", "host=h000042"}, {"dc=dc2", "host=h000042", "name=~c"}} {
		if small, large := work(1000, args...), work(100000, args...); small != large {
			t.Errorf("%q: work %d over 1000 hosts, %d over 100000", args, small, large)
		}
	}
	if small, large := work(1000, "host=~h00004"), work(100000, "host=~h00004"); small != large {
		t.Errorf("host=~h00004: work %d over 1000 hosts, %d over 100000: a regexp reads the values under its literal prefix", small, large)
	}
}

func TestTagExprErrors(t *testing.T) {
	for _, args := range [][]string{
		nil, {""}, {"=x"}, {"dc"}, {"dc!=eu"}, {"dc="}, {"dc=~.*"}, {"dc=~("}, {"d;c=x"}, {"dc=a;b"},
		{strings.Repeat("a", MaxGlobLen+1) + "=x"}, slices.Repeat([]string{"dc=eu"}, MaxTagExprs+1),
	} {
		if _, err := parseTagExprs(args); err == nil {
			t.Errorf("%q: accepted", args)
		}
	}
	for _, args := range [][]string{{"dc=eu"}, {"dc=~eu", "host!="}, {"name=cpu", "dc!=~u"}} {
		if _, err := parseTagExprs(args); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}

func FuzzTagExprs(f *testing.F) {
	keys := []string{"cpu", "cpu;dc=eu", "cpu;dc=eu;host=a", "mem;dc=us", "mem;host=a;host=b", "x;=v", "y;t"}
	idx := newTaggedIndex(keys)
	for _, s := range []string{"dc=eu", "dc!=eu\x00host=a", "name=~c", "host=~(a|b)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exprs, err := parseTagExprs(strings.Split(s, "\x00"))
		if err != nil {
			return
		}
		got, _, err := taggedKeys(idx, exprs, 100, func() error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if want := bruteTagged(idx.keys, exprs); !slices.Equal(got, want) {
			t.Fatalf("%q: got %q, want %q", s, got, want)
		}
	})
}
