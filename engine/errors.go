package engine

import (
	"errors"

	"github.com/sonde-metrics/sonde/engine/sample"
)

var (
	// ErrNotFound is returned for an operation on a key that does not exist.
	ErrNotFound = sample.ErrNotFound
	// ErrKind is returned when an operation does not fit the key's type:
	// INCR on a GAUGE, SET on a COUNTER.
	ErrKind = errors.New("wrong type for key")
	// ErrTooManySeries is returned when creating a key would pass
	// Options.MaxSeries.
	ErrTooManySeries = errors.New("series limit reached")
	// ErrValue is returned for a value the operation cannot take: not a
	// finite number, a negative INCR, a total that overflows.
	ErrValue = errors.New("bad value")
	// ErrKey is returned for an empty key, one longer than MaxKeyLen, one
	// holding a zero byte, or one that is not valid UTF-8.
	ErrKey = errors.New("bad key")
	// ErrOutOfOrder is returned for a write whose time (Op.Time) is before
	// the newest point of its key: history is kept in time order.
	ErrOutOfOrder = errors.New("point older than the newest point of its key")
	// ErrNotApplied wraps the error of a batch whose WAL write failed: it
	// was cut off the log, so none of it was applied or will be after a
	// restart, and it may be sent again.
	ErrNotApplied = errors.New("engine: nothing of this batch was applied")
	// ErrPaused wraps the error of writes refused, without touching the
	// disk, while writes are paused after a failed WAL write (a full
	// disk); none of them was applied. Writes are tried again after a
	// backoff of up to 5 s.
	ErrPaused = errors.New("engine: writes are paused")
	// ErrBacklog is returned by AppendEvents while the events held in
	// memory for the next snapshot fill Options.EventMemory (snapshots
	// fail, or cannot keep up); nothing was applied.
	ErrBacklog = errors.New("engine: too many events wait for a snapshot")
	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("engine: closed")
	// ErrGone is returned by Changes when the changes after the given index
	// are no longer held (the WAL was truncated past them).
	ErrGone = sample.ErrGone
	// ErrLocked is returned by Open when another process holds the data
	// directory.
	ErrLocked = errors.New("engine: data directory is locked by another process")
)
