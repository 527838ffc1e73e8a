package query

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/status"
)

// StatusStore is what the status routes (events, heartbeats, alerts)
// need of the store (engine.DB is one).
type StatusStore interface {
	// CheckEvent says whether the store would take ev now.
	CheckEvent(ev *sample.Event, now int64) error
	// AppendEvents writes evs, all or nothing, and sets their IDs.
	AppendEvents(ctx context.Context, evs []sample.Event) error
	// Events lists the events q selects, newest first.
	Events(ctx context.Context, q sample.EventQuery) (sample.EventPage, error)
	// EventsAfter appends up to max events with ids after id, in id order.
	EventsAfter(id uint64, dst []sample.Event, max int) ([]sample.Event, error)
	// NotifyEvents returns a channel closed once an event is added.
	NotifyEvents() <-chan struct{}
	// Pulse records a heartbeat; CancelHeartbeat cancels one
	// (sample.ErrNotFound when there is none).
	Pulse(ctx context.Context, service string, nextIn time.Duration, channel string) error
	CancelHeartbeat(ctx context.Context, service string) error
	// Heartbeats lists the heartbeats, by service; Heartbeat finds one;
	// PendingAlerts lists the alerts waiting for delivery, by id.
	Heartbeats() []sample.Heartbeat
	Heartbeat(service string) (sample.Heartbeat, bool)
	PendingAlerts(dst []sample.Alert) []sample.Alert
}

// Bounds of the event routes (README, "Limits").
const (
	// DefaultEventLimit and MaxEventLimit are limit='s default and bound.
	DefaultEventLimit = 100
	MaxEventLimit     = 10_000
	// MaxEventScan and MaxEventScanBytes bound the stored events one
	// listing looks at (their count, and the bytes of their services and
	// messages): a filter that matches little ends the page early, with a
	// next cursor.
	MaxEventScan      = 1_000_000
	MaxEventScanBytes = 64 << 20
	// maxPattern bounds a service= or message= regular expression.
	maxPattern = 512
	// eventBatch is how many events a stream reads at once.
	eventBatch = 256
)

// eventRoutes serves /api/v1/events (POST to write, GET to list) and
// /api/v1/events/stream. It reports false for other paths.
func (s *Server) eventRoutes(ctx *fasthttp.RequestCtx, path string) bool {
	if path != "/api/v1/events" && path != "/api/v1/events/stream" {
		return false
	}
	if s.opts.Status == nil {
		writeError(ctx, fasthttp.StatusNotFound, "this server keeps no events")
		return true
	}
	switch {
	case path == "/api/v1/events/stream" && (ctx.IsGet() || ctx.IsHead()):
		s.eventStream(ctx)
	case path == "/api/v1/events" && ctx.IsPost():
		s.postEvents(ctx)
	case path == "/api/v1/events" && (ctx.IsGet() || ctx.IsHead()):
		s.listEvents(ctx)
	case path == "/api/v1/events":
		ctx.Response.Header.Set("Allow", "GET, POST")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "GET lists events, POST writes them")
	default:
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "only GET is served here")
	}
	return true
}

// postEvents writes the events of the body (one object or a list), all or
// nothing, and answers their ids once they are durable.
func (s *Server) postEvents(ctx *fasthttp.RequestCtx) {
	evs, err := status.ParseEvents(ctx.PostBody())
	if err == nil {
		now := time.Now().UnixMilli()
		for i := range evs {
			if err = s.opts.Status.CheckEvent(&evs[i], now); err != nil {
				err = fmt.Errorf("event %d: %w", i, err)
				break
			}
		}
	}
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if err := s.opts.Status.AppendEvents(ctx, evs); err != nil {
		// The events were checked: what is left is the store's state (a
		// backlog, paused or failed writes, shutting down).
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return
	}
	b := append(make([]byte, 0, 16+12*len(evs)), `{"ids":[`...)
	for i := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, evs[i].ID, 10)
	}
	writeJSON(ctx, append(b, "]}\n"...))
}

// eventFilter reads service=, message= (case-insensitive regular
// expressions, unanchored) and level= (keep levels at or above it).
func eventFilter(ctx *fasthttp.RequestCtx) (func(*sample.Event) bool, error) {
	a := ctx.QueryArgs()
	var service, message *regexp.Regexp
	for _, p := range []struct {
		name string
		re   **regexp.Regexp
	}{{"service", &service}, {"message", &message}} {
		v := a.Peek(p.name)
		if len(v) == 0 {
			continue
		}
		if len(v) > maxPattern {
			return nil, fmt.Errorf("%s= is longer than %d bytes", p.name, maxPattern)
		}
		re, err := regexp.Compile("(?i)" + string(v))
		if err != nil {
			var se *syntax.Error
			if errors.As(err, &se) {
				err = errors.New(string(se.Code)) // its text repeats the whole pattern
			}
			return nil, fmt.Errorf("%s=%q is not a regular expression: %w", p.name, text(v), err)
		}
		*p.re = re
	}
	level, hasLevel := int64(0), false
	if v := a.Peek("level"); len(v) > 0 {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("level=%q is not an integer", text(v))
		}
		level, hasLevel = n, true
	}
	if service == nil && message == nil && !hasLevel {
		return nil, nil
	}
	return func(ev *sample.Event) bool {
		return (!hasLevel || ev.Level >= level) &&
			(service == nil || service.MatchString(ev.Service)) &&
			(message == nil || message.MatchString(ev.Message))
	}, nil
}

// listEvents answers GET /api/v1/events: the events the filters keep,
// newest first, a page of at most limit, with a cursor to the next page.
func (s *Server) listEvents(ctx *fasthttp.RequestCtx) {
	q, err := eventQuery(ctx)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	s.bounded(ctx, func(r *read) error {
		q.MaxBytes = r.opts.MaxBytes / 4 // room for JSON's escapes
		page, err := s.opts.Status.Events(r.ctx, q)
		if err != nil {
			if e := r.alive(); e != nil {
				return e
			}
			return err
		}
		b := append(make([]byte, 0, 256), `{"events":[`...)
		for i := range page.Events {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendEvent(b, &page.Events[i])
		}
		b = append(b, ']')
		if page.More {
			b = append(b, `,"next":"`...)
			b = strconv.AppendInt(b, page.NextTime, 10)
			b = append(b, '.')
			b = strconv.AppendUint(b, page.NextID, 10)
			b = append(b, '"')
		}
		if err := r.body(len(b)); err != nil {
			return err
		}
		writeJSON(ctx, append(b, "}\n"...))
		return nil
	})
}

// eventQuery reads the parameters of a listing.
func eventQuery(ctx *fasthttp.RequestCtx) (sample.EventQuery, error) {
	q := sample.EventQuery{Limit: DefaultEventLimit, MaxScan: MaxEventScan, MaxScanBytes: MaxEventScanBytes}
	var err error
	if q.Match, err = eventFilter(ctx); err != nil {
		return q, err
	}
	if q.From, err = timeArg(ctx, "from", minTime); err != nil {
		return q, err
	}
	if q.To, err = timeArg(ctx, "to", maxTime); err != nil {
		return q, err
	}
	if q.To <= 0 {
		q.To = -1 // before 1970 (timeArg clamps to 0): nothing, where 0 would mean no bound
	}
	a := ctx.QueryArgs()
	if v := a.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > MaxEventLimit {
			return q, fmt.Errorf("limit=%q: want an integer from 1 to %d", text(v), MaxEventLimit)
		}
		q.Limit = n
	}
	if v := a.Peek("cursor"); len(v) > 0 {
		t, id, ok := strings.Cut(string(v), ".")
		var e1, e2 error
		q.BeforeTime, e1 = strconv.ParseInt(t, 10, 64)
		q.BeforeID, e2 = strconv.ParseUint(id, 10, 64)
		if !ok || e1 != nil || e2 != nil || q.BeforeID == 0 {
			return q, fmt.Errorf("cursor=%q is not the next= of a page", text(v))
		}
	}
	return q, nil
}

// appendEvent writes ev as JSON.
func appendEvent(b []byte, ev *sample.Event) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, ev.ID, 10)
	b = append(b, `,"time":`...)
	b = strconv.AppendInt(b, ev.Time, 10)
	b = append(b, `,"service":`...)
	b = appendString(b, ev.Service)
	b = append(b, `,"level":`...)
	b = strconv.AppendInt(b, ev.Level, 10)
	b = append(b, `,"message":`...)
	b = appendString(b, ev.Message)
	b = append(b, `,"alert":`...)
	b = strconv.AppendBool(b, ev.Alert)
	return append(b, '}')
}

// eventStream serves GET /api/v1/events/stream: every new event the
// filters keep, as it is written. A client that sends Last-Event-ID (or
// after=) gets the events after that id first.
func (s *Server) eventStream(ctx *fasthttp.RequestCtx) {
	match, err := eventFilter(ctx)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	after, reset, ok := s.resumePoint(ctx)
	if !ok {
		return
	}
	es := s.opts.Status
	s.hijackStream(ctx, "event stream", func(w *bufio.Writer, g *boundary.Session) error {
		if err := streamStart(w, after, reset); err != nil {
			return err
		}
		var (
			buf         []sample.Event
			frame, body []byte
		)
		return s.followStream(w, g, es.NotifyEvents, func() (bool, error) {
			var err error
			if buf, err = es.EventsAfter(after, buf[:0], eventBatch); err != nil {
				return false, err
			}
			for i := range buf {
				ev := &buf[i]
				after = ev.ID
				if match != nil && !match(ev) {
					continue
				}
				body = appendEvent(body[:0], ev)
				frame = appendFrame(frame[:0], ev.ID, body)
				if _, err := w.Write(frame); err != nil {
					return false, err
				}
			}
			if len(buf) > 0 {
				if err := w.Flush(); err != nil {
					return false, err
				}
			}
			return len(buf) == eventBatch, nil
		})
	})
}

// followStream runs a stream after its first frame: read writes (and
// flushes) what is new and reports whether more may wait (it read a full
// batch: read again at once); otherwise the stream waits for notify's
// channel, pinging every -sse-heartbeat, until the client goes, a reload
// of the auth file takes its token (errRevoked), or the server shuts down.
func (s *Server) followStream(w *bufio.Writer, g *boundary.Session, notify func() <-chan struct{}, read func() (more bool, err error)) error {
	hb := time.NewTicker(s.opts.Heartbeat)
	defer hb.Stop()
	for {
		if g.Revoked() {
			return errRevoked
		}
		wait := notify() // before the read: nothing is missed
		more, err := read()
		if err != nil {
			return err
		}
		if more {
			continue
		}
		select {
		case <-wait:
		case <-g.Reloaded(): // checked at the top
		case <-hb.C:
			if err := ping(w); err != nil {
				return err
			}
		case <-s.done:
			return nil
		}
	}
}

// resumePoint reads where a stream resumes: after the id in Last-Event-ID
// (or after=), or after the newest index when neither is given. An id
// from the future (another server, a wiped store), or from an epoch the
// store does not vouch for (X-Sonde-Epoch), names other events now: the
// client gets a reset, and what follows the last id it can trust (none:
// all that is kept). ok is false when the request was answered with an
// error.
func (s *Server) resumePoint(ctx *fasthttp.RequestCtx) (after uint64, reset, ok bool) {
	after, resume := s.store.Index(), false
	v := ctx.Request.Header.Peek("Last-Event-ID")
	if len(v) == 0 {
		v = ctx.QueryArgs().Peek("after")
	}
	if len(v) > 0 {
		id, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("Last-Event-ID %q is not an event id", text(v)))
			return 0, false, false
		}
		after, resume = id, true
	}
	if !resume {
		return after, false, true
	}
	trusted := after
	if v := ctx.Request.Header.Peek("X-Sonde-Epoch"); len(v) > 0 {
		epoch, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("X-Sonde-Epoch %q is not an epoch", text(v)))
			return 0, false, false
		}
		through, ok := s.store.TrustedThrough(epoch)
		if !ok {
			through = 0
		}
		trusted = min(trusted, through)
	}
	trusted = min(trusted, s.store.Index())
	return trusted, trusted != after, true
}

// streamStart writes a stream's first frame: a reset to after, or a
// comment saying where it starts.
func streamStart(w *bufio.Writer, after uint64, reset bool) error {
	if reset {
		w.WriteString("event: reset\r\ndata: {\"after\":")
		w.WriteString(strconv.FormatUint(after, 10))
		w.WriteString("}\r\n\r\n")
	} else {
		w.WriteString(": events after " + strconv.FormatUint(after, 10) + "\r\n\r\n")
	}
	return w.Flush()
}
