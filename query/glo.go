package query

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/glo"
)

// glo (issue 14, README "glo"): Sonde's series as a glo status document,
// at GET /glo and at the root of the -glo listener, where glo's poller
// page looks (ports 22200-22215). A GAUGE is <key>:current, a COUNTER
// <key>:count (its total, which glo's page turns into a rate); a statsd
// timer's last sample and interval maximum are also
// stats.timers.<name>:last-duration-us and :max-us, in microseconds.
// ?callback=NAME answers JSONP, as the page asks (application/javascript);
// ?version=2 answers glo's version 2 (µs timestamp, /-separated paths,
// number values); ?match=GLOB picks keys.

// GloKey sets the desc and lvl of the keys a pattern matches (-glo-key).
type GloKey struct {
	Pattern *Glob
	Level   int
	Desc    string
}

// ParseGloKey reads PATTERN[,lvl=N][,desc=TEXT] (desc last: it may hold
// commas).
func ParseGloKey(spec string) (GloKey, error) {
	pattern, rest, _ := strings.Cut(spec, ",")
	g, err := CompileGlob(pattern)
	if err != nil {
		return GloKey{}, fmt.Errorf("-glo-key %q: %w", spec, err)
	}
	k := GloKey{Pattern: g}
	for rest != "" {
		var field string
		if strings.HasPrefix(rest, "desc=") {
			field, rest = rest, ""
		} else {
			field, rest, _ = strings.Cut(rest, ",")
		}
		name, v, _ := strings.Cut(field, "=")
		switch name {
		case "lvl":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1000 {
				return GloKey{}, fmt.Errorf("-glo-key %q: lvl=%q is not a level from 0 to 1000", spec, v)
			}
			k.Level = n
		case "desc":
			if len(v) > 1024 {
				return GloKey{}, fmt.Errorf("-glo-key %q: desc is longer than 1024 bytes", spec)
			}
			k.Desc = v
		default:
			return GloKey{}, fmt.Errorf("-glo-key %q: unknown field %q (lvl=, desc=)", spec, name)
		}
	}
	return k, nil
}

// DefaultGloMaxKeys bounds the keys of one glo document.
const DefaultGloMaxKeys = 10_000

// GloOptions shape the glo documents.
type GloOptions struct {
	// Keys set desc and lvl by pattern: the first that matches a key
	// wins; without one a key has lvl 1 and a desc naming its kind.
	Keys []GloKey
	// MaxKeys bounds a document's keys (series, and a timer's extra
	// tags); past it the document ends with "truncated": true. Default
	// DefaultGloMaxKeys.
	MaxKeys int
}

// gloKey is a series' key as glo shows it with tag: version 2 paths are
// /-separated. The tag (one of glo's, plain ASCII) goes inside the key's
// quotes as it is.
func gloKey(b []byte, key, tag string, version int) []byte {
	if version == 2 {
		key = "/" + strings.ReplaceAll(key, ".", "/")
	}
	b = appendString(b, key)
	b = append(b[:len(b)-1], ':')
	b = append(b, tag...)
	return append(b, '"')
}

// timerStat splits stats.timers.<name>.<stat>; ok for a statsd timer's
// series.
func timerStat(key string) (name, stat string, ok bool) {
	if !strings.HasPrefix(key, "stats.timers.") {
		return "", "", false
	}
	i := strings.LastIndexByte(key, '.')
	return key[:i], key[i+1:], i > len("stats.timers")
}

// appendGlo writes the document of the series match picks.
func appendGlo(b []byte, store Store, opts *GloOptions, match *Glob, version int, now time.Time) []byte {
	max := opts.MaxKeys
	if max <= 0 {
		max = DefaultGloMaxKeys
	}
	ts := now.UnixMilli()
	if version == 2 {
		ts = now.UnixMicro()
	}
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, int64(version), 10)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"data":[`...)
	n, truncated := 0, false
	item := func(key, tag string, v float64, desc string, lvl int) bool {
		if n == max {
			truncated = true
			return false
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"key":`...)
		b = gloKey(b, key, tag, version)
		b = append(b, `,"value":`...)
		if version == 2 {
			b = appendFloat(b, v)
		} else {
			b = append(b, '"')
			b = appendFloat(b, v)
			b = append(b, '"')
		}
		b = append(b, `,"desc":`...)
		b = appendString(b, desc)
		b = append(b, `,"lvl":`...)
		b = strconv.AppendInt(b, int64(lvl), 10)
		b = append(b, '}')
		return true
	}
	store.Each(match.Prefix(), match.Func(), func(se sample.Series) bool {
		desc, lvl := "gauge", 1
		tag := glo.TagCurrent
		if se.Kind == sample.Counter {
			desc, tag = "counter total", glo.TagCount
		}
		for _, k := range opts.Keys {
			if k.Pattern.Match(se.Key) {
				desc, lvl = k.Desc, k.Level
				break
			}
		}
		if !item(se.Key, tag, se.Value, desc, lvl) {
			return false
		}
		if name, stat, ok := timerStat(se.Key); ok && se.Kind == sample.Gauge {
			switch stat {
			case "samples":
				return item(name, glo.TagLastDurationUs, se.Value*1000, desc, lvl)
			case "upper":
				return item(name, glo.TagMaxUs, se.Value*1000, desc, lvl)
			}
		}
		return true
	})
	b = append(b, ']')
	if truncated {
		b = append(b, `,"truncated":true`...)
	}
	return append(b, "}"...)
}

// serveGlo answers a glo request: JSON, or JSONP with ?callback=. It is
// a bounded read (a slot of -query-concurrency, -query-timeout,
// -query-max-bytes), like /data.
func (s *Server) serveGlo(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	version := 1
	if v := args.Peek("version"); len(v) > 0 {
		if string(v) != "1" && string(v) != "2" {
			writeError(ctx, fasthttp.StatusBadRequest, "version= is 1 or 2")
			return
		}
		version = int(v[0] - '0')
	}
	cb := string(args.Peek("callback"))
	if args.Has("callback") && !glo.CallbackName(cb) {
		writeError(ctx, fasthttp.StatusBadRequest, "callback= is a JavaScript name of at most 128 bytes: letters, digits, _, $ and .")
		return
	}
	match, ok := matcher(ctx)
	if !ok {
		return
	}
	s.bounded(ctx, func(r *read) error {
		b := make([]byte, 0, 4096)
		if cb != "" {
			b = append(b, cb...)
			b = append(b, '(')
		}
		b = appendGlo(b, s.store, &s.opts.Glo, match, version, time.Now())
		if err := r.body(len(b)); err != nil {
			return err
		}
		ctx.Response.Header.Set("Cache-Control", "no-store")
		if cb != "" {
			ctx.SetContentType("application/javascript; charset=utf-8")
			ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
			ctx.SetBody(append(b, ");\n"...))
			return nil
		}
		writeJSON(ctx, append(b, '\n'))
		return nil
	})
}

// GloListenOptions configure a GloServer.
type GloListenOptions struct {
	// Access, when set, holds the sources taken (-allow; a refused one is
	// closed at once and counted), TLS and the tokens asked for.
	Access        *boundary.Access
	Addr          string
	MaxConns      int
	HeaderTimeout time.Duration
	Logger        *slog.Logger
}

// GloServer serves the glo document at the root of its own address, for
// glo's poller page; its reads share the HTTP server's bounds.
type GloServer struct {
	opts GloListenOptions
	http *Server
	ln   *boundary.Gate
	srv  *fasthttp.Server
}

// ListenGlo binds the -glo listener, which answers as s answers /glo.
func (s *Server) ListenGlo(opts GloListenOptions) (*GloServer, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := boundary.Listen(opts.Access, "glo", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for glo on %s: %w", opts.Addr, err)
	}
	g := &GloServer{opts: opts, http: s}
	g.ln = boundary.NewGate(ln, boundary.GateOptions{MaxPending: boundary.PendingCap(opts.MaxConns), HeaderTimeout: opts.HeaderTimeout,
		MaxHead: readBufferSize, Logger: opts.Logger})
	g.srv = newHTTPServer(g.serve, writeError, opts.HeaderTimeout, 4096, opts.MaxConns, opts.Logger)
	return g, nil
}

func (g *GloServer) serve(ctx *fasthttp.RequestCtx) {
	defer boundary.Recover("glo", g.opts.Logger, func() {
		ctx.Response.Reset()
		writeError(ctx, fasthttp.StatusInternalServerError, "internal error")
	})
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "only GET is served here")
		return
	}
	if !authorize(ctx, g.opts.Access, "glo", true, writeError) {
		return
	}
	g.http.serveGlo(ctx)
}

// Addr returns the bound address.
func (g *GloServer) Addr() net.Addr { return g.ln.Addr() }

// Serve serves until Close.
func (g *GloServer) Serve() error {
	if err := g.srv.Serve(g.ln); err != nil {
		return fmt.Errorf("serve glo: %w", err)
	}
	return nil
}

// Close stops the listener and waits for the requests in flight.
func (g *GloServer) Close() error {
	if err := g.srv.Shutdown(); err != nil {
		return fmt.Errorf("close glo listener: %w", err)
	}
	return nil
}

// Stats returns the admission gate's counters.
func (g *GloServer) Stats() boundary.GateStats { return g.ln.Stats() }
