package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/graphite"
	"github.com/sonde-metrics/sonde/ingest/lineproto"
)

// Protocol is what a TCPServer speaks.
type Protocol uint8

const (
	// Mesures is the command protocol (ingest/lineproto); every line is
	// answered.
	Mesures Protocol = iota
	// Graphite is the plaintext protocol (ingest/graphite); nothing is
	// answered.
	Graphite
)

// TCPOptions configure a TCPServer. The zero value means the defaults.
type TCPOptions struct {
	// Access, when set, holds the sources taken (-allow; a refused one is
	// closed at once, a datagram dropped, and counted), TLS and the tokens
	// asked for (docs/auth.md).
	Access *boundary.Access
	// Protocol is what the listener speaks; default Mesures.
	Protocol Protocol
	// Addr is the listen address; default "127.0.0.1:8124" for Mesures,
	// "127.0.0.1:2003" for Graphite.
	Addr string
	// MaxLineLen caps one command line in bytes; default 4096.
	MaxLineLen int
	// MaxConns caps open connections; default 1024.
	MaxConns int
	// MaxBatch caps the commands appended at once; default 4096.
	MaxBatch int
	// OneShotWindow and OneShotIdle: see the package documentation.
	// Defaults 100 ms and 300 ms; a negative OneShotIdle disables it.
	// Graphite listeners never use it: their clients (collectd's
	// write_graphite, carbon relays) connect, send, and stay quiet until
	// the next interval.
	OneShotWindow time.Duration
	OneShotIdle   time.Duration
	// IdleTimeout closes other connections idle this long; default 10 min.
	IdleTimeout time.Duration
	// AuthTimeout is how long a connection has to send its AUTH line when
	// Access asks for tokens; default 5 s.
	AuthTimeout time.Duration
	// Logger receives listener messages; nil discards them.
	Logger *slog.Logger
}

func (o TCPOptions) withDefaults() TCPOptions {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8124"
		if o.Protocol == Graphite {
			o.Addr = "127.0.0.1:2003"
		}
	}
	if o.MaxLineLen <= 0 {
		o.MaxLineLen = 4096
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 4096
	}
	if o.OneShotWindow <= 0 {
		o.OneShotWindow = 100 * time.Millisecond
	}
	if o.OneShotIdle == 0 {
		o.OneShotIdle = 300 * time.Millisecond
	}
	if o.Protocol == Graphite {
		o.OneShotIdle = -1
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 10 * time.Minute
	}
	if o.AuthTimeout <= 0 {
		o.AuthTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// TCPStats counts what a TCPServer has seen.
type TCPStats struct {
	Open     int64 `json:"open"`
	Accepted int64 `json:"accepted"`
	Refused  int64 `json:"refused"`
	Commands int64 `json:"commands"`
	BadLines int64 `json:"bad_lines"`
	BadKeys  int64 `json:"bad_keys"` // of the bad lines, those refused for their key (not UTF-8, empty, too long, a control character, a bad tag)
	Failed   int64 `json:"failed"`
	// AuthWaiting is how many connections wait for their AUTH line now;
	// AuthCut counts those cut because half of MaxConns were waiting
	// already (-auth-file).
	AuthWaiting int64 `json:"auth_waiting,omitempty"`
	AuthCut     int64 `json:"auth_cut,omitempty"`
}

// TCPServer serves a line protocol over TCP: the mesures commands or
// Graphite plaintext.
type TCPServer struct {
	opts  TCPOptions
	app   Appender
	conns *conns
	log   *slog.Logger

	commands, badLines, badKeys, failed atomic.Int64

	authMu   sync.Mutex             // guards authWait.
	authWait map[net.Conn]time.Time // connections waiting for their AUTH line, since when
	authCut  atomic.Int64           // of those, cut to make room
}

// ListenTCP binds the listener; Serve accepts on it.
func ListenTCP(opts TCPOptions, app Appender) (*TCPServer, error) {
	opts = opts.withDefaults()
	ln, err := boundary.Listen(opts.Access, opts.Protocol.listener(), opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s on %s: %w", opts.Protocol, opts.Addr, err)
	}
	s := &TCPServer{opts: opts, app: app, log: opts.Logger}
	s.conns = newConns(ln, opts.Protocol.String(), opts.MaxConns, opts.Logger, func(c net.Conn) {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(c, "-ERR too many connections (limit %d)\r\n", opts.MaxConns)
	})
	return s, nil
}

// Addr returns the bound address.
func (s *TCPServer) Addr() net.Addr { return s.conns.ln.Addr() }

// Stats returns the server's counters.
func (s *TCPServer) Stats() TCPStats {
	return TCPStats{Open: s.conns.count(), Accepted: s.conns.accepted.Load(), Refused: s.conns.refused.Load(),
		Commands: s.commands.Load(), BadLines: s.badLines.Load(), BadKeys: s.badKeys.Load(), Failed: s.failed.Load(),
		AuthWaiting: s.authWaiting(), AuthCut: s.authCut.Load()}
}

// Serve accepts connections until Close. It returns nil after Close.
func (s *TCPServer) Serve() error { return s.conns.serve(s.handle) }

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Close stops accepting, lets every connection finish the batch it has
// read (so what was acknowledged stays acknowledged), and waits for them.
func (s *TCPServer) Close() error {
	err := s.conns.close()
	s.conns.handlers.Wait()
	return err
}

type reply struct {
	op  int   // index into ops, or -1
	err error // a parse error, answered as is
	ok  string
}

func (s *TCPServer) handle(c net.Conn) {
	defer s.conns.done(c)
	// After a panic the connection's state (a batch half appended, half
	// answered) is unknown: a command client is told, then both close.
	defer boundary.Recover(s.where(), s.log, func() {
		if s.opts.Protocol == Mesures {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(c, "-ERR internal error\r\n")
		}
	})
	accepted := time.Now()
	br := bufio.NewReaderSize(c, max(64<<10, s.opts.MaxLineLen+2))
	bw := bufio.NewWriterSize(c, 64<<10)
	var (
		ops     []sample.Op
		errs    []error
		replies []reply
		idle    = s.opts.IdleTimeout
		first   = true
	)
	var session *boundary.Session // the connection's token, when it sent one
	if s.opts.Protocol == Mesures && s.opts.Access.AuthFor("tcp") {
		token := s.auth(c, br)
		if token == nil {
			return
		}
		session = s.opts.Access.Auth.Session("tcp", token, boundary.Write)
	}
	for {
		// Arm the deadline, then look at closing: Close sets closing before
		// it expires every deadline, so either its expiry comes after ours
		// or we see closing here. A client that never pauses still stops.
		c.SetReadDeadline(time.Now().Add(idle))
		if s.conns.closing.Load() {
			return
		}
		ops, replies = ops[:0], replies[:0]
		eof := false
		// Block for one line, then take every complete line already buffered.
		for len(ops) < s.opts.MaxBatch {
			if len(replies) > 0 && bytes.IndexByte(peekBuffered(br), '\n') < 0 {
				break
			}
			line, tooLong, err := s.readLine(br)
			if first && (len(line) > 0 || tooLong || err == nil) {
				first = false
				if s.opts.OneShotIdle > 0 && time.Since(accepted) <= s.opts.OneShotWindow {
					idle = s.opts.OneShotIdle
				}
			}
			switch {
			case tooLong: // answered even when it is the last line, without its newline
				s.badLines.Add(1)
				replies = append(replies, reply{op: -1, err: fmt.Errorf("line is longer than %d bytes", s.opts.MaxLineLen)})
			case err == nil || len(line) > 0: // len > 0 with an error: a last line without its newline
				replies = s.parse(line, replies, &ops)
			}
			if err != nil {
				eof = true
				if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
					s.log.Debug("read command", "remote", c.RemoteAddr(), "err", err)
				}
				break
			}
		}
		if session.Revoked() { // the auth file was read again, without the token
			c.SetWriteDeadline(time.Now().Add(s.opts.AuthTimeout))
			io.WriteString(c, "-ERR the token was revoked (the auth file was read again)\r\n")
			return
		}
		if len(ops) > 0 {
			// A whole-batch error (writes paused on a full disk, a failed
			// WAL) is answered line by line; the client may try again.
			// Graphite has no replies, so its writes are not waited on
			// for an fsync; each command is answered after its own.
			errs, _ = appendBatch(context.Background(), s.app, ops, errs, s.opts.Protocol != Graphite)
		}
		if s.opts.Protocol == Graphite {
			s.countFailed(errs[:len(ops)], c)
			replies = replies[:0]
		}
		for _, r := range replies {
			switch {
			case r.err != nil:
				bw.WriteString("-ERR ")
				bw.WriteString(r.err.Error())
				bw.WriteString("\r\n")
			case r.op >= 0 && errs[r.op] != nil:
				s.failed.Add(1)
				bw.WriteString("-ERR ")
				bw.WriteString(errs[r.op].Error())
				bw.WriteString("\r\n")
			default:
				bw.WriteString(r.ok)
			}
		}
		s.commands.Add(int64(len(ops)))
		if err := bw.Flush(); err != nil {
			s.log.Debug("write replies", "remote", c.RemoteAddr(), "err", err)
			return
		}
		if eof {
			return
		}
	}
}

// auth reads the connection's first line, which must be AUTH <token> of
// a token with the write scope (blank lines before it are skipped), and
// answers it: +OK and the token, or -ERR and nil (the connection then
// closes). At most half of MaxConns connections wait for their AUTH at
// once; past that the one waiting longest is cut, so that silent
// connections cannot hold every slot.
func (s *TCPServer) auth(c net.Conn, br *bufio.Reader) []byte {
	c.SetReadDeadline(time.Now().Add(s.opts.AuthTimeout))
	s.waitAuth(c)
	var line []byte
	for {
		l, tooLong, err := s.readLine(br)
		if tooLong {
			s.authDone(c)
			c.SetWriteDeadline(time.Now().Add(s.opts.AuthTimeout))
			fmt.Fprintf(c, "-ERR line is longer than %d bytes\r\n", s.opts.MaxLineLen)
			return nil
		}
		if l = bytes.TrimSpace(l); len(l) > 0 || err != nil {
			line = l
			break
		}
	}
	s.authDone(c)
	c.SetWriteDeadline(time.Now().Add(s.opts.AuthTimeout))
	defer c.SetWriteDeadline(time.Time{})
	if len(line) == 0 {
		return nil // closed, cut or silent: nothing to answer or count
	}
	var token []byte // none: counted as missing
	if f := bytes.Fields(line); bytes.EqualFold(f[0], []byte("AUTH")) && len(f) > 1 {
		token = bytes.TrimSpace(line[len(f[0]):]) // a token holds no space: a line with more is wrong
	}
	v := s.opts.Access.Auth.Check("tcp", remoteIP(c), token, boundary.Write)
	if !v.OK {
		msg := v.Msg
		if v.Status == 401 && len(token) == 0 {
			msg = "authentication required: send AUTH <token> first"
		}
		io.WriteString(c, "-ERR "+msg+"\r\n")
		return nil
	}
	if _, err := io.WriteString(c, "+OK\r\n"); err != nil {
		return nil
	}
	return token // Session copies it
}

// waitAuth counts c among the connections waiting for their AUTH line,
// cutting the one waiting longest when half of MaxConns already are.
func (s *TCPServer) waitAuth(c net.Conn) {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	if s.authWait == nil {
		s.authWait = map[net.Conn]time.Time{}
	}
	if len(s.authWait) >= max(1, s.opts.MaxConns/2) {
		var oldest net.Conn
		var at time.Time
		for o, t := range s.authWait {
			if oldest == nil || t.Before(at) {
				oldest, at = o, t
			}
		}
		oldest.SetReadDeadline(time.Now()) // its read ends: closed without an answer
		delete(s.authWait, oldest)
		s.authCut.Add(1)
	}
	s.authWait[c] = time.Now()
}

func (s *TCPServer) authWaiting() int64 {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	return int64(len(s.authWait))
}

func (s *TCPServer) authDone(c net.Conn) {
	s.authMu.Lock()
	delete(s.authWait, c)
	s.authMu.Unlock()
}

// remoteIP is a connection's source address.
func remoteIP(c net.Conn) netip.Addr {
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// countFailed counts the writes the store refused on a listener that
// answers nothing. The first is logged as a warning, the rest at debug
// level; the count is in the listener's stats (failed).
func (s *TCPServer) countFailed(errs []error, c net.Conn) {
	for _, err := range errs {
		if err == nil {
			continue
		}
		logRefused(s.log, s.failed.Add(1), "proto", s.opts.Protocol.String(), "remote", c.RemoteAddr().String(), "err", err)
	}
}

func (s *TCPServer) parse(line []byte, replies []reply, ops *[]sample.Op) []reply {
	boundary.Inject(s.where(), line)
	if s.opts.Protocol == Graphite {
		op, blank, err := graphite.Parse(line)
		switch {
		case err != nil:
			s.countBad(err)
			s.log.Debug("bad graphite line", "err", err)
			return append(replies, reply{op: -1, err: err})
		case blank:
			return replies
		}
		*ops = append(*ops, op)
		return append(replies, reply{op: len(*ops) - 1})
	}
	cmd, op, err := lineproto.Parse(line)
	switch {
	case err != nil:
		s.countBad(err)
		return append(replies, reply{op: -1, err: err})
	case cmd == lineproto.Ping:
		return append(replies, reply{op: -1, ok: "+PONG\r\n"})
	case cmd == lineproto.Write:
		*ops = append(*ops, op)
		return append(replies, reply{op: len(*ops) - 1, ok: "+OK\r\n"})
	}
	return replies // a blank line gets no answer
}

// countBad counts a line that did not parse, and whether its key was
// what refused it.
func (s *TCPServer) countBad(err error) {
	s.badLines.Add(1)
	if errors.Is(err, lineproto.ErrKey) { // graphite.ErrKey is the same error
		s.badKeys.Add(1)
	}
}

// readLine returns the next line without its newline; a CR before the
// newline stays, for the parsers to trim, but does not count toward
// MaxLineLen, so a line fits the same with LF or CRLF. A line over
// MaxLineLen is skipped to its end and reported as tooLong, without its
// bytes. err is the read error that ended the line, if any: with a line
// (or tooLong), that line was the last one and had no newline.
func (s *TCPServer) readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	line, err = br.ReadSlice('\n')
	for errors.Is(err, bufio.ErrBufferFull) { // the buffer holds MaxLineLen+2 at least
		tooLong = true
		_, err = br.ReadSlice('\n')
	}
	if tooLong {
		return nil, true, err
	}
	if err == nil {
		line = line[:len(line)-1]
	}
	if n := len(line); n > s.opts.MaxLineLen && (n > s.opts.MaxLineLen+1 || line[n-1] != '\r') {
		return nil, true, err
	}
	return line, false, err
}

func peekBuffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// where names the listener in panic counts, as in /api/v1/stats.
func (s *TCPServer) where() string {
	if s.opts.Protocol == Graphite {
		return "graphite"
	}
	return "tcp"
}

// String names the protocol in messages.
// listener is the name of the protocol's listener in /api/v1/stats.
func (p Protocol) listener() string {
	if p == Graphite {
		return "graphite"
	}
	return "tcp"
}

func (p Protocol) String() string {
	if p == Graphite {
		return "graphite"
	}
	return "commands"
}
