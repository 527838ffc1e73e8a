package engine

import (
	"sort"
	"sync"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// feed keeps the most recent entries of the change feed for subscribers:
// every stored change (one per WAL record), and after them the ends of
// idle counting windows (ticks), which change nothing and are not stored.
// Positions are dense from 1. An entry's ID is its WAL index, or for a
// tick the index of the newest stored change before it, so IDs never
// decrease along the feed. The committer appends; subscribers copy out.
type feed struct {
	mu     sync.RWMutex // guards the fields below; held briefly, never across I/O.
	buf    []sample.Change
	lo, hi uint64 // positions held: [lo, hi)
	// dropID is the ID of the entry at position lo-1 (the WAL index the
	// store opened at, while nothing was dropped).
	dropID uint64
	// ticks counts the idle window ends published (a statistic).
	ticks uint64
}

func newFeed(size int, openedAt uint64) *feed {
	return &feed{buf: make([]sample.Change, size), lo: 1, hi: 1, dropID: openedAt}
}

func (f *feed) at(pos uint64) *sample.Change { return &f.buf[pos%uint64(len(f.buf))] }

// appendAll adds cs at the next positions, setting their Pos.
func (f *feed) appendAll(cs []sample.Change) {
	f.mu.Lock()
	for i := range cs {
		cs[i].Pos = f.hi
		if f.hi-f.lo == uint64(len(f.buf)) {
			f.dropID = f.at(f.lo).ID
			f.lo++
		}
		*f.at(f.hi) = cs[i]
		f.hi++
		if cs[i].Tick {
			f.ticks++
		}
	}
	f.mu.Unlock()
}

// head returns the position of the newest entry (0 when none yet).
func (f *feed) head() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.hi - 1
}

// copyAfter appends to dst the entries after position pos, at most max of
// them. ok is false when the entry after pos is no longer held.
func (f *feed) copyAfter(pos uint64, dst []sample.Change, max int) ([]sample.Change, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if pos+1 < f.lo {
		return dst, false
	}
	for p := pos + 1; p < f.hi && max > 0; p++ {
		dst = append(dst, *f.at(p))
		max--
	}
	return dst, true
}

// posOf returns the position of the last entry whose ID is at most id: a
// subscriber that has seen the stored change id goes on after it (the
// ticks between it and the next stored change change nothing). ok is
// false when the feed no longer holds what comes after id.
func (f *feed) posOf(id uint64) (uint64, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if id < f.dropID {
		return 0, false
	}
	n := int(f.hi - f.lo)
	i := sort.Search(n, func(i int) bool { return f.at(f.lo+uint64(i)).ID > id })
	return f.lo + uint64(i) - 1, true
}

// storedAfter appends to dst the stored changes (no ticks) with IDs after
// id, at most max of them. ok is false when the feed no longer holds the
// change after id.
func (f *feed) storedAfter(id uint64, dst []sample.Change, max int) ([]sample.Change, bool) {
	pos, ok := f.posOf(id)
	if !ok {
		return dst, false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if pos+1 < f.lo {
		return dst, false // dropped meanwhile
	}
	for p := pos + 1; p < f.hi && max > 0; p++ {
		if c := f.at(p); !c.Tick {
			dst = append(dst, *c)
			max--
		}
	}
	return dst, true
}

// oldestID returns the ID of the oldest stored change the feed holds, or
// the ID after which it starts when it holds none.
func (f *feed) oldestID() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for p := f.lo; p < f.hi; p++ {
		if c := f.at(p); !c.Tick {
			return c.ID
		}
	}
	return f.dropID + 1
}
