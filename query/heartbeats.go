package query

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/status"
)

// heartbeatRoutes serves /api/v1/heartbeats (POST a pulse, GET the list),
// /api/v1/heartbeats/{service} (GET one, DELETE to cancel) and
// /api/v1/alerts (GET the alerts waiting for delivery). It reports false
// for other paths.
func (s *Server) heartbeatRoutes(ctx *fasthttp.RequestCtx, path string) bool {
	rest, one := strings.CutPrefix(path, "/api/v1/heartbeats/")
	if path != "/api/v1/heartbeats" && path != "/api/v1/alerts" && path != "/api/v1/checks" && !one {
		return false
	}
	if s.opts.Status == nil {
		writeError(ctx, fasthttp.StatusNotFound, "this server keeps no heartbeats")
		return true
	}
	get := ctx.IsGet() || ctx.IsHead()
	switch {
	case path == "/api/v1/checks" && get:
		b := append(make([]byte, 0, 256), `{"checks":[`...)
		if s.opts.Checks != nil {
			for i, c := range s.opts.Checks() {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendCheck(b, &c)
			}
		}
		writeJSON(ctx, append(b, "]}\n"...))
	case path == "/api/v1/alerts" && get:
		b := append(make([]byte, 0, 256), `{"alerts":[`...)
		for i, a := range s.opts.Status.PendingAlerts(nil) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAlert(b, &a)
		}
		writeJSON(ctx, append(b, "]}\n"...))
	case path == "/api/v1/heartbeats" && ctx.IsPost():
		s.postPulse(ctx)
	case path == "/api/v1/heartbeats" && get:
		b := append(make([]byte, 0, 256), `{"heartbeats":[`...)
		for i, h := range s.opts.Status.Heartbeats() {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendHeartbeat(b, &h)
		}
		writeJSON(ctx, append(b, "]}\n"...))
	case one && (get || ctx.IsDelete()):
		service, err := url.PathUnescape(rest)
		if err == nil {
			err = status.CheckService(service)
		}
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, "bad service in path: "+err.Error())
			return true
		}
		if ctx.IsDelete() {
			s.cancelHeartbeat(ctx, service)
			return true
		}
		if h, ok := s.opts.Status.Heartbeat(service); ok {
			writeJSON(ctx, append(appendHeartbeat(nil, &h), '\n'))
			return true
		}
		writeError(ctx, fasthttp.StatusNotFound, "no heartbeat of "+strconv.Quote(service))
	case path == "/api/v1/heartbeats":
		ctx.Response.Header.Set("Allow", "GET, POST")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "GET lists heartbeats, POST pulses")
	case one:
		ctx.Response.Header.Set("Allow", "GET, DELETE")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "GET reads a heartbeat, DELETE cancels it")
	default:
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "only GET is served here")
	}
	return true
}

// postPulse records a pulse: {service, nextIn (s), alert: channel}.
func (s *Server) postPulse(ctx *fasthttp.RequestCtx) {
	p, err := status.ParsePulse(ctx.PostBody())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if err := s.checkChannel(p.Alert); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if err := s.opts.Status.Pulse(ctx, p.Service, p.NextIn, p.Alert); err != nil {
		writeStatusError(ctx, err)
		return
	}
	if h, ok := s.opts.Status.Heartbeat(p.Service); ok {
		writeJSON(ctx, append(appendHeartbeat(nil, &h), '\n'))
		return
	}
	writeJSON(ctx, []byte("{}\n")) // forgotten meanwhile (a clock step)
}

// CheckChannel says whether name is a configured alert channel ("": none
// asked for).
func (s *Server) checkChannel(name string) error {
	if name == "" || slices.Contains(s.opts.AlertChannels, name) {
		return nil
	}
	if len(s.opts.AlertChannels) == 0 {
		return fmt.Errorf("alert channel %q is not configured: this server has none (-alert)", name)
	}
	return fmt.Errorf("alert channel %q is not configured (configured: %s)", name, strings.Join(s.opts.AlertChannels, ", "))
}

func (s *Server) cancelHeartbeat(ctx *fasthttp.RequestCtx, service string) {
	if err := s.opts.Status.CancelHeartbeat(ctx, service); err != nil {
		if errors.Is(err, sample.ErrNotFound) {
			writeError(ctx, fasthttp.StatusNotFound, "no heartbeat of "+strconv.Quote(service))
			return
		}
		writeStatusError(ctx, err)
		return
	}
	b := append([]byte(`{"cancelled":`), appendString(nil, service)...)
	writeJSON(ctx, append(b, "}\n"...))
}

// writeStatusError answers a refused heartbeat operation: 404 for a
// missing heartbeat, 400 past the heartbeat limit, 503 for the store's
// state (the body was checked before).
func writeStatusError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, sample.ErrNotFound):
		writeError(ctx, fasthttp.StatusNotFound, err.Error())
	case errors.Is(err, sample.ErrTooManyHeartbeats):
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
	default:
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
	}
}

// appendHeartbeat writes h as JSON; nextIn in seconds, times in ms.
func appendHeartbeat(b []byte, h *sample.Heartbeat) []byte {
	b = append(b, `{"service":`...)
	b = appendString(b, h.Service)
	b = append(b, `,"nextIn":`...)
	b = strconv.AppendFloat(b, h.NextIn.Seconds(), 'f', -1, 64)
	b = append(b, `,"alert":`...)
	b = appendString(b, h.Channel)
	b = append(b, `,"last":`...)
	b = strconv.AppendInt(b, h.Last, 10)
	b = append(b, `,"expected":`...)
	b = strconv.AppendInt(b, h.Expected, 10)
	b = append(b, `,"state":"`...)
	b = append(b, h.State...)
	b = append(b, `","alerted":`...)
	b = strconv.AppendBool(b, h.Alerted)
	return append(b, '}')
}

// appendAlert writes a as JSON.
func appendAlert(b []byte, a *sample.Alert) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, a.ID, 10)
	b = append(b, `,"time":`...)
	b = strconv.AppendInt(b, a.Time, 10)
	b = append(b, `,"service":`...)
	b = appendString(b, a.Service)
	b = append(b, `,"kind":"`...)
	b = append(b, a.Kind.String()...)
	b = append(b, `","channel":`...)
	b = appendString(b, a.Channel)
	b = append(b, `,"message":`...)
	b = appendString(b, a.Message)
	return append(b, '}')
}

// appendCheck writes c as JSON: every in seconds, times in ms.
func appendCheck(b []byte, c *sample.CheckInfo) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, c.Name)
	b = append(b, `,"url":`...)
	b = appendString(b, c.URL)
	b = append(b, `,"every":`...)
	b = strconv.AppendFloat(b, c.Every.Seconds(), 'f', -1, 64)
	b = append(b, `,"expect":`...)
	b = strconv.AppendInt(b, int64(c.Expect), 10)
	b = append(b, `,"alert":`...)
	b = appendString(b, c.Channel)
	b = append(b, `,"failing":`...)
	b = strconv.AppendBool(b, c.Failing)
	b = append(b, `,"since":`...)
	b = strconv.AppendInt(b, c.Since, 10)
	b = append(b, `,"detail":`...)
	b = appendString(b, c.Detail)
	b = append(b, `,"lastRun":`...)
	b = strconv.AppendInt(b, c.LastRun, 10)
	b = append(b, `,"lastPass":`...)
	b = strconv.AppendInt(b, c.LastPass, 10)
	return append(b, '}')
}
