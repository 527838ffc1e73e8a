package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/boundary"
)

// httpDo sends one request and returns the status, content type and body.
func httpDo(t *testing.T, method, url, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// panics returns the panic counts in /api/v1/stats.
func (p *proc) panics() map[string]int64 {
	p.t.Helper()
	var st struct {
		Panics map[string]int64 `json:"panics"`
	}
	p.get("/api/v1/stats", &st)
	return st.Panics
}

// logRecords decodes the JSON log lines sonde wrote so far.
func (p *proc) logRecords() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, line := range p.logs {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// readToEOF reads what the server sends until it closes the connection.
func readToEOF(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read until the server closes: %v (got %q)", err, b)
	}
	return string(b)
}

// TestPanicsAtEveryBoundary injects a panic (boundary.Inject, compiled in
// by the sondetest tag) at each boundary with a client: each is answered
// as documented, counted in /api/v1/stats and logged with its stack, and
// the process goes on serving everyone else, the statsd goroutines that
// panicked included.
func TestPanicsAtEveryBoundary(t *testing.T) {
	// -tcp-oneshot-idle=-1s: the connection from before pauses between commands.
	p := start(t, t.TempDir(), "-statsd-flush", "200ms", "-min-window", "200ms", "-statsd-idle-flushes", "0", "-tcp-oneshot-idle", "-1s")
	before := dial(t, p.tcpAddr) // connected before the panics, served after them
	if r := before.do(t, "SET before 1"); r[0] != "+OK" {
		t.Fatalf("SET: %q", r)
	}
	want := map[string]int64{"total": 0}
	counted := func(where string) {
		t.Helper()
		want[where]++
		want["total"]++
		p.poll(where+" panic counted", func() bool { return p.panics()[where] == want[where] })
	}
	const internal = `{"error":"internal error"}` + "\n"

	// HTTP: 500 with a JSON error, on the query port and on both collectd
	// routes.
	if code, ct, body := httpDo(t, "GET", p.url("/data?match="+boundary.Marker), ""); code != 500 || ct != "application/json" || body != internal {
		t.Errorf("GET with a panic: %d %s %q, want 500 application/json %q", code, ct, body, internal)
	}
	counted("http")
	putval := "PUTVAL " + boundary.Marker + ".collectd/load/load N:1:2:3\n"
	for _, url := range []string{p.url("/collectd"), "http://" + p.collectdAddr + "/"} {
		if code, ct, body := httpDo(t, "POST", url, putval); code != 500 || ct != "application/json" || body != internal {
			t.Errorf("POST %s with a panic: %d %s %q, want 500 application/json %q", url, code, ct, body, internal)
		}
		counted("collectd")
	}

	// SSE: the stream goroutine panics once it has the connection; the
	// stream ends with nothing sent.
	sse, err := net.Dial("tcp", p.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sse.Close()
	fmt.Fprintf(sse, "GET /events?match=%s.sse HTTP/1.1\r\nHost: sonde\r\n\r\n", boundary.Marker)
	if got := readToEOF(t, sse); got != "" {
		t.Errorf("event stream with a panic sent %q, want nothing", got)
	}
	counted("sse")

	// Commands: "-ERR internal error", then the connection closes.
	c := dial(t, p.tcpAddr)
	c.send(t, "SET "+boundary.Marker+" 1")
	if r := c.reply(t); r != "-ERR internal error" {
		t.Errorf("command with a panic: %q, want -ERR internal error", r)
	}
	if rest := readToEOF(t, c.c); rest != "" {
		t.Errorf("after -ERR internal error: %q, want the connection closed", rest)
	}
	counted("tcp")

	// Graphite: nothing is answered; the connection closes.
	g := p.dialGraphite()
	fmt.Fprintf(g, "%s 1 -1\n", boundary.Marker)
	if got := readToEOF(t, g); got != "" {
		t.Errorf("graphite line with a panic: got %q", got)
	}
	counted("graphite")

	// statsd: more panicking datagrams than there are readers, and more
	// panicking batches than writers: each goroutine is replaced, so a
	// good datagram is still read and written. The flusher's panic loses
	// its interval, and the next flush goes on.
	u, err := net.Dial("udp", p.statsdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	send := func(datagram string) {
		t.Helper()
		if _, err := io.WriteString(u, datagram); err != nil {
			t.Fatal(err)
		}
	}
	written := func(key string) {
		t.Helper()
		p.poll(key+" written", func() bool { return p.get("/api/v1/series/"+key, nil) == 200 })
	}
	for range max(runtime.NumCPU(), runtime.GOMAXPROCS(0)) + 1 {
		send(boundary.Marker + ":1|c")
		counted("statsd")
	}
	send("after.reader:1|c")
	written("stats_counts.after.reader")
	for range 3 { // 2 writers
		send(boundary.Marker + ".append:1|g") // a gauge has no aggregate: only a writer appends it
		counted("statsd-writer")
	}
	send("after.writer:1|g")
	written("stats.gauges.after.writer")
	send(boundary.Marker + ".append:m|s") // a set has no raw sample: only the flusher appends it
	counted("statsd-flusher")
	send("after.flusher:m|s")
	written("stats.sets.after.flusher.count")

	if got := p.panics(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("panics in stats %v, want %v", got, want)
	}
	// Each boundary logged its first panic with the stack; the repeats of
	// the same minute are only counted.
	for where := range want {
		if where == "total" {
			continue
		}
		n := 0
		for _, r := range p.logRecords() {
			if r["msg"] != "panic recovered" || r["where"] != where {
				continue
			}
			n++
			if stack, _ := r["stack"].(string); r["level"] != "ERROR" || !strings.Contains(stack, "boundary.Inject") {
				t.Errorf("%s: log line %v, want an ERROR with the stack through boundary.Inject", where, r)
			}
		}
		if n != 1 {
			t.Errorf("%s: %d panic log lines, want 1", where, n)
		}
	}
	// Everyone else is still served, and the process stops cleanly.
	if r := before.do(t, "SET after 1"); r[0] != "+OK" {
		t.Errorf("SET on a connection from before: %q", r)
	}
	var data map[string]float64
	if code := p.get("/data", &data); code != 200 || data["before"] != 1 || data["after"] != 1 {
		t.Errorf("/data: %d %v", code, data)
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit code %d after the panics", code)
	}
}

// TestSlowRequestHeads: 1100 connections that send half a request head
// hold none of the HTTP workers: a complete request is answered at once
// while they are held; they are cut after -http-header-timeout (408; past
// half of -max-conns the oldest at once, 503). Neither they nor 1100 more
// that hang up halfway write more than a few log lines.
func TestSlowRequestHeads(t *testing.T) {
	p := start(t, t.TempDir(), "-http-header-timeout", "3s")
	const n = 1100
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", p.httpAddr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /data HTTP/1.1\r\nHost: sonde\r\n"); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	if code, _, body := httpDo(t, "GET", p.url("/data"), ""); code != 200 {
		t.Fatalf("a complete request among %d half-sent ones: %d %q, want 200", n, code, body)
	}
	var st struct {
		HTTP struct {
			Admission boundary.GateStats `json:"admission"`
		} `json:"http"`
	}
	if p.get("/api/v1/stats", &st); st.HTTP.Admission.Pending == 0 {
		t.Fatalf("the half-sent heads were no longer held when the complete requests were served: %+v", st.HTTP.Admission)
	}
	resp := func(status, msg string) string {
		body := `{"error":"` + msg + `"}` + "\n"
		return fmt.Sprintf("HTTP/1.1 %s\r\nServer: sonde\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", status, len(body), body)
	}
	timedOut := resp("408 Request Timeout", "the request head did not arrive within 3s")
	evicted := resp("503 Service Unavailable", "too many connections are sending their request head (limit 512)")
	var n408, n503 int64
	for i, c := range conns {
		switch got := readToEOF(t, c); got {
		case timedOut:
			n408++
		case evicted:
			n503++
		default:
			t.Fatalf("half-sent connection %d got %q", i, got)
		}
	}
	if n408 == 0 || n408 > 512 {
		t.Errorf("%d connections timed out, want 1 to 512 (the newest, still held)", n408)
	}
	p.poll("admission counters", func() bool {
		p.get("/api/v1/stats", &st)
		a := st.HTTP.Admission
		return a.Pending == 0 && a.HeadTimeouts == n408 && a.Evicted == n503
	})
	// The same again, but the clients go away at once: fasthttp used to log
	// a WARN line for each.
	for range n {
		c, err := net.Dial("tcp", p.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /data HTTP/1.1\r\nHost: sonde\r\n")
		c.Close()
	}
	p.poll("the second batch counted", func() bool {
		p.get("/api/v1/stats", &st)
		a := st.HTTP.Admission
		return a.Pending == 0 && a.HeadTimeouts+a.Evicted+a.Incomplete == 2*n
	})
	warns := 0
	for _, r := range p.logRecords() {
		if r["level"] == "WARN" {
			warns++
			t.Logf("WARN line: %v", r)
		}
	}
	// One line per kind (cut on time, cut past the cap), and one count per
	// kind should the test outlast their interval.
	if warns > 4 {
		t.Errorf("%d WARN lines for %d half-sent requests, want at most 4", warns, 2*n)
	}
}

// TestCollectdBodyTooLargeOnMainPort: /collectd on the main port answers
// an oversized body as the receiver's own port does: 413 with a JSON
// error.
func TestCollectdBodyTooLargeOnMainPort(t *testing.T) {
	p := start(t, t.TempDir(), "-max-body", "4096")
	body := strings.Repeat("#", 5000)
	const want = `{"error":"body is larger than 4096 bytes"}` + "\n"
	for _, url := range []string{p.url("/collectd"), "http://" + p.collectdAddr + "/"} {
		if code, ct, got := httpDo(t, "POST", url, body); code != 413 || ct != "application/json" || got != want {
			t.Errorf("POST %s with 5000 bytes: %d %s %q, want 413 application/json %q", url, code, ct, got, want)
		}
	}
}

// TestSlowHeadOnKeptAliveConnection: after a complete request, half of
// the next one on the same connection holds its worker for
// -http-header-timeout, not for the 30 s a body may take: it is answered
// 408 and closed.
func TestSlowHeadOnKeptAliveConnection(t *testing.T) {
	p := start(t, t.TempDir(), "-http-header-timeout", "1s")
	c, err := net.Dial("tcp", p.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: sonde\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("first request: %d, close %v", resp.StatusCode, resp.Close)
	}
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: so")
	// Well within the 30 s the whole request used to have.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("half of a second request: %v, want a 408 within 20 s", err)
	}
	body, _ := io.ReadAll(resp.Body)
	const want = `{"error":"the request did not arrive in time"}` + "\n"
	if resp.StatusCode != 408 || resp.Header.Get("Content-Type") != "application/json" || string(body) != want {
		t.Errorf("half of a second request: %d %s %q, want 408 application/json %q", resp.StatusCode, resp.Header.Get("Content-Type"), body, want)
	}
}
