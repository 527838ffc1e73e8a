package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// listenerStats is what /api/v1/stats says of one line listener.
type listenerStats struct {
	Commands int64 `json:"commands"`
	BadLines int64 `json:"bad_lines"`
	Failed   int64 `json:"failed"`
}

// poll calls cond every 10 ms until it holds, for at most 30 s, then
// fails the test saying what never happened. For what crosses the socket
// without an answer to wait on (UDP, Graphite, background work), polling
// a server's counter is the only signal there is.
func (p *proc) poll(what string, cond func() bool) {
	p.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: not within 30 s", what)
		}
	}
}

// waitStats polls /api/v1/stats until cond holds for the named section:
// protocols that answer nothing say what they took only there.
func (p *proc) waitStats(name string, cond func(listenerStats) bool) listenerStats {
	p.t.Helper()
	var st listenerStats
	p.poll(name+" stats", func() bool {
		st = listenerStats{}
		p.section(name, &st)
		return cond(st)
	})
	return st
}

// dialGraphite connects to the Graphite listener; the test closes it.
func (p *proc) dialGraphite() net.Conn {
	p.t.Helper()
	c, err := net.Dial("tcp", p.graphiteAddr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

// history returns the [ms, value] points of key.
func (p *proc) history(key string) [][2]float64 {
	p.t.Helper()
	var h struct {
		Points [][2]float64 `json:"points"`
	}
	if code := p.get("/api/v1/series/"+url.PathEscape(key)+"/history", &h); code != 200 {
		p.t.Fatalf("history of %s: status %d", key, code)
	}
	return h.Points
}

// historyMany is the answer of /api/v1/history.
type historyMany struct {
	Series []struct {
		Key    string       `json:"key"`
		Points [][2]float64 `json:"points"`
	} `json:"series"`
}

func equalPoints(a, b [][2]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestGraphitePlaintext: lines over a real socket are stored at their own
// times, tags are put in canonical order, and bad or out-of-order lines
// are counted without closing the connection.
func TestGraphitePlaintext(t *testing.T) {
	p := start(t, t.TempDir())
	c := p.dialGraphite()
	now := time.Now().Unix()
	fmt.Fprintf(c, "servers.web01.load 0.5 %d\n", now-20)
	fmt.Fprintf(c, "servers.web01.load 0.75 %d.5\r\n", now-10)
	fmt.Fprintf(c, "this line is bad\n\n")
	fmt.Fprintf(c, "servers.web01.load 9 %d\n", now-15) // older than the newest point
	fmt.Fprintf(c, "disk.used;host=h1;dc=eu 12 %d\n", now-5)
	fmt.Fprintf(c, "servers.web01.load 1 -1\n")
	st := p.waitStats("graphite", func(s listenerStats) bool { return s.Commands == 5 && s.BadLines == 1 })
	if st.Failed != 1 {
		t.Errorf("failed writes %d, want 1 (the out-of-order point)", st.Failed)
	}
	pts := p.history("servers.web01.load")
	want := [][2]float64{{float64((now - 20) * 1000), 0.5}, {float64((now-10)*1000 + 500), 0.75}}
	if len(pts) != 3 || !equalPoints(pts[:2], want) {
		t.Fatalf("history %v, want %v then a point at the server's time", pts, want)
	}
	if last := int64(pts[2][0]); pts[2][1] != 1 || last < (now-10)*1000 || last > time.Now().UnixMilli() {
		t.Fatalf("the point without a time: %v", pts[2])
	}
	if got := p.history("disk.used;dc=eu;host=h1"); !equalPoints(got, [][2]float64{{float64((now - 5) * 1000), 12}}) {
		t.Fatalf("tagged series %v", got)
	}
	// The connection is still open and still taken.
	fmt.Fprintf(c, "after.bad 1 %d\n", now)
	p.waitStats("graphite", func(s listenerStats) bool { return s.Commands == 6 })
}

// TestGraphiteNotFsyncedPerWrite: with -fsync=always, Graphite lines
// (which get no reply) are applied without an fsync of their own; the
// next acknowledged command fsyncs them with itself.
func TestGraphiteNotFsyncedPerWrite(t *testing.T) {
	p := start(t, t.TempDir(), "-fsync-interval", "1h", "-snapshot-interval", "1h")
	var st struct {
		Engine struct {
			WAL    uint64 `json:"wal_index"`
			Synced uint64 `json:"synced_index"`
		} `json:"engine"`
	}
	c := p.dialGraphite()
	first := p.index()
	fmt.Fprintf(c, "quiet.one 1 %d\nquiet.two 2 %d\n", time.Now().Unix(), time.Now().Unix())
	p.poll("both lines stored", func() bool { return p.index() >= first+2 })
	p.get("/api/v1/stats", &st)
	if st.Engine.WAL < first+2 || st.Engine.Synced >= st.Engine.WAL {
		t.Fatalf("Graphite lines were fsynced: synced to %d of %d", st.Engine.Synced, st.Engine.WAL)
	}
	if got := dial(t, p.tcpAddr).do(t, "SET acked 3"); got[0] != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	p.get("/api/v1/stats", &st)
	if st.Engine.WAL < first+3 || st.Engine.Synced != st.Engine.WAL {
		t.Fatalf("after an acknowledged SET: synced to %d of %d, want all", st.Engine.Synced, st.Engine.WAL)
	}
}

// post sends body to url and returns the status and decoded JSON reply.
func post(t *testing.T, url, contentType, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("POST %s: decode the reply: %v", url, err)
	}
	return resp.StatusCode, m
}

// TestCollectdHTTP: write_http's JSON and PUTVAL bodies on the
// receiver's own port and at /collectd on the main port; every answer
// says what was stored, and bad posts get 4xx with the reason.
func TestCollectdHTTP(t *testing.T) {
	p := start(t, t.TempDir(), "-max-body", "4096")
	now := time.Now().Unix()
	own, routed := "http://"+p.collectdAddr+"/", p.url("/collectd")
	js := fmt.Sprintf(`[{"values":[12.5],"dstypes":["gauge"],"dsnames":["value"],"time":%d.250,"interval":1.000,"host":"web.example","plugin":"memory","plugin_instance":"","type":"memory","type_instance":"used"},
 {"values":[100,200],"dstypes":["derive","derive"],"dsnames":["rx","tx"],"time":%d,"interval":1.000,"host":"web.example","plugin":"interface","plugin_instance":"eth0","type":"if_octets","type_instance":""}]`, now-10, now-10)
	if code, m := post(t, own, "application/json", js); code != 200 || m["stored"] != 3.0 {
		t.Fatalf("JSON post: %d %v", code, m)
	}
	cmd := fmt.Sprintf("PUTVAL \"web.example/interface-eth0/if_octets\" interval=1.000 %d:150:260\r\nPUTVAL web.example/load/load interval=1 %d:0.5:0.25:U\r\n", now-5, now-5)
	if code, m := post(t, routed, "text/plain", cmd); code != 200 || m["stored"] != 4.0 {
		t.Fatalf("PUTVAL post: %d %v", code, m)
	}
	for key, want := range map[string][][2]float64{
		"web_example.memory.memory-used":          {{float64((now-10)*1000 + 250), 12.5}},
		"web_example.interface-eth0.if_octets.tx": {{float64((now - 10) * 1000), 200}, {float64((now - 5) * 1000), 260}},
		"web_example.load.load.midterm":           {{float64((now - 5) * 1000), 0.25}},
	} {
		if got := p.history(key); !equalPoints(got, want) {
			t.Errorf("%s: %v, want %v", key, got, want)
		}
	}
	var s struct {
		Type string `json:"type"`
	}
	if p.get("/api/v1/series/web_example.interface-eth0.if_octets.rx", &s); s.Type != "COUNTER" {
		t.Errorf("a derive is stored as %q, want COUNTER", s.Type)
	}
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`[{"values":[1]}]`, 400, "1 values, 0 dstypes"},
		{"PUTVAL web/load/nosuchtype N:1", 400, "not in types.db"},
		{strings.Repeat("#", 5000), 413, "larger than"},
		// Well formed, but shortterm and midterm have a newer point: those two
		// are refused; longterm (U before) and the later list are stored.
		{fmt.Sprintf("PUTVAL web.example/load/load %d:1:2:3 %d:4:5:6", now-20, now-1), 422, "older than the newest point"},
	} {
		code, m := post(t, own, "text/plain", c.body)
		if msg, _ := m["error"].(string); code != c.code || !strings.Contains(msg, c.want) {
			t.Errorf("post %.40q: %d %v, want %d with %q", c.body, code, m, c.code, c.want)
		}
	}
	resp, err := http.Get(own)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET on the receiver: %d, want 405", resp.StatusCode)
	}
	var st struct {
		Collectd struct {
			Values      int64 `json:"values"`
			BadRequests int64 `json:"bad_requests"`
			Failed      int64 `json:"failed"`
		} `json:"collectd"`
	}
	p.get("/api/v1/stats", &st)
	if c := st.Collectd; c.Values != 3+4+4 || c.BadRequests != 3 || c.Failed != 2 {
		t.Errorf("stats %+v, want 11 values, 3 bad requests, 2 refused", c)
	}
}

// TestTimestampedSet: "SET key value @ms" stores a point at ms; the same
// line again (a resend after a lost +OK) is answered +OK and stores
// nothing, here across a kill -9 too; another value at that time, or an
// older time, is refused.
func TestTimestampedSet(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	now := time.Now().UnixMilli()
	line := func(v float64, ms int64) string { return fmt.Sprintf("SET host.load %g @%d", v, ms) }
	c := dial(t, p.tcpAddr)
	got := c.do(t, line(0.5, now-2000), line(0.5, now-2000), line(0.75, now-1000), line(0.75, now-1000),
		line(0.9, now-1000), line(0.5, now-2000), "SET host.load 1 @0", "SET host.load 1 @x")
	want := []string{"+OK", "+OK", "+OK", "+OK", "-ERR point older than the newest point of its key: \"host.load\" has a point at " +
		fmt.Sprint(now-1000) + " ms with another value (0.75)", "-ERR point older than the newest point of its key: \"host.load\" has a point at " +
		fmt.Sprint(now-1000) + " ms, this one is at " + fmt.Sprint(now-2000) + " ms", "-ERR syntax: SET time \"@0\" is not @ and a whole number of milliseconds since 1970",
		"-ERR syntax: SET time \"@x\" is not @ and a whole number of milliseconds since 1970"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reply %d: %q, want %q", i, got[i], want[i])
		}
	}
	wantPts := [][2]float64{{float64(now - 2000), 0.5}, {float64(now - 1000), 0.75}}
	if got := p.history("host.load"); !equalPoints(got, wantPts) {
		t.Fatalf("history %v, want %v", got, wantPts)
	}
	p.kill()
	p = start(t, dir)
	c = dial(t, p.tcpAddr)
	if r := c.do(t, line(0.75, now-1000)); r[0] != "+OK" {
		t.Fatalf("resend after kill -9: %q", r[0])
	}
	if got := p.history("host.load"); !equalPoints(got, wantPts) {
		t.Fatalf("after kill -9 and a resend: history %v, want %v", got, wantPts)
	}
}
