package engine

import (
	"strings"
	"sync"

	"github.com/google/btree"
)

// index is the readers' view of which series exist: a B-tree in key
// order for exact keys, prefixes and seeks, so that a read costs time in
// proportion to what it asks for, not to the number of series. An exact
// key is a descent of about four nodes at a million series; a map beside
// the tree made that a hash lookup for 45 MiB more at a million series
// (the committer keeps its own map, of what its queued records leave).
// Only the committer changes it (apply, once per group that creates or
// deletes a series; Open before the committer starts); readers hold the
// read lock for one lookup or one batch of a scan, never while they call
// out, so a slow reader holds up nobody.
//
// google/btree rather than a sorted slice: a million series are created
// one group at a time, and a slice would copy itself at each insertion.
type index struct {
	mu sync.RWMutex
	t  *btree.BTreeG[*series]
	// tags holds the postings of Graphite tags: for each "tag=value" of a
	// key "name;tag=value;...", the keys that carry it, in key order.
	tags *btree.BTreeG[posting]
}

// posting says that key carries pair ("tag=value"), a substring of key.
type posting struct{ pair, key string }

func lessPosting(a, b posting) bool {
	if a.pair != b.pair {
		return a.pair < b.pair
	}
	return a.key < b.key
}

// pairs calls fn with each "tag=value" of key (none when it has no ';'),
// substrings of key.
func pairs(key string, fn func(pair string)) {
	i := strings.IndexByte(key, ';')
	for i >= 0 {
		rest := key[i+1:]
		j := strings.IndexByte(rest, ';')
		pair := rest
		if j >= 0 {
			pair = rest[:j]
		}
		if eq := strings.IndexByte(pair, '='); eq > 0 {
			fn(pair)
		}
		if j < 0 {
			return
		}
		i += 1 + j
	}
}

// indexDegree is the B-tree's minimum degree: nodes of 31 to 63 keys, a
// few cache lines of pointers, a seek of about four levels at a million
// series.
const indexDegree = 32

func lessKey(a, b *series) bool { return a.key < b.key }

func newIndex() *index {
	return &index{t: btree.NewG(indexDegree, lessKey), tags: btree.NewG(indexDegree, lessPosting)}
}

// get returns the series of key, nil when there is none.
func (x *index) get(key string) *series {
	pivot := pivots.Get().(*series)
	pivot.key = key
	x.mu.RLock()
	s, _ := x.t.Get(pivot)
	x.mu.RUnlock()
	pivot.key = ""
	pivots.Put(pivot)
	return s
}

// len returns the number of series.
func (x *index) len() int {
	x.mu.RLock()
	n := x.t.Len()
	x.mu.RUnlock()
	return n
}

// put makes s the series of its key. The caller holds mu.
func (x *index) put(s *series) {
	x.t.ReplaceOrInsert(s)
	pairs(s.key, func(pair string) { x.tags.ReplaceOrInsert(posting{pair, s.key}) })
}

// remove drops s, if it is still the series of its key. The caller holds
// mu.
func (x *index) remove(s *series) {
	if cur, _ := x.t.Get(s); cur != s {
		return
	}
	x.t.Delete(s)
	pairs(s.key, func(pair string) { x.tags.Delete(posting{pair, s.key}) })
}

// postings calls fn with every posting from (pair, "") on, in order, until
// fn returns false; as ascend, in batches, no lock held while fn runs.
func (x *index) postings(pair string, fn func(pair, key string) bool) {
	var batch [maxBatch]posting
	size := firstBatch
	pivot := posting{pair: pair}
	for {
		n := 0
		x.mu.RLock()
		x.tags.AscendGreaterOrEqual(pivot, func(p posting) bool {
			batch[n] = p
			n++
			return n < size
		})
		x.mu.RUnlock()
		if n == 0 {
			return
		}
		pivot = posting{pair: batch[n-1].pair, key: batch[n-1].key + "\x00"}
		for i := range n {
			if !fn(batch[i].pair, batch[i].key) {
				return
			}
		}
		if n < size {
			return
		}
		size = min(2*size, maxBatch)
	}
}

// pivots are the B-tree's search keys: a *series, of which only the key
// is read, pooled because a series is some 200 bytes.
var pivots = sync.Pool{New: func() any { return new(series) }}

// Batches of an ascent: the first is small, since many callers want a
// key or two (a seek), then they double up to maxBatch, the most series
// copied under one hold of the read lock: the committer waits for at
// most one batch.
const (
	firstBatch = 16
	maxBatch   = 256
)

// ascend calls fn with every series from the key from on, in key order,
// until fn returns false. No lock is held while fn runs. A series created
// or deleted during the ascent is seen or not depending on where it is.
func (x *index) ascend(from string, fn func(*series) bool) {
	var batch [maxBatch]*series
	size := firstBatch
	pivot := pivots.Get().(*series)
	defer pivots.Put(pivot)
	pivot.key = from
	for {
		n := 0
		x.mu.RLock()
		x.t.AscendGreaterOrEqual(pivot, func(s *series) bool {
			batch[n] = s
			n++
			return n < size
		})
		x.mu.RUnlock()
		if n == 0 {
			return
		}
		pivot.key = batch[n-1].key + "\x00" // keys hold no zero byte: nothing between
		for i := range n {
			s := batch[i]
			batch[i] = nil
			if !fn(s) {
				return
			}
		}
		if n < size {
			return
		}
		size = min(2*size, maxBatch)
	}
}

// scan calls fn with every series whose key starts with prefix and that
// match accepts (nil: all), in key order, until fn returns false; as
// ascend, no lock is held while match or fn run.
func (x *index) scan(prefix string, match func(string) bool, fn func(*series) bool) {
	x.ascend(prefix, func(s *series) bool {
		if !strings.HasPrefix(s.key, prefix) {
			return false
		}
		return (match != nil && !match(s.key)) || fn(s)
	})
}
