package engine

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/wal"
)

// Reading the WAL from outside the engine: a forwarder (remote_write,
// package engine/remotewrite) reads the stored points from the WAL at its
// own pace, from a position it keeps, the way Prometheus' WAL watcher
// feeds its queue manager. A Hold keeps the records it has not taken from
// being cut off after a snapshot, up to Options.MaxHeld bytes of segments.

// Hold keeps the WAL records after a reader's position. Its position only
// moves forward; the engine reads it when it cuts the WAL after a
// snapshot.
type Hold struct{ through atomic.Uint64 }

// NewHold returns a hold on every record after index through.
func NewHold(through uint64) *Hold {
	h := &Hold{}
	h.through.Store(through)
	return h
}

// Release says the reader no longer needs the records up to through.
func (h *Hold) Release(through uint64) {
	for {
		old := h.through.Load()
		if through <= old || h.through.CompareAndSwap(old, through) {
			return
		}
	}
}

// Set moves the hold to through, back too. A forwarder calls it only
// before it reads, when its journal was past the WAL's end.
func (h *Hold) Set(through uint64) { h.through.Store(through) }

// Through returns the index up to which the reader is done.
func (h *Hold) Through() uint64 { return h.through.Load() }

// Point is one stored point as a reader of the WAL sees it.
type Point struct {
	Index uint64 // the record's WAL index
	Time  int64  // ms since the epoch
	// Key aliases the log's cache: valid only during the callback.
	Key   []byte
	Value float64 // a GAUGE's value, a COUNTER's cumulative total
}

// ErrCut is returned by ReadPoints when the WAL no longer holds the record
// asked for: a bound (Options.MaxHeld) cut it. WALFirst says where the log
// goes on.
var ErrCut = errors.New("the WAL no longer holds the record")

// ReadPoints calls fn for each point added by the records after index
// after, up to max records and up to the newest published one, and
// returns the index of the last record it read (after itself when none).
// Records that add no point (deletes, window ends, status and client
// records) are read and skipped. It may be called from any goroutine.
func (db *DB) ReadPoints(after uint64, max int, fn func(*Point)) (uint64, error) {
	end := min(db.published.Load(), after+uint64(max))
	var r record.Record
	var p Point
	bodies := make([][]byte, 0, min(readBatch, end-after))
	for i := after + 1; i <= end; {
		// A batch at a time: the WAL's locks are taken once a batch, and
		// fn runs without them.
		var err error
		bodies, err = db.wal.ReadMany(i, int(min(readBatch, end-i+1)), bodies[:0])
		for _, body := range bodies {
			key, err := record.DecodeView(body, &r)
			if err != nil {
				return i - 1, fmt.Errorf("decode wal record %d: %w", i, err)
			}
			if r.AddsPoint() {
				p = Point{Index: i, Time: r.Time, Key: key, Value: r.Value}
				fn(&p)
			}
			i++
		}
		if errors.Is(err, wal.ErrNotFound) {
			return i - 1, fmt.Errorf("read wal record %d: %w", i, ErrCut)
		}
		if err != nil {
			return i - 1, fmt.Errorf("read wal record %d: %w", i, err)
		}
	}
	return end, nil
}

// readBatch is how many records ReadPoints reads under the WAL's locks at
// once.
const readBatch = 1024

// WALFirst returns the oldest index the WAL holds.
func (db *DB) WALFirst() (uint64, error) { return db.wal.FirstIndex() }

// walKeep returns the first index the WAL must keep after a snapshot
// stored everything up to stored: the oldest a hold still needs, unless
// that would keep more than MaxHeld bytes of segments, then the oldest
// whose segments fit.
func (db *DB) walKeep(stored uint64) uint64 {
	keep := stored + 1
	held := keep
	for _, h := range db.opts.Holds {
		held = min(held, h.Through()+1)
	}
	if held >= keep || db.opts.MaxHeld < 0 {
		return held
	}
	segs, err := db.wal.Segments()
	if err != nil {
		db.logger.Warn("list wal segments for the forwarders' bound; keeping them", "err", err)
		return held
	}
	// From the newest segment back, the oldest start whose segments (it
	// and every later one) fit in MaxHeld.
	var total int64
	fit := keep
	for i := len(segs) - 1; i >= 0; i-- {
		total += segs[i].Bytes
		if total > db.opts.MaxHeld {
			break
		}
		fit = segs[i].First
	}
	if fit > held {
		db.logger.Error("the WAL kept for forwarding passed its bound: cutting records no forwarder has sent",
			"first_kept", min(fit, keep), "oldest_needed", held, "max_held_bytes", db.opts.MaxHeld)
		held = min(fit, keep)
	}
	return held
}
