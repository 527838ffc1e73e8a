package engine

import (
	"container/heap"
	"math"
	"sync/atomic"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/ring"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// series is one key. The fields above the committer block are immutable
// or atomic and may be read by anyone; the committer block belongs to the
// committer goroutine alone (and to Open before it starts).
type series struct {
	key      string
	kind     sample.Kind
	interval int64  // COUNTER window in ms
	created  uint64 // WAL index of the record that created this incarnation

	value   atomic.Uint64 // float64 bits: GAUGE value or COUNTER total
	view    atomic.Uint64 // float64 bits: the mesures view value
	updated atomic.Int64  // ms of the last write
	flushed atomic.Uint64 // newest ordinal stored in the snapshot database
	ring    ring.Ring

	c committed // committer-owned
	// Committer-owned, outside c because a failed group's undo does not
	// change it: the generation of the dirty list that last took this
	// series (snapshot.go).
	dirtyGen uint64
}

// committed is the committer's state of a series: what the records it
// has queued leave.
type committed struct {
	value, running, shown float64
	winStart              int64
	updated               int64
	ordinal               uint64
	deleted               bool
	touched               uint64 // the last group that saved this state for its undo
	lastIdx               uint64 // WAL index of the newest record of this series other than its DELETE
	delIdx                uint64 // WAL index of its DELETE (0: none)
}

// gone reports whether a failed group's undo removed the series it had
// created: it never existed, and a snapshot skips it.
func (c *committed) gone() bool { return c.deleted && c.delIdx == 0 }

func newSeries(key string, kind sample.Kind, interval int64, created uint64, ringSize int, nextOrdinal uint64) *series {
	s := &series{}
	s.init(key, kind, interval, created, ringSize, nextOrdinal)
	return s
}

// init sets up a zero series.
func (s *series) init(key string, kind sample.Kind, interval int64, created uint64, ringSize int, nextOrdinal uint64) {
	s.key, s.kind, s.interval, s.created = key, kind, interval, created
	s.ring.Init(ringSize, nextOrdinal)
}

// slabSeries is how many series a slab holds.
const slabSeries = 1024

// seriesSlab hands out zero series from arrays of slabSeries: loading a
// million stored series at startup one allocation each spent a quarter
// of the open in the allocator (0.7 of 3.1 s, mostly fresh spans set up
// for 240-byte objects). A slab stays in memory while any of its series
// does, so it serves what is loaded together and lives on together.
type seriesSlab []series

func (sl *seriesSlab) next() *series {
	if len(*sl) == 0 {
		*sl = make([]series, slabSeries)
	}
	s := &(*sl)[0]
	*sl = (*sl)[1:]
	return s
}

// fromRecord sets the committer state of s to the post-image in r.
func (s *series) fromRecord(r *record.Record) {
	s.c.value = r.Value
	s.c.running, s.c.shown, s.c.winStart = r.Running, r.Shown, r.WinStart
	s.c.ordinal = r.Ordinal
	s.c.updated = r.Time
}

// publish makes the post-image in r visible to readers.
func (s *series) publish(r *record.Record) {
	if r.Code != sample.Window {
		s.value.Store(math.Float64bits(r.Value))
		s.updated.Store(r.Time)
		s.ring.Push(sample.Point{T: r.Time, V: r.Value}, s.flushed.Load())
	}
	s.view.Store(math.Float64bits(viewOf(r)))
}

// viewOf is the mesures view value a record leaves: the GAUGE value, or
// the count of the last closed window of a COUNTER.
func viewOf(r *record.Record) float64 {
	if r.Code == sample.Set {
		return r.Value
	}
	return r.Shown
}

func (s *series) snapshot() sample.Series {
	out := sample.Series{
		Key:     s.key,
		Kind:    s.kind,
		Value:   math.Float64frombits(s.value.Load()),
		View:    math.Float64frombits(s.view.Load()),
		Updated: s.updated.Load(),
		Points:  s.ring.Next() - 1,
	}
	if s.kind == sample.Counter {
		out.Interval = s.interval
	}
	return out
}

// windowHeap orders counters by the end of their open window. Entries go
// stale when a series is deleted or its window moves; pop checks.
type windowEntry struct {
	due int64
	s   *series
}

type windowHeap []windowEntry

func (h windowHeap) Len() int           { return len(h) }
func (h windowHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h windowHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *windowHeap) Push(x any)        { *h = append(*h, x.(windowEntry)) }
func (h *windowHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func (h *windowHeap) schedule(s *series) {
	heap.Push(h, windowEntry{due: s.c.winStart + s.interval, s: s})
}
