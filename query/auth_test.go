package query

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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

// TestGrantReloadAfterAuthorize: a reload between a stream's check
// (authorize) and its grant is not missed: the grant's first check ends
// it, with the token gone or with its read scope gone.
func TestGrantReloadAfterAuthorize(t *testing.T) {
	for _, text := range []string{"a read,write " + testAdmin + "\n", "r write " + testReader + "\n"} {
		acc, rewrite := testAccess(t)
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI("/events")
		ctx.Request.Header.Set("Authorization", "Bearer "+testReader)
		if !authorize(&ctx, acc, "http", true, func(*fasthttp.RequestCtx, int, string) {}) {
			t.Fatal("the reader refused before the reload")
		}
		rewrite(text)
		g := streamGrant(&ctx, acc, "http")
		if err := g.check(); !errors.Is(err, errRevoked) {
			t.Fatalf("%q: the grant's first check after a reload that took its token: %v", text, err)
		}
	}
	// A token that stays is not revoked by a reload.
	acc, rewrite := testAccess(t)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("Authorization", "Bearer "+testAdmin)
	g := streamGrant(&ctx, acc, "http")
	rewrite("a read,write " + testAdmin + "\n")
	if err := g.check(); err != nil {
		t.Fatalf("a kept token: %v", err)
	}
	if g := streamGrant(&ctx, &boundary.Access{}, "http"); g.check() != nil || g.reloaded() != nil {
		t.Fatal("without auth a stream has no grant to lose")
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
	defer db.Close()
	const keys = 200_000 // a dump of 4.2 MB, past what socket buffers hold
	ops := make([]sample.Op, 0, 10_000)
	errs := make([]error, cap(ops))
	for i := range keys {
		ops = append(ops, sample.Op{Code: sample.Set, Key: fmt.Sprintf("dump.key.%07d", i), Value: float64(i)})
		if len(ops) == cap(ops) {
			if err := db.Append(context.Background(), ops, errs); err != nil || errs[0] != nil {
				t.Fatal(err, errs[0])
			}
			ops = ops[:0]
		}
	}
	acc, rewrite := testAccess(t)
	srv, err := Listen(Options{Addr: "127.0.0.1:0", Access: acc}, db)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Shutdown(context.Background())
	// A small receive window: little is in flight while the test does
	// not read.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", testReader)
	br := bufio.NewReaderSize(c, 4096)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "HTTP/1.1 200") {
		t.Fatalf("the stream's status line: %q %v", l, err)
	}
	// The dump has begun: its first key is here. It is one line: read
	// bytes, not lines.
	var head []byte
	buf := make([]byte, 512)
	for !strings.Contains(string(head), "dump.key.0000000") {
		n, err := br.Read(buf)
		if err != nil {
			t.Fatalf("before the dump: %v", err)
		}
		head = append(head, buf[:n]...)
	}
	rewrite("a read,write " + testAdmin + "\n")
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	const full = keys * len(`"dump.key.0000000":0,`) // at least
	t.Logf("%d bytes after the reload, of %d", len(rest), full)
	if len(rest) > full/2 {
		t.Errorf("the client got %d bytes of a %d-byte dump after its token was revoked", len(rest), full)
	}
	if !strings.HasSuffix(string(rest), "\r\n: the token was revoked (the auth file was read again)\r\n") ||
		strings.Contains(string(rest), "\r\n\r\n") {
		t.Errorf("the cut dump ends %q", rest[max(0, len(rest)-100):])
	}
	if n := acc.Auth.Stats().Revoked; n != 1 {
		t.Errorf("revoked = %d, want 1", n)
	}
}
