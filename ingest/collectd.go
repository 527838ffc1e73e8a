package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/collectd"
)

// CollectdOptions configure the collectd write_http receiver.
type CollectdOptions struct {
	// Access, when set, holds the sources taken (-allow; a refused one is
	// closed at once, a datagram dropped, and counted), TLS and the tokens
	// asked for (docs/auth.md).
	Access *boundary.Access
	// Addr is the listen address of its own HTTP server; default
	// "127.0.0.1:8125" (mesures' port; statsd uses UDP 8125).
	Addr string
	// MaxBodySize caps a request body; default 1 MiB.
	MaxBodySize int
	// MaxConns caps open connections; default 1024.
	MaxConns int
	// HeaderTimeout is how long a client has to send a request head (the
	// first from accept, a later one from its first byte); default 5 s.
	HeaderTimeout time.Duration
	// Types names the data sources of PUTVAL lines; default
	// collectd.Builtin().
	Types collectd.TypesDB
	// Logger receives messages; nil discards them.
	Logger *slog.Logger
}

func (o CollectdOptions) withDefaults() CollectdOptions {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8125"
	}
	if o.MaxBodySize <= 0 {
		o.MaxBodySize = 1 << 20
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = 5 * time.Second
	}
	if o.Types == nil {
		o.Types = collectd.Builtin()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// CollectdStats counts what the collectd receiver has seen, over both of
// its routes.
type CollectdStats struct {
	Requests    int64 `json:"requests"`
	Values      int64 `json:"values"`       // stored, durable
	BadRequests int64 `json:"bad_requests"` // malformed bodies: 400, nothing stored
	BadKeys     int64 `json:"bad_keys"`     // of those, bodies refused for a key (not UTF-8, a missing or too long part)
	Failed      int64 `json:"failed"`       // values the store refused: 422
	// Admission counts what the receiver's own listener did with
	// connections before their first request (absent without one).
	Admission *boundary.GateStats `json:"admission,omitempty"`
}

// Collectd receives collectd's write_http posts, JSON or PUTVAL commands,
// and answers only once every value is durable. Handle serves any route;
// Serve runs its own HTTP server on Addr.
type Collectd struct {
	opts CollectdOptions
	app  Appender
	ln   *boundary.Gate // admits a connection once its first request head is in
	srv  *fasthttp.Server

	requests, values, badRequests, badKeys, failed atomic.Int64
}

// NewCollectd returns a receiver whose Handle may be mounted on any
// fasthttp server; ListenCollectd also gives it its own.
func NewCollectd(opts CollectdOptions, app Appender) *Collectd {
	return &Collectd{opts: opts.withDefaults(), app: app}
}

// ListenCollectd returns a receiver with its own HTTP listener bound.
func ListenCollectd(opts CollectdOptions, app Appender) (*Collectd, error) {
	c := NewCollectd(opts, app)
	if err := c.Listen(); err != nil {
		return nil, err
	}
	return c, nil
}

// Listen binds the receiver's own HTTP listener on Addr; Serve serves it.
func (c *Collectd) Listen() error {
	ln, err := boundary.Listen(c.opts.Access, "collectd", c.opts.Addr)
	if err != nil {
		return fmt.Errorf("listen for collectd on %s: %w", c.opts.Addr, err)
	}
	c.ln = boundary.NewGate(ln, boundary.GateOptions{MaxPending: boundary.PendingCap(c.opts.MaxConns),
		HeaderTimeout: c.opts.HeaderTimeout, MaxHead: collectdReadBuffer, Logger: c.opts.Logger})
	c.srv = &fasthttp.Server{
		Handler:        func(ctx *fasthttp.RequestCtx) { c.handle(ctx, true) },
		Name:           "sonde",
		ReadBufferSize: collectdReadBuffer,
		// The head of a later request on a kept-alive connection gets
		// HeaderTimeout from its first byte, its body 30 s more (as on the
		// query server, query/boundary.go).
		ReadTimeout: c.opts.HeaderTimeout,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: 30 * time.Second}
		},
		WriteTimeout:       30 * time.Second,
		IdleTimeout:        2 * time.Minute,
		MaxRequestBodySize: c.opts.MaxBodySize,
		Concurrency:        c.opts.MaxConns,
		CloseOnShutdown:    true,
		// A bad request head is logged without its bytes: they may hold
		// an Authorization header (-auth-file).
		SecureErrorLogMessage: true,
		Logger:                boundary.Printer{Limiter: boundary.NewLogLimiter(time.Minute), Logger: c.opts.Logger},
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			c.badRequests.Add(1)
			var small *fasthttp.ErrSmallBuffer
			var ne net.Error
			switch {
			case errors.Is(err, fasthttp.ErrBodyTooLarge):
				replyJSON(ctx, fasthttp.StatusRequestEntityTooLarge, map[string]any{"error": fmt.Sprintf("body is larger than %d bytes", c.opts.MaxBodySize)})
			case errors.As(err, &small):
				replyJSON(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, map[string]any{"error": fmt.Sprintf("request head is larger than %d bytes", collectdReadBuffer)})
			case errors.As(err, &ne) && ne.Timeout():
				replyJSON(ctx, fasthttp.StatusRequestTimeout, map[string]any{"error": "the request did not arrive in time"})
			default:
				replyJSON(ctx, fasthttp.StatusBadRequest, map[string]any{"error": "read the request: " + err.Error()})
			}
		},
	}
	return nil
}

// collectdReadBuffer is fasthttp's read buffer per connection: the longest
// request head the receiver takes.
const collectdReadBuffer = 4096

// Addr returns the bound address of the receiver's own listener.
func (c *Collectd) Addr() net.Addr { return c.ln.Addr() }

// Serve serves the receiver's own listener until Close.
func (c *Collectd) Serve() error {
	if err := c.srv.Serve(c.ln); err != nil {
		return fmt.Errorf("serve collectd: %w", err)
	}
	return nil
}

// Close stops the receiver's own listener and waits for the requests in
// flight, whose values are then durable and answered.
func (c *Collectd) Close() error {
	if err := c.srv.Shutdown(); err != nil {
		return fmt.Errorf("close collectd listener: %w", err)
	}
	return nil
}

// Stats returns the receiver's counters.
func (c *Collectd) Stats() CollectdStats {
	st := CollectdStats{Requests: c.requests.Load(), Values: c.values.Load(),
		BadRequests: c.badRequests.Load(), BadKeys: c.badKeys.Load(), Failed: c.failed.Load()}
	if c.ln != nil {
		a := c.ln.Stats()
		st.Admission = &a
	}
	return st
}

// Handle takes one write_http POST. The format is told by the first byte
// of the body: '[' is JSON, anything else PUTVAL lines.
func (c *Collectd) Handle(ctx *fasthttp.RequestCtx) { c.handle(ctx, false) }

// handle serves a request; own: on the receiver's own listener, which
// checks the token itself (the query server has checked it at /collectd).
func (c *Collectd) handle(ctx *fasthttp.RequestCtx, own bool) {
	defer boundary.Recover("collectd", c.opts.Logger, func() {
		ctx.Response.Reset() // fasthttp has written nothing yet
		replyJSON(ctx, fasthttp.StatusInternalServerError, map[string]any{"error": "internal error"})
	})
	boundary.Inject("collectd", ctx.PostBody())
	c.requests.Add(1)
	if own && !c.authorize(ctx) {
		return
	}
	if !ctx.IsPost() && !ctx.IsPut() {
		ctx.Response.Header.Set("Allow", "POST, PUT")
		replyJSON(ctx, fasthttp.StatusMethodNotAllowed, map[string]any{"error": "collectd posts its values here: use POST"})
		return
	}
	body := ctx.PostBody()
	if len(body) > c.opts.MaxBodySize {
		c.badRequests.Add(1)
		replyJSON(ctx, fasthttp.StatusRequestEntityTooLarge, map[string]any{"error": fmt.Sprintf("body is larger than %d bytes", c.opts.MaxBodySize)})
		return
	}
	var ops []sample.Op
	var err error
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		ops, err = collectd.ParseJSON(body, nil)
	} else {
		ops, err = collectd.ParseCommand(body, c.opts.Types, nil)
	}
	if err != nil {
		c.badRequests.Add(1)
		if errors.Is(err, collectd.ErrKey) {
			c.badKeys.Add(1)
		}
		c.opts.Logger.Debug("bad collectd post", "remote", ctx.RemoteAddr().String(), "err", err)
		replyJSON(ctx, fasthttp.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	if len(ops) == 0 {
		replyJSON(ctx, fasthttp.StatusOK, map[string]any{"stored": 0})
		return
	}
	errs, err := appendBatch(ctx, c.app, ops, nil, true) // the HTTP reply waits for them
	if err != nil {
		replyJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{"error": err.Error()})
		return
	}
	stored, refused := 0, 0
	var first error
	for _, e := range errs {
		if e != nil {
			refused++
			if first == nil {
				first = e
			}
		} else {
			stored++
		}
	}
	c.values.Add(int64(stored))
	if refused > 0 {
		c.failed.Add(int64(refused))
		replyJSON(ctx, fasthttp.StatusUnprocessableEntity, map[string]any{"error": first.Error(), "stored": stored, "refused": refused})
		return
	}
	replyJSON(ctx, fasthttp.StatusOK, map[string]any{"stored": stored})
}

func replyJSON(ctx *fasthttp.RequestCtx, code int, v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":"encode reply"}`)
		code = fasthttp.StatusInternalServerError
	}
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

// authorize checks the request's token when the collectd listener asks
// for one (write_http's User and Password send it as basic
// authentication, its Header option as a bearer token); false: refused
// and answered.
func (c *Collectd) authorize(ctx *fasthttp.RequestCtx) bool {
	acc := c.opts.Access
	if !acc.AuthFor("collectd") {
		return true
	}
	ip, _ := netip.AddrFromSlice(ctx.RemoteIP())
	v := acc.Authorize("collectd", ip.Unmap(), ctx.IsGet() || ctx.IsHead(), ctx.Request.Header.Peek("Authorization"), nil, nil)
	if v.OK {
		return true
	}
	if name, value := v.Header(); name != "" {
		ctx.Response.Header.Set(name, value)
	}
	ctx.SetConnectionClose() // a refused client holds no worker until the idle timeout
	replyJSON(ctx, v.Status, map[string]any{"error": v.Msg})
	return false
}
