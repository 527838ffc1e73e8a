package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sonde-metrics/sonde/ingest"
)

type gloDoc struct {
	Version   int
	Timestamp int64
	Truncated bool
	Data      []struct {
		Key   string
		Value any
		Desc  string
		Lvl   int
	}
}

// TestGloServed: the glo port answers glo's poller page's request with
// JavaScript that calls the page's callback with a version 1 document of
// the series (node runs it), /glo answers JSON, and the timer tags,
// desc and lvl are as configured.
func TestGloServed(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is needed to run the JSONP answer (make test installs nodejs): %v", err)
	}
	p := start(t, t.TempDir(), "-glo", "127.0.0.1:0", "-glo-key", "stats.timers.*,lvl=2,desc=statsd timer, in ms", "-statsd-flush", "200ms", "-min-window", "100ms")
	c, err := net.Dial("tcp", p.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "SET cache.size 134\r\nINCR requests 45023\r\n")
	u, err := net.Dial("udp", p.statsdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	fmt.Fprint(u, "lat:12.5|ms\nlat:30|ms")
	waitFor(t, "the timer's flush", func() bool {
		code, _ := p.getRaw("/api/v1/series/stats.timers.lat.upper")
		return code == http.StatusOK
	})

	resp, err := http.Get("http://" + p.addrs["glo"].(string) + "/?callback=jQuery16_1&_=1")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "application/javascript") {
		t.Fatalf("%d %s: %s", resp.StatusCode, ct, js)
	}
	// The answer runs as the page runs it: a call of its callback.
	script := `let got; function jQuery16_1(doc) { got = doc; }` + "\n" + string(js) + "\nconsole.log(JSON.stringify(got));"
	out, err := exec.Command(node, "-e", script).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s\nscript:\n%s", err, out, script)
	}
	var doc gloDoc
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("the callback got %s: %v", out, err)
	}
	items := map[string]string{}
	for _, d := range doc.Data {
		s, ok := d.Value.(string)
		if !ok {
			t.Fatalf("version 1 value %v of %s is not a string", d.Value, d.Key)
		}
		items[d.Key] = fmt.Sprintf("%s|%s|%d", s, d.Desc, d.Lvl)
	}
	for key, want := range map[string]string{
		"cache.size:current":                "134|gauge|1",
		"requests:count":                    "45023|counter total|1",
		"stats.timers.lat:max-us":           "30000|statsd timer, in ms|2",
		"stats.timers.lat:last-duration-us": "30000|statsd timer, in ms|2",
		"stats.timers.lat.upper:current":    "30|statsd timer, in ms|2",
	} {
		if got := items[key]; got != want {
			t.Fatalf("%s: %q, want %q (all: %v)", key, got, want, items)
		}
	}
	if doc.Version != 1 || doc.Timestamp < 1e12 || doc.Timestamp > 1e14 {
		t.Fatalf("version %d, timestamp %d (want ms)", doc.Version, doc.Timestamp)
	}

	var v2 gloDoc
	p.get("/glo?version=2&match=requests", &v2)
	if v2.Version != 2 || v2.Timestamp < 1e15 || len(v2.Data) != 1 || v2.Data[0].Key != "/requests:count" || v2.Data[0].Value != 45023.0 {
		t.Fatalf("version 2: %+v", v2)
	}
	for _, bad := range []string{"/glo?callback=alert(1)", "/glo?callback=", "/glo?version=3", "/glo?match=" + strings.Repeat("a", 2000)} {
		if code, body := p.getRaw(bad); code != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", bad, code, body)
		}
	}
	// Past -glo-max-keys the document says it is truncated.
	q := start(t, t.TempDir(), "-glo-max-keys", "1")
	fmt.Fprint(dialTCP(t, q), "SET a 1\r\nSET b 2\r\n")
	waitFor(t, "b", func() bool { code, _ := q.getRaw("/api/v1/series/b"); return code == 200 })
	var small gloDoc
	q.get("/glo", &small)
	if len(small.Data) != 1 || !small.Truncated {
		t.Fatalf("at -glo-max-keys 1: %+v", small)
	}
}

func dialTCP(t *testing.T, p *proc) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGloPoll: Sonde reads a process's glo document (served by a small
// local HTTP server) and stores its numbers at the document's timestamps;
// when the process stops answering the failures are counted and one
// event is recorded for the outage, and another when it answers again.
func TestGloPoll(t *testing.T) {
	var (
		mu    sync.Mutex
		ts    int64 = 1_796_300_000_000
		count       = 100
		down  atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		ts += 1000
		count += 7
		body := fmt.Sprintf(`{"version":1,"timestamp":%d,"data":[
			{"key":"server.request:count","value":"%d","desc":"Requests.","lvl":1},
			{"key":"cache.size:current","value":"%d","desc":"","lvl":2},
			{"key":"state:last","value":"running"},
			{"key":"req:max-us","value":"1500"}]}`, ts, count, count%50)
		mu.Unlock()
		io.WriteString(w, body)
	}))
	defer srv.Close()
	p := start(t, t.TempDir(), "-glo-poll", srv.URL+"/?token=secret,prefix=app,every=100ms")
	poll := func() ingest.GloPollStats {
		var st ingest.GloPollStats
		p.section("glo-poll.app", &st)
		return st
	}
	waitFor(t, "five documents written", func() bool { return poll().Written >= 5*3 })
	var h struct{ Points [][2]float64 }
	p.get("/api/v1/series/app.server.request.count/history", &h)
	if len(h.Points) < 5 {
		t.Fatalf("history %v", h.Points)
	}
	for i, pt := range h.Points {
		// Each point is at its document's timestamp: 1 s apart, the total
		// 7 more each time.
		if i > 0 && (pt[0]-h.Points[i-1][0] != 1000 || pt[1]-h.Points[i-1][1] != 7) {
			t.Fatalf("points %v", h.Points)
		}
	}
	var s struct{ Type string }
	p.get("/api/v1/series/app.server.request.count", &s)
	var g struct{ Type string }
	p.get("/api/v1/series/app.cache.size.current", &g)
	if s.Type != "COUNTER" || g.Type != "GAUGE" {
		t.Fatalf("types %q and %q", s.Type, g.Type)
	}
	if code, _ := p.getRaw("/api/v1/series/app.state.last"); code != http.StatusNotFound {
		t.Fatalf("a string value was stored: %d", code)
	}
	if st := poll(); st.Skipped == 0 || st.Failing || st.Failures != 0 {
		t.Fatalf("stats %+v", st)
	}

	down.Store(true)
	waitFor(t, "five failed polls", func() bool { return poll().Failures >= 5 })
	if st := poll(); !st.Failing || st.Outages != 1 || !strings.Contains(st.Error, "503") {
		t.Fatalf("stats while down %+v", st)
	}
	down.Store(false)
	waitFor(t, "the poll answering again", func() bool { return !poll().Failing })
	evs := p.listEvents("service=%5Eapp%24")
	var msgs []string
	for _, ev := range evs {
		msgs = append(msgs, ev.Message)
		if strings.Contains(ev.Message, "secret") {
			t.Fatalf("an event shows the URL's token: %q", ev.Message)
		}
	}
	if len(evs) != 2 || !strings.Contains(msgs[1], "is failing: get: 503") || !strings.Contains(msgs[0], "answers again") {
		t.Fatalf("events of the outage (newest first): %q", msgs)
	}
	// A document with the timestamp of the one before is nothing new.
	before := poll()
	mu.Lock()
	ts -= 1000
	mu.Unlock()
	waitFor(t, "a stale document", func() bool { return poll().Stale > before.Stale })
}
