package query

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/status"
)

// WatchtowerOptions configure the watchtower listener (docs/watchtower.md).
type WatchtowerOptions struct {
	// Access, when set, holds the sources taken (-allow; a refused one is
	// closed at once, a datagram dropped, and counted), TLS and the tokens
	// asked for (docs/auth.md).
	Access *boundary.Access
	// Addr is the listen address (watchtower's port is 5000).
	Addr string
	// Password, when not empty, must come in every request's password
	// header; a request without it is answered {"result":403}.
	Password string
	// Channels are the configured alert channels, by name, with their
	// kind (webhook, email, pushover): a pulse's alertTarget or alertType
	// picks one (ChannelFor).
	Channels map[string]string
	// Checks, when set, lists the HTTP checks (/pings).
	Checks func() []sample.CheckInfo
	// MaxConns, MaxBodySize and HeaderTimeout as for the main server.
	MaxConns      int
	MaxBodySize   int
	HeaderTimeout time.Duration
	// QueryTimeout and MaxQueries bound the event listings as the main
	// server's reads are bounded (defaults 30 s and 4).
	QueryTimeout time.Duration
	MaxQueries   int
	Logger       *slog.Logger
}

// Watchtower serves watchtower's routes at the root of a listener of its
// own: its clients build url:port/heartbeat and take no path prefix.
type Watchtower struct {
	opts  WatchtowerOptions
	store StatusStore
	ln    *boundary.Gate
	srv   *fasthttp.Server
	slots chan struct{} // one per running event listing
}

// ListenWatchtower binds the watchtower listener.
func ListenWatchtower(opts WatchtowerOptions, store StatusStore) (*Watchtower, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = 1 << 20
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 30 * time.Second
	}
	if opts.MaxQueries <= 0 {
		opts.MaxQueries = 4
	}
	ln, err := boundary.Listen(opts.Access, "watchtower", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for watchtower on %s: %w", opts.Addr, err)
	}
	w := &Watchtower{opts: opts, store: store, slots: make(chan struct{}, opts.MaxQueries)}
	w.ln = boundary.NewGate(ln, boundary.GateOptions{MaxPending: boundary.PendingCap(opts.MaxConns), HeaderTimeout: opts.HeaderTimeout,
		MaxHead: readBufferSize, Logger: opts.Logger})
	// A request it cannot read gets watchtower's shape too: HTTP 200, the
	// status in result.
	w.srv = newHTTPServer(w.serve, func(ctx *fasthttp.RequestCtx, code int, msg string) {
		reply(ctx, map[string]any{"result": code, "hint": msg})
	}, opts.HeaderTimeout, opts.MaxBodySize, opts.MaxConns, opts.Logger)
	return w, nil
}

// Addr returns the bound address.
func (w *Watchtower) Addr() net.Addr { return w.ln.Addr() }

// Serve serves until Close.
func (w *Watchtower) Serve() error {
	if err := w.srv.Serve(w.ln); err != nil {
		return fmt.Errorf("serve watchtower: %w", err)
	}
	return nil
}

// Close stops the listener and waits for the requests in flight.
func (w *Watchtower) Close() error {
	if err := w.srv.Shutdown(); err != nil {
		return fmt.Errorf("close watchtower listener: %w", err)
	}
	return nil
}

// Stats returns the admission gate's counters.
func (w *Watchtower) Stats() boundary.GateStats { return w.ln.Stats() }

// ChannelFor maps a watchtower pulse's alert type and target onto a
// configured channel: the one named like the target, else the one named
// like the type, else the only one of the type's kind (webhook, email,
// pushover). "" when none fits.
func ChannelFor(channels map[string]string, alertType, alertTarget string) string {
	if _, ok := channels[alertTarget]; ok && alertTarget != "" {
		return alertTarget
	}
	if _, ok := channels[alertType]; ok && alertType != "" {
		return alertType
	}
	var match []string
	for name, kind := range channels {
		if strings.EqualFold(kind, alertType) {
			match = append(match, name)
		}
	}
	if len(match) == 1 {
		return match[0]
	}
	return ""
}

// reply writes watchtower's answer: always HTTP 200, the outcome in
// "result".
func reply(ctx *fasthttp.RequestCtx, v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"result":500,"hint":"encode reply"}`)
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

func fail(ctx *fasthttp.RequestCtx, hint string) {
	reply(ctx, map[string]any{"result": 500, "hint": hint})
}

func (w *Watchtower) serve(ctx *fasthttp.RequestCtx) {
	defer boundary.Recover("watchtower", w.opts.Logger, func() {
		ctx.Response.Reset()
		fail(ctx, "internal error")
	})
	boundary.Inject("watchtower", ctx.PostBody())
	if acc := w.opts.Access; acc.AuthFor("watchtower") {
		// A watchtower client sends its password in a header of that
		// name: with -auth-file it holds a token.
		hdr := ctx.Request.Header.Peek("Authorization")
		if pw := ctx.Request.Header.Peek("password"); len(boundary.TokenFromHeader(hdr)) == 0 && len(pw) > 0 {
			hdr = append([]byte("Bearer "), pw...)
		}
		if v := acc.Authorize("watchtower", sourceOf(ctx), ctx.IsGet() || ctx.IsHead(), hdr, nil, nil); !v.OK {
			if name, value := v.Header(); name == "Retry-After" {
				ctx.Response.Header.Set(name, value)
			}
			ctx.SetConnectionClose()
			reply(ctx, map[string]any{"result": v.Status, "hint": v.Msg})
			return
		}
	} else if w.opts.Password != "" {
		got := ctx.Request.Header.Peek("password")
		if subtle.ConstantTimeCompare(got, []byte(w.opts.Password)) != 1 {
			reply(ctx, map[string]any{"result": 403})
			return
		}
	}
	path := string(ctx.Path())
	get, post, del := ctx.IsGet() || ctx.IsHead(), ctx.IsPost(), ctx.IsDelete()
	switch {
	case path == "/hello" && get:
		reply(ctx, map[string]any{"result": 200, "world": time.Now().Unix(), "eventsPresets": []string{}, "version": "sonde"})
	case path == "/heartbeats" && get:
		list := []map[string]any{}
		for _, h := range w.store.Heartbeats() {
			list = append(list, w.heartbeat(&h))
		}
		reply(ctx, map[string]any{"result": 200, "heartBeats": list})
	case (strings.HasPrefix(path, "/heartbeat/") || strings.HasPrefix(path, "/get/")) && get:
		_, service, _ := strings.Cut(path[1:], "/")
		if h, ok := w.store.Heartbeat(service); ok {
			reply(ctx, map[string]any{"result": 200, "heartBeat": w.heartbeat(&h)})
			return
		}
		fail(ctx, "service not found")
	case (path == "/heartbeat" || path == "/") && post:
		w.pulse(ctx)
	case (path == "/heartbeat" || path == "/") && del:
		w.cancel(ctx)
	case (path == "/event" || path == "/add-event") && post:
		ev, err := status.ParseWatchtowerEvent(ctx.PostBody())
		if err == nil {
			err = w.store.CheckEvent(&ev, time.Now().UnixMilli())
		}
		if err == nil {
			err = w.store.AppendEvents(ctx, []sample.Event{ev})
		}
		if err != nil {
			fail(ctx, strings.TrimPrefix(err.Error(), "syntax: "))
			return
		}
		reply(ctx, map[string]any{"result": 200})
	case path == "/events" && get:
		w.events(ctx)
	case path == "/pings" && get:
		pings := []map[string]any{}
		if w.opts.Checks != nil {
			for _, c := range w.opts.Checks() {
				pings = append(pings, map[string]any{"service": c.Name, "url": c.URL, "frequency": int64(c.Every.Seconds()),
					"alertType": w.opts.Channels[c.Channel], "alertTarget": c.Channel, "expectedCode": c.Expect,
					"lastPing": c.LastRun / 1000, "lastPingSuccess": c.LastPass / 1000, "alerted": c.Failing && c.Channel != ""})
			}
		}
		reply(ctx, map[string]any{"result": 200, "pings": pings})
	default:
		reply(ctx, map[string]any{"result": 404, "hint": "no such route here (watchtower's routes: docs/watchtower.md)"})
	}
}

// heartbeat is h as watchtower shows one: times in seconds.
func (w *Watchtower) heartbeat(h *sample.Heartbeat) map[string]any {
	return map[string]any{"service": h.Service, "alertType": w.opts.Channels[h.Channel], "alertTarget": h.Channel,
		"nextIn": int64(h.NextIn.Seconds()), "last": h.Last / 1000, "expected": h.Expected / 1000,
		"alerted": h.Alerted, "cancelled": h.State == "cancelled"}
}

func (w *Watchtower) pulse(ctx *fasthttp.RequestCtx) {
	p, err := status.ParseWatchtowerPulse(ctx.PostBody())
	if err != nil {
		fail(ctx, strings.TrimPrefix(err.Error(), "syntax: "))
		return
	}
	ch := ChannelFor(w.opts.Channels, p.AlertType, p.AlertTarget)
	if ch == "" && len(w.opts.Channels) > 0 {
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range w.opts.Channels {
				if !yield(n) {
					return
				}
			}
		})
		fail(ctx, fmt.Sprintf("alert type %q and target %q name no configured channel (configured: %s)", p.AlertType, p.AlertTarget, strings.Join(names, ", ")))
		return
	}
	if err := w.store.Pulse(ctx, p.Service, p.NextIn, ch); err != nil {
		fail(ctx, err.Error())
		return
	}
	if h, ok := w.store.Heartbeat(p.Service); ok {
		reply(ctx, map[string]any{"result": 200, "action": "pulse", "heartBeat": w.heartbeat(&h)})
		return
	}
	reply(ctx, map[string]any{"result": 200, "action": "pulse", "heartBeat": p.Service})
}

func (w *Watchtower) cancel(ctx *fasthttp.RequestCtx) {
	service, err := status.ParseWatchtowerCancel(ctx.PostBody())
	if err != nil {
		fail(ctx, strings.TrimPrefix(err.Error(), "syntax: "))
		return
	}
	err = w.store.CancelHeartbeat(ctx, service)
	if err != nil && !errors.Is(err, sample.ErrNotFound) {
		fail(ctx, err.Error())
		return
	}
	if h, ok := w.store.Heartbeat(service); ok && err == nil {
		reply(ctx, map[string]any{"result": 200, "action": "cancel", "heartBeat": w.heartbeat(&h)})
		return
	}
	// watchtower answers a cancel of an unknown service with its name.
	reply(ctx, map[string]any{"result": 200, "action": "cancel", "heartBeat": service})
}

// events answers GET /events: from and to in seconds (default the last
// 24 hours), service (exact, any case), level (at or above), message
// (contains, any case); oldest first, at most MaxEventLimit.
func (w *Watchtower) events(ctx *fasthttp.RequestCtx) {
	a := ctx.QueryArgs()
	now := time.Now().Unix()
	secs := func(name string, def int64) int64 {
		if n, err := strconv.ParseInt(string(a.Peek(name)), 10, 64); err == nil {
			return n
		}
		return def // watchtower's parseInt falls back to the default
	}
	// Seconds, clamped before they become ms: no product overflows.
	from, to := secs("from", now-24*60*60), secs("to", now)
	from, to = min(max(from, minTime/1000), maxTime/1000), min(max(to, minTime/1000-1), maxTime/1000)
	q := sample.EventQuery{From: from * 1000, To: to*1000 + 999, Limit: MaxEventLimit, MaxScan: MaxEventScan,
		MaxScanBytes: MaxEventScanBytes, MaxBytes: 8 << 20}
	if to < 0 {
		reply(ctx, map[string]any{"result": 200, "events": []any{}}) // before 1970: nothing
		return
	}
	var service, message *regexp.Regexp
	for _, f := range []struct {
		name string
		re   **regexp.Regexp
		expr func(string) string
	}{
		{"service", &service, func(v string) string { return "(?i)^" + regexp.QuoteMeta(v) + "$" }},
		{"message", &message, func(v string) string { return "(?i)" + regexp.QuoteMeta(v) }},
	} {
		v := a.Peek(f.name)
		if len(v) == 0 {
			continue
		}
		if len(v) > maxPattern || !utf8.Valid(v) {
			fail(ctx, fmt.Sprintf("%s: want at most %d bytes of UTF-8", f.name, maxPattern))
			return
		}
		re, err := regexp.Compile(f.expr(string(v)))
		if err != nil {
			fail(ctx, fmt.Sprintf("%s: %v", f.name, err))
			return
		}
		*f.re = re
	}
	level, hasLevel := int64(0), false
	if v := a.Peek("level"); len(v) > 0 {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			fail(ctx, fmt.Sprintf("level %q is not an integer", text(v)))
			return
		}
		level, hasLevel = n, true
	}
	q.Match = func(ev *sample.Event) bool {
		return (!hasLevel || ev.Level >= level) && (service == nil || service.MatchString(ev.Service)) &&
			(message == nil || message.MatchString(ev.Message))
	}
	// Bounded as the main API's reads are: a few at once, each for at
	// most the read timeout.
	rctx, cancel := context.WithTimeout(context.Background(), w.opts.QueryTimeout)
	defer cancel()
	select {
	case w.slots <- struct{}{}:
		defer func() { <-w.slots }()
	case <-rctx.Done():
		fail(ctx, fmt.Sprintf("%d reads run at once and none ended within %s", cap(w.slots), w.opts.QueryTimeout))
		return
	}
	page, err := w.store.Events(rctx, q)
	if err != nil {
		fail(ctx, err.Error())
		return
	}
	list := make([]map[string]any, 0, len(page.Events))
	for i := len(page.Events) - 1; i >= 0; i-- { // watchtower lists oldest first
		ev := &page.Events[i]
		list = append(list, map[string]any{"date": ev.Time / 1000, "level": ev.Level, "message": ev.Message, "service": ev.Service})
	}
	reply(ctx, map[string]any{"result": 200, "events": list})
}
