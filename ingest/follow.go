package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/internal/safeurl"
	"github.com/sonde-metrics/sonde/ingest/sse"
)

// FollowStore is what a Follower needs of the store: it writes, reads a
// key, and lists keys in order (implemented by *engine.DB).
type FollowStore interface {
	Appender
	Get(key string) (sample.Series, bool)
	Keys(from string, fn func(key string) bool)
}

// FollowOptions configure a Follower.
type FollowOptions struct {
	// URL is the upstream's event stream, e.g.
	// http://upstream:1337/events?match=web*.
	URL string
	// Name is the prefix: upstream key k is stored as Name.k.
	Name string
	// Instance is this server's instance id (query.Options.Instance): an
	// upstream that answers with it is this server, which would follow
	// its own changes forever.
	Instance string
	// MaxBatch is the most changes one write holds (4096).
	MaxBatch int
	// IdleTimeout ends a stream that sent nothing for this long, not even
	// the upstream's heartbeat comment (60 s: four of its default 15 s).
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a reconnection
	// (100 ms, doubling up to 10 s).
	MinBackoff, MaxBackoff time.Duration
	// Client makes the requests; nil: one with a 10 s connect and
	// response head timeout, and no timeout on the stream itself, that
	// trusts TLS's CAs (nil: the system's).
	Client *http.Client
	TLS    *tls.Config
	// Token, when set, is sent as a bearer token (the upstream's
	// -auth-file).
	Token  string
	Logger *slog.Logger
}

// CursorKey is the GAUGE where a follower named name keeps the id of the
// last upstream event it applied.
func CursorKey(name string) string { return upstreamKeys + name + ".id" }

// CheckFollowName says whether name may be a follower's prefix: keys
// under name. belong to the follower, which deletes there what upstream
// no longer holds, so it must not cover Sonde's own keys.
func CheckFollowName(name string) error {
	switch {
	case name == "" || len(name) > 128:
		return fmt.Errorf("prefix %q: want 1 to 128 bytes", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("prefix %q is not UTF-8", name)
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || r == 0 }) >= 0:
		return fmt.Errorf("prefix %q holds a space or a zero byte", name)
	case name == "sonde" || strings.HasPrefix(name, "sonde."):
		return fmt.Errorf("prefix %q: keys under sonde. are Sonde's own", name)
	case strings.HasSuffix(name, "."):
		return fmt.Errorf("prefix %q ends in a dot (one is added)", name)
	}
	return nil
}

// FollowStats say how a follower does.
type FollowStats struct {
	URL       string `json:"url"`
	Connected bool   `json:"connected"`
	Cursor    uint64 `json:"cursor"`   // id of the last upstream event applied
	Connects  int64  `json:"connects"` // streams opened
	Errors    int64  `json:"errors"`   // streams that ended on an error, or could not open
	Changes   int64  `json:"changes"`  // change events applied
	Skipped   int64  `json:"skipped"`  // events at or below the cursor (idle window ends)
	Dumps     int64  `json:"dumps"`    // first dumps and resets applied
	Resets    int64  `json:"resets"`   // of which resets
	Refused   int64  `json:"refused"`  // changes the store refused (-max-series, a key too long, a COUNTER under the prefix)
}

// errWrite marks a failed write of upstream changes to the store.
var errWrite = errors.New("write upstream changes")

// errSelf ends following for good: the upstream is this server.
var errSelf = errors.New("the upstream is this server (its X-Sonde-Instance is ours): it would follow its own changes")

// Follower follows another Sonde's event stream and stores every change
// under its prefix; see the package README section "Chaining".
//
// Each batch of change events is one write to the store, ending with the
// id of its last event in the cursor key: the WAL replays a write whole or
// not at all, so after a crash of either side the follower resumes with
// Last-Event-ID from exactly what it applied. A dump (the first frame of
// a stream opened without a cursor, or a reset) is a state, not changes:
// the follower writes only the keys whose value differs and deletes
// those upstream no longer holds, in writes of MaxBatch, and moves the
// cursor with the last one; a dump cut short is done again, and what was
// written already is then equal and not written twice.
type Follower struct {
	opts      FollowOptions
	store     FollowStore
	log       *slog.Logger
	prefix    string // Name + "."
	shown     string // the URL without userinfo or a token= parameter, for logs and stats
	cursorKey string
	epochKey  string // the upstream's epoch the cursor's ids were read in (docs/format/epochs.md)

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	// started is set by Serve, or by Close when Serve never ran (an error
	// at startup): whoever sets it owns closing done.
	started atomic.Bool

	// Owned by the Serve goroutine.
	ops      []sample.Op // queued: whole change events (ops[:complete]), then the one being read, or a dump's
	complete int
	batch    []sample.Op
	errs     []error
	cursor   uint64
	epoch    uint64 // as stored in epochKey; 0: not known
	upEpoch  uint64 // the upstream's epoch in this session; 0: it sends none
	dumpNext bool   // the next event is a dump (first of a stream opened without a cursor)
	inDump   bool   // a dump's pairs are being applied
	dumpPrev string // the last key of the dump so far (stored form)
	progress bool   // the session moved the cursor
	pending  uint64 // id of the newest change event in ops (0: none)

	connected                          atomic.Bool
	cursorSeen                         atomic.Uint64
	connects, errors, changes, skipped atomic.Int64
	dumps, resets, refused             atomic.Int64
}

// NewFollower checks the options; Serve starts following.
func NewFollower(opts FollowOptions, store FollowStore) (*Follower, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %q: want an http:// or https:// URL of an event stream", opts.URL)
	}
	if err := CheckFollowName(opts.Name); err != nil {
		return nil, err
	}
	// Changes only: the ends of idle counting windows change nothing, and
	// under ?match= their ids (the newest stored change of any key) can
	// be above the cursor, where they would pass for changes.
	if !u.Query().Has("ticks") {
		if u.RawQuery != "" {
			u.RawQuery += "&"
		}
		u.RawQuery += "ticks=0"
		opts.URL = u.String()
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 4096
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = time.Minute
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(10*time.Second, opts.MinBackoff)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Transport: &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout:    10 * time.Second,
			ResponseHeaderTimeout:  10 * time.Second,
			DisableCompression:     true,
			MaxResponseHeaderBytes: 64 << 10,
			TLSClientConfig:        opts.TLS,
		}}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Follower{opts: opts, store: store, log: opts.Logger, prefix: opts.Name + ".", shown: shownURL(u), cursorKey: CursorKey(opts.Name),
		epochKey: upstreamKeys + opts.Name + ".epoch",
		ctx:      ctx, cancel: cancel, done: make(chan struct{})}, nil
}

// Serve follows the upstream until Close, reconnecting with a backoff
// after every failure. It returns nil once closed.
func (f *Follower) Serve() error {
	if !f.started.CompareAndSwap(false, true) {
		return nil // closed before it started
	}
	defer close(f.done)
	backoff := time.Duration(0)
	for f.ctx.Err() == nil {
		err := f.safeSession()
		f.connected.Store(false)
		if f.ctx.Err() != nil {
			return nil
		}
		f.errors.Add(1)
		if errors.Is(err, errSelf) {
			// Not a failure that passes: stop following, say so once.
			f.log.Error("not following upstream", "url", f.shown, "err", err)
			<-f.ctx.Done()
			return nil
		}
		if f.progress {
			backoff = 0 // the stream moved the cursor: start again quickly
		}
		backoff = min(max(2*backoff, f.opts.MinBackoff), f.opts.MaxBackoff)
		f.log.Warn("upstream stream ended; reconnecting", "url", f.shown, "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-f.ctx.Done():
			return nil
		}
	}
	return nil
}

// Close stops following: the write in flight finishes, then Serve returns.
func (f *Follower) Close() error {
	f.cancel()
	if f.started.CompareAndSwap(false, true) {
		close(f.done) // Serve never ran, and now never will
	}
	<-f.done
	return nil
}

// Stats returns the follower's counters.
func (f *Follower) Stats() FollowStats {
	return FollowStats{URL: f.shown, Connected: f.connected.Load(), Cursor: f.cursorSeen.Load(),
		Connects: f.connects.Load(), Errors: f.errors.Load(), Changes: f.changes.Load(), Skipped: f.skipped.Load(),
		Dumps: f.dumps.Load(), Resets: f.resets.Load(), Refused: f.refused.Load()}
}

// loadCursor reads the cursor from the store, creating its key (at 0: no
// cursor) when missing, so that a later write of it cannot be refused for
// -max-series after the changes it covers were applied.
func (f *Follower) loadCursor() error {
	var create []sample.Op
	f.cursor, f.epoch = 0, 0
	if s, ok := f.store.Get(f.cursorKey); !ok {
		create = append(create, sample.Op{Code: sample.Set, Key: f.cursorKey})
	} else if id, ok := eventID(s); ok {
		f.cursor = id
	} else {
		return fmt.Errorf("load the upstream cursor: %s holds %v (a %s), not an event id; DELETE it to follow from a fresh dump", f.cursorKey, s.Value, s.Kind)
	}
	if s, ok := f.store.Get(f.epochKey); !ok {
		create = append(create, sample.Op{Code: sample.Set, Key: f.epochKey})
	} else if id, ok := eventID(s); ok {
		f.epoch = id // anything else: not known, as from an upstream that sends none
	}
	if err := f.write(create); err != nil {
		return fmt.Errorf("create the upstream cursor %s: %w", f.cursorKey, err)
	}
	return nil
}

// eventID reads an id (or an epoch) kept in a GAUGE.
func eventID(s sample.Series) (uint64, bool) {
	if s.Kind != sample.Gauge || s.Value < 0 || s.Value > maxID || s.Value != math.Trunc(s.Value) {
		return 0, false
	}
	return uint64(s.Value), true
}

// safeSession is session with a panic caught: it ends the stream, and the
// follower reconnects from its cursor.
func (f *Follower) safeSession() (err error) {
	defer boundary.Recover("upstream", f.log, func() { err = errors.New("a panic, recovered (see the log)") })
	return f.session()
}

// session opens one stream and applies its events until it fails.
// f.progress says whether it moved the cursor.
func (f *Follower) session() error {
	f.ops, f.complete, f.pending, f.inDump, f.dumpPrev, f.progress = f.ops[:0], 0, 0, false, "", false
	if err := f.loadCursor(); err != nil {
		return err
	}
	f.cursorSeen.Store(f.cursor)
	ctx, cancel := context.WithCancelCause(f.ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.opts.URL, nil)
	if err != nil {
		return fmt.Errorf("make the upstream request: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if f.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+f.opts.Token)
	}
	if f.cursor > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(f.cursor, 10))
		if f.epoch > 0 {
			// Upstream resumes only if it still vouches for the cursor's
			// ids; else it sends a reset.
			req.Header.Set("X-Sonde-Epoch", strconv.FormatUint(f.epoch, 10))
		}
	}
	resp, err := f.opts.Client.Do(req)
	if err != nil {
		return fmt.Errorf("connect to upstream: %w", safeurl.Cause(err)) // without the URL, which may hold a token
	}
	defer resp.Body.Close()
	// A read of the body that takes IdleTimeout without a byte (an error
	// answer's body included) ends the session: the body is closed, which
	// unblocks the read whatever the connection became.
	idle := time.AfterFunc(f.opts.IdleTimeout, func() {
		cancel(fmt.Errorf("the upstream sent nothing for %s, not even a heartbeat", f.opts.IdleTimeout))
		resp.Body.Close()
	})
	defer idle.Stop()
	if resp.StatusCode != http.StatusOK {
		var msg []byte
		if resp.StatusCode >= 200 { // a 1xx answer's body is the raw connection
			msg, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
		}
		return fmt.Errorf("upstream answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return fmt.Errorf("upstream answered %q, not an event stream", resp.Header.Get("Content-Type"))
	}
	if id := resp.Header.Get("X-Sonde-Instance"); id != "" && id == f.opts.Instance {
		return errSelf
	}
	f.upEpoch, _ = strconv.ParseUint(resp.Header.Get("X-Sonde-Epoch"), 10, 64)
	if f.upEpoch > maxID {
		f.upEpoch = 0
	}
	f.connects.Add(1)
	f.connected.Store(true)
	f.log.Info("following upstream", "url", f.shown, "last_event_id", f.cursor)
	// The change events read so far are written before every read from
	// the network, so none waits on the next one: under load a read
	// brings many, and they go in one write.
	body := &idleReader{r: resp.Body, t: idle, d: f.opts.IdleTimeout, before: f.flushChanges}
	rd := sse.NewReader(bufio.NewReaderSize(body, 64<<10))
	f.dumpNext = f.cursor == 0
	for {
		ev, err := rd.Next(f.pair)
		if err != nil {
			if errors.Is(err, errWrite) {
				return err // a write before a read failed, not the read
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("the upstream closed the stream")
			} else if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil && f.ctx.Err() == nil {
				err = cause
			}
			// Whole events read before the failure are applied.
			f.ops = f.ops[:f.complete]
			if werr := f.flushChanges(); werr != nil {
				return werr
			}
			return fmt.Errorf("read the upstream stream: %w", err)
		}
		if err := checkEvent(ev); err != nil {
			return fmt.Errorf("read the upstream stream: %w", err)
		}
		if f.inDump || ev.Type == "reset" || f.dumpNext {
			if err := f.endDump(ev); err != nil {
				return err
			}
			continue
		}
		if ev.ID <= max(f.cursor, f.pending) {
			f.ops = f.ops[:f.complete] // an idle window's end: it changes nothing
			f.skipped.Add(1)
			continue
		}
		f.pending, f.complete = ev.ID, len(f.ops)
		f.changes.Add(1)
		if len(f.ops) >= f.opts.MaxBatch {
			if err := f.flushChanges(); err != nil {
				return err
			}
		}
	}
}

// maxID is the largest event id a follower takes: the cursor is a GAUGE,
// a float64, exact up to 2^53. (A Sonde's ids are WAL indexes.)
const maxID = 1 << 53

// checkEvent refuses what a Sonde never sends.
func checkEvent(ev sse.Event) error {
	switch {
	case !ev.HasID || !ev.Data:
		return fmt.Errorf("%w: an event without an id or data", sse.ErrSyntax)
	case ev.ID > maxID:
		return fmt.Errorf("%w: event id %d is above 2^53", sse.ErrSyntax, ev.ID)
	case ev.Type != "" && ev.Type != "reset":
		return fmt.Errorf("%w: an event of type %q", sse.ErrSyntax, ev.Type)
	}
	return nil
}

// upstreamKeys prefixes a follower's own keys (its cursor and epoch). A
// follower does not copy upstream's: in a loop of followers (A follows B
// follows A) each would copy the other's cursor writes, each copy a
// change that moves a cursor, for ever.
const upstreamKeys = "sonde.upstream."

// pair takes one key of an event's data.
func (f *Follower) pair(typ string, key []byte, v float64, deleted bool) error {
	boundary.Inject("upstream", key)
	if typ != "" && typ != "reset" {
		return fmt.Errorf("%w: an event of type %q", sse.ErrSyntax, typ)
	}
	if bytes.HasPrefix(key, []byte(upstreamKeys)) {
		return nil
	}
	k := f.prefix + string(key) // one allocation: the conversion is not made apart
	if typ != "reset" && !f.dumpNext {
		if len(f.ops)-f.complete >= f.opts.MaxBatch {
			// Sonde sends one key per change: this is no Sonde.
			return fmt.Errorf("%w: a change event with more than %d keys", sse.ErrSyntax, f.opts.MaxBatch)
		}
		op := sample.Op{Code: sample.Set, Key: k, Value: v}
		if deleted {
			op = sample.Op{Code: sample.Delete, Key: k}
		}
		f.ops = append(f.ops, op)
		return nil
	}
	if err := f.beginDump(); err != nil {
		return err
	}
	if f.dumpPrev != "" && k <= f.dumpPrev {
		return fmt.Errorf("%w: the dump's key %q is not after %q", sse.ErrSyntax, key, strings.TrimPrefix(f.dumpPrev, f.prefix))
	}
	if err := f.deleteBetween(f.dumpPrev, k); err != nil {
		return err
	}
	f.dumpPrev = k
	cur, ok := f.store.Get(k)
	switch {
	case deleted:
		if ok {
			f.ops = append(f.ops, sample.Op{Code: sample.Delete, Key: k})
		}
	case ok && cur.Kind != sample.Gauge:
		f.ops = append(f.ops, sample.Op{Code: sample.Delete, Key: k}, sample.Op{Code: sample.Set, Key: k, Value: v})
	case !ok || math.Float64bits(cur.Value) != math.Float64bits(v):
		f.ops = append(f.ops, sample.Op{Code: sample.Set, Key: k, Value: v})
	}
	if len(f.ops) >= f.opts.MaxBatch {
		return f.writeOps()
	}
	return nil
}

// beginDump starts applying a dump: the changes before it are written
// first, with their cursor. The dump's first write then clears the
// cursor: a dump cut short leaves part of a state applied, which only a
// whole dump can finish, and a stream opened with no cursor starts with
// one (with the old cursor, an upstream that has grown past it would
// resume there instead).
func (f *Follower) beginDump() error {
	if f.inDump {
		return nil
	}
	if err := f.flushChanges(); err != nil {
		return err
	}
	f.inDump, f.dumpPrev = true, ""
	if f.cursor != 0 {
		f.ops = append(f.ops, sample.Op{Code: sample.Set, Key: f.cursorKey})
		f.cursor = 0
	}
	return nil
}

// endDump finishes a dump: the keys after its last one go, and the last
// write moves the cursor to its id.
func (f *Follower) endDump(ev sse.Event) error {
	if err := f.beginDump(); err != nil { // a dump with no key
		return err
	}
	if err := f.deleteBetween(f.dumpPrev, ""); err != nil {
		return err
	}
	f.ops = f.appendCursor(f.ops, ev.ID)
	if err := f.writeOps(); err != nil {
		return err
	}
	f.epoch = f.upEpoch
	f.cursor, f.inDump, f.dumpNext, f.dumpPrev, f.progress = ev.ID, false, false, "", true
	f.cursorSeen.Store(ev.ID)
	f.dumps.Add(1)
	if ev.Type == "reset" {
		f.resets.Add(1)
	}
	f.log.Info("applied an upstream dump", "url", f.shown, "reset", ev.Type == "reset", "id", ev.ID)
	return nil
}

// deleteBetween queues a DELETE of every key under the prefix after lo
// (the prefix itself when "") and before hi (no bound when ""), but the
// cursor, writing whenever MaxBatch ops are queued.
func (f *Follower) deleteBetween(lo, hi string) error {
	from := lo
	if from == "" {
		from = f.prefix
	}
	for {
		more := false
		f.store.Keys(from, func(k string) bool {
			if k == lo {
				return true
			}
			if !strings.HasPrefix(k, f.prefix) || hi != "" && k >= hi {
				return false
			}
			if k != f.cursorKey {
				f.ops = append(f.ops, sample.Op{Code: sample.Delete, Key: k})
			}
			if len(f.ops) >= f.opts.MaxBatch {
				from, more = k+"\x00", true
				return false
			}
			return true
		})
		if !more {
			return nil
		}
		if err := f.writeOps(); err != nil {
			return err
		}
	}
}

// appendCursor queues the cursor at id, and the upstream's epoch when the
// stored one is another: the ids from here on were read in it.
func (f *Follower) appendCursor(ops []sample.Op, id uint64) []sample.Op {
	if f.upEpoch != f.epoch {
		ops = append(ops, sample.Op{Code: sample.Set, Key: f.epochKey, Value: float64(f.upEpoch)})
	}
	return append(ops, sample.Op{Code: sample.Set, Key: f.cursorKey, Value: float64(id)})
}

// flushChanges writes the whole change events queued, with the cursor
// moved to the newest of them, in one write; the ops of an event still
// being read stay queued.
func (f *Follower) flushChanges() error {
	if f.pending == 0 || f.inDump {
		return nil
	}
	f.batch = f.appendCursor(append(f.batch[:0], f.ops[:f.complete]...), f.pending)
	n := copy(f.ops, f.ops[f.complete:])
	f.ops, f.complete = f.ops[:n], 0
	if err := f.write(f.batch); err != nil {
		// The session ends; the next one starts from the store's cursor.
		f.ops, f.pending = f.ops[:0], 0
		return err
	}
	f.cursor, f.pending, f.progress, f.epoch = f.pending, 0, true, f.upEpoch
	f.cursorSeen.Store(f.cursor)
	return nil
}

// writeOps writes every op queued (a dump's).
func (f *Follower) writeOps() error {
	err := f.write(f.ops)
	f.ops, f.complete = f.ops[:0], 0
	return err
}

// write appends the queued ops as one write: the WAL replays it whole or
// not at all. No reply waits on it (the upstream does not), so under
// -fsync=always it is fsynced with the next acknowledged write or within
// -fsync-interval; a power loss can only take the cursor back with the
// changes, which the follower then fetches again.
func (f *Follower) write(ops []sample.Op) error {
	if len(ops) == 0 {
		return nil
	}
	var err error
	f.errs, err = appendBatch(f.ctx, f.store, ops, f.errs, false)
	if err != nil {
		return fmt.Errorf("%w: %w", errWrite, err)
	}
	for i, e := range f.errs {
		op := &ops[i]
		switch {
		case e == nil || op.Code == sample.Delete && errors.Is(e, sample.ErrNotFound):
		case op.Key == f.cursorKey || op.Key == f.epochKey:
			return fmt.Errorf("%w: store the cursor in %s: %w", errWrite, op.Key, e)
		default:
			logRefused(f.log, f.refused.Add(1), "url", f.shown, "key", op.Key, "err", e)
		}
	}
	return nil
}

// idleReader calls before ahead of every read, and restarts a timer at
// every read that brings bytes.
type idleReader struct {
	r      io.Reader
	t      *time.Timer
	d      time.Duration
	before func() error
}

func (i *idleReader) Read(p []byte) (int, error) {
	if err := i.before(); err != nil {
		return 0, err
	}
	n, err := i.r.Read(p)
	if n > 0 {
		i.t.Reset(i.d)
	}
	return n, err
}

// shownURL is u as logs and stats show it: without userinfo, and with a
// token= parameter's value hidden (both may hold the upstream's token).
func shownURL(u *url.URL) string {
	s := *u
	s.User = nil
	if q := s.Query(); q.Has("token") {
		q.Set("token", "…")
		s.RawQuery = q.Encode()
	}
	return s.String()
}

// URL is the upstream's URL as logs and stats show it (see shownURL).
func (f *Follower) URL() string { return f.shown }
