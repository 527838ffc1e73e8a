package main

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/boundary"
)

// TestHostileInput runs the hostile inputs of issue 10 one after the
// other against one server on its default flags, as a client that means
// harm would. Each asserts the exact answer; after each, the server still
// serves a new client, every acknowledged value is as it was, and its
// memory stays bounded where memory was the problem. (The full disk,
// stalled subscribers, statsd cardinality, damaged files, half-sent heads
// and resumes across a truncated WAL have tests of their own: they need
// a tmpfs, flags or time.)
func TestHostileInput(t *testing.T) {
	p := start(t, t.TempDir())
	// What was acknowledged before any of it.
	c := dial(t, p.tcpAddr)
	acked := []string{}
	for i := range 50 {
		acked = append(acked, fmt.Sprintf("SET acked.%d %d.5", i, i))
	}
	acked = append(acked, "INCR acked.hits 7", "SET base 1")
	for _, r := range c.do(t, acked...) {
		if r != "+OK" {
			t.Fatal(r)
		}
	}
	var want []map[string]any
	p.get("/api/v1/series?match=acked.*", &want)
	rss := p.residentBytes()

	serving := func(t *testing.T, what string) {
		t.Helper()
		c := dial(t, p.tcpAddr)
		if r := c.do(t, "SET fresh.client 1")[0]; r != "+OK" {
			t.Fatalf("after %s, a new client's SET: %q", what, r)
		}
		var got []map[string]any
		if code := p.get("/api/v1/series?match=acked.*", &got); code != 200 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after %s, the acknowledged series changed: %d\n%v\nwant\n%v", what, code, got, want)
		}
		if grown := p.residentBytes() - rss; grown > 200<<20 {
			t.Fatalf("after %s, RSS grew by %d MiB", what, grown>>20)
		}
	}
	get := func(t *testing.T, path string, code int, has string) {
		t.Helper()
		got, body := p.getRaw(path)
		if got != code || !strings.Contains(body, has) {
			t.Fatalf("GET %.100s: %d %s, want %d with %q", path, got, body, code, has)
		}
		serving(t, "GET "+path)
	}
	line := func(t *testing.T, send, want string) {
		t.Helper()
		c := dial(t, p.tcpAddr)
		if _, err := c.c.Write([]byte(send)); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(send, "\n") {
			c.c.(*net.TCPConn).CloseWrite() // the end of the last line is the end of the input
		}
		if r := c.reply(t); !strings.Contains(r, want) {
			t.Fatalf("%.60q answered %q, want %q", send, r, want)
		}
		serving(t, fmt.Sprintf("%.40q", send))
	}

	t.Run("render at the ends of int64", func(t *testing.T) {
		get(t, "/render?target=base&from=-9223372036854775808&until=now&maxDataPoints=10", 200, `"datapoints"`)
		get(t, "/render?target=base&from=now-9999999999999999y&until=now", 200, `[1,`)
		get(t, "/api/v1/series/base/history?from=-9223372036854775808&to=9223372036854775807&step=1ms", 200, `,1]]`)
	})
	t.Run("a read past its bounds", func(t *testing.T) {
		get(t, "/render?target=base&from=0&until=now&maxDataPoints=100000000", 422, "-query-max-points")
		get(t, "/render?target=*&from=0&until=now&maxDataPoints=9223372036854775807", 422, "-query-max-points")
		get(t, "/render?target=base&from=now&until=now", 400, "from is not before until")
		get(t, "/api/v1/series/base/history?limit=-1", 400, "limit")
		get(t, "/api/v1/series/base/history?step=0s", 400, "step")
	})
	t.Run("patterns that backtrack", func(t *testing.T) {
		get(t, "/data?match="+url.QueryEscape(strings.Repeat("*a", 120)+"z"), 200, "{")
		get(t, "/render?target="+url.QueryEscape(strings.Repeat("*?", 100)+"z"), 200, "[")
		get(t, "/data?match="+strings.Repeat("*", 1100), 400, "at most 1024")
	})
	t.Run("keys that are not UTF-8", func(t *testing.T) {
		line(t, "SET \xff\xfe 1\n", "-ERR syntax: key is not valid UTF-8")
		line(t, "SET ok\xfd 2\r\n", "-ERR syntax: key is not valid UTF-8")
		get(t, "/data?match=*%EF%BF%BD*", 200, "{}")
	})
	t.Run("lines at and past -max-line", func(t *testing.T) {
		at := "SET long " + strings.Repeat("0", 4096-len("SET long ")-1) + "7"
		line(t, at+"\r\n", "+OK")
		line(t, at+"0\n", "-ERR line is longer than 4096 bytes")
		line(t, "SET x "+strings.Repeat("9", 100_000), "-ERR line is longer than 4096 bytes") // no newline, then the end
	})
	t.Run("a window that amplifies", func(t *testing.T) {
		line(t, "INCR tick1 1 1\n", "-ERR bad value: a window of 1 ms is shorter than the minimum of 1000 ms")
	})
	t.Run("bodies and heads too large", func(t *testing.T) {
		code, ctype, body := httpDo(t, "POST", p.url("/collectd"), strings.Repeat("#", 2<<20)) // a body twice the limit
		if code != 413 || ctype != "application/json" || !strings.Contains(body, "larger than") {
			t.Fatalf("oversized /collectd on the main port: %d %s %s", code, ctype, body)
		}
		raw, err := net.Dial("tcp", p.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		fmt.Fprintf(raw, "GET /data HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 10_000))
		status, _ := bufio.NewReader(raw).ReadString('\n')
		if !strings.Contains(status, "431") {
			t.Fatalf("a 10 KB head: %q", status)
		}
		serving(t, "oversized requests")
	})
	t.Run("a bad Last-Event-ID", func(t *testing.T) {
		raw, err := net.Dial("tcp", p.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		fmt.Fprintf(raw, "GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: -1\r\n\r\n")
		raw.SetReadDeadline(time.Now().Add(30 * time.Second))
		status, _ := bufio.NewReader(raw).ReadString('\n')
		if !strings.Contains(status, "400") {
			t.Fatalf("Last-Event-ID -1: %q", status)
		}
		serving(t, "a bad Last-Event-ID")
	})
	t.Run("a panic in a handler", func(t *testing.T) {
		get(t, "/data?match="+boundary.Marker, 500, "internal error")
		if p.panics()["http"] != 1 {
			t.Fatalf("panics %v", p.panics())
		}
	})
}
