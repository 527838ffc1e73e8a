package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Index returns the WAL index of the newest change readers can see.
func (db *DB) Index() uint64 { return db.published.Load() }

// Get returns the current state of key.
func (db *DB) Get(key string) (sample.Series, bool) {
	s := db.index.get(key)
	if s == nil {
		return sample.Series{}, false
	}
	return s.snapshot(), true
}

// Series appends to dst every series whose key starts with prefix and
// that match accepts (all when match is nil), in key order. It costs time
// in proportion to the keys under prefix, not to all keys.
func (db *DB) Series(prefix string, match func(string) bool, dst []sample.Series) []sample.Series {
	db.index.scan(prefix, match, func(s *series) bool {
		dst = append(dst, s.snapshot())
		return true
	})
	return dst
}

// Each calls fn with every series whose key starts with prefix and that
// match accepts (all when match is nil), from the live state, in key
// order, until fn returns false. No lock is held while match or fn run,
// so fn may block; a series written meanwhile is seen before or after the
// write, and one created or deleted meanwhile is seen or not depending on
// where the walk is.
func (db *DB) Each(prefix string, match func(string) bool, fn func(sample.Series) bool) {
	db.index.scan(prefix, match, func(s *series) bool { return fn(s.snapshot()) })
}

// Postings calls fn with the Graphite tag postings from the pair ("tag=
// value") from on, in order of pair then key, until fn returns false:
// every key "name;tag=value;..." once per tag it carries. A tag filter
// reads the keys of one pair, or of one tag's values, and nothing else.
// No lock is held while fn runs.
func (db *DB) Postings(from string, fn func(pair, key string) bool) {
	db.index.postings(from, fn)
}

// Keys calls fn with every key from the key from on, in byte order, until
// fn returns false: a walk of a key hierarchy (Graphite's /metrics/find)
// reads a run of keys with it and skips whole subtrees by starting again
// further on. No lock is held while fn runs.
func (db *DB) Keys(from string, fn func(key string) bool) {
	db.index.ascend(from, func(s *series) bool { return fn(s.key) })
}

// Notify returns a channel that is closed once Index() passes after. It
// may also be closed earlier, when the feed gains a tick.
func (db *DB) Notify(after uint64) <-chan struct{} {
	return db.notifyUnless(func() bool { return db.published.Load() > after })
}

// NotifyFeed returns a channel that is closed once the feed holds an entry
// after position pos.
func (db *DB) NotifyFeed(pos uint64) <-chan struct{} {
	return db.notifyUnless(func() bool { return db.feed.head() > pos })
}

// notifyUnless returns the channel the next publish closes, or a closed
// one when passed already holds. The channel is taken first, so a publish
// between the two is not missed.
func (db *DB) notifyUnless(passed func() bool) <-chan struct{} {
	db.notifyMu.Lock()
	ch := db.notifyCh
	db.notifyMu.Unlock()
	if passed() {
		return closedChan
	}
	return ch
}

// Feed appends to dst up to max entries of the change feed after position
// pos, oldest first: every stored change, and the idle window ends
// (Change.Tick) after them. ok is false when the feed no longer holds the
// entry after pos: the caller reads stored changes by ID (Changes), then
// finds its place again with FeedPos.
func (db *DB) Feed(pos uint64, dst []sample.Change, max int) ([]sample.Change, bool) {
	return db.feed.copyAfter(pos, dst, max)
}

// FeedPos returns the feed position after which a subscriber that has seen
// the stored change id goes on; ok is false when the feed no longer holds
// what follows id.
func (db *DB) FeedPos(id uint64) (uint64, bool) { return db.feed.posOf(id) }

// FeedHead returns the position of the newest entry of the feed.
func (db *DB) FeedHead() uint64 { return db.feed.head() }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Changes appends to dst up to max stored changes after the WAL index
// after, oldest first (no ticks). Recent changes come from memory, older
// ones from the WAL. It returns ErrGone when the WAL no longer holds them:
// the caller must start again from a full dump.
func (db *DB) Changes(after uint64, dst []sample.Change, max int) ([]sample.Change, error) {
	pub := db.published.Load()
	if after >= pub || max <= 0 {
		return dst, nil
	}
	if out, ok := db.feed.storedAfter(after, dst, max); ok {
		return out, nil
	}
	// Behind the memory feed: read the WAL up to where the feed starts
	// (its start only moves forward); the caller asks again for the rest.
	var r record.Record
	for i, end := after+1, min(pub, db.feed.oldestID()-1); i <= end && max > 0; i++ {
		body, err := db.wal.Read(i)
		if err != nil {
			if errors.Is(err, wal.ErrNotFound) || (errors.Is(err, wal.ErrCorrupt) && i <= db.store.Index()) {
				return dst, ErrGone // a damaged record the snapshot holds: start from a dump
			}
			return dst, fmt.Errorf("read change %d: %w", i, err)
		}
		if err := record.Decode(body, &r); err != nil {
			return dst, fmt.Errorf("decode change %d: %w", i, err)
		}
		if noSeries(r.Code) {
			continue // a status event, heartbeat or client record changes no series
		}
		c := sample.Change{ID: i, Key: r.Key, Deleted: r.Code == sample.Delete}
		if !c.Deleted {
			c.Value = viewOf(&r)
		}
		dst = append(dst, c)
		max--
	}
	return dst, nil
}

// Range appends to dst the history points of key with times in
// [from, to], oldest first; limit > 0 keeps only the newest limit points.
// Points come from the ring and, for older ones, the snapshot database.
// The read takes the points it decodes from the sample.Budget in ctx, if
// any, and stops with an error wrapping sample.ErrTooMany before it would
// pass it; it also stops when ctx ends.
func (db *DB) Range(ctx context.Context, key string, from, to int64, limit int, dst []sample.Point) ([]sample.Point, error) {
	s, ringPts, lo, err := db.startRead(ctx, key)
	if err != nil {
		return dst, err
	}
	take := taker(ctx)
	start := len(dst)
	if limit > 0 {
		// The ring holds the newest points: when it has limit of them in
		// range, all within the raw keep (older ones are read from the
		// archives), those are the answer, and nothing older is read.
		pol := db.opts.Retention.Keep(s.key, s.kind)
		first, n := len(ringPts), 0 // the oldest of the newest limit ring points in range
		for i := len(ringPts) - 1; i >= 0 && n < limit; i-- {
			if p := ringPts[i]; p.T >= from && p.T <= to {
				first, n = i, n+1
			}
		}
		if n == limit && ringPts[first].T >= db.nowMs()-pol.Raw.Milliseconds() {
			if err := take(limit); err != nil {
				return dst, fmt.Errorf("range %q: %w", key, err)
			}
			for _, p := range ringPts[first:] {
				if p.T >= from && p.T <= to {
					dst = append(dst, p)
				}
			}
			return dst, nil
		}
	}
	if lo > 1 {
		dst, err = db.store.History(key, s.created, lo, from, to, dst, take)
		if err != nil {
			return dst[:start], fmt.Errorf("range %q: %w", key, err)
		}
	}
	if err := take(len(ringPts)); err != nil {
		return dst[:start], fmt.Errorf("range %q: %w", key, err)
	}
	for _, p := range ringPts {
		if p.T >= from && p.T <= to {
			dst = append(dst, p)
		}
	}
	if dst, err = db.withArchives(s, from, to, start, dst, take); err != nil {
		return dst[:start], fmt.Errorf("range %q: %w", key, err)
	}
	if limit > 0 && len(dst)-start > limit {
		n := copy(dst[start:], dst[len(dst)-limit:])
		dst = dst[:start+n]
	}
	return dst, nil
}

// Recent appends to dst the newest n raw points of key, oldest first:
// from the ring and, for older ones, the snapshot database, read from the
// newest chunk back. It takes from the ctx's budget as Range does.
func (db *DB) Recent(ctx context.Context, key string, n int, dst []sample.Point) ([]sample.Point, error) {
	s, ringPts, lo, err := db.startRead(ctx, key)
	if err != nil {
		return dst, err
	}
	take := taker(ctx)
	if len(ringPts) < n && lo > 1 {
		if dst, err = db.store.Newest(key, s.created, lo, n-len(ringPts), dst, take); err != nil {
			return dst, fmt.Errorf("recent points of %q: %w", key, err)
		}
	}
	ringPts = ringPts[max(len(ringPts)-n, 0):]
	if err := take(len(ringPts)); err != nil {
		return dst, fmt.Errorf("recent points of %q: %w", key, err)
	}
	return append(dst, ringPts...), nil
}

// taker returns what a read calls before it holds n more points: it takes
// them from the ctx's sample.Budget, and fails once ctx has ended.
func taker(ctx context.Context) func(n int) error {
	budget := sample.BudgetOf(ctx)
	return func(n int) error {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return budget.Take(n)
	}
}

// startRead starts a history read of key: its series, and a copy of its
// ring with the lowest ordinal the ring holds. The ring keeps every point
// the snapshot database does not hold yet, so no point is missing from
// either, and a read never waits for a snapshot.
func (db *DB) startRead(ctx context.Context, key string) (s *series, pts []sample.Point, lo uint64, err error) {
	if ctx.Err() != nil {
		return nil, nil, 0, fmt.Errorf("read %q: %w", key, context.Cause(ctx))
	}
	if s = db.index.get(key); s == nil {
		return nil, nil, 0, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	pts, lo = s.ring.Points(nil)
	if flushed := s.flushed.Load(); lo > flushed+1 {
		// The ring drops only stored points: this is a bug, not a state.
		return nil, nil, 0, fmt.Errorf("range %q: history points %d to %d are in neither the ring nor the snapshot", key, flushed+1, lo-1)
	}
	return s, pts, lo, nil
}

// withArchives completes a read of dst[start:] (raw points in [from, to])
// with the archives of the key's retention policy when the read reaches
// back past the raw points' keep. Raw points are served from the raw cut
// on: the older of the raw keep and every archive's watermark, which is
// where expiry may have deleted them. Before the cut come the finest
// archive's points, before its oldest the next one's, and so on: one
// ordered series without duplicates.
func (db *DB) withArchives(s *series, from, to int64, start int, dst []sample.Point, take func(int) error) ([]sample.Point, error) {
	pol := db.opts.Retention.Keep(s.key, s.kind)
	cut := db.nowMs() - pol.Raw.Milliseconds()
	if from >= cut || len(pol.Archives) == 0 {
		return dst, nil
	}
	type tier struct {
		pts    []sample.Point
		oldest int64
	}
	tiers := make([]tier, len(pol.Archives))
	for i, a := range pol.Archives {
		pts, oldest, wm, err := db.store.Archive(s.key, s.created, a.Step.Milliseconds(), from, to, nil, take)
		if err != nil {
			return dst, err
		}
		tiers[i] = tier{pts, oldest}
		cut = min(cut, wm)
	}
	raw := dst[start:]
	i := 0
	for i < len(raw) && raw[i].T < cut {
		i++
	}
	raw = append([]sample.Point(nil), raw[i:]...)
	var parts [][]sample.Point
	for _, t := range tiers {
		j := 0
		for j < len(t.pts) && t.pts[j].T < cut {
			j++
		}
		parts = append(parts, t.pts[:j])
		cut = min(cut, t.oldest)
	}
	dst = dst[:start]
	for k := len(parts) - 1; k >= 0; k-- {
		dst = append(dst, parts[k]...)
	}
	return append(dst, raw...), nil
}
