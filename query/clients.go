package query

import (
	"bufio"
	"context"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// ClientStore is what the client routes (the logatron listener's
// clients) need of the store (engine.DB is one).
type ClientStore interface {
	// Clients lists the clients, by name; Client returns one with its
	// state and its log, newest first.
	Clients() []sample.ClientInfo
	Client(name string) (sample.Client, bool)
	// ForgetClient deletes a disconnected client (sample.ErrNotFound,
	// sample.ErrClientConnected).
	ForgetClient(ctx context.Context, name string) error
	// ClientEventsAfter appends what the clients hold with ids after id,
	// in id order, up to about maxBytes.
	ClientEventsAfter(id uint64, dst []sample.ClientEvent, maxBytes int) []sample.ClientEvent
	// NotifyClients returns a channel closed once a client record is
	// applied.
	NotifyClients() <-chan struct{}
}

// clientBatch bounds the bytes one read of the client stream takes.
const clientBatch = 64 << 10

// clientRoutes serves /api/v1/clients (the list), /api/v1/clients/{name}
// (GET one, DELETE to forget it) and /api/v1/clients.stream (SSE). It
// reports false for other paths.
func (s *Server) clientRoutes(ctx *fasthttp.RequestCtx, path string) bool {
	rest, one := strings.CutPrefix(path, "/api/v1/clients/")
	if path != "/api/v1/clients" && path != "/api/v1/clients.stream" && !one {
		return false
	}
	cs := s.opts.Clients
	if cs == nil {
		writeError(ctx, fasthttp.StatusNotFound, "this server keeps no clients")
		return true
	}
	get := ctx.IsGet() || ctx.IsHead()
	switch {
	case path == "/api/v1/clients" && get:
		b := append(make([]byte, 0, 256), `{"clients":[`...)
		for i, c := range cs.Clients() {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendClientInfo(b, &c)
			b = append(b, '}')
		}
		writeJSON(ctx, append(b, "]}\n"...))
	case path == "/api/v1/clients.stream" && get:
		s.clientStream(ctx)
	case one && (get || ctx.IsDelete()):
		name, err := url.PathUnescape(rest)
		if err != nil || name == "" || len(name) > sample.MaxService {
			writeError(ctx, fasthttp.StatusBadRequest, "bad client name in path")
			return true
		}
		if ctx.IsDelete() {
			s.forgetClient(ctx, name)
			return true
		}
		c, ok := cs.Client(name)
		if !ok {
			writeError(ctx, fasthttp.StatusNotFound, "no client "+strconv.Quote(name))
			return true
		}
		writeJSON(ctx, append(appendClient(nil, &c), '\n'))
	case one:
		ctx.Response.Header.Set("Allow", "GET, DELETE")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "GET reads a client, DELETE forgets it")
	default:
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "only GET is served here")
	}
	return true
}

func (s *Server) forgetClient(ctx *fasthttp.RequestCtx, name string) {
	switch err := s.opts.Clients.ForgetClient(ctx, name); {
	case errors.Is(err, sample.ErrNotFound):
		writeError(ctx, fasthttp.StatusNotFound, "no client "+strconv.Quote(name))
	case errors.Is(err, sample.ErrClientConnected):
		writeError(ctx, fasthttp.StatusConflict, "client "+strconv.Quote(name)+" is connected")
	case err != nil:
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
	default:
		b := append([]byte(`{"forgotten":`), appendString(nil, name)...)
		writeJSON(ctx, append(b, "}\n"...))
	}
}

// appendClientInfo writes c as a JSON object, without its closing brace.
func appendClientInfo(b []byte, c *sample.ClientInfo) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, c.Name)
	b = append(b, `,"connected":`...)
	b = strconv.AppendBool(b, c.Connected)
	for _, f := range []struct {
		name string
		v    int64
	}{{"connectedAt", c.ConnectedAt}, {"disconnectedAt", c.DisconnectedAt}, {"lastLine", c.LastLine}} {
		b = append(b, `,"`...)
		b = append(b, f.name...)
		b = append(b, `":`...)
		if f.v == 0 {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendInt(b, f.v, 10)
		}
	}
	b = append(b, `,"lines":`...)
	b = strconv.AppendUint(b, c.Lines, 10)
	b = append(b, `,"sets":`...)
	return strconv.AppendUint(b, c.Sets, 10)
}

// appendClient writes c with its state and its log ([[ms, message], …],
// newest first, as logatron holds it).
func appendClient(b []byte, c *sample.Client) []byte {
	b = appendClientInfo(b, &c.ClientInfo)
	b = append(b, `,"state":{`...)
	keys := make([]string, 0, len(c.State))
	for k := range c.State {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, c.State[k])
	}
	b = append(b, `},"log":[`...)
	for i, l := range c.Log {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, l.Time, 10)
		b = append(b, ',')
		b = appendString(b, l.Text)
		b = append(b, ']')
	}
	return append(b, "]}"...)
}

// appendClientEvent writes one entry of the client stream.
func appendClientEvent(b []byte, ev *sample.ClientEvent) []byte {
	b = append(b, `{"client":`...)
	b = appendString(b, ev.Client)
	b = append(b, `,"kind":"`...)
	b = append(b, ev.Kind...)
	b = append(b, `","time":`...)
	b = strconv.AppendInt(b, ev.Time, 10)
	if ev.Kind == sample.ClientSetKey {
		b = append(b, `,"key":`...)
		b = appendString(b, ev.Key)
	}
	if ev.Kind == sample.ClientSetKey || ev.Kind == sample.ClientLogged {
		b = append(b, `,"text":`...)
		b = appendString(b, ev.Text)
	}
	return append(b, '}')
}

// clientStream serves GET /api/v1/clients.stream: each log line, state
// setting, connect and disconnect as it is written (?client=NAME, which
// may repeat, keeps those clients'). A client that sends Last-Event-ID
// (or after=) gets first what the clients still hold after that id.
func (s *Server) clientStream(ctx *fasthttp.RequestCtx) {
	var names []string
	for _, v := range ctx.QueryArgs().PeekMulti("client") {
		if len(names) >= 100 {
			writeError(ctx, fasthttp.StatusBadRequest, "at most 100 client= names")
			return
		}
		names = append(names, string(v))
	}
	after, reset, ok := s.resumePoint(ctx)
	if !ok {
		return
	}
	cs := s.opts.Clients
	s.hijackStream(ctx, "client stream", func(w *bufio.Writer, g *boundary.Session) error {
		if err := streamStart(w, after, reset); err != nil {
			return err
		}
		var (
			buf         []sample.ClientEvent
			frame, body []byte
		)
		return s.followStream(w, g, cs.NotifyClients, func() (bool, error) {
			buf = cs.ClientEventsAfter(after, buf[:0], clientBatch)
			for i := range buf {
				ev := &buf[i]
				after = ev.ID
				if len(names) > 0 && !slices.Contains(names, ev.Client) {
					continue
				}
				body = appendClientEvent(body[:0], ev)
				frame = appendFrame(frame[:0], ev.ID, body)
				if _, err := w.Write(frame); err != nil {
					return false, err
				}
			}
			if len(buf) == 0 {
				return false, nil
			}
			return true, w.Flush() // until a read finds nothing new
		})
	})
}
