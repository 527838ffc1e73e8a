package query

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Options configure a Server. The zero value means the defaults.
type Options struct {
	// Addr is the listen address; default "127.0.0.1:1337".
	Addr string
	// Heartbeat is the period of SSE comment frames; default 15 s.
	Heartbeat time.Duration
	// StreamWriteTimeout cuts off an SSE subscriber whose socket takes no
	// bytes for this long (a stalled reader, or a peer that vanished
	// without closing); default 30 s.
	StreamWriteTimeout time.Duration
	// VaporPoints is how many recent points /vapor returns per key;
	// default 120.
	VaporPoints int
	// MaxConns caps concurrent connections; default 1024.
	MaxConns int
	// MaxBodySize caps a request body; default 1 MiB.
	MaxBodySize int
	// Stats, when set, is merged into /api/v1/stats as extra JSON members
	// (each value must be JSON).
	Stats func() map[string][]byte
	// Routes are more handlers by exact path, any method (the collectd
	// receiver at /collectd). They run before the read API.
	Routes map[string]fasthttp.RequestHandler
	// Logger receives server messages; nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:1337"
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.StreamWriteTimeout <= 0 {
		o.StreamWriteTimeout = 30 * time.Second
	}
	if o.VaporPoints <= 0 {
		o.VaporPoints = 120
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
	if o.MaxBodySize <= 0 {
		o.MaxBodySize = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Server serves the HTTP API.
type Server struct {
	opts  Options
	store Store
	ln    net.Listener
	srv   *fasthttp.Server
	done  chan struct{} // closed at shutdown: streams end
	hub   *hub

	streamsMu sync.Mutex            // guards streams and closing.
	streams   map[net.Conn]struct{} // the connections of open SSE streams
	closing   bool                  // set by Shutdown: no new streams
	streamsWG sync.WaitGroup        // one per stream, until its goroutine ends
}

// Listen binds the HTTP listener; Serve serves on it.
func Listen(opts Options, store Store) (*Server, error) {
	opts = opts.withDefaults()
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for http on %s: %w", opts.Addr, err)
	}
	s := &Server{opts: opts, store: store, ln: ln, done: make(chan struct{}), streams: make(map[net.Conn]struct{})}
	s.hub = newHub(store, s.done)
	go s.hub.run()
	s.srv = &fasthttp.Server{
		Handler:            s.handle,
		Name:               "sonde",
		ReadTimeout:        30 * time.Second,
		IdleTimeout:        2 * time.Minute,
		MaxRequestBodySize: opts.MaxBodySize,
		Concurrency:        opts.MaxConns,
		CloseOnShutdown:    true,
		// No WriteTimeout: in fasthttp it bounds the whole response and
		// would cut every SSE stream.
		Logger: slogPrintf{opts.Logger},
	}
	return s, nil
}

type slogPrintf struct{ l *slog.Logger }

func (p slogPrintf) Printf(format string, args ...any) { p.l.Warn(fmt.Sprintf(format, args...)) }

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Subscribers returns how many SSE streams are open.
func (s *Server) Subscribers() int {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	return len(s.streams)
}

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// Shutdown ends the SSE streams, stops accepting and waits for the open
// requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	close(s.done)
	// A stream blocked writing to a client that does not read would hold
	// shutdown up: expire its write deadline now.
	s.streamsMu.Lock()
	s.closing = true
	for c := range s.streams {
		c.SetWriteDeadline(time.Now())
	}
	s.streamsMu.Unlock()
	if err := s.srv.ShutdownWithContext(ctx); err != nil {
		return fmt.Errorf("shut down http: %w", err)
	}
	// Streams run on hijacked connections, which fasthttp does not wait for.
	ended := make(chan struct{})
	go func() { s.streamsWG.Wait(); close(ended) }()
	select {
	case <-ended:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down http: event streams still open: %w", ctx.Err())
	}
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	if h, ok := s.opts.Routes[string(ctx.URI().PathOriginal())]; ok {
		h(ctx)
		return
	}
	path := string(ctx.URI().PathOriginal())
	switch path {
	case "/render": // Graphite's API; Grafana POSTs forms
		s.render(ctx)
		return
	case "/metrics/find":
		s.metricsFind(ctx)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "only GET is served here")
		return
	}
	switch path {
	case "/data":
		s.data(ctx)
		return
	case "/vapor":
		s.vapor(ctx)
		return
	case "/events":
		s.events(ctx)
		return
	case "/api/v1/series":
		s.seriesList(ctx)
		return
	case "/api/v1/history":
		s.historyMany(ctx)
		return
	case "/api/v1/stats":
		s.stats(ctx)
		return
	case "/healthz":
		ctx.SetContentType("text/plain")
		ctx.SetBodyString("ok\n")
		return
	}
	if rest, ok := strings.CutPrefix(path, "/api/v1/series/"); ok {
		hist := false
		if r, ok := strings.CutSuffix(rest, "/history"); ok {
			rest, hist = r, true
		}
		key, err := url.PathUnescape(rest)
		if err != nil || key == "" {
			writeError(ctx, fasthttp.StatusBadRequest, "bad key in path")
			return
		}
		if hist {
			s.history(ctx, key)
		} else {
			s.seriesOne(ctx, key)
		}
		return
	}
	writeError(ctx, fasthttp.StatusNotFound, "no such endpoint")
}

func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b := append([]byte(`{"error":`), appendString(nil, msg)...)
	ctx.SetBody(append(b, "}\n"...))
}

func writeJSON(ctx *fasthttp.RequestCtx, b []byte) {
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// matcher reads ?match=; nil means every key. False: the pattern was
// refused, with a 400 written.
func matcher(ctx *fasthttp.RequestCtx) (func(string) bool, bool) {
	m := ctx.QueryArgs().Peek("match")
	if len(m) == 0 {
		return nil, true
	}
	g, err := CompileGlob(string(m))
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return nil, false
	}
	return g.Match, true
}

// appendDump writes {"key":view,...}.
func appendDump(b []byte, series []sample.Series) []byte {
	b = append(b, '{')
	for i, se := range series {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, se.Key)
		b = append(b, ':')
		b = appendFloat(b, se.View)
	}
	return append(b, '}')
}

func (s *Server) data(ctx *fasthttp.RequestCtx) {
	match, ok := matcher(ctx)
	if !ok {
		return
	}
	series := s.store.Series(match, nil)
	writeJSON(ctx, append(appendDump(nil, series), '\n'))
}

func appendPoints(b []byte, pts []sample.Point) []byte {
	b = append(b, '[')
	for i, p := range pts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, p.T, 10)
		b = append(b, ',')
		b = appendFloat(b, p.V)
		b = append(b, ']')
	}
	return append(b, ']')
}

func (s *Server) vapor(ctx *fasthttp.RequestCtx) {
	match, ok := matcher(ctx)
	if !ok {
		return
	}
	series := s.store.Series(match, nil)
	b := []byte{'{'}
	var pts []sample.Point
	n := 0
	for _, se := range series {
		var err error
		pts, err = s.store.Range(ctx, se.Key, math.MinInt64, math.MaxInt64, s.opts.VaporPoints, pts[:0])
		if errors.Is(err, sample.ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
			return
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendString(b, se.Key)
		b = append(b, ':')
		b = appendPoints(b, pts)
	}
	writeJSON(ctx, append(b, "}\n"...))
}

func appendSeries(b []byte, se sample.Series) []byte {
	b = append(b, `{"key":`...)
	b = appendString(b, se.Key)
	b = append(b, `,"type":"`...)
	b = append(b, se.Kind.String()...)
	b = append(b, `","value":`...)
	b = appendFloat(b, se.Value)
	b = append(b, `,"view":`...)
	b = appendFloat(b, se.View)
	b = append(b, `,"updated":`...)
	b = strconv.AppendInt(b, se.Updated, 10)
	b = append(b, `,"points":`...)
	b = strconv.AppendUint(b, se.Points, 10)
	if se.Kind == sample.Counter {
		b = append(b, `,"interval":`...)
		b = strconv.AppendInt(b, se.Interval, 10)
	}
	return append(b, '}')
}

func (s *Server) seriesList(ctx *fasthttp.RequestCtx) {
	match, ok := matcher(ctx)
	if !ok {
		return
	}
	series := s.store.Series(match, nil)
	b := []byte{'['}
	for i, se := range series {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendSeries(b, se)
	}
	writeJSON(ctx, append(b, "]\n"...))
}

func (s *Server) seriesOne(ctx *fasthttp.RequestCtx, key string) {
	se, ok := s.store.Get(key)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "no such key: "+key)
		return
	}
	writeJSON(ctx, append(appendSeries(nil, se), '\n'))
}

// timeArg parses a time parameter: ms since the epoch, or RFC 3339.
func timeArg(ctx *fasthttp.RequestCtx, name string, def int64) (int64, error) {
	v := ctx.QueryArgs().Peek(name)
	if len(v) == 0 {
		return def, nil
	}
	if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		return n, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return 0, fmt.Errorf("%s=%q is neither milliseconds since the epoch nor an RFC 3339 time", name, v)
	}
	return t.UnixMilli(), nil
}

// stepArgs reads step= and agg=; step 0 means no downsampling.
func stepArgs(ctx *fasthttp.RequestCtx) (int64, Agg, error) {
	a := ctx.QueryArgs()
	agg, err := ParseAgg(string(a.Peek("agg")))
	if err != nil {
		return 0, "", err
	}
	v := a.Peek("step")
	if len(v) == 0 {
		if a.Has("agg") {
			return 0, "", fmt.Errorf("agg= needs step=")
		}
		return 0, agg, nil
	}
	step, err := ParseStep(string(v))
	return step, agg, err
}

// maxHistoryKeys caps the keys one /api/v1/history?match= read returns.
const maxHistoryKeys = 1000

// historyMany serves /api/v1/history?match=glob: the history of every
// matching key, with the single-key read's from, to, limit, step and agg.
func (s *Server) historyMany(ctx *fasthttp.RequestCtx) {
	m := string(ctx.QueryArgs().Peek("match"))
	if m == "" {
		writeError(ctx, fasthttp.StatusBadRequest, "match= is missing")
		return
	}
	g, err := CompileGlob(m)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	from, err := timeArg(ctx, "from", math.MinInt64)
	if err == nil {
		var to int64
		if to, err = timeArg(ctx, "to", math.MaxInt64); err == nil {
			s.historyManyRange(ctx, g, from, to)
			return
		}
	}
	writeError(ctx, fasthttp.StatusBadRequest, err.Error())
}

func (s *Server) historyManyRange(ctx *fasthttp.RequestCtx, g *Glob, from, to int64) {
	step, agg, err := stepArgs(ctx)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	limit := 0
	if v := ctx.QueryArgs().Peek("limit"); len(v) > 0 {
		if limit, err = strconv.Atoi(string(v)); err != nil || limit < 0 {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("limit=%q is not a whole number >= 0", v))
			return
		}
	}
	list := s.store.Series(g.Match, nil)
	if len(list) > maxHistoryKeys {
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("match selects %d keys; at most %d per read", len(list), maxHistoryKeys))
		return
	}
	b := []byte(`{"series":[`)
	n := 0
	for _, se := range list {
		if (agg == AggRate || agg == AggIncrease) && se.Kind != sample.Counter {
			continue // rate and increase only mean something for counters
		}
		pts, err := s.store.Range(ctx, se.Key, from, to, limit, nil)
		if errors.Is(err, sample.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
			return
		}
		if step > 0 {
			pts = Downsample(pts, step, agg)
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"key":`...)
		b = appendString(b, se.Key)
		b = append(b, `,"type":"`...)
		b = append(b, se.Kind.String()...)
		b = append(b, `","points":`...)
		b = appendPoints(b, pts)
		b = append(b, '}')
	}
	writeJSON(ctx, append(b, "]}\n"...))
}

func (s *Server) history(ctx *fasthttp.RequestCtx, key string) {
	from, err := timeArg(ctx, "from", math.MinInt64)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	to, err := timeArg(ctx, "to", math.MaxInt64)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if from > to {
		writeError(ctx, fasthttp.StatusBadRequest, "from is after to")
		return
	}
	limit := 0
	if v := ctx.QueryArgs().Peek("limit"); len(v) > 0 {
		limit, err = strconv.Atoi(string(v))
		if err != nil || limit < 0 {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("limit=%q is not a whole number >= 0", v))
			return
		}
	}
	fn := string(ctx.QueryArgs().Peek("fn"))
	if fn != "" && fn != "rate" && fn != "increase" {
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("fn=%q is unknown (want rate or increase)", fn))
		return
	}
	step, agg, err := stepArgs(ctx)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if fn != "" && step > 0 {
		writeError(ctx, fasthttp.StatusBadRequest, "fn sums up the whole range; for a value per step use step= with agg=rate or agg=increase")
		return
	}
	se, ok := s.store.Get(key)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "no such key: "+key)
		return
	}
	if (fn != "" || agg == AggRate || agg == AggIncrease) && se.Kind != sample.Counter {
		writeError(ctx, fasthttp.StatusBadRequest, "rate and increase need a COUNTER; "+key+" is a "+se.Kind.String())
		return
	}
	pts, err := s.store.Range(ctx, key, from, to, limit, nil)
	if errors.Is(err, sample.ErrNotFound) {
		writeError(ctx, fasthttp.StatusNotFound, "no such key: "+key)
		return
	}
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
		return
	}
	if step > 0 {
		pts = Downsample(pts, step, agg)
	}
	b := append([]byte(`{"key":`), appendString(nil, key)...)
	b = append(b, `,"type":"`...)
	b = append(b, se.Kind.String()...)
	b = append(b, '"')
	if step > 0 {
		b = append(b, `,"step":`...)
		b = strconv.AppendInt(b, step, 10)
		b = append(b, `,"agg":"`...)
		b = append(b, agg...)
		b = append(b, '"')
	}
	if fn != "" {
		rate, inc, resets, ok := Rate(pts)
		b = append(b, `,"fn":"`+fn+`","rate":`...)
		if ok {
			b = appendFloat(b, rate)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `,"increase":`...)
		b = appendFloat(b, inc)
		b = append(b, `,"resets":`...)
		b = strconv.AppendInt(b, int64(resets), 10)
		b = append(b, `,"samples":`...)
		b = strconv.AppendInt(b, int64(len(pts)), 10)
		if len(pts) > 0 {
			b = append(b, `,"first":`...)
			b = strconv.AppendInt(b, pts[0].T, 10)
			b = append(b, `,"last":`...)
			b = strconv.AppendInt(b, pts[len(pts)-1].T, 10)
		}
	} else {
		b = append(b, `,"points":`...)
		b = appendPoints(b, pts)
	}
	writeJSON(ctx, append(b, "}\n"...))
}

func (s *Server) stats(ctx *fasthttp.RequestCtx) {
	b := []byte(`{"index":`)
	b = strconv.AppendUint(b, s.store.Index(), 10)
	b = append(b, `,"subscribers":`...)
	b = strconv.AppendInt(b, int64(s.Subscribers()), 10)
	if s.opts.Stats != nil {
		for k, v := range s.opts.Stats() {
			b = append(b, ',')
			b = appendString(b, k)
			b = append(b, ':')
			b = append(b, v...)
		}
	}
	writeJSON(ctx, append(b, "}\n"...))
}

// events serves /events as Server-Sent Events.
func (s *Server) events(ctx *fasthttp.RequestCtx) {
	// Everything the stream needs is copied now: the stream writer runs
	// after this handler returns and must not touch ctx.
	match, ok := matcher(ctx)
	if !ok {
		return
	}
	pattern := string(ctx.QueryArgs().Peek("match"))
	lastID, hasLast := uint64(0), false
	if v := ctx.Request.Header.Peek("Last-Event-ID"); len(v) > 0 {
		id, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("Last-Event-ID %q is not an event id", v))
			return
		}
		lastID, hasLast = id, true
	}
	// The stream takes the connection over (hijack): frames go straight to
	// the socket, with no copy through fasthttp's stream pipe and no
	// chunked encoding; the response ends when the connection closes.
	if n := s.Subscribers(); n >= s.opts.MaxConns {
		writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("too many event streams (limit %d)", s.opts.MaxConns))
		return
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(conn net.Conn) {
		// Registered under streamsMu: either Shutdown's wait covers this
		// stream, or this sees closing and ends at once.
		s.streamsMu.Lock()
		if s.closing {
			s.streamsMu.Unlock()
			return
		}
		s.streams[conn] = struct{}{}
		s.streamsWG.Add(1)
		s.streamsMu.Unlock()
		defer s.streamsWG.Done()
		s.hub.join()
		defer s.hub.leave()
		defer func() {
			s.streamsMu.Lock()
			delete(s.streams, conn)
			s.streamsMu.Unlock()
		}()
		// Each flush gives the client StreamWriteTimeout to take the bytes.
		sw := &deadlineWriter{Writer: bufio.NewWriterSize(conn, 64<<10), conn: conn, timeout: s.opts.StreamWriteTimeout}
		if _, err := sw.WriteString(sseHeader); err != nil {
			return
		}
		if err := s.stream(sw, pattern, match, lastID, hasLast); err != nil {
			s.opts.Logger.Debug("sse stream ended", "err", err)
		}
	})
}

// sseHeader opens an event stream; the connection closes at its end.
const sseHeader = "HTTP/1.1 200 OK\r\nServer: sonde\r\nContent-Type: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"

const changeBatch = 512

// deadlineWriter extends the connection's write deadline at every flush.
type deadlineWriter struct {
	*bufio.Writer
	conn    net.Conn
	timeout time.Duration
}

func (d *deadlineWriter) Flush() error {
	if err := d.conn.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return err
	}
	return d.Writer.Flush()
}

func (s *Server) stream(w *deadlineWriter, pattern string, match func(string) bool, after uint64, resume bool) error {
	var frame []byte
	dump := func() error {
		idx := s.store.Index()
		series := s.store.Series(match, nil)
		frame = appendFrame(frame[:0], idx, appendDump(nil, series))
		after = idx
		if _, err := w.Write(frame); err != nil {
			return err
		}
		return w.Flush()
	}
	if !resume || after > s.store.Index() {
		// A fresh subscriber, or an id from the future (another server).
		if err := dump(); err != nil {
			return err
		}
	} else {
		// Resuming: no dump, but the client should see the stream open now.
		if _, err := w.WriteString(": resumed\r\n\r\n"); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	hb := time.NewTicker(s.opts.Heartbeat)
	defer hb.Stop()
	var changes []sample.Change
	var blocks []*block
	var grown <-chan struct{}
	for {
		var ok bool
		blocks, grown, ok = s.hub.since(after, blocks[:0])
		if ok && len(blocks) > 0 {
			// The common case: frames the hub encoded once for everyone.
			frame = frame[:0]
			for _, b := range blocks {
				frame = b.frames(frame, after, pattern, match)
				after = b.last()
			}
			clear(blocks)
			if len(frame) > 0 {
				if _, err := w.Write(frame); err != nil {
					return err
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
			continue
		}
		if !ok {
			// Behind the hub's oldest block: read the store's change log.
			var err error
			changes, err = s.store.Changes(after, changes[:0], changeBatch)
			if errors.Is(err, sample.ErrGone) {
				if err := dump(); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
			if len(changes) > 0 {
				frame = frame[:0]
				var body []byte
				for _, c := range changes {
					after = c.ID
					if match != nil && !match(c.Key) {
						continue
					}
					body = appendChange(body[:0], c)
					frame = appendFrame(frame, c.ID, body)
				}
				if _, err := w.Write(frame); err != nil {
					return err
				}
				if err := w.Flush(); err != nil {
					return err
				}
				continue
			}
		}
		select {
		case <-grown:
		case <-hb.C:
			if _, err := w.WriteString(": ping\r\n\r\n"); err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
		case <-s.done:
			return nil
		}
	}
}

// appendFrame writes one SSE event in mesures' framing (CRLF line ends).
func appendFrame(b []byte, id uint64, data []byte) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, "\r\ndata: "...)
	b = append(b, data...)
	return append(b, "\r\n\r\n"...)
}
