// Package query serves Sonde's state over HTTP with fasthttp: the mesures
// views (/data, /vapor, /events as Server-Sent Events) and the native API
// under /api/v1. It reads through the small [Store] interface, which
// *engine.DB implements, and never writes.
//
// # Server-Sent Events
//
// /events sends a full dump first, then one frame per change, each with
// "id:" set to the WAL index of the change. A client that reconnects with
// Last-Event-ID gets exactly the changes after that id, read from memory or
// from the WAL while it still holds them, or a fresh dump when it does not.
// One goroutine, the hub, follows the store's change log and encodes each
// change into its frame once; subscribers copy those blocks of frames (with
// ?match=, a block is filtered once per pattern and shared). A subscriber
// behind the hub's oldest block reads the store's change log itself. Each
// reads at its own pace: one that stops reading holds up nobody, and its
// goroutine ends at its next failed write (a change or a heartbeat) or at
// shutdown. Streams take their connection over from fasthttp (hijack) and
// write to the socket directly; the response has no length and ends when
// the connection closes.
//
// # Patterns
//
// ?match= takes key globs ([CompileGlob]); /render and /metrics/find take
// Graphite path patterns (graphiteGlob). Both compile, once per request,
// to one matcher (nfa.go) whose work per key is linear in the key's
// length, with no backtracking. A pattern becomes positions, one per
// symbol it matches (a byte for a glob; for Graphite a rune, read as
// package regexp reads one), in branches: one per path its {a,b}
// alternatives spell, each with its own copy of the text around them. A
// '*' is a position that repeats (a self-loop on its class) and may be
// skipped. The matcher keeps the set of positions live after each symbol
// of the key as a bit vector and steps it in one pass over its 64-bit
// words (Shift-And, extended to optional repeated positions as Navarro and
// Raffinot do): shift every bit to the next position, keep the stars'
// bits, keep the positions whose class takes the symbol (a table per
// byte, a binary search of rune intervals above ASCII), then set the
// stars reachable by skipping stars, all blocks of stars at once with one
// subtraction per word. A key of n symbols costs at most n passes of
// ceil(positions/64) words: 17 for a glob of MaxGlobLen bytes or a
// Graphite pattern of MaxGraphitePositions. In practice fewer: a pass
// stops at the highest live word, a match at the first symbol that
// leaves no position live, and a literal prefix and suffix are compared
// as bytes first.
//
// A Graphite pattern is translated to the regexp it always was and parsed
// by regexp/syntax, so it keeps exactly that regexp's meaning and errors;
// only the matching is new.
package query

import (
	"context"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Store is what the query layer reads. All methods may be called
// concurrently. Errors wrap sample.ErrNotFound and sample.ErrGone where
// those apply.
type Store interface {
	// Index returns the WAL index of the newest visible change.
	Index() uint64
	// Get returns the current state of key.
	Get(key string) (sample.Series, bool)
	keyIndex
	// Postings calls fn with the Graphite tag postings ("tag=value", key)
	// from the pair from on, in order, until fn returns false.
	Postings(from string, fn func(pair, key string) bool)
	// Each calls fn with every series Series would list, from the live
	// state, in key order, until fn returns false. No lock is held while
	// fn runs, so fn may block (an SSE dump to a slow client) and nothing
	// is copied but the series at hand.
	Each(prefix string, match func(string) bool, fn func(sample.Series) bool)
	// Range appends the history of key in [from, to]; limit > 0 keeps the
	// newest limit points.
	Range(ctx context.Context, key string, from, to int64, limit int, dst []sample.Point) ([]sample.Point, error)
	// Recent appends the newest n raw points of key, oldest first. Range
	// and Recent take the points they read from the sample.Budget in ctx
	// and stop when ctx ends.
	Recent(ctx context.Context, key string, n int, dst []sample.Point) ([]sample.Point, error)
	// Changes appends up to max stored changes after the index after, from
	// memory or the WAL; sample.ErrGone when the WAL no longer holds them.
	Changes(after uint64, dst []sample.Change, max int) ([]sample.Change, error)
	// Feed appends up to max entries of the change feed (stored changes
	// and idle window ends) after position pos; ok is false when the feed
	// no longer holds the entry after pos.
	Feed(pos uint64, dst []sample.Change, max int) ([]sample.Change, bool)
	// FeedPos is the feed position after the stored change id; ok is false
	// when the feed no longer holds what follows it.
	FeedPos(id uint64) (uint64, bool)
	// FeedHead is the position of the newest entry of the feed.
	FeedHead() uint64
	// NotifyFeed returns a channel closed once the feed has an entry
	// after pos.
	NotifyFeed(pos uint64) <-chan struct{}
	// Epoch is the store's current epoch of event ids; TrustedThrough the
	// highest id a client that got its ids in epoch id may resume after
	// (ok false: an epoch the store does not know). docs/format/epochs.md.
	Epoch() uint64
	TrustedThrough(id uint64) (uint64, bool)
}

// keyIndex is the store's series index: what pattern reads go through.
type keyIndex interface {
	// Series appends every series whose key starts with prefix and that
	// match accepts (nil: all), in key order. It costs time in proportion
	// to the keys under prefix, not to all.
	Series(prefix string, match func(string) bool, dst []sample.Series) []sample.Series
	// Keys calls fn with every key from the key from on, in byte order,
	// until fn returns false.
	Keys(from string, fn func(key string) bool)
}
