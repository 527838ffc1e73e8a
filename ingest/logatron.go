package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/logatron"
)

// ClientStore takes what logatron clients send. It is implemented by
// *engine.DB: each call returns once its records are in the WAL, not
// waiting for an fsync (a client gets no reply).
type ClientStore interface {
	ClientConnect(ctx context.Context, name string) error
	ClientDisconnect(ctx context.Context, name string) error
	ClientWrite(ctx context.Context, name string, writes []sample.ClientWrite, errs []error) error
}

// LogatronOptions configure a LogatronServer. The zero value means the
// defaults.
type LogatronOptions struct {
	// Access, when set, holds the sources taken (-allow; a refused one is
	// closed at once, a datagram dropped, and counted) and TLS.
	Access *boundary.Access
	// Addr is the listen address; default "127.0.0.1:2212".
	Addr string
	// MaxLineLen caps one line in bytes (its separator not counted);
	// default 4096. A longer line closes the connection.
	MaxLineLen int
	// MaxConns caps open connections, named or not; default 1024.
	MaxConns int
	// MaxBatch caps the lines written at once; default 1024.
	MaxBatch int
	// IAMTimeout closes a connection that has not named itself this long
	// after accept; default 10 s. Its IAM line holds at most 4 KiB, its
	// name sample.MaxService bytes. A named connection has no idle bound
	// (logatron's clients stay connected and may be quiet for hours; TCP
	// keep-alive finds the dead ones).
	IAMTimeout time.Duration
	// Logger receives listener messages; nil discards them.
	Logger *slog.Logger
}

func (o LogatronOptions) withDefaults() LogatronOptions {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:2212"
	}
	if o.MaxLineLen <= 0 {
		o.MaxLineLen = 4096
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.IAMTimeout <= 0 {
		o.IAMTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// LogatronStats counts what a LogatronServer has seen. Written counts
// the LOG and SET lines in the WAL; Pending the lines read and not in it
// yet, which a crash of the process loses (with what the kernel holds
// unread); Lost the lines read and then refused by the store (writes
// paused on a full disk), after which the connection is closed.
type LogatronStats struct {
	Open     int64 `json:"open"`
	Clients  int64 `json:"clients"` // connections that named themselves
	Accepted int64 `json:"accepted"`
	Refused  int64 `json:"refused"` // past max-conns
	Written  int64 `json:"written"`
	Pending  int64 `json:"pending"`
	Lost     int64 `json:"lost"`
	Dollar   int64 `json:"dollar"`  // LOG or SET lines holding '$', dropped as logatron drops them
	Ignored  int64 `json:"ignored"` // other lines after IAM, dropped
	// Connections closed for breaking a rule.
	BadIAM         int64 `json:"bad_iam"`          // a first line that is not IAM <name>, or none in time
	NameConnected  int64 `json:"name_connected"`   // IAM of a name connected already
	TooManyClients int64 `json:"too_many_clients"` // IAM of a new name while every kept client is connected
	TooLong        int64 `json:"too_long"`         // a line past max-line, or a SET key past 255 bytes
	TooManyKeys    int64 `json:"too_many_keys"`    // SET of a new key past the client's bound
	Failed         int64 `json:"failed"`           // the store refused a connect
}

// LogatronServer serves logatron's client protocol (ingest/logatron):
// IAM, then LOG and SET lines, and never a byte back.
type LogatronServer struct {
	opts   LogatronOptions
	store  ClientStore
	conns  *conns
	log    *slog.Logger
	ctx    context.Context // ends at Close: stops disconnect retries
	cancel context.CancelFunc

	clients, written, pending, lost, dollar, ignored                    atomic.Int64
	badIAM, nameConnected, tooManyClients, tooLong, tooManyKeys, failed atomic.Int64
}

// ListenLogatron binds the listener; Serve accepts on it.
func ListenLogatron(opts LogatronOptions, store ClientStore) (*LogatronServer, error) {
	opts = opts.withDefaults()
	ln, err := boundary.Listen(opts.Access, "logatron", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for logatron clients on %s: %w", opts.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Past -max-conns a connection is closed without a word: nothing is
	// ever written back.
	return &LogatronServer{opts: opts, store: store, conns: newConns(ln, "logatron", opts.MaxConns, opts.Logger, nil), log: opts.Logger,
		ctx: ctx, cancel: cancel}, nil
}

// Addr returns the bound address.
func (s *LogatronServer) Addr() net.Addr { return s.conns.ln.Addr() }

// Stats returns the server's counters.
func (s *LogatronServer) Stats() LogatronStats {
	return LogatronStats{Open: s.conns.count(), Clients: s.clients.Load(), Accepted: s.conns.accepted.Load(), Refused: s.conns.refused.Load(),
		Written: s.written.Load(), Pending: s.pending.Load(), Lost: s.lost.Load(), Dollar: s.dollar.Load(), Ignored: s.ignored.Load(),
		BadIAM: s.badIAM.Load(), NameConnected: s.nameConnected.Load(), TooManyClients: s.tooManyClients.Load(),
		TooLong: s.tooLong.Load(), TooManyKeys: s.tooManyKeys.Load(), Failed: s.failed.Load()}
}

// Serve accepts connections until Close. It returns nil after Close.
func (s *LogatronServer) Serve() error { return s.conns.serve(s.handle) }

// Close stops accepting, writes what each connection has read, records
// its disconnect, and waits for them.
func (s *LogatronServer) Close() error {
	err := s.conns.close()
	done := make(chan struct{})
	go func() { s.conns.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second): // a disconnect waiting on a paused store
		s.cancel()
		<-done
	}
	s.cancel()
	return err
}

// lineReader reads a connection's lines with logatron's split function,
// and tells whether a whole line is buffered before it blocks.
type lineReader struct {
	c     net.Conn
	split func([]byte, bool) (int, []byte, error)
	buf   []byte
	r, w  int
	eof   bool
	err   error // the read error that ended the input
	// final: the input ended at the client's end of input (EOF), which
	// ends a last line without a line end, as byline ends it. A read
	// that failed (a deadline, a reset, Close) ends it without that
	// line: it may be half of one.
	final bool
}

// next returns the next line: one already buffered, or (wait) one read
// from the connection. ok is false when none is buffered (!wait) or the
// input ended; err is logatron.ErrLineTooLong for a line past the bound.
func (lr *lineReader) next(wait bool) (line []byte, ok bool, err error) {
	for {
		adv, tok, err := lr.split(lr.buf[lr.r:lr.w], lr.final)
		if err != nil {
			return nil, false, err
		}
		lr.r += adv
		if tok != nil {
			return tok, true, nil
		}
		if lr.eof || !wait {
			return nil, false, nil
		}
		if lr.r > 0 {
			lr.w = copy(lr.buf, lr.buf[lr.r:lr.w])
			lr.r = 0
		}
		if lr.w == len(lr.buf) { // a line longer than the buffer: the bound, or (before IAM) 4 KiB
			return nil, false, logatron.ErrLineTooLong
		}
		n, rerr := lr.c.Read(lr.buf[lr.w:])
		lr.w += n
		if rerr != nil {
			lr.eof, lr.err, lr.final = true, rerr, errors.Is(rerr, io.EOF)
		}
	}
}

func (s *LogatronServer) handle(c net.Conn) {
	name := ""
	defer func() {
		c.Close()
		if name != "" { // before done: Close waits for the disconnects
			s.clients.Add(-1)
			s.disconnect(name)
		}
		s.conns.done(c)
	}()
	// After a panic the connection is closed: its client reconnects.
	defer boundary.Recover("logatron", s.log, nil)
	lr := &lineReader{c: c, split: logatron.Split(s.opts.MaxLineLen), buf: make([]byte, min(s.opts.MaxLineLen+4, 4096))}
	c.SetReadDeadline(time.Now().Add(s.opts.IAMTimeout))
	if s.conns.closing.Load() {
		return
	}
	line, ok, err := lr.next(true)
	if err != nil || !ok {
		s.badIAM.Add(1)
		return
	}
	boundary.Inject("logatron", line)
	n, ok := logatron.ParseIAM(string(line))
	if !ok || len(n) > sample.MaxService {
		s.badIAM.Add(1)
		return
	}
	switch err := s.store.ClientConnect(context.Background(), n); {
	case errors.Is(err, sample.ErrClientConnected):
		s.nameConnected.Add(1)
		return
	case errors.Is(err, sample.ErrTooManyClients):
		s.tooManyClients.Add(1)
		return
	case err != nil: // writes paused, the store closed
		logRefused(s.log, s.failed.Add(1), "proto", "logatron", "client", n, "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	name = n
	s.clients.Add(1)
	c.SetReadDeadline(time.Time{})
	if s.conns.closing.Load() {
		return
	}
	// The buffer grows to the line bound once the client is named.
	if len(lr.buf) < s.opts.MaxLineLen+4 {
		buf := make([]byte, s.opts.MaxLineLen+4)
		lr.w = copy(buf, lr.buf[lr.r:lr.w])
		lr.buf, lr.r = buf, 0
	}
	var (
		batch []sample.ClientWrite
		errs  []error
	)
	for {
		// Block for one line, then take every line already buffered.
		batch = batch[:0]
		var rerr error
		badKey := false
		for len(batch) < s.opts.MaxBatch {
			line, ok, err := lr.next(len(batch) == 0)
			if err != nil {
				rerr = err
				break
			}
			if !ok {
				break
			}
			boundary.Inject("logatron", line)
			switch l := logatron.Parse(string(line)); {
			case l.Dollar:
				s.dollar.Add(1)
			case l.Kind == logatron.Log:
				batch = append(batch, sample.ClientWrite{Text: l.Text})
			case l.Kind == logatron.Set && len(l.Key) > sample.MaxStateKey:
				badKey = true // closes the connection, as a line too long does
			case l.Kind == logatron.Set:
				batch = append(batch, sample.ClientWrite{Set: true, Key: l.Key, Text: l.Text})
			default:
				s.ignored.Add(1)
			}
			if badKey {
				break
			}
		}
		if len(batch) > 0 && !s.write(name, batch, &errs) {
			return
		}
		switch {
		case errors.Is(rerr, logatron.ErrLineTooLong), badKey:
			s.tooLong.Add(1)
			return
		case lr.eof && len(batch) == 0:
			if !errors.Is(lr.err, io.EOF) && !errors.Is(lr.err, os.ErrDeadlineExceeded) && !errors.Is(lr.err, net.ErrClosed) {
				s.log.Debug("read logatron client", "client", name, "err", lr.err)
			}
			return
		}
	}
}

// write appends a batch; false when the connection is to be closed.
func (s *LogatronServer) write(name string, batch []sample.ClientWrite, errs *[]error) bool {
	n := int64(len(batch))
	s.pending.Add(n)
	defer s.pending.Add(-n)
	if cap(*errs) < len(batch) {
		*errs = make([]error, len(batch))
	}
	es := (*errs)[:len(batch)]
	if err := s.store.ClientWrite(context.Background(), name, batch, es); err != nil {
		logRefused(s.log, s.lost.Add(n), "proto", "logatron", "client", name, "err", err)
		return false
	}
	ok := true
	for _, err := range es {
		switch {
		case err == nil:
			s.written.Add(1)
		case errors.Is(err, sample.ErrTooManyKeys):
			if ok { // once per connection: it is closed
				s.tooManyKeys.Add(1)
			}
			ok = false
		default:
			logRefused(s.log, s.lost.Add(1), "proto", "logatron", "client", name, "err", err)
		}
	}
	return ok
}

// disconnect records that name's connection ended. While the store
// refuses it (writes paused on a full disk) it tries again, until Close:
// the name stays taken until its disconnect is recorded.
func (s *LogatronServer) disconnect(name string) {
	wait := 10 * time.Millisecond
	for {
		err := s.store.ClientDisconnect(s.ctx, name)
		if err == nil || errors.Is(err, sample.ErrNotFound) {
			return
		}
		if s.ctx.Err() != nil {
			s.log.Warn("client disconnect not recorded", "client", name, "err", err)
			return
		}
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
		}
		wait = min(2*wait, time.Second)
	}
}
