package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/ingest"
)

// logEntry is one [ms, message] of a client's log.
type logEntry struct {
	T    int64
	Text string
}

func (l *logEntry) UnmarshalJSON(b []byte) error {
	var pair []json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil || len(pair) != 2 {
		return fmt.Errorf("a log entry %s: want [ms, message]", b)
	}
	if err := json.Unmarshal(pair[0], &l.T); err != nil {
		return err
	}
	return json.Unmarshal(pair[1], &l.Text)
}

type clientDoc struct {
	Name                                  string
	Connected                             bool
	ConnectedAt, DisconnectedAt, LastLine *int64
	Lines, Sets                           uint64
	State                                 map[string]string
	Log                                   []logEntry
}

func (p *proc) clients() []clientDoc {
	p.t.Helper()
	var out struct{ Clients []clientDoc }
	if code := p.get("/api/v1/clients", &out); code != http.StatusOK {
		p.t.Fatalf("GET /api/v1/clients: %d", code)
	}
	return out.Clients
}

func (p *proc) client(name string) clientDoc {
	p.t.Helper()
	c, ok := p.clientIf(name)
	if !ok {
		p.t.Fatalf("GET /api/v1/clients/%s: no such client", name)
	}
	return c
}

// clientIf is client, false while there is none (it has not sent IAM yet).
func (p *proc) clientIf(name string) (clientDoc, bool) {
	p.t.Helper()
	var c clientDoc
	switch code := p.get("/api/v1/clients/"+name, &c); code {
	case http.StatusOK:
		return c, true
	case http.StatusNotFound:
		return c, false
	default:
		p.t.Fatalf("GET /api/v1/clients/%s: %d", name, code)
		return c, false
	}
}

func (p *proc) logatron() ingest.LogatronStats {
	p.t.Helper()
	var st ingest.LogatronStats
	p.section("logatron", &st)
	return st
}

func (p *proc) dialLogatron() net.Conn {
	p.t.Helper()
	c, err := net.Dial("tcp", p.addrs["logatron"].(string))
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

func texts(log []logEntry) []string {
	var out []string
	for _, l := range log {
		out = append(out, l.Text)
	}
	return out
}

// closedSilently waits for the server to close c, and checks that it
// wrote nothing on it.
func closedSilently(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Fatalf("%s: the server wrote %q", what, b)
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s: not closed by the server: %v", what, err)
	}
}

// clientEvents reads n events of a client stream, as kind:key=text.
func clientEvents(t *testing.T, stream <-chan event, n int) ([]string, []uint64) {
	t.Helper()
	var seen []string
	var ids []uint64
	for len(seen) < n {
		select {
		case ev := <-stream:
			var e struct{ Client, Kind, Key, Text string }
			if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
				t.Fatalf("stream event %q: %v", ev.data, err)
			}
			seen = append(seen, e.Client+" "+e.Kind+":"+e.Key+"="+e.Text)
			ids = append(ids, ev.id)
		case <-time.After(30 * time.Second):
			t.Fatalf("stream: only %q", seen)
		}
	}
	return seen, ids
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// TestLogatronSession: logatron's rules over a real socket: IAM first, one
// connection per name, '$' lines and other lines dropped, nothing ever
// written back, a long line or one key too many closes the connection;
// and the query routes and the stream show what was written.
func TestLogatronSession(t *testing.T) {
	p := start(t, t.TempDir(), "-logatron-max-keys", "3")
	stream := subscribePath(t, p, "/api/v1/clients.stream?client=worker1", 0)

	bad := p.dialLogatron()
	write(t, bad, "LOG before IAM\n")
	closedSilently(t, bad, "a first line that is not IAM")
	bad = p.dialLogatron()
	write(t, bad, "IAM two words\n")
	closedSilently(t, bad, "IAM of a name with a space")
	bad = p.dialLogatron()
	write(t, bad, "IAM "+strings.Repeat("n", 201)+"\n")
	closedSilently(t, bad, "IAM of a name past 200 bytes")
	bad = p.dialLogatron()
	write(t, bad, "IAM "+strings.Repeat("n", 5000)) // no end: more than its buffer holds
	closedSilently(t, bad, "an IAM line past 4 KiB")

	w1 := p.dialLogatron()
	write(t, w1, "IAM worker1\nLOG  hello  \nSET phase  running \nLOG a $ b\nSET k $x\nFOO bar\nLOG second\r\nSET empty\n\n\u2028LOG third\u2029")
	waitFor(t, "worker1's lines", func() bool {
		c, ok := p.clientIf("worker1")
		return ok && c.Lines == 3 && c.Sets == 2
	})
	c := p.client("worker1")
	if got, want := texts(c.Log), []string{"third", "second", "hello"}; !slices.Equal(got, want) {
		t.Fatalf("log %q, want %q (newest first)", got, want)
	}
	if want := map[string]string{"phase": "running", "empty": ""}; !maps.Equal(c.State, want) {
		t.Fatalf("state %v, want %v", c.State, want)
	}
	if !c.Connected || c.ConnectedAt == nil || c.DisconnectedAt != nil || c.LastLine == nil || c.Log[0].T < *c.ConnectedAt {
		t.Fatalf("worker1: %+v", c)
	}
	if st := p.logatron(); st.Dollar != 2 || st.Ignored != 1 || st.BadIAM != 4 || st.Written != 5 || st.Clients != 1 {
		t.Fatalf("stats %+v", st)
	}

	second := p.dialLogatron()
	write(t, second, "IAM worker1\nLOG from an impostor\n")
	closedSilently(t, second, "a second IAM of a connected name")
	if st := p.logatron(); st.NameConnected != 1 {
		t.Fatalf("stats %+v", st)
	}
	if code, body := p.send("DELETE", "/api/v1/clients/worker1", ""); code != http.StatusConflict {
		t.Fatalf("DELETE a connected client: %d %s", code, body)
	}

	long := p.dialLogatron()
	write(t, long, "IAM w3\nLOG kept\nLOG "+strings.Repeat("x", 5000)+"\nLOG after\n")
	closedSilently(t, long, "a line past -logatron-max-line")
	keys := p.dialLogatron()
	write(t, keys, "IAM w4\nSET a 1\nSET b 2\nSET c 3\nSET d 4\n")
	closedSilently(t, keys, "a key past -logatron-max-keys")
	waitFor(t, "w3 and w4 disconnected", func() bool {
		w3, ok3 := p.clientIf("w3")
		w4, ok4 := p.clientIf("w4")
		return ok3 && ok4 && !w3.Connected && !w4.Connected
	})
	if got := texts(p.client("w3").Log); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("w3's log %q", got)
	}
	if got := p.client("w4").State; len(got) != 3 || got["d"] != "" {
		t.Fatalf("w4's state %v", got)
	}
	if st := p.logatron(); st.TooLong != 1 || st.TooManyKeys != 1 {
		t.Fatalf("stats %+v", st)
	}

	// The end of the input ends the session: the server closes, having
	// written nothing in all of it; the disconnect is recorded.
	w1.(*net.TCPConn).CloseWrite()
	closedSilently(t, w1, "worker1 at the end of its input")
	waitFor(t, "worker1 disconnected", func() bool { return !p.client("worker1").Connected })
	if c := p.client("worker1"); c.DisconnectedAt == nil || *c.DisconnectedAt < *c.ConnectedAt {
		t.Fatalf("worker1 after its disconnect: %+v", c)
	}
	// The stream showed worker1's session as it happened, in order.
	seen, ids := clientEvents(t, stream, 7)
	want := []string{"worker1 connect:=", "worker1 log:=hello", "worker1 set:phase=running", "worker1 log:=second",
		"worker1 set:empty=", "worker1 log:=third", "worker1 disconnect:="}
	if !slices.Equal(seen, want) {
		t.Fatalf("stream %q, want %q", seen, want)
	}
	again := p.dialLogatron()
	write(t, again, "IAM worker1\nLOG back\n")
	waitFor(t, "worker1 back", func() bool { return p.client("worker1").Lines == 4 })
	if got := texts(p.client("worker1").Log); !slices.Equal(got, []string{"back", "third", "second", "hello"}) {
		t.Fatalf("log after a reconnect %q", got)
	}
	if seen, _ := clientEvents(t, stream, 2); !slices.Equal(seen, []string{"worker1 connect:=", "worker1 log:=back"}) {
		t.Fatalf("stream after the reconnect %q", seen)
	}
	// Resumed after the second event: the rest, from what the clients
	// hold (the last connect and disconnect of each).
	resumed := subscribePath(t, p, "/api/v1/clients.stream?client=worker1", ids[1])
	rest, _ := clientEvents(t, resumed, 7)
	if want := []string{"worker1 set:phase=running", "worker1 log:=second", "worker1 set:empty=", "worker1 log:=third",
		"worker1 disconnect:=", "worker1 connect:=", "worker1 log:=back"}; !slices.Equal(rest, want) {
		t.Fatalf("resumed stream %q, want %q", rest, want)
	}

	again.Close()
	waitFor(t, "worker1 disconnected again", func() bool { return !p.client("worker1").Connected })
	if code, body := p.send("DELETE", "/api/v1/clients/worker1", ""); code != http.StatusOK {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if code, _ := p.getRaw("/api/v1/clients/worker1"); code != http.StatusNotFound {
		t.Fatalf("GET a forgotten client: %d", code)
	}
}

// TestLogatronCrash: 100 clients log 10k lines a second together; Sonde
// is killed with SIGKILL while they do. After a restart each client's
// ring holds its newest lines, each once and in order, through at least
// the line the routes showed before the kill, and the clients hold every
// line the stats counted as written.
func TestLogatronCrash(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	const clients, every = 100, 10 * time.Millisecond // 100 lines/s each
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	for i := range clients {
		c := p.dialLogatron()
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("c%03d", i)
			if _, err := fmt.Fprintf(c, "IAM %s\n", name); err != nil {
				return
			}
			tick := time.NewTicker(every)
			defer tick.Stop()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				line := fmt.Sprintf("LOG %s n=%d\n", name, n)
				if n%10 == 0 {
					line += fmt.Sprintf("SET last %d\n", n)
				}
				if _, err := io.WriteString(c, line); err != nil {
					return // the server is gone
				}
				sent.Add(int64(strings.Count(line, "\n")))
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, "20k lines written", func() bool { return p.logatron().Written >= 20_000 })
	written := p.logatron().Written
	before := map[string]uint64{}
	for _, c := range p.clients() {
		before[c.Name] = c.Lines
	}
	p.kill()
	if len(before) != clients {
		t.Fatalf("%d clients listed before the kill", len(before))
	}

	p = start(t, dir, "-logatron", "")
	var total uint64
	for i := range clients {
		name := fmt.Sprintf("c%03d", i)
		c := p.client(name)
		if c.Connected {
			t.Fatalf("%s is connected after a restart", name)
		}
		if c.Lines < before[name] {
			t.Fatalf("%s: %d lines after the kill, %d before", name, c.Lines, before[name])
		}
		if want := min(int(c.Lines), 128); len(c.Log) != want {
			t.Fatalf("%s: %d lines in the ring, want %d", name, len(c.Log), want)
		}
		for j, l := range c.Log {
			if want := fmt.Sprintf("%s n=%d", name, int(c.Lines)-j); l.Text != want {
				t.Fatalf("%s: ring entry %d is %q, want %q (newest first, each once)", name, j, l.Text, want)
			}
			if j > 0 && l.T > c.Log[j-1].T {
				t.Fatalf("%s: ring entry %d is newer than the one before", name, j)
			}
		}
		last, _ := strconv.Atoi(c.State["last"])
		if top := int(c.Lines) / 10 * 10; (last != top && last != top-10) || c.Sets != uint64(last/10) {
			t.Fatalf("%s: %d lines, state last=%d after %d sets", name, c.Lines, last, c.Sets)
		}
		total += c.Lines + c.Sets
	}
	if total < uint64(written) {
		t.Fatalf("the clients hold %d lines; the stats counted %d written before the kill", total, written)
	}
	t.Logf("%d lines sent, %d counted written before the kill, %d held after", sent.Load(), written, total)
}
