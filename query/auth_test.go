package query

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
)

const (
	testReader = "reader-token-0123456789"
	testAdmin  = "admin-token-0123456789"
)

// testAccess is an Access asking for tokens on "http", from a file
// holding testReader (read) and testAdmin (read,write); rewrite replaces
// the file's text and reloads it.
func testAccess(t *testing.T) (acc *boundary.Access, rewrite func(text string)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth")
	if err := os.WriteFile(path, []byte("r read "+testReader+"\na read,write "+testAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tk, err := boundary.LoadTokens(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &boundary.Access{Auth: tk, AuthOn: map[string]bool{"http": true}}, func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := tk.Reload(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSessionReloadAfterAuthorize: a reload between a stream's check
// (authorize) and its session is not missed: the session's first check
// ends it, with the token gone or with its read scope gone.
func TestSessionReloadAfterAuthorize(t *testing.T) {
	for _, text := range []string{"a read,write " + testAdmin + "\n", "r write " + testReader + "\n"} {
		acc, rewrite := testAccess(t)
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI("/events")
		ctx.Request.Header.Set("Authorization", "Bearer "+testReader)
		if !authorize(&ctx, acc, "http", true, func(*fasthttp.RequestCtx, int, string) {}) {
			t.Fatal("the reader refused before the reload")
		}
		rewrite(text)
		if !streamSession(&ctx, acc, "http").Revoked() {
			t.Fatalf("%q: the session's first check after a reload that took its token", text)
		}
	}
	// A token that stays is not revoked by a reload.
	acc, rewrite := testAccess(t)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("Authorization", "Bearer "+testAdmin)
	g := streamSession(&ctx, acc, "http")
	rewrite("a read,write " + testAdmin + "\n")
	if g.Revoked() {
		t.Fatal("a kept token revoked")
	}
	if g := streamSession(&ctx, &boundary.Access{}, "http"); g != nil {
		t.Fatal("without auth a stream has a session to lose")
	}
}

// fill sets n keys named prefix.%07d.
func fill(t *testing.T, db *engine.DB, prefix string, n int) {
	t.Helper()
	ops := make([]sample.Op, 0, 10_000)
	errs := make([]error, cap(ops))
	for i := range n {
		ops = append(ops, sample.Op{Code: sample.Set, Key: fmt.Sprintf("%s.%07d", prefix, i), Value: float64(i)})
		if len(ops) == cap(ops) || i == n-1 {
			if err := db.Append(context.Background(), ops, errs); err != nil || errs[0] != nil {
				t.Fatal(err, errs[0])
			}
			ops = ops[:0]
		}
	}
}

// openSlow opens /events with the reader's token on a connection with a
// 4 KiB receive window, so little is in flight while the test does not
// read; it returns once the status line is read.
func openSlow(t *testing.T, srv *Server) *bufio.Reader {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", testReader)
	br := bufio.NewReaderSize(c, 4096)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "HTTP/1.1 200") {
		t.Fatalf("the stream's status line: %q %v", l, err)
	}
	return br
}

// serveSlow serves db with acc and opens a stream on it with openSlow.
func serveSlow(t *testing.T, db *engine.DB, acc *boundary.Access) (*Server, *bufio.Reader) {
	t.Helper()
	srv, err := Listen(Options{Addr: "127.0.0.1:0", Access: acc}, db)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv, openSlow(t, srv)
}

// readPast reads br (bytes, not lines: a dump is one line) until what it
// read holds s.
func readPast(t *testing.T, br *bufio.Reader, s string) {
	t.Helper()
	var got []byte
	buf := make([]byte, 512)
	for !strings.Contains(string(got[max(0, len(got)-len(buf)-len(s)):]), s) {
		n, err := br.Read(buf)
		if err != nil {
			t.Fatalf("reading to %q: %v", s, err)
		}
		got = append(got, buf[:n]...)
	}
}

// inFlight bounds what a stream may have sent before a reload that the
// client reads after it: the kernel's largest TCP send buffer
// (net.ipv4.tcp_wmem, which autotuning may reach), the client's 4 KiB
// window, and 1 MiB for the stream's buffer and the block or keys it
// writes before its next check.
func inFlight(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil {
		t.Fatalf("the TCP send buffer's bound: %v", err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		t.Fatalf("tcp_wmem %q: %v", b, err)
	}
	return n + 8<<10 + 1<<20
}

// checkRevokedEnd checks what a stream sent after its token was revoked:
// no more than was in flight, of the full bytes it had to send (which
// must be well past that for the check to tell), and the comment last.
func checkRevokedEnd(t *testing.T, rest []byte, full int) {
	t.Helper()
	bound := inFlight(t)
	t.Logf("%d bytes after the reload, at most %d in flight, of at least %d", len(rest), bound, full)
	if full < 3*bound/2 {
		t.Fatalf("a test of %d bytes cannot tell a bound of %d", full, bound)
	}
	if len(rest) > bound {
		t.Errorf("the client got %d bytes of %d after its token was revoked, past the %d in flight", len(rest), full, bound)
	}
	if !strings.HasSuffix(string(rest), "\r\n: the token was revoked (the auth file was read again)\r\n") {
		t.Errorf("the stream ends %q", rest[max(0, len(rest)-100):])
	}
}

// TestStreamRevokedMidDump: a reload that takes the token of a stream
// still writing its first dump ends the dump midway, over a real socket
// to a client that reads slowly: what the client gets is what was in
// flight, not the whole dump, and it ends with the comment, the cut
// frame never completed by a blank line.
func TestStreamRevokedMidDump(t *testing.T) {
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the server's shutdown (cleanups run last first).
	t.Cleanup(func() { db.Close() })
	const keys = 400_000 // a dump of 8.4 MB or more, well past what may be in flight
	fill(t, db, "dump.key", keys)
	acc, rewrite := testAccess(t)
	_, br := serveSlow(t, db, acc)
	readPast(t, br, "dump.key.0000000") // the dump has begun
	rewrite("a read,write " + testAdmin + "\n")
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	checkRevokedEnd(t, rest, keys*len(`"dump.key.0000000":0,`))
	if strings.Contains(string(rest), "\r\n\r\n") {
		t.Errorf("the cut dump was completed by a blank line")
	}
	if n := acc.Auth.Stats().Revoked; n != 1 {
		t.Errorf("revoked = %d, want 1", n)
	}
}

// TestStreamRevokedBehindHub: a stream far behind the hub, with many
// encoded blocks to write, ends between blocks when its token is
// revoked, not after all of them.
func TestStreamRevokedBehindHub(t *testing.T) {
	db, err := engine.Open(t.TempDir(), engine.Options{EventBuffer: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the server's shutdown (cleanups run last first).
	t.Cleanup(func() { db.Close() })
	fill(t, db, "dump.key", 100_000)
	acc, rewrite := testAccess(t)
	srv, br := serveSlow(t, db, acc)
	readPast(t, br, "dump.key.0000000") // the dump has begun; the stream is stuck in it
	const changes = 400_000
	fill(t, db, "k", changes)
	// Every change is in the hub's blocks before the stream leaves its
	// dump, so its first read of the hub takes them all.
	end, _ := db.FeedPos(db.Index())
	for {
		srv.hub.mu.Lock()
		n := len(srv.hub.blocks)
		done := n > 0 && srv.hub.blocks[n-1].last() >= end
		grown := srv.hub.grown
		srv.hub.mu.Unlock()
		if done {
			break
		}
		select {
		case <-grown:
		case <-time.After(30 * time.Second):
			t.Fatal("the hub did not take the changes within 30 s")
		}
	}
	readPast(t, br, `"k.0000000"`) // past the dump, into the hub's blocks
	rewrite("a read,write " + testAdmin + "\n")
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	checkRevokedEnd(t, rest, changes*len(`id: 100000\r\ndata: {"k.0000000":0}\r\n\r\n`))
}
