// Package sample holds the value types every layer of Sonde shares: the
// write operations ingest hands to the engine, the points history returns
// and the changes subscribers receive. It imports only the standard library
// so any package may depend on it.
package sample

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Kind is the semantic type of a series.
type Kind uint8

// These constants are part of the on-disk format and must not be changed.
const (
	// Gauge is a series whose last written value wins.
	Gauge Kind = 1
	// Counter is a monotonic cumulative total; INCR adds to it.
	Counter Kind = 2
)

// String returns "GAUGE" or "COUNTER".
func (k Kind) String() string {
	switch k {
	case Gauge:
		return "GAUGE"
	case Counter:
		return "COUNTER"
	}
	return "UNKNOWN"
}

// Code says what an Op does.
type Code uint8

// These constants are part of the on-disk format and must not be changed.
const (
	// Set makes the key a GAUGE holding Value.
	Set Code = 1
	// Incr adds Value (non-negative) to the COUNTER total of the key.
	Incr Code = 2
	// Delete removes the key and its history.
	Delete Code = 3
	// Window closes the current counting window of a COUNTER key. The engine
	// generates it; ingest never sends it.
	Window Code = 4
	// CounterSet records an observed cumulative COUNTER total (as collectd or
	// Prometheus report it); a value below the previous total is a reset.
	CounterSet Code = 5
)

// Op is one write handed from an ingest path to the engine.
type Op struct {
	Code  Code
	Key   string
	Value float64
	// Interval is the counting window of a COUNTER key in milliseconds, used
	// when the key is created; 0 means the engine default.
	Interval int64
	// Time is the time of the point in milliseconds since the Unix epoch,
	// for protocols that carry one (Graphite, collectd); 0 means the time
	// the engine takes the write. A time before the key's newest point is
	// refused (ErrOutOfOrder), as is one too far in the future.
	Time int64
	// Wrap, for a CounterSet, says the observed total is an unsigned 32- or
	// 64-bit counter that wraps (collectd's COUNTER): a value below the
	// previous one counts as the wrap collectd computes, not a reset.
	Wrap bool
	// Delta, for a Set, adds Value to the key's current value (0 for a new
	// key): statsd's "+N|g" and "-N|g" gauges.
	Delta bool
	// Resend, for a Set with a Time, says the sender may repeat the write
	// after a lost reply (the command protocol's "SET key value @ms"): when
	// the key's newest point is at Time with this Value, the write succeeds
	// and stores nothing; at Time with another value it is refused.
	Resend bool
}

// Point is one history point: T in milliseconds since the Unix epoch.
type Point struct {
	T int64
	V float64
}

// Series is the current state of one series as readers see it.
type Series struct {
	Key  string
	Kind Kind
	// Value is the GAUGE value or the COUNTER cumulative total.
	Value float64
	// View is what the mesures views (/data, /events) show: the GAUGE value,
	// or for a COUNTER the count of its last completed window.
	View float64
	// Updated is the time of the last write, in ms since the epoch.
	Updated int64
	// Interval is the counting window of a COUNTER in ms (0 for a GAUGE).
	Interval int64
	// Points is how many history points the series has recorded.
	Points uint64
}

// Change is one event delivered to subscribers: a stored change, or the
// end of an idle counting window (Tick).
type Change struct {
	// ID is the WAL index of the record that made the change: dense and
	// increasing over stored changes. A tick has the ID of the newest
	// stored change before it.
	ID uint64
	// Pos is the change's position in the engine's change feed (dense over
	// stored changes and ticks); 0 for changes read back from the WAL.
	Pos     uint64
	Key     string
	Value   float64 // the mesures view value after the change
	Deleted bool
	// Tick marks the end of a counting window that counted nothing after
	// one that also counted nothing: the view stays 0. mesures sends an
	// event for it; the engine does not store it (docs/semantics.md).
	Tick bool
}

// Limits of an event: its service becomes part of keys
// (heartbeat.<service>.late), so it stays well under a key's 255 bytes.
const (
	MaxService = 200
	MaxMessage = 4096
)

// Event is a status event (watchtower's events): something that happened
// to a service, as its owner or Sonde itself tells it.
type Event struct {
	// ID is the WAL index of the event's record; 0 until stored.
	ID uint64
	// Time is when it happened, in ms since the epoch; 0 for "now".
	Time    int64
	Service string
	// Level orders events by weight (watchtower's levels); readers keep
	// those at or above a level.
	Level int64
	// Message says what happened.
	Message string
	// Alert says the event was also sent as an alert.
	Alert bool
}

// Heartbeat is the state of one service's heartbeat.
type Heartbeat struct {
	Service string
	// NextIn is how long after a pulse the next one is due.
	NextIn time.Duration
	// Channel names the alert channel told when it is late ("": none).
	Channel string
	// Last is the time of the last pulse, Expected when the next one is
	// due (after a restart of Sonde, at least NextIn after it), in ms.
	Last, Expected int64
	// State is "on-time", "late" or "cancelled".
	State string
	// Alerted says a late alert was decided for the current death.
	Alerted bool
}

// Check is the stored state of an HTTP check (-check).
type Check struct {
	Name    string
	Every   time.Duration
	Channel string
	// Failing says the last result failed; Since is when the state began
	// (ms), Detail what the result that began it said.
	Failing bool
	Since   int64
	Detail  string
}

// CheckInfo is what a running HTTP check shows: its stored state, what
// it asks, and when it last ran and last passed (ms; 0: not yet).
type CheckInfo struct {
	Check
	URL               string
	Expect            int
	LastRun, LastPass int64
}

// Alert is an alert decided and not yet delivered: its ID (its WAL
// index) stays the same through every retry, so that a receiver can
// drop a resend.
type Alert struct {
	ID      uint64
	Time    int64 // when it was decided, ms
	Service string
	Kind    AlertKind
	Channel string
	Message string
}

// AlertKind says what an alert is about.
type AlertKind uint8

// The alert kinds.
const (
	AlertLate    AlertKind = 1 // a heartbeat is late
	AlertBack    AlertKind = 2 // a late heartbeat pulses again
	AlertFailing AlertKind = 3 // an HTTP check fails
	AlertPassing AlertKind = 4 // a failing HTTP check passes again
)

func (k AlertKind) String() string {
	switch k {
	case AlertLate:
		return "late"
	case AlertBack:
		return "back"
	case AlertFailing:
		return "failing"
	case AlertPassing:
		return "passing"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Levels of the events Sonde writes itself.
const (
	LevelInfo    = 0 // an alert was delivered
	LevelBack    = 1 // a heartbeat pulses again
	LevelWarning = 2 // an alert could not be delivered (it is retried)
	LevelLate    = 3 // a heartbeat is late
)

// EventQuery selects stored events, newest first (by time, then id).
type EventQuery struct {
	// From and To bound the events' times, in ms, both included; To 0
	// means no bound.
	From, To int64
	// BeforeTime and BeforeID, when BeforeID is not 0, keep only events
	// before (BeforeTime, BeforeID) in that order: the next page after an
	// EventPage with More.
	BeforeTime int64
	BeforeID   uint64
	// Match keeps the events it accepts; nil keeps all.
	Match func(*Event) bool
	// Limit is how many events at most (at least 1).
	Limit int
	// MaxScan bounds the stored events one query looks at, MaxScanBytes
	// the services' and messages' bytes it looks at, MaxBytes those it
	// answers with. Past any of them the page ends early, with More.
	MaxScan, MaxScanBytes, MaxBytes int
}

// EventPage is a page of an event listing. When More is set there may be
// more events: the next page is the query again with BeforeTime and
// BeforeID set to NextTime and NextID.
type EventPage struct {
	Events   []Event
	More     bool
	NextTime int64
	NextID   uint64
}

// Errors shared by the engine and its consumers, so that query and ingest
// can recognise them without importing the engine.
var (
	// ErrNotFound is returned for an operation on a key that does not exist.
	ErrNotFound = errors.New("no such key")
	// ErrGone is returned when changes after an index are no longer held.
	ErrGone = errors.New("changes no longer held")
	// ErrTooManyHeartbeats is returned for a pulse of a new service past
	// the heartbeat limit.
	ErrTooManyHeartbeats = errors.New("heartbeat limit reached")
)

// ErrTooMany is returned by a read that would hold more points than its
// query's Budget allows.
var ErrTooMany = errors.New("too many points")

// Budget bounds the points one query may hold: those it reads from the
// store and those it answers with. The query layer puts one in the read's
// context (WithBudget); the engine takes from it as it decodes history, so
// a read stops as soon as it would pass the bound, before it holds the
// points. A Budget belongs to one query and one goroutine.
type Budget struct {
	Max  int // the bound, which the error names
	used int
}

// Take accounts for n more points, or returns an error wrapping
// ErrTooMany when they would pass the bound.
func (b *Budget) Take(n int) error {
	if b == nil {
		return nil
	}
	if n > b.Left() {
		return fmt.Errorf("%w: the query needs more than %d points", ErrTooMany, b.Max)
	}
	b.used += n
	return nil
}

// Left is how many points may still be taken.
func (b *Budget) Left() int {
	if b == nil {
		return math.MaxInt
	}
	return b.Max - b.used
}

// Mark returns the points taken so far; Rewind(mark) gives back what was
// taken since, once the query no longer holds those points.
func (b *Budget) Mark() int {
	if b == nil {
		return 0
	}
	return b.used
}

// Rewind gives back the points taken since Mark returned mark.
func (b *Budget) Rewind(mark int) {
	if b != nil {
		b.used = min(b.used, mark)
	}
}

type budgetKey struct{}

// WithBudget returns ctx carrying b.
func WithBudget(ctx context.Context, b *Budget) context.Context {
	return context.WithValue(ctx, budgetKey{}, b)
}

// BudgetOf returns the Budget in ctx, or nil (no bound).
func BudgetOf(ctx context.Context) *Budget {
	b, _ := ctx.Value(budgetKey{}).(*Budget)
	return b
}
