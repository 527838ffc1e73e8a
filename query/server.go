package query

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Options configure a Server. The zero value means the defaults.
type Options struct {
	// Access, when set, holds the sources taken (-allow; a refused one is
	// closed at once, a datagram dropped, and counted), TLS and the tokens
	// asked for (docs/auth.md).
	Access *boundary.Access
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
	// QueryTimeout bounds the time one read may take; default 30 s. Reads
	// are /data, /vapor, /render, /metrics/find, /api/v1/series and the
	// history routes.
	QueryTimeout time.Duration
	// MaxPoints bounds the points one read may hold, read and answered;
	// default 1,000,000.
	MaxPoints int
	// MaxBytes bounds the body of one read's answer; default 32 MiB.
	MaxBytes int
	// MaxSeries bounds the series one read covers; default 10,000.
	MaxSeries int
	// MaxQueries bounds the reads running at once; one more waits for a
	// slot for up to QueryTimeout, then gets 503. Default 4.
	MaxQueries int
	// HeaderTimeout is how long a client has to send a request head: the
	// first from accept, on the admission gate; a later one on a kept-alive
	// connection from its first byte. Default 5 s.
	HeaderTimeout time.Duration
	// Stats, when set, is merged into /api/v1/stats as extra JSON members
	// (each value must be JSON).
	Stats func() map[string][]byte
	// Routes are more handlers by exact path, any method (the collectd
	// receiver at /collectd). They run before the read API.
	Routes map[string]fasthttp.RequestHandler
	// Status, when set, serves the status routes (/api/v1/events,
	// /api/v1/heartbeats, /api/v1/alerts); without it they answer 404.
	Status StatusStore
	// Clients, when set, serves the client routes (/api/v1/clients and
	// its stream); without it they answer 404.
	Clients ClientStore
	// Glo shapes the glo document of GET /glo.
	Glo GloOptions
	// AlertChannels are the names of the alert channels the operator
	// configured: a heartbeat naming another is refused.
	AlertChannels []string
	// Checks, when set, lists the HTTP checks (/api/v1/checks).
	Checks func() []sample.CheckInfo
	// Instance, when set, is sent in the X-Sonde-Instance header of every
	// event stream: a follower (-upstream) that gets its own server's
	// instance back refuses to follow itself.
	Instance string
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
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 30 * time.Second
	}
	if o.MaxPoints <= 0 {
		o.MaxPoints = 1_000_000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 32 << 20
	}
	if o.MaxSeries <= 0 {
		o.MaxSeries = 10_000
	}
	if o.MaxQueries <= 0 {
		o.MaxQueries = 4
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Server serves the HTTP API.
type Server struct {
	opts    Options
	store   Store
	ln      *boundary.Gate // admits a connection once its first request head is in
	srv     *fasthttp.Server
	done    chan struct{} // closed at shutdown: streams end
	hub     *hub
	sseHead string        // the response head of an event stream
	slots   chan struct{} // one per running read (MaxQueries)
	reads   readStats

	streamsMu sync.Mutex                 // guards streams and closing.
	streams   map[*deadlineConn]struct{} // the connections of open SSE streams
	closing   bool                       // set by Shutdown: no new streams
	streamsWG sync.WaitGroup             // one per stream, until its goroutine ends
}

// Listen binds the HTTP listener; Serve serves on it.
func Listen(opts Options, store Store) (*Server, error) {
	opts = opts.withDefaults()
	ln, err := boundary.Listen(opts.Access, "http", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for http on %s: %w", opts.Addr, err)
	}
	s := &Server{opts: opts, store: store, done: make(chan struct{}), streams: make(map[*deadlineConn]struct{}),
		slots: make(chan struct{}, opts.MaxQueries)}
	s.ln = boundary.NewGate(ln, boundary.GateOptions{MaxPending: boundary.PendingCap(opts.MaxConns), HeaderTimeout: opts.HeaderTimeout,
		MaxHead: readBufferSize, Logger: opts.Logger})
	s.sseHead = strings.Replace(sseHeader, "\r\n\r\n", "\r\nX-Sonde-Epoch: "+strconv.FormatUint(store.Epoch(), 10)+"\r\n\r\n", 1)
	if opts.Instance != "" {
		s.sseHead = strings.Replace(s.sseHead, "\r\n\r\n", "\r\nX-Sonde-Instance: "+opts.Instance+"\r\n\r\n", 1)
	}
	s.hub = newHub(store, s.done)
	go s.hub.run()
	s.srv = newHTTPServer(s.serve, writeError, opts.HeaderTimeout, opts.MaxBodySize, opts.MaxConns, opts.Logger)
	return s, nil
}

// newHTTPServer is the fasthttp server of a Sonde listener: bounded head
// and body, an answer from readError for a request it cannot read, limited
// logs.
func newHTTPServer(h fasthttp.RequestHandler, readError func(ctx *fasthttp.RequestCtx, code int, msg string), headerTimeout time.Duration,
	maxBody, maxConns int, logger *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler: h,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			code, msg := readErrorReply(err, maxBody)
			readError(ctx, code, msg)
		},
		Name:               "sonde",
		ReadBufferSize:     readBufferSize,
		ReadTimeout:        headerTimeout, // see readTimeouts
		HeaderReceived:     readTimeouts,
		IdleTimeout:        2 * time.Minute,
		MaxRequestBodySize: maxBody,
		Concurrency:        maxConns,
		CloseOnShutdown:    true,
		// A bad request head is logged (and answered) without its bytes:
		// they may hold a token (Authorization, ?token=, the cookie).
		SecureErrorLogMessage: true,
		// No WriteTimeout: in fasthttp it bounds the whole response and
		// would cut every SSE stream.
		Logger: boundary.Printer{Limiter: boundary.NewLogLimiter(time.Minute), Logger: logger},
	}
}

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Admission returns the counters of the admission gate.
func (s *Server) Admission() boundary.GateStats { return s.ln.Stats() }

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
		c.expire()
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
	path := string(ctx.URI().PathOriginal())
	switch path {
	case "/healthz": // for probes: it tells nothing but that Sonde serves
		ctx.SetContentType("text/plain")
		ctx.SetBodyString("ok\n")
		return
	case "/login", "/logout":
		s.login(ctx, path)
		return
	}
	if !authorize(ctx, s.opts.Access, "http", isRead(ctx, path), func(ctx *fasthttp.RequestCtx, status int, msg string) {
		if path == "/" && status == fasthttp.StatusUnauthorized && ctx.IsGet() {
			seeOther(ctx, "/login") // the page: a browser gets the form
			return
		}
		writeError(ctx, status, msg)
	}) {
		return
	}
	if h, ok := s.opts.Routes[path]; ok {
		h(ctx)
		return
	}
	switch path {
	case "/render": // Graphite's API; Grafana POSTs forms
		s.render(ctx)
		return
	case "/metrics/find":
		s.metricsFind(ctx)
		return
	case "/tags/findSeries":
		s.findSeries(ctx)
		return
	case "/glo":
		if ctx.IsGet() || ctx.IsHead() {
			s.serveGlo(ctx)
			return
		}
	}
	if s.eventRoutes(ctx, path) || s.heartbeatRoutes(ctx, path) || s.clientRoutes(ctx, path) {
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
	}
	if s.page(ctx, path) {
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
func matcher(ctx *fasthttp.RequestCtx) (*Glob, bool) {
	m := ctx.QueryArgs().Peek("match")
	if len(m) == 0 {
		return nil, true
	}
	g, err := CompileGlob(string(m))
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return nil, false
	}
	return g, true
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
	s.bounded(ctx, func(r *read) error {
		series := s.store.Series(match.Prefix(), match.Func(), nil) // no points: only its bytes bound it
		b := append(appendDump(nil, series), '\n')
		if err := r.body(len(b)); err != nil {
			return err
		}
		writeJSON(ctx, b)
		return nil
	})
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
	s.bounded(ctx, func(r *read) error {
		series := s.store.Series(match.Prefix(), match.Func(), nil)
		if err := r.series(len(series)); err != nil {
			return err
		}
		b := []byte{'{'}
		var pts []sample.Point
		n := 0
		for _, se := range series {
			if err := r.alive(); err != nil {
				return err
			}
			mark := r.budget.Mark()
			var err error
			pts, err = s.store.Recent(r.ctx, se.Key, s.opts.VaporPoints, pts[:0])
			r.budget.Rewind(mark) // the points are in b now, bounded by MaxBytes
			if errors.Is(err, sample.ErrNotFound) {
				continue // deleted since the listing
			}
			if err != nil {
				return err
			}
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = appendString(b, se.Key)
			b = append(b, ':')
			b = appendPoints(b, pts)
			if err := r.body(len(b)); err != nil {
				return err
			}
		}
		writeJSON(ctx, append(b, "}\n"...))
		return nil
	})
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
	s.bounded(ctx, func(r *read) error {
		series := s.store.Series(match.Prefix(), match.Func(), nil)
		b := []byte{'['}
		for i, se := range series {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendSeries(b, se)
			if err := r.body(len(b)); err != nil {
				return err
			}
		}
		writeJSON(ctx, append(b, "]\n"...))
		return nil
	})
}

func (s *Server) seriesOne(ctx *fasthttp.RequestCtx, key string) {
	se, ok := s.store.Get(key)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "no such key: "+key)
		return
	}
	writeJSON(ctx, append(appendSeries(nil, se), '\n'))
}

// Every time a read handles is clamped to [minTime, maxTime] (ms since the
// epoch), so no arithmetic on it can overflow: the store holds no point
// before 1970 or after the year 9999.
const (
	minTime int64 = 0
	maxTime int64 = 253402300799999 // 9999-12-31T23:59:59.999Z
)

func clampTime(ms int64) int64 { return min(max(ms, minTime), maxTime) }

// timeArg parses a time parameter: ms since the epoch, or RFC 3339. It is
// clamped to [minTime, maxTime].
func timeArg(ctx *fasthttp.RequestCtx, name string, def int64) (int64, error) {
	v := ctx.QueryArgs().Peek(name)
	if len(v) == 0 {
		return def, nil
	}
	if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		return clampTime(n), nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return 0, fmt.Errorf("%s=%q is neither milliseconds since the epoch nor an RFC 3339 time", name, text(v))
	}
	return clampTime(t.UnixMilli()), nil
}

// text keeps a client's bytes short in an error message.
func text(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
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
	args, err := historyArgs(ctx)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	s.bounded(ctx, func(r *read) error {
		list := s.store.Series(g.Prefix(), g.Match, nil)
		if err := r.series(len(list)); err != nil {
			return err
		}
		b := []byte(`{"series":[`)
		n := 0
		for _, se := range list {
			if (args.agg == AggRate || args.agg == AggIncrease) && se.Kind != sample.Counter {
				continue // rate and increase only mean something for counters
			}
			if err := r.alive(); err != nil {
				return err
			}
			mark := r.budget.Mark()
			pts, err := s.store.Range(r.ctx, se.Key, args.from, args.to, args.limit, nil)
			if errors.Is(err, sample.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			if args.step > 0 {
				pts = Downsample(pts, args.step, args.agg)
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
			if err := r.body(len(b)); err != nil {
				return err
			}
			r.budget.Rewind(mark) // the points are in b now, bounded by MaxBytes
		}
		writeJSON(ctx, append(b, "]}\n"...))
		return nil
	})
}

// historyQuery is what a history read asks for.
type historyQuery struct {
	from, to int64
	limit    int
	step     int64
	agg      Agg
}

// historyArgs reads from, to, limit, step and agg.
func historyArgs(ctx *fasthttp.RequestCtx) (historyQuery, error) {
	var q historyQuery
	var err error
	if q.from, err = timeArg(ctx, "from", minTime); err != nil {
		return q, err
	}
	if q.to, err = timeArg(ctx, "to", maxTime); err != nil {
		return q, err
	}
	if q.from > q.to {
		return q, fmt.Errorf("from is after to")
	}
	if v := ctx.QueryArgs().Peek("limit"); len(v) > 0 {
		if q.limit, err = strconv.Atoi(string(v)); err != nil || q.limit < 0 {
			return q, fmt.Errorf("limit=%q is not a whole number >= 0", v)
		}
	}
	q.step, q.agg, err = stepArgs(ctx)
	return q, err
}

func (s *Server) history(ctx *fasthttp.RequestCtx, key string) {
	args, err := historyArgs(ctx)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	fn := string(ctx.QueryArgs().Peek("fn"))
	if fn != "" && fn != "rate" && fn != "increase" {
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("fn=%q is unknown (want rate or increase)", fn))
		return
	}
	if fn != "" && args.step > 0 {
		writeError(ctx, fasthttp.StatusBadRequest, "fn sums up the whole range; for a value per step use step= with agg=rate or agg=increase")
		return
	}
	se, ok := s.store.Get(key)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "no such key: "+key)
		return
	}
	if (fn != "" || args.agg == AggRate || args.agg == AggIncrease) && se.Kind != sample.Counter {
		writeError(ctx, fasthttp.StatusBadRequest, "rate and increase need a COUNTER; "+key+" is a "+se.Kind.String())
		return
	}
	s.bounded(ctx, func(r *read) error {
		pts, err := s.store.Range(r.ctx, key, args.from, args.to, args.limit, nil)
		if err != nil {
			return err
		}
		if args.step > 0 {
			pts = Downsample(pts, args.step, args.agg)
		}
		b := append([]byte(`{"key":`), appendString(nil, key)...)
		b = append(b, `,"type":"`...)
		b = append(b, se.Kind.String()...)
		b = append(b, '"')
		if args.step > 0 {
			b = append(b, `,"step":`...)
			b = strconv.AppendInt(b, args.step, 10)
			b = append(b, `,"agg":"`...)
			b = append(b, args.agg...)
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
		if err := r.body(len(b)); err != nil {
			return err
		}
		writeJSON(ctx, append(b, "}\n"...))
		return nil
	})
}

func (s *Server) stats(ctx *fasthttp.RequestCtx) {
	b := []byte(`{"index":`)
	b = strconv.AppendUint(b, s.store.Index(), 10)
	b = append(b, `,"subscribers":`...)
	b = strconv.AppendInt(b, int64(s.Subscribers()), 10)
	rs := s.ReadStats()
	b = append(b, `,"reads":{"total":`...)
	b = strconv.AppendInt(b, rs.Total, 10)
	b = append(b, `,"too_large":`...)
	b = strconv.AppendInt(b, rs.TooLarge, 10)
	b = append(b, `,"timeouts":`...)
	b = strconv.AppendInt(b, rs.Timeouts, 10)
	b = append(b, `,"client_gone":`...)
	b = strconv.AppendInt(b, rs.ClientGone, 10)
	b = append(b, `,"busy":`...)
	b = strconv.AppendInt(b, rs.Busy, 10)
	b = append(b, `,"running":`...)
	b = strconv.AppendInt(b, int64(rs.Running), 10)
	b = append(b, '}')
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
	// ?ticks=0 leaves out the ends of idle counting windows, which change
	// nothing: a follower (-upstream) wants changes only.
	ticks := true
	switch v := string(ctx.QueryArgs().Peek("ticks")); v {
	case "", "1":
	case "0":
		ticks = false
	default:
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("ticks=%q: want 0 or 1", v))
		return
	}
	lastID, hasLast := uint64(0), false
	if v := ctx.Request.Header.Peek("Last-Event-ID"); len(v) > 0 {
		id, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("Last-Event-ID %q is not an event id", v))
			return
		}
		lastID, hasLast = id, true
	}
	// A client that says in which epoch it got its id (a follower) is
	// resumed only when the store still vouches for that id.
	trusted := true
	if v := ctx.Request.Header.Peek("X-Sonde-Epoch"); hasLast && len(v) > 0 {
		epoch, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("X-Sonde-Epoch %q is not an epoch", v))
			return
		}
		through, ok := s.store.TrustedThrough(epoch)
		trusted = ok && lastID <= through
	}
	s.hijackStream(ctx, "sse", func(w *bufio.Writer, g *boundary.Session) error {
		s.hub.join()
		defer s.hub.leave()
		boundary.Inject("sse", []byte(pattern))
		return s.stream(w, g, pattern, match, ticks, lastID, hasLast, trusted)
	})
}

// hijackStream answers with an event stream that run writes, after the
// head, until it returns. The stream takes the connection over (hijack):
// frames go straight to the socket, with no copy through fasthttp's
// stream pipe and no chunked encoding; the response ends when the
// connection closes. run must not touch ctx. Streams of every kind count
// against MaxConns together. run checks its session at each step: a reload
// of the auth file that takes the stream's token ends it, with a comment
// saying why.
func (s *Server) hijackStream(ctx *fasthttp.RequestCtx, name string, run func(w *bufio.Writer, g *boundary.Session) error) {
	if n := s.Subscribers(); n >= s.opts.MaxConns {
		writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("too many event streams (limit %d)", s.opts.MaxConns))
		return
	}
	g := streamSession(ctx, s.opts.Access, "http")
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(conn net.Conn) {
		// A panic ends this stream only. The handler has returned: there is
		// no response left to replace, and fasthttp closes the connection.
		defer boundary.Recover(name, s.opts.Logger, nil)
		dc := &deadlineConn{Conn: conn, timeout: s.opts.StreamWriteTimeout}
		// Registered under streamsMu: either Shutdown's wait covers this
		// stream, or this sees closing and ends at once.
		s.streamsMu.Lock()
		if s.closing {
			s.streamsMu.Unlock()
			return
		}
		s.streams[dc] = struct{}{}
		s.streamsWG.Add(1)
		s.streamsMu.Unlock()
		defer s.streamsWG.Done()
		defer func() {
			s.streamsMu.Lock()
			delete(s.streams, dc)
			s.streamsMu.Unlock()
		}()
		// The writer's buffer is all a subscriber holds: frames are written
		// from shared blocks or as they are read.
		w := bufio.NewWriterSize(dc, streamBuffer)
		if _, err := w.WriteString(s.sseHead); err != nil {
			return
		}
		err := run(w, g)
		if errors.Is(err, errRevoked) {
			// An SSE comment: every client skips it, a person reading
			// the stream with curl sees why it ended. The CRLF before it
			// ends a dump cut midway; no blank line follows, so that
			// dump is never dispatched (a blank line between events
			// dispatches nothing).
			w.WriteString("\r\n: " + err.Error() + "\r\n")
			w.Flush()
		}
		if err != nil {
			s.opts.Logger.Debug(name+" stream ended", "err", err)
		}
	})
}

// sseHeader opens an event stream; the connection closes at its end.
// Listen adds X-Sonde-Epoch and X-Sonde-Instance to it.
const sseHeader = "HTTP/1.1 200 OK\r\nServer: sonde\r\nContent-Type: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"

const (
	dumpCheck    = 1024     // keys a dump writes between checks of its session
	changeBatch  = 512      // changes a stream behind the hub reads at once
	streamBuffer = 64 << 10 // a stream's write buffer
)

// deadlineConn gives every write to a stream's connection StreamWriteTimeout
// to be taken: a client that stops reading, or a peer that vanished
// without closing, ends its stream. Shutdown expires the deadline for good.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
	mu      sync.Mutex // guards closing against a write extending the deadline after expire
	closing bool
}

var errStreamClosing = errors.New("the server is shutting down")

func (d *deadlineConn) Write(p []byte) (int, error) {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return 0, errStreamClosing
	}
	err := d.SetWriteDeadline(time.Now().Add(d.timeout))
	d.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return d.Conn.Write(p)
}

// expire ends the stream's writes now.
func (d *deadlineConn) expire() {
	d.mu.Lock()
	d.closing = true
	d.SetWriteDeadline(time.Now())
	d.mu.Unlock()
}

// stream writes a subscriber's events: a dump (unless it resumes), then
// every entry of the change feed. Its place is the newest stored change
// it has (id, the SSE id) and its position in the feed (pos), when the
// feed still holds it; a subscriber the feed has left behind reads stored
// changes by id from the WAL until it catches up.
func (s *Server) stream(w *bufio.Writer, gr *boundary.Session, pattern string, g *Glob, ticks bool, lastID uint64, resume, trusted bool) error {
	match := g.Func()
	var (
		id     uint64 // the newest stored change the client has
		pos    uint64 // its place in the feed, when onFeed
		onFeed bool
	)
	dump := func(reset bool) error {
		idx := s.store.Index()
		if err := s.writeDump(w, gr, idx, g, reset); err != nil {
			return err
		}
		id = idx
		pos, onFeed = s.store.FeedPos(idx)
		return nil
	}
	if !resume || !trusted || lastID > s.store.Index() {
		// A fresh subscriber gets the dump as its first message (mesures).
		// A client resuming with an id from the future (another server, a
		// wiped store), or one its epoch does not vouch for, must replace
		// what it holds: a reset.
		if err := dump(resume); err != nil {
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
		id = lastID
		pos, onFeed = s.store.FeedPos(id)
	}
	hb := time.NewTicker(s.opts.Heartbeat)
	defer hb.Stop()
	var (
		changes []sample.Change
		blocks  []*block
		grown   <-chan struct{}
		frame   []byte
	)
	for {
		if gr.Revoked() {
			return errRevoked
		}
		wait := grown // the hub covers the stream: wait for its next block
		if onFeed {
			var ok bool
			blocks, grown, ok = s.hub.since(pos, blocks[:0])
			wait = grown
			if ok && len(blocks) > 0 {
				// The common case: frames the hub encoded once for everyone.
				// The session is checked before each block: a stream far
				// behind may have up to the hub's whole memory to write.
				for i, b := range blocks {
					if i > 0 {
						if gr.Revoked() {
							return errRevoked // after whole frames
						}
					}
					if err := b.write(w, pos, pattern, match, ticks); err != nil {
						return err
					}
					pos, id = b.last(), b.lastID
				}
				clear(blocks)
				if err := w.Flush(); err != nil {
					return err
				}
				continue
			}
			if !ok {
				// Behind the hub's oldest block: read the store's feed.
				var held bool
				changes, held = s.store.Feed(pos, changes[:0], changeBatch)
				wait = s.store.NotifyFeed(pos) // not covered by the hub yet
				if held && len(changes) > 0 {
					var err error
					if frame, err = writeChanges(w, frame, changes, match, ticks); err != nil {
						return err
					}
					last := changes[len(changes)-1]
					pos, id = last.Pos, last.ID
					continue
				}
				onFeed = held
			}
		}
		if !onFeed {
			// Left behind by the feed: stored changes by id, from the WAL.
			var err error
			changes, err = s.store.Changes(id, changes[:0], changeBatch)
			if errors.Is(err, sample.ErrGone) {
				// The WAL no longer holds them either: the client must
				// replace its state, deletions included.
				if err := dump(true); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
			if len(changes) > 0 {
				if frame, err = writeChanges(w, frame, changes, match, ticks); err != nil {
					return err
				}
				id = changes[len(changes)-1].ID
			}
			if pos, onFeed = s.store.FeedPos(id); onFeed || len(changes) > 0 {
				continue
			}
			wait = s.store.NotifyFeed(pos)
		}
		select {
		case <-wait:
		case <-gr.Reloaded(): // checked at the top
		case <-hb.C:
			if err := ping(w); err != nil {
				return err
			}
		case <-s.done:
			return nil
		}
	}
}

// ping writes an SSE comment and flushes it: a heartbeat that tells a
// client (and its proxies) the stream is alive.
func ping(w *bufio.Writer) error {
	if _, err := w.WriteString(": ping\r\n\r\n"); err != nil {
		return err
	}
	return w.Flush()
}

// writeChanges writes the frames of cs whose key match accepts (ticks
// too unless told not to), and flushes. frame is scratch space, returned
// for reuse.
func writeChanges(w *bufio.Writer, frame []byte, cs []sample.Change, match func(string) bool, ticks bool) ([]byte, error) {
	var body []byte
	for _, c := range cs {
		if match != nil && !match(c.Key) || c.Tick && !ticks {
			continue
		}
		body = appendChange(body[:0], c)
		frame = appendFrame(frame[:0], c.ID, body)
		if _, err := w.Write(frame); err != nil {
			return frame, err
		}
	}
	return frame, w.Flush()
}

// writeDump writes the dump frame of every series match accepts, labelled
// with the index idx noted before it was read: {"key":view,...}. It is
// written as it is read from the live state, in key order, so
// a dump costs a subscriber no memory whatever the number of keys. A
// reset dump is an event of type "reset": it replaces the client's state.
// The session is checked before it and every dumpCheck keys: a dump to a
// slow reader may take long, and a revoked token ends it midway.
func (s *Server) writeDump(w *bufio.Writer, gr *boundary.Session, idx uint64, g *Glob, reset bool) error {
	if gr.Revoked() {
		return errRevoked
	}
	b := append(make([]byte, 0, 512), "id: "...)
	b = strconv.AppendUint(b, idx, 10)
	if reset {
		b = append(b, "\r\nevent: reset"...)
	}
	b = append(b, "\r\ndata: {"...)
	if _, err := w.Write(b); err != nil {
		return err
	}
	first := true
	var err error
	n := 0
	s.store.Each(g.Prefix(), g.Func(), func(se sample.Series) bool {
		if n++; n%dumpCheck == 0 {
			if gr.Revoked() {
				err = errRevoked
				return false
			}
		}
		b = b[:0]
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, se.Key)
		b = append(b, ':')
		b = appendFloat(b, se.View)
		_, err = w.Write(b)
		return err == nil
	})
	if err != nil {
		return err
	}
	if _, err := w.WriteString("}\r\n\r\n"); err != nil {
		return err
	}
	return w.Flush()
}

// appendFrame writes one SSE event in mesures' framing (CRLF line ends).
func appendFrame(b []byte, id uint64, data []byte) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, "\r\ndata: "...)
	b = append(b, data...)
	return append(b, "\r\n\r\n"...)
}
