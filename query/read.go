package query

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Reads are bounded (README, "Limits"): each waits for one of MaxQueries
// slots, holds at most MaxPoints points, answers at most MaxBytes, covers
// at most MaxSeries series, and stops at QueryTimeout or when its client
// hangs up. Past a bound the client gets a clear error naming the flag;
// nothing is left running.

var (
	// errTooLarge wraps the errors of reads that would pass a bound: 422.
	errTooLarge = errors.New("the answer would be too large")
	// errQueryTimeout is the cause of a read that ran out of time: 503.
	errQueryTimeout = errors.New("the read took longer than -query-timeout")
	// errClientGone is the cause of a read whose client hung up.
	errClientGone = errors.New("the client hung up")
	// errBusy is returned when no slot freed up in time: 503.
	errBusy = errors.New("too many reads at once")
)

// readStats count the bounded reads and how they ended.
type readStats struct {
	total, tooLarge, timeouts, clientGone, busy atomic.Int64
}

// ReadStats is what /api/v1/stats says of the bounded reads.
type ReadStats struct {
	Total      int64 `json:"total"`
	TooLarge   int64 `json:"too_large"`   // answered 422: past -query-max-points, -bytes or -series
	Timeouts   int64 `json:"timeouts"`    // answered 503: past -query-timeout
	ClientGone int64 `json:"client_gone"` // stopped: the client hung up
	Busy       int64 `json:"busy"`        // answered 503: no free slot (-query-concurrency)
	Running    int   `json:"running"`
}

// ReadStats returns the counters of the bounded reads.
func (s *Server) ReadStats() ReadStats {
	return ReadStats{Total: s.reads.total.Load(), TooLarge: s.reads.tooLarge.Load(), Timeouts: s.reads.timeouts.Load(),
		ClientGone: s.reads.clientGone.Load(), Busy: s.reads.busy.Load(), Running: len(s.slots)}
}

// read is one bounded read.
type read struct {
	ctx    context.Context // carries the budget; ends at the deadline or when the client hangs up
	budget *sample.Budget
	opts   *Options
}

// series checks that a read covers at most MaxSeries series.
func (r *read) series(n int) error {
	if n > r.opts.MaxSeries {
		return fmt.Errorf("%w: it covers %d series, at most %d are read at once (-query-max-series); narrow the pattern",
			errTooLarge, n, r.opts.MaxSeries)
	}
	return nil
}

// body checks that an answer of n bytes is within MaxBytes.
func (r *read) body(n int) error {
	if n > r.opts.MaxBytes {
		return fmt.Errorf("%w: it passes %d bytes (-query-max-bytes); narrow the range or the pattern", errTooLarge, r.opts.MaxBytes)
	}
	return nil
}

// alive returns the reason to stop, if any: the deadline passed or the
// client hung up.
func (r *read) alive() error {
	if r.ctx.Err() != nil {
		return context.Cause(r.ctx)
	}
	return nil
}

// bounded runs fn as a bounded read and answers its error, if any: 422
// for a bound, 503 for the deadline or no free slot, nothing to a client
// that hung up, 404 for a key that vanished, 500 for the rest. fn writes
// the answer itself when it succeeds.
func (s *Server) bounded(ctx *fasthttp.RequestCtx, fn func(r *read) error) {
	s.reads.total.Add(1)
	err := s.runBounded(ctx, fn)
	switch {
	case err == nil:
	case errors.Is(err, errClientGone):
		s.reads.clientGone.Add(1)
		ctx.SetConnectionClose()
	case errors.Is(err, errTooLarge), errors.Is(err, sample.ErrTooMany):
		s.reads.tooLarge.Add(1)
		msg := err.Error()
		if errors.Is(err, sample.ErrTooMany) {
			msg = fmt.Sprintf("%v (-query-max-points); narrow the range, the pattern or maxDataPoints", err)
		}
		writeError(ctx, fasthttp.StatusUnprocessableEntity, msg)
	case errors.Is(err, errQueryTimeout):
		s.reads.timeouts.Add(1)
		writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("%v (%s); narrow the read", errQueryTimeout, s.opts.QueryTimeout))
	case errors.Is(err, errBusy):
		s.reads.busy.Add(1)
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
	case errors.Is(err, sample.ErrNotFound):
		writeError(ctx, fasthttp.StatusNotFound, err.Error())
	default:
		writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
	}
}

func (s *Server) runBounded(ctx *fasthttp.RequestCtx, fn func(r *read) error) error {
	// The deadline covers the wait for a slot too: a read never takes
	// longer than QueryTimeout in all.
	c, cancel := context.WithTimeoutCause(context.Background(), s.opts.QueryTimeout, errQueryTimeout)
	defer cancel()
	select {
	case s.slots <- struct{}{}:
	default:
		select {
		case s.slots <- struct{}{}:
		case <-c.Done():
			return fmt.Errorf("%w: %d run at once (-query-concurrency) and none ended within %s", errBusy, cap(s.slots), s.opts.QueryTimeout)
		case <-s.done:
			return fmt.Errorf("%w: the server is shutting down", errBusy)
		}
	}
	defer func() { <-s.slots }()
	c, hangUp := context.WithCancelCause(c)
	defer hangUp(nil)
	stop := watchClient(ctx.Conn(), hangUp, s.done)
	defer stop()
	if c.Err() != nil {
		return context.Cause(c) // its time went waiting for a slot
	}
	b := &sample.Budget{Max: s.opts.MaxPoints}
	return fn(&read{ctx: sample.WithBudget(c, b), budget: b, opts: &s.opts})
}

// clientProbe is how often a running read looks whether its client hung up.
const clientProbe = 50 * time.Millisecond

// watchClient cancels a read with errClientGone when its client closes
// the connection (or the server shuts down), until stop is called. It
// peeks at the socket every clientProbe without taking bytes (a pipelined
// next request stays for fasthttp), from a timer: a read that ends sooner
// costs a timer and no goroutine.
func watchClient(conn net.Conn, cancel context.CancelCauseFunc, done <-chan struct{}) (stop func()) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	var (
		mu      sync.Mutex // guards stopped against a probe re-arming the timer after stop
		stopped bool
		t       *time.Timer
	)
	probe := func() {
		select {
		case <-done:
			cancel(errClientGone)
			return
		default:
		}
		if hungUp(raw) {
			cancel(errClientGone)
			return
		}
		mu.Lock()
		if !stopped {
			t.Reset(clientProbe)
		}
		mu.Unlock()
	}
	mu.Lock()
	t = time.AfterFunc(clientProbe, probe)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// hungUp peeks at the socket: end of stream or a reset means the client
// is gone; bytes or nothing yet mean it waits.
func hungUp(raw syscall.RawConn) bool {
	gone := false
	err := raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = (n == 0 && err == nil) || (err != nil && err != syscall.EAGAIN && err != syscall.EINTR)
		return true
	})
	return gone || err != nil
}
