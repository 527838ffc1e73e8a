package engine

import (
	"sync"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// eventRing keeps the most recent changes for subscribers. The committer
// appends; subscribers copy out. IDs are dense, so the slot of id is
// id % len(buf).
type eventRing struct {
	mu  sync.RWMutex // guards buf, lo and hi; held briefly, never across I/O.
	buf []sample.Change
	lo  uint64 // oldest id held
	hi  uint64 // one past the newest id held
}

func newEventRing(size int, next uint64) *eventRing {
	return &eventRing{buf: make([]sample.Change, size), lo: next, hi: next}
}

// appendAll adds changes with consecutive ids starting at e.hi.
func (e *eventRing) appendAll(cs []sample.Change) {
	e.mu.Lock()
	for _, c := range cs {
		e.buf[c.ID%uint64(len(e.buf))] = c
	}
	if len(cs) > 0 {
		e.hi = cs[len(cs)-1].ID + 1
		if e.hi-e.lo > uint64(len(e.buf)) {
			e.lo = e.hi - uint64(len(e.buf))
		}
	}
	e.mu.Unlock()
}

// oldest returns the oldest id held.
func (e *eventRing) oldest() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.lo
}

// copyAfter appends to dst the held changes after id, at most max of
// them. ok is false when the change right after id is no longer held.
func (e *eventRing) copyAfter(id uint64, dst []sample.Change, max int) ([]sample.Change, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if id+1 < e.lo {
		return dst, false
	}
	for i := id + 1; i < e.hi && max > 0; i++ {
		dst = append(dst, e.buf[i%uint64(len(e.buf))])
		max--
	}
	return dst, true
}
