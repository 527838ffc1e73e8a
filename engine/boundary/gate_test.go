package boundary

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveGate runs a gate on a loopback port; accepted receives what its
// Accept returns, until the test ends and closes it.
func serveGate(t *testing.T, opts GateOptions) (*Gate, <-chan net.Conn, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(ln, opts)
	accepted, failed := make(chan net.Conn, 16), make(chan error, 1)
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				failed <- err
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() { g.Close() })
	return g, accepted, failed
}

func dialGate(t *testing.T, g *Gate, send string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", g.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// readAll reads what the server sends until it closes.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read until the server closes: %v (got %q)", err, b)
	}
	return string(b)
}

// waitStats polls the gate's counters until cond holds.
func waitStats(t *testing.T, g *Gate, cond func(GateStats) bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(g.Stats()); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gate stats %+v: condition not met within 30 s", g.Stats())
		}
	}
}

func response(status, msg string) string {
	body := `{"error":"` + msg + `"}` + "\n"
	return "HTTP/1.1 " + status + "\r\nServer: sonde\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
}

// TestGateReplaysTheHead: a head sent in pieces (after empty lines, which
// HTTP servers skip) is admitted once complete, and the server reads every
// byte the client sent, the body and a pipelined request included.
func TestGateReplaysTheHead(t *testing.T) {
	g, accepted, _ := serveGate(t, GateOptions{})
	c := dialGate(t, g, "\r\n\r\nGET /data HTTP/1.1\r\nHost: x\r\n")
	waitStats(t, g, func(s GateStats) bool { return s.Pending == 1 })
	select {
	case <-accepted:
		t.Fatal("a half-sent head was admitted")
	default:
	}
	rest := "Content-Length: 4\r\n\r\nbodyGET /next HTTP/1.1\r\n\r\n"
	io.WriteString(c, rest)
	s := <-accepted
	want := "\r\n\r\nGET /data HTTP/1.1\r\nHost: x\r\n" + rest
	got := make([]byte, len(want))
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(s, got); err != nil || string(got) != want {
		t.Fatalf("server read %q, %v; want %q", got, err, want)
	}
	// Writes and the addresses go to the connection itself.
	io.WriteString(s, "HTTP/1.1 200 OK\r\n\r\n")
	if s.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("remote address %v, want %v", s.RemoteAddr(), c.LocalAddr())
	}
	s.Close()
	if r := readAll(t, c); r != "HTTP/1.1 200 OK\r\n\r\n" {
		t.Errorf("client read %q", r)
	}
	if st := g.Stats(); st != (GateStats{Admitted: 1}) {
		t.Errorf("stats %+v", st)
	}
}

// TestGateCutsSlowHeads: a head that does not come within HeaderTimeout
// is answered 408 and closed, and never holds back a complete one.
func TestGateCutsSlowHeads(t *testing.T) {
	g, accepted, _ := serveGate(t, GateOptions{HeaderTimeout: 300 * time.Millisecond})
	slow := dialGate(t, g, "GET /data HTTP/1.1\r\nHost: x\r\n")
	dialGate(t, g, "GET /quick HTTP/1.1\r\n\r\n")
	s := <-accepted // the complete one, while the slow one is held
	buf := make([]byte, 10)
	if n, _ := io.ReadFull(s, buf); string(buf[:n]) != "GET /quick" {
		t.Fatalf("admitted %q first", buf[:n])
	}
	s.Close()
	if r, want := readAll(t, slow), response("408 Request Timeout", "the request head did not arrive within 300ms"); r != want {
		t.Fatalf("slow head got %q, want %q", r, want)
	}
	waitStats(t, g, func(s GateStats) bool { return s == GateStats{Admitted: 1, HeadTimeouts: 1} })
	select {
	case c := <-accepted:
		t.Fatalf("the slow connection was admitted too: %v", c.RemoteAddr())
	default:
	}
}

// TestGateEvictsTheOldest: past MaxPending, the oldest connection still
// sending its head is answered 503 and closed.
func TestGateEvictsTheOldest(t *testing.T) {
	g, _, failed := serveGate(t, GateOptions{MaxPending: 2, HeaderTimeout: time.Hour})
	var cs []net.Conn
	for i := range 3 {
		cs = append(cs, dialGate(t, g, "GET / HTTP/1.1\r\n"))
		waitStats(t, g, func(s GateStats) bool { return s.Pending == int64(min(i+1, 2)) })
	}
	if r, want := readAll(t, cs[0]), response("503 Service Unavailable", "too many connections are sending their request head (limit 2)"); r != want {
		t.Fatalf("oldest got %q, want %q", r, want)
	}
	waitStats(t, g, func(s GateStats) bool { return s == GateStats{Pending: 2, Evicted: 1} })
	// Close ends the others without a word, and Accept reports it.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs[1:] {
		if r := readAll(t, c); r != "" {
			t.Errorf("at close a pending connection got %q", r)
		}
	}
	if err := <-failed; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if st := g.Stats(); st.Pending != 0 {
		t.Errorf("pending after close: %+v", st)
	}
}

// TestGateIncompleteHead: a client that ends its side inside the head gets
// 400; one that sends nothing gets nothing.
func TestGateIncompleteHead(t *testing.T) {
	g, _, _ := serveGate(t, GateOptions{})
	c := dialGate(t, g, "GET /da")
	c.(*net.TCPConn).CloseWrite()
	if r, want := readAll(t, c), response("400 Bad Request", "the connection ended inside the request head"); r != want {
		t.Fatalf("got %q, want %q", r, want)
	}
	e := dialGate(t, g, "")
	e.(*net.TCPConn).CloseWrite()
	if r := readAll(t, e); r != "" {
		t.Fatalf("an empty connection got %q", r)
	}
	waitStats(t, g, func(s GateStats) bool { return s == GateStats{Incomplete: 1} })
}

// TestGateLongHead: a head longer than MaxHead is handed over as it is,
// for the server to refuse with its own error.
func TestGateLongHead(t *testing.T) {
	g, accepted, _ := serveGate(t, GateOptions{MaxHead: 64})
	long := "GET /" + strings.Repeat("a", 100)
	dialGate(t, g, long)
	s := <-accepted
	got := make([]byte, len(long))
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(s, got); err != nil || string(got) != long {
		t.Fatalf("server read %q, %v", got, err)
	}
	s.Close()
}

func TestHeadComplete(t *testing.T) {
	for in, want := range map[string]bool{
		"GET / HTTP/1.1\r\n\r\n":          true,
		"GET / HTTP/1.1\n\n":              true,
		"GET / HTTP/1.1\r\nHost: x\r\n\n": true,
		"\r\n\r\nGET / HTTP/1.1\r\n":      false,
		"\r\n\r\n":                        false,
		"GET / HTTP/1.1\r\nHost: x\r\n":   false,
		"":                                false,
	} {
		if got := headComplete([]byte(in)); got != want {
			t.Errorf("headComplete(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestReplyDrainsUnreadBytes: a connection cut before the gate read what
// it sent (evicted at once) still gets its answer and a clean close: a
// socket closed with unread bytes is reset instead.
func TestReplyDrainsUnreadBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\n")
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the bytes are in the server's socket without reading them.
	raw, _ := s.(*net.TCPConn).SyscallConn()
	for waiting := true; waiting; {
		raw.Read(func(fd uintptr) bool {
			n, _, _ := syscall.Recvfrom(int(fd), make([]byte, 1), syscall.MSG_PEEK)
			waiting = n <= 0
			return !waiting
		})
	}
	reply(s, 503, "cut")
	s.Close()
	if r, want := readAll(t, c), response("503 Service Unavailable", "cut"); r != want {
		t.Fatalf("got %q, want %q", r, want)
	}
}
