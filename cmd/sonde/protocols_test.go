package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"
)

// listenerStats is what /api/v1/stats says of one line listener.
type listenerStats struct {
	Commands int64 `json:"commands"`
	BadLines int64 `json:"bad_lines"`
	Failed   int64 `json:"failed"`
}

// waitStats polls /api/v1/stats until cond holds for the named section:
// protocols that answer nothing say what they took only there.
func (p *proc) waitStats(name string, cond func(listenerStats) bool) listenerStats {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var all map[string]json.RawMessage
		p.get("/api/v1/stats", &all)
		var st listenerStats
		if err := json.Unmarshal(all[name], &st); err != nil {
			p.t.Fatalf("stats of %s: %v", name, err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s stats never got there: %+v", name, st)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter; there is no event to wait on
	}
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
	c, err := net.Dial("tcp", p.graphiteAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
