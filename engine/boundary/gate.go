package boundary

import (
	"bytes"
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// GateOptions configure a Gate. The zero value means the defaults.
type GateOptions struct {
	// MaxPending caps the connections still sending their first request
	// head; past it the oldest is cut (503). Default 512.
	MaxPending int
	// HeaderTimeout is how long a connection has, from accept, to send its
	// first request head; then it is cut (408). Default 5 s.
	HeaderTimeout time.Duration
	// MaxHead is the most bytes held for one head: a connection that sent
	// this many without ending its head is handed over anyway, for the
	// server to refuse. It should be the server's read buffer size (the
	// longest head it takes); default 4096, fasthttp's.
	MaxHead int
	// Logger receives the gate's warnings, rate-limited; nil discards them.
	Logger *slog.Logger
}

func (o GateOptions) withDefaults() GateOptions {
	if o.MaxPending <= 0 {
		o.MaxPending = 512
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = 5 * time.Second
	}
	if o.MaxHead <= 0 {
		o.MaxHead = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// PendingCap is the MaxPending of a listener whose server serves maxConns
// connections at once: half as many.
func PendingCap(maxConns int) int { return max(maxConns/2, 1) }

// GateStats counts what a Gate did with the connections it accepted.
type GateStats struct {
	Pending      int64 `json:"pending"`       // sending their first request head now
	Admitted     int64 `json:"admitted"`      // handed to the server with a complete head
	HeadTimeouts int64 `json:"head_timeouts"` // cut after HeaderTimeout: 408
	Evicted      int64 `json:"evicted"`       // cut, oldest first, past MaxPending: 503
	Incomplete   int64 `json:"incomplete"`    // closed by the client inside its head: 400
}

// Gate is a net.Listener for an HTTP server. Its Accept returns a
// connection only once the connection's first request head has arrived
// (up to the blank line that ends it, or MaxHead bytes), and the
// connection then reads those bytes again first. Until then the gate holds
// the connection in a goroutine of its own, with a buffer of MaxHead
// bytes and a deadline of
// HeaderTimeout and at most MaxPending of them, cutting the oldest past
// that.
//
// A server with a worker per connection (fasthttp) thus spends its
// workers on clients that have sent a request: any number of half-sent
// heads costs it nothing, and a complete request is served at once. Later
// requests on a kept-alive connection are the server's to bound (its read
// timeout).
//
// Close closes the listener and the connections the gate holds, and waits
// for its goroutines. Its methods may be called concurrently.
type Gate struct {
	ln   net.Listener
	opts GateOptions
	logs *LogLimiter

	start sync.Once     // starts the accept loop at the first Accept
	ready chan net.Conn // admitted connections, for Accept
	done  chan struct{} // closed once err is set: Accept returns it
	err   error
	stop  sync.Once // sets err and closes done

	mu      sync.Mutex // guards pending, closed and every headConn's elem and evicted.
	pending list.List  // of *headConn, oldest first
	closed  bool
	wg      sync.WaitGroup // the accept loop and every connection's goroutine

	buffers sync.Pool // of *[]byte, MaxHead long

	admitted, timeouts, evicted, incomplete atomic.Int64
}

// headConn is a connection the gate holds.
type headConn struct {
	net.Conn
	elem    *list.Element // in Gate.pending; nil once out
	evicted bool
}

// NewGate wraps ln. Nothing runs until the first Accept.
func NewGate(ln net.Listener, opts GateOptions) *Gate {
	return &Gate{ln: ln, opts: opts.withDefaults(), logs: NewLogLimiter(time.Minute),
		ready: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next connection whose first request head is in.
func (g *Gate) Accept() (net.Conn, error) {
	g.start.Do(func() {
		g.wg.Add(1)
		go g.acceptLoop()
	})
	select {
	case c := <-g.ready:
		return c, nil
	case <-g.done:
		return nil, g.err
	}
}

// Addr returns the listener's address.
func (g *Gate) Addr() net.Addr { return g.ln.Addr() }

// Close closes the listener and every connection still sending its head,
// and waits for the gate's goroutines. Accept then returns net.ErrClosed.
func (g *Gate) Close() error {
	g.start.Do(func() {}) // no accept loop after Close
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	for e := g.pending.Front(); e != nil; e = e.Next() {
		e.Value.(*headConn).SetReadDeadline(aLongTimeAgo) // its goroutine wakes and closes it
	}
	g.mu.Unlock()
	err := g.ln.Close()
	g.fail(net.ErrClosed)
	g.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close http listener: %w", err)
	}
	return nil
}

// Stats returns the gate's counters.
func (g *Gate) Stats() GateStats {
	g.mu.Lock()
	pending := int64(g.pending.Len())
	g.mu.Unlock()
	return GateStats{Pending: pending, Admitted: g.admitted.Load(), HeadTimeouts: g.timeouts.Load(),
		Evicted: g.evicted.Load(), Incomplete: g.incomplete.Load()}
}

var aLongTimeAgo = time.Unix(1, 0)

func (g *Gate) fail(err error) {
	g.stop.Do(func() {
		g.err = err
		close(g.done)
	})
}

func (g *Gate) acceptLoop() {
	defer g.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := g.ln.Accept()
		if err != nil {
			g.mu.Lock()
			closed := g.closed
			g.mu.Unlock()
			if closed {
				return
			}
			var t interface{ Temporary() bool }
			if errors.As(err, &t) && t.Temporary() { // EMFILE, ENFILE and the like
				g.logs.Log(g.opts.Logger, slog.LevelWarn, "accept", "accept http connection", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-g.done:
					return
				}
				backoff = min(backoff*2, time.Second)
				continue
			}
			g.fail(fmt.Errorf("accept http connection: %w", err))
			return
		}
		backoff = 5 * time.Millisecond
		g.hold(c)
	}
}

// hold takes c into the pending list, cutting the oldest past MaxPending,
// and starts its goroutine. Nothing here waits on a client.
func (g *Gate) hold(c net.Conn) {
	h := &headConn{Conn: c}
	if err := c.SetReadDeadline(time.Now().Add(g.opts.HeaderTimeout)); err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		c.Close()
		return
	}
	h.elem = g.pending.PushBack(h)
	var victim *headConn
	if g.pending.Len() > g.opts.MaxPending {
		victim = g.pending.Remove(g.pending.Front()).(*headConn)
		victim.elem, victim.evicted = nil, true
	}
	g.wg.Add(1)
	g.mu.Unlock()
	if victim != nil {
		victim.SetReadDeadline(aLongTimeAgo) // its goroutine wakes, answers and closes it
	}
	go g.read(h)
}

// read reads h's first request head, then hands h over or cuts it.
func (g *Gate) read(h *headConn) {
	defer g.wg.Done()
	p := g.buffer()
	defer g.buffers.Put(p)
	buf := *p
	n := 0
	for {
		m, err := h.Read(buf[n:])
		n += m
		if n == len(buf) || headComplete(buf[:n]) {
			g.admit(h, bytes.Clone(buf[:n])) // the head alone outlives the buffer
			return
		}
		if err != nil {
			g.cut(h, n, err)
			return
		}
	}
}

// buffer returns a MaxHead buffer for reading a head.
func (g *Gate) buffer() *[]byte {
	if p, ok := g.buffers.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, g.opts.MaxHead)
	return &b
}

// headComplete reports whether b holds a whole request head: the blank
// line that ends it, after any empty lines before the request line (which
// HTTP servers skip).
func headComplete(b []byte) bool {
	b = bytes.TrimLeft(b, "\r\n")
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

func (g *Gate) admit(h *headConn, head []byte) {
	g.mu.Lock()
	if h.evicted || g.closed {
		g.mu.Unlock()
		g.cut(h, len(head), nil)
		return
	}
	g.pending.Remove(h.elem)
	h.elem = nil
	g.mu.Unlock()
	if err := h.SetReadDeadline(time.Time{}); err != nil { // the server sets its own
		h.Close()
		return
	}
	g.admitted.Add(1)
	select {
	case g.ready <- &replayConn{Conn: h.Conn, buf: head}:
	case <-g.done:
		h.Close()
	}
}

// cut answers and closes a connection that did not complete its head: n
// bytes came, then err.
func (g *Gate) cut(h *headConn, n int, err error) {
	g.mu.Lock()
	if h.elem != nil {
		g.pending.Remove(h.elem)
		h.elem = nil
	}
	evicted, closed := h.evicted, g.closed
	g.mu.Unlock()
	var ne net.Error
	switch {
	case closed: // shutting down: no answer, but a close, not a reset
		drain(h.Conn)
	case evicted:
		g.evicted.Add(1)
		g.logs.Log(g.opts.Logger, slog.LevelWarn, "evicted", "too many connections sending their request head: the oldest are cut",
			"limit", g.opts.MaxPending, "remote", h.RemoteAddr().String())
		reply(h.Conn, 503, fmt.Sprintf("too many connections are sending their request head (limit %d)", g.opts.MaxPending))
	case errors.As(err, &ne) && ne.Timeout():
		g.timeouts.Add(1)
		g.logs.Log(g.opts.Logger, slog.LevelWarn, "timeout", "request head not received in time: connection cut",
			"timeout", g.opts.HeaderTimeout.String(), "remote", h.RemoteAddr().String(), "bytes", n)
		reply(h.Conn, 408, "the request head did not arrive within "+g.opts.HeaderTimeout.String())
	case n > 0:
		g.incomplete.Add(1)
		reply(h.Conn, 400, "the connection ended inside the request head")
	}
	h.Close()
}

// reply writes a whole HTTP response with a JSON error, giving the client
// a second to take it.
func reply(c net.Conn, code int, msg string) {
	drain(c)
	body, _ := json.Marshal(map[string]string{"error": msg})
	body = append(body, '\n')
	b := []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + statusText[code] + "\r\nServer: sonde\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n")
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(append(b, body...))
}

// drain reads, without waiting, what the client sent that the gate has
// not read (an evicted connection may not have been read at all): a socket
// closed with unread bytes is reset, and the reset can destroy the reply
// before the client reads it.
func drain(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil || c.SetReadDeadline(time.Time{}) != nil {
		return
	}
	var buf [4096]byte
	for range 16 { // a client that keeps sending is reset anyway
		n := 0
		err := raw.Read(func(fd uintptr) bool {
			n, _ = syscall.Read(int(fd), buf[:])
			return true // never wait
		})
		if err != nil || n <= 0 {
			return
		}
	}
}

var statusText = map[int]string{400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}

// replayConn reads the bytes the gate read before the connection's own.
// Like any net.Conn, it is read by one goroutine at a time.
type replayConn struct {
	net.Conn
	buf   []byte
	close sync.Once
}

// A closed connection lingers: the answer is out, so the sending side is
// shut at once (the client sees the end of the response), and what the
// client still sends is read and dropped for up to lingerTime or
// lingerBytes before the socket is closed, as nginx's lingering_close
// does. A socket closed with unread bytes is reset, and the reset can
// destroy an answer the client has not read yet: a 413 to a client still
// sending its oversized body.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 4 << 20
)

// Close shuts the sending side and lets the connection linger; see above.
func (r *replayConn) Close() error {
	err := net.ErrClosed
	r.close.Do(func() {
		tc, ok := r.Conn.(*net.TCPConn)
		if !ok || tc.CloseWrite() != nil {
			err = r.Conn.Close()
			return
		}
		err = nil
		go func() {
			tc.SetReadDeadline(time.Now().Add(lingerTime))
			io.Copy(io.Discard, io.LimitReader(tc, lingerBytes))
			tc.Close()
		}()
	})
	return err
}

// SyscallConn gives the socket's raw connection, so that a running read
// can peek whether its client hung up (query's watchClient).
func (r *replayConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := r.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("boundary: not a socket")
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		return r.Conn.Read(p)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	if len(r.buf) == 0 {
		r.buf = nil // the gate's buffer can go
	}
	return n, nil
}
