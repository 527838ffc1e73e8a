package main

import (
	"encoding/json"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// counters is what /api/v1/stats says of one listener, every listener's
// fields together (a field a listener lacks reads 0).
type counters struct {
	Commands    int64 `json:"commands"`
	Lines       int64 `json:"lines"`
	BadLines    int64 `json:"bad_lines"`
	BadKeys     int64 `json:"bad_keys"`
	Written     int64 `json:"written"`
	Values      int64 `json:"values"`
	BadRequests int64 `json:"bad_requests"`
}

func (p *proc) counters(name string) counters {
	p.t.Helper()
	var c counters
	p.section(name, &c)
	return c
}

// section decodes the member name of /api/v1/stats into v.
func (p *proc) section(name string, v any) {
	p.t.Helper()
	var all map[string]json.RawMessage
	p.get("/api/v1/stats", &all)
	if err := json.Unmarshal(all[name], v); err != nil {
		p.t.Fatalf("stats of %s: %v", name, err)
	}
}

// keys returns the keys /data holds.
func (p *proc) keys() []string {
	p.t.Helper()
	var data map[string]any
	p.get("/data", &data)
	var keys []string
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// exchange sends payload on a new connection to addr, closes its writing
// side and returns the lines the server sent until it closed the
// connection, which it does once it has taken and counted every line.
func exchange(t *testing.T, addr, payload string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("close the writing side: %v", err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read the replies: %v", err)
	}
	if len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\r\n"), "\r\n")
}

// TestInvalidUTF8Keys is issue 10's bug 7 over a raw socket: two keys
// that are not UTF-8 used to be stored, and /data showed both as
// "\ufffd\ufffd". Both lines are refused and counted; nothing is stored.
func TestInvalidUTF8Keys(t *testing.T) {
	p := start(t, t.TempDir())
	got := exchange(t, p.tcpAddr, "SET \xff\xfe 1\nSET \xff\xfd 2\n")
	want := []string{"-ERR syntax: key is not valid UTF-8 (byte 0xff at 0)", "-ERR syntax: key is not valid UTF-8 (byte 0xff at 0)"}
	if !slices.Equal(got, want) {
		t.Fatalf("replies %q, want %q", got, want)
	}
	if k := p.keys(); len(k) != 0 {
		t.Errorf("/data holds %q, want nothing", k)
	}
	if c := p.counters("tcp"); c.BadLines != 2 || c.BadKeys != 2 || c.Commands != 0 {
		t.Errorf("tcp stats %+v, want 2 bad lines, both bad keys, no command", c)
	}
}

// TestInvalidUTF8Graphite: Graphite answers nothing, so refused paths and
// tags show only in its counters, and in what is not stored.
func TestInvalidUTF8Graphite(t *testing.T) {
	p := start(t, t.TempDir())
	got := exchange(t, p.graphiteAddr, "ok.load 1\nweb\xff.load 2\nweb\xfe.load 3\ndisk;host=h\xc3 4\ndisk;\xfdhost=h 5\n")
	if len(got) != 0 {
		t.Errorf("graphite answered %q", got)
	}
	if c := p.counters("graphite"); c.Commands != 1 || c.BadLines != 4 || c.BadKeys != 4 {
		t.Errorf("graphite stats %+v, want 1 command and 4 bad lines, all bad keys", c)
	}
	if k := p.keys(); !slices.Equal(k, []string{"ok.load"}) {
		t.Errorf("/data holds %q, want only ok.load", k)
	}
}

// TestInvalidUTF8Statsd: statsd cleans names by dropping what is not
// ASCII, so a\xffb and a\xfeb both became "ab"; they are refused instead,
// in names and in tags.
func TestInvalidUTF8Statsd(t *testing.T) {
	p := start(t, t.TempDir(), "-statsd-flush", "1h")
	conn, err := net.Dial("udp", p.statsdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ok:1|c\na\xffb:1|c\nx:1|c|#env:a\xfdb")); err != nil {
		t.Fatal(err)
	}
	var c counters
	p.poll("the datagram's 3 lines taken", func() bool {
		c = p.counters("statsd")
		return c.Lines+c.BadLines == 3 && c.Written == c.Lines
	})
	if c.Lines != 1 || c.BadLines != 2 || c.BadKeys != 2 {
		t.Errorf("statsd stats %+v, want 1 good line, 2 bad lines, both bad keys", c)
	}
	if k := p.keys(); !slices.Equal(k, []string{"stats_counts.ok"}) {
		t.Errorf("/data holds %q, want only stats_counts.ok", k)
	}
}

// TestInvalidUTF8Collectd: JSON decoding turns invalid UTF-8 and lone
// surrogate escapes into U+FFFD without a word, and PUTVAL took the raw
// bytes; both formats now refuse the body with 400 and count it.
func TestInvalidUTF8Collectd(t *testing.T) {
	p := start(t, t.TempDir())
	own, routed := "http://"+p.collectdAddr+"/", p.url("/collectd")
	for _, c := range []struct {
		url, body, want string
	}{
		{own, "[{\"values\":[1],\"dstypes\":[\"gauge\"],\"dsnames\":[\"value\"],\"host\":\"web\xff\",\"plugin\":\"load\",\"type\":\"gauge\"}]",
			"value list 0: syntax: host is not valid UTF-8 (byte 0xff at 3)"},
		{routed, `[{"values":[1],"dstypes":["gauge"],"dsnames":["value"],"host":"web","plugin":"load","type":"gauge","type_instance":"\ud800"}]`,
			`value list 0: syntax: type_instance is not valid UTF-8 (lone surrogate \ud800 at 0)`},
		{own, "PUTVAL web/load-\xfe/gauge N:1", "line 1: syntax: identifier is not valid UTF-8 (byte 0xfe at 9)"},
		{routed, "PUTVAL \"web/load/gauge-\xc3\" N:1", "line 1: syntax: identifier is not valid UTF-8 (byte 0xc3 at 15)"},
	} {
		code, m := post(t, c.url, "application/octet-stream", c.body)
		if code != 400 || m["error"] != c.want {
			t.Errorf("post %q: %d %v, want 400 %q", c.body, code, m, c.want)
		}
	}
	if c := p.counters("collectd"); c.BadRequests != 4 || c.BadKeys != 4 || c.Values != 0 {
		t.Errorf("collectd stats %+v, want 4 bad requests, all bad keys, no value", c)
	}
	if k := p.keys(); len(k) != 0 {
		t.Errorf("/data holds %q, want nothing", k)
	}
}
