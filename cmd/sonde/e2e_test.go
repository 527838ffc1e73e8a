package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

type event struct {
	id    uint64
	event string // the event type; empty for a plain message
	data  string
}

// subscribe opens /events (with Last-Event-ID when lastID > 0) and
// streams its events into the returned channel until the test ends.
func subscribe(t *testing.T, p *proc, query string, lastID uint64) <-chan event {
	t.Helper()
	return subscribePath(t, p, "/events"+query, lastID)
}

// subscribePath opens the event stream at path (with its query).
func subscribePath(t *testing.T, p *proc, path string, lastID uint64) <-chan event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", p.url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(lastID, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content type %q", ct)
	}
	ch := make(chan event, 1<<16)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		br := bufio.NewReader(resp.Body)
		var ev event
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			switch {
			case line == "":
				if ev.data != "" {
					ch <- ev
				}
				ev = event{}
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				ev.id, _ = strconv.ParseUint(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan event) event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event stream ended")
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30s")
	}
	return event{}
}

// TestQuickStart walks the README: nc one-liner, /data, /events.
func TestQuickStart(t *testing.T) {
	p := start(t, t.TempDir())
	_, port, _ := net.SplitHostPort(p.tcpAddr)

	// The mesures one-liner with Debian's nc, which never half-closes:
	// it returns only because the server closes the idle one-shot
	// connection.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	out, err := exec.CommandContext(ctx, "sh", "-c", `echo "SET answer 42" | nc 127.0.0.1 `+port).CombinedOutput()
	took := time.Since(began)
	if err != nil {
		t.Fatalf("nc: %v (%q) after %v", err, out, took)
	}
	if string(out) != "+OK\r\n" {
		t.Fatalf("nc printed %q, want +OK", out)
	}
	t.Logf("echo | nc returned in %v", took)
	if took > 3*time.Second {
		t.Errorf("nc took %v: the server did not close the one-shot connection", took)
	}

	var data map[string]float64
	p.get("/data", &data)
	if data["answer"] != 42 || len(data) != 1 {
		t.Fatalf("/data = %v", data)
	}

	evs := subscribe(t, p, "", 0)
	dump := next(t, evs)
	if dump.data != `{"answer":42}` || dump.id != 1 {
		t.Fatalf("first frame = %+v, want the dump at id 1", dump)
	}
	c := dial(t, p.tcpAddr)
	if r := c.do(t, "SET temp 21.5", "INCR hits 3", "DELETE answer"); strings.Join(r, ",") != "+OK,+OK,+OK" {
		t.Fatalf("replies %v", r)
	}
	for i, want := range []string{`{"temp":21.5}`, `{"hits":0}`, `{"answer":null}`} {
		ev := next(t, evs)
		if ev.data != want || ev.id != uint64(2+i) {
			t.Fatalf("frame %d = %+v, want %s with id %d", i, ev, want, 2+i)
		}
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

func TestPipelinedRepliesInOrder(t *testing.T) {
	p := start(t, t.TempDir())
	c := dial(t, p.tcpAddr)
	const n = 20000
	var lines []string
	for i := range n {
		switch {
		case i%1000 == 999:
			lines = append(lines, "SET k"+strconv.Itoa(i%10)+" oops")
		case i%1000 == 500:
			lines = append(lines, "ping")
		default:
			lines = append(lines, fmt.Sprintf("set k%d %d", i%10, i))
		}
	}
	sent := make(chan error, 1)
	go func() { // the server answers while we still write
		_, err := c.c.Write([]byte(strings.Join(lines, "\n") + "\n"))
		sent <- err
	}()
	for i := range n {
		r := c.reply(t)
		want := "+OK"
		switch {
		case i%1000 == 999:
			want = `-ERR syntax: value "oops" is not a finite number`
		case i%1000 == 500:
			want = "+PONG"
		}
		if r != want {
			t.Fatalf("reply %d = %q, want %q", i, r, want)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	var data map[string]float64
	p.get("/data", &data)
	for k := range 10 {
		// The last good SET of key k.
		last := n - 10 + k
		for last%1000 == 999 || last%1000 == 500 {
			last -= 10
		}
		if got := data["k"+strconv.Itoa(k)]; got != float64(last) {
			t.Errorf("k%d = %v, want %d", k, got, last)
		}
	}
	var stats struct {
		TCP struct {
			Commands int64 `json:"commands"`
			BadLines int64 `json:"bad_lines"`
		} `json:"tcp"`
	}
	p.get("/api/v1/stats", &stats)
	if stats.TCP.BadLines != n/1000 {
		t.Errorf("bad lines counted %d, want %d", stats.TCP.BadLines, n/1000)
	}
}

func TestLimits(t *testing.T) {
	p := start(t, t.TempDir(), "-max-conns", "2", "-max-line", "64", "-max-series", "3")
	a := dial(t, p.tcpAddr)
	if r := a.do(t, "SET x "+strings.Repeat("1", 100), "SET x 1"); r[0] != "-ERR line is longer than 64 bytes" || r[1] != "+OK" {
		t.Fatalf("long line: %q", r)
	}
	if r := a.do(t, "SET y 1", "SET z 1", "SET w 1"); r[2] != "-ERR series limit reached: 3 keys" {
		t.Fatalf("series limit: %q", r)
	}
	b := dial(t, p.tcpAddr)
	b.do(t, "PING")
	c := dial(t, p.tcpAddr)
	if r := c.reply(t); r != "-ERR too many connections (limit 2)" {
		t.Fatalf("third connection got %q", r)
	}
	var e map[string]string
	if code := p.get("/api/v1/series/nope", &e); code != 404 || e["error"] == "" {
		t.Fatalf("unknown key: %d %v", code, e)
	}
	if code := p.get("/api/v1/series/x/history?from=yesterday", &e); code != 400 || !strings.Contains(e["error"], "from=") {
		t.Fatalf("bad from: %d %v", code, e)
	}
	if code := p.get("/api/v1/series/x/history?fn=rate", &e); code != 400 || !strings.Contains(e["error"], "COUNTER") {
		t.Fatalf("rate of a gauge: %d %v", code, e)
	}
}

// TestCounterRateOverHTTP: a COUNTER whose history has a reset gives the
// Prometheus-style increase and rate.
func TestCounterRateOverHTTP(t *testing.T) {
	p := start(t, t.TempDir())
	c := dial(t, p.tcpAddr)
	for range 5 {
		c.do(t, "INCR reqs 10")
	}
	var h struct {
		Points [][2]float64 `json:"points"`
	}
	p.get("/api/v1/series/reqs/history", &h)
	if len(h.Points) != 5 || h.Points[4][1] != 50 {
		t.Fatalf("history %v", h.Points)
	}
	var r struct {
		Rate     *float64 `json:"rate"`
		Increase float64  `json:"increase"`
		Samples  int      `json:"samples"`
		First    int64    `json:"first"`
		Last     int64    `json:"last"`
	}
	p.get("/api/v1/series/reqs/history?fn=rate", &r)
	if r.Increase != 40 || r.Samples != 5 {
		t.Fatalf("rate answer %+v", r)
	}
	if r.Last > r.First {
		if want := 40 / (float64(r.Last-r.First) / 1000); r.Rate == nil || *r.Rate != want {
			t.Fatalf("rate %v, want %v", r.Rate, want)
		}
	}
}

// TestSSEResume: a subscriber that reconnects with Last-Event-ID gets
// exactly the changes it missed, and no dump.
func TestSSEResume(t *testing.T) {
	p := start(t, t.TempDir())
	c := dial(t, p.tcpAddr)
	c.do(t, "SET a 0")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", p.url("/events"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := 1; i <= 50; i++ {
		c.do(t, "SET a "+strconv.Itoa(i))
	}
	// Read up to the event with value 20, then drop the connection.
	var lastID uint64
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "id: "); ok {
			lastID, _ = strconv.ParseUint(id, 10, 64)
		}
		if strings.TrimSpace(line) == `data: {"a":20}` {
			break
		}
	}
	cancel()
	resp.Body.Close()
	for i := 51; i <= 80; i++ {
		c.do(t, "SET a "+strconv.Itoa(i))
	}
	c.do(t, "DELETE a")
	evs := subscribe(t, p, "", lastID)
	for i := 21; i <= 80; i++ {
		ev := next(t, evs)
		if ev.id != lastID+uint64(i-20) || ev.data != fmt.Sprintf(`{"a":%d}`, i) {
			t.Fatalf("resumed event %d = %+v, want id %d", i, ev, lastID+uint64(i-20))
		}
	}
	if ev := next(t, evs); ev.data != `{"a":null}` {
		t.Fatalf("last resumed event = %+v, want the delete", ev)
	}
	// A filtered subscriber sees only its keys; ids still say where it is.
	f := subscribe(t, p, "?match=b.*", 0)
	if ev := next(t, f); ev.data != `{}` {
		t.Fatalf("filtered dump = %+v", ev)
	}
	c.do(t, "SET a 1", "SET b.x 2", "SET bb 3")
	if ev := next(t, f); ev.data != `{"b.x":2}` {
		t.Fatalf("filtered event = %+v", ev)
	}
}

// TestStalledSubscriber: a subscriber that never reads does not hold up
// writes, a live subscriber still sees everything, and the server cuts the
// stalled one off (its goroutine ends) while it is still connected.
func TestStalledSubscriber(t *testing.T) {
	p := start(t, t.TempDir(), "-sse-heartbeat", "100ms", "-sse-write-timeout", "5s", "-tcp-oneshot-idle", "-1s")
	stalled := openStalled(t, p)
	defer stalled.Close()
	live := subscribe(t, p, "", 0)
	next(t, live) // dump
	waitFor(t, "two subscribers", func() bool { return subscribers(t, p) == 2 })

	// The live subscriber reads while the writes go on, so it never falls
	// behind by the write timeout (it did when it read only afterwards:
	// its client's queue filled, and the server cut it off too).
	seen := make(chan error, 1)
	go func() {
		for n := 1; n <= 100*1000; n++ {
			select {
			case ev, ok := <-live:
				if !ok {
					seen <- fmt.Errorf("the live stream ended after %d events", n-1)
					return
				}
				if ev.id != uint64(n) {
					seen <- fmt.Errorf("live subscriber: event %d has id %d", n, ev.id)
					return
				}
			case <-time.After(30 * time.Second):
				seen <- fmt.Errorf("no event %d within 30 s", n)
				return
			}
		}
		seen <- nil
	}()
	writeChanges(t, p, 100, 1000)
	if err := <-seen; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to cut the stalled subscriber off", func() bool { return subscribers(t, p) == 1 })
}

// TestShutdownWithStalledSubscriber: SIGTERM completes promptly and
// cleanly even while a stream is blocked writing to a client that does
// not read.
func TestShutdownWithStalledSubscriber(t *testing.T) {
	p := start(t, t.TempDir(), "-tcp-oneshot-idle", "-1s")
	stalled := openStalled(t, p)
	defer stalled.Close()
	waitFor(t, "the subscriber", func() bool { return subscribers(t, p) == 1 })
	writeChanges(t, p, 100, 1000)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if log := p.logText(); strings.Contains(log, "shut down http") || !strings.Contains(log, "stopped cleanly") {
		t.Fatalf("shutdown was not clean:\n%s", log)
	}
}

// openStalled opens /events with a small receive buffer and never reads.
func openStalled(t *testing.T, p *proc) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, mustResolve(t, p.httpAddr))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4096)
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
	return c
}

// writeChanges makes rounds×batch changes over batch keys and checks
// every reply. Keys are ~200 bytes so that 100×1000 changes make ~23 MB of
// SSE frames: loopback send buffers autotune up to 4 MiB
// (net.ipv4.tcp_wmem), so a stream to a client that does not read is
// certainly blocked long before the writes end.
func writeChanges(t *testing.T, p *proc, rounds, batch int) {
	t.Helper()
	c := dial(t, p.tcpAddr)
	lines := make([]string, batch)
	pad := strings.Repeat("x", 200)
	for r := range rounds {
		for i := range lines {
			lines[i] = fmt.Sprintf("SET key%d.%s %d", i, pad, r)
		}
		for i, rep := range c.do(t, lines...) {
			if rep != "+OK" {
				t.Fatalf("round %d line %d: %q", r, i, rep)
			}
		}
	}
}

func mustResolve(t *testing.T, addr string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func subscribers(t *testing.T, p *proc) int {
	var st struct {
		Subscribers int `json:"subscribers"`
	}
	p.get("/api/v1/stats", &st)
	return st.Subscribers
}

// waitFor polls cond, for state only visible through the API.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCleanRestart: SIGTERM exits 0 after a final snapshot; a restart
// finds values and history.
func TestCleanRestart(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir, "-ring", "4")
	c := dial(t, p.tcpAddr)
	for i := 1; i <= 10; i++ {
		c.do(t, "SET g "+strconv.Itoa(i), "INCR n 1")
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if !strings.Contains(p.logText(), "stopped cleanly") {
		t.Fatalf("no clean stop in the log")
	}
	p = start(t, dir, "-ring", "4", "-vapor-points", "4")
	var st struct {
		Engine struct {
			Index    uint64 `json:"wal_index"`
			Snapshot uint64 `json:"snapshot_index"`
		} `json:"engine"`
	}
	p.get("/api/v1/stats", &st)
	if st.Engine.Index != 20 || st.Engine.Snapshot != 20 {
		t.Fatalf("after restart: %+v, want everything in the final snapshot", st)
	}
	var h struct {
		Points [][2]float64 `json:"points"`
	}
	p.get("/api/v1/series/g/history", &h)
	if len(h.Points) != 10 || h.Points[0][1] != 1 || h.Points[9][1] != 10 {
		t.Fatalf("history of g = %v", h.Points)
	}
	// /vapor: the newest -vapor-points points per key, from disk after a
	// restart.
	var vapor map[string][][2]float64
	p.get("/vapor?match=g", &vapor)
	if g := vapor["g"]; len(vapor) != 1 || len(g) != 4 || g[0][1] != 7 || g[3][1] != 10 {
		t.Fatalf("/vapor = %v, want g's points 7..10", vapor)
	}
	var n struct {
		Type   string  `json:"type"`
		Value  float64 `json:"value"`
		Points int     `json:"points"`
	}
	p.get("/api/v1/series/n", &n)
	if n.Type != "COUNTER" || n.Value != 10 || n.Points != 10 {
		t.Fatalf("n = %+v", n)
	}
}
