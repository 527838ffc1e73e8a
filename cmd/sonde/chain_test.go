package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// followStats is one follower's section of /api/v1/stats.
type followStats struct {
	Connected bool   `json:"connected"`
	Cursor    uint64 `json:"cursor"`
	Connects  int64  `json:"connects"`
	Changes   int64  `json:"changes"`
	Dumps     int64  `json:"dumps"`
	Resets    int64  `json:"resets"`
	Refused   int64  `json:"refused"`
}

func (p *proc) follower(name string) followStats {
	p.t.Helper()
	var st followStats
	p.section("upstream."+name, &st)
	return st
}

// data returns /data as a map.
func (p *proc) data() map[string]float64 {
	p.t.Helper()
	m := map[string]float64{}
	p.get("/data", &m)
	return m
}

// chainLoad writes to the upstream's command port until stop, over one
// connection at a time, reconnecting when the upstream is killed: SETs of
// increasing values to gauges, INCRs of counters with a 1 s window, and
// DELETEs. It counts the writes acknowledged.
func chainLoad(addr func() string, id int, stop <-chan struct{}, acked *atomic.Int64) {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	next := map[string]int{}
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := net.DialTimeout("tcp", addr(), time.Second)
		if err != nil {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond): // the upstream is restarting
			}
			continue
		}
		br := bufio.NewReader(c)
		for {
			var b strings.Builder
			for range 64 {
				switch r := rng.IntN(100); {
				case r < 90:
					k := fmt.Sprintf("g%d.%d", id, rng.IntN(200))
					next[k]++
					fmt.Fprintf(&b, "SET %s %d\n", k, next[k])
				case r < 97:
					fmt.Fprintf(&b, "INCR n%d.%d 1 1000\n", id, rng.IntN(20))
				default:
					fmt.Fprintf(&b, "DELETE g%d.%d\n", id, rng.IntN(200))
				}
			}
			if _, err := c.Write([]byte(b.String())); err != nil {
				break
			}
			failed := false
			for range 64 {
				line, err := br.ReadString('\n')
				if err != nil {
					failed = true
					break
				}
				if strings.HasPrefix(line, "+OK") {
					acked.Add(1)
				}
			}
			if failed {
				break
			}
			select {
			case <-stop:
				c.Close()
				return
			default:
			}
		}
		c.Close()
	}
}

// TestChaining: a downstream Sonde follows an upstream one's event stream
// under a prefix while 100,000 changes are written upstream, and each side
// is killed with SIGKILL once under that load. At the end the downstream's
// keys under the prefix are the upstream's, with the same values, its
// cursor is the upstream's last event, and each gauge's history holds the
// upstream's points once each: no change lost, none applied twice.
func TestChaining(t *testing.T) {
	const total = 100_000
	upDir, downDir := t.TempDir(), t.TempDir()
	up := start(t, upDir)
	upTCP, upHTTP := up.tcpAddr, up.httpAddr
	var upMu sync.Mutex
	upAddr := func() string { upMu.Lock(); defer upMu.Unlock(); return upTCP }
	downFlags := []string{"-upstream", "http://" + upHTTP + "/events", "-upstream-prefix", "up"}
	down := start(t, downDir, downFlags...)
	down.poll("the first dump", func() bool { return down.follower("up").Dumps == 1 })

	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { chainLoad(upAddr, i, stop, &acked) })
	}
	waitAcked := func(n int64) {
		t.Helper()
		up.poll(fmt.Sprintf("%d writes acknowledged", n), func() bool { return acked.Load() >= n })
	}
	waitAcked(total * 3 / 10)
	down.kill()
	t.Logf("downstream killed at %d acknowledged writes, cursor then unknown", acked.Load())
	down = start(t, downDir, downFlags...)
	waitAcked(total * 6 / 10)
	// The downstream is following when the upstream dies.
	if !down.follower("up").Connected {
		down.poll("the downstream reconnected", func() bool { return down.follower("up").Connected })
	}
	up.kill()
	t.Logf("upstream killed at %d acknowledged writes", acked.Load())
	up = start(t, upDir, "-tcp", upTCP, "-http", upHTTP)
	waitAcked(total)
	close(stop)
	wg.Wait()

	// Converged: the cursor is the upstream's last event (idle counter
	// windows end for a couple of seconds after the load) and the states
	// under the prefix are equal.
	var want, got map[string]float64
	deadline := time.Now().Add(2 * time.Minute)
	for {
		idx := up.index()
		want, got = up.data(), down.data()
		st := down.follower("up")
		if st.Cursor == idx && sameUnder(want, got, "up.") && up.index() == idx {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged: upstream at %d, cursor %d (%+v); %s", idx, st.Cursor, st, diffUnder(want, got, "up."))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The restarted downstream resumed from its cursor each time it
	// connected (no dump, no reset): after its own kill, and after the
	// upstream's.
	st := down.follower("up")
	if st.Dumps != 0 || st.Resets != 0 || st.Refused != 0 || st.Connects < 2 {
		t.Fatalf("follower stats %+v: want two exact resumes or more, no dump, nothing refused", st)
	}
	// Every change a point, once: each gauge's history downstream is the
	// upstream's values, in order (the downstream stamps its own times).
	var uh, dh historyMany
	up.get("/api/v1/history?match=g*", &uh)
	down.get("/api/v1/history?match=up.g*", &dh)
	downPoints := map[string][][2]float64{}
	for _, s := range dh.Series {
		downPoints[s.Key] = s.Points
	}
	checked, points := 0, 0
	for _, s := range uh.Series {
		d := downPoints["up."+s.Key]
		if len(s.Points) != len(d) {
			t.Fatalf("%s: %d points upstream, %d downstream", s.Key, len(s.Points), len(d))
		}
		for j := range d {
			if s.Points[j][1] != d[j][1] {
				t.Fatalf("%s: point %d is %v upstream, %v downstream", s.Key, j, s.Points[j][1], d[j][1])
			}
		}
		checked++
		points += len(d)
	}
	if checked == 0 || checked != len(dh.Series) {
		t.Fatalf("%d gauges upstream, %d downstream", checked, len(dh.Series))
	}
	t.Logf("%d writes acknowledged upstream, %d keys equal, cursor %d, %d connects; all %d gauges' histories equal (%d points)",
		acked.Load(), len(want), st.Cursor, st.Connects, checked, points)
}

func sameUnder(up, down map[string]float64, prefix string) bool {
	n := 0
	for k, v := range down {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		n++
		if w, ok := up[strings.TrimPrefix(k, prefix)]; !ok || w != v {
			return false
		}
	}
	return n == len(up)
}

func diffUnder(up, down map[string]float64, prefix string) string {
	var out []string
	for k, v := range up {
		if w, ok := down[prefix+k]; !ok || w != v {
			out = append(out, fmt.Sprintf("%s: %v upstream, %v (%v) downstream", k, v, w, ok))
		}
	}
	for k := range down {
		if _, ok := up[strings.TrimPrefix(k, prefix)]; strings.HasPrefix(k, prefix) && !ok {
			out = append(out, fmt.Sprintf("%s only downstream", k))
		}
	}
	slices.Sort(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("and %d more", len(out)-10))
	}
	return fmt.Sprintf("%d differences: %s", len(out), strings.Join(out, "; "))
}

// TestUpstreamFlags: -upstream and -upstream-prefix pair by rank, and a
// prefix may not cover Sonde's own keys or another follower's.
func TestUpstreamFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-upstream", "http://x/events"}, "give one prefix per upstream"},
		{[]string{"-upstream", "http://x/events", "-upstream-prefix", "a", "-upstream", "http://y/events", "-upstream-prefix", "a.b"}, "one covers the other"},
		{[]string{"-upstream", "http://x/events", "-upstream-prefix", "sonde"}, "Sonde's own"},
		{[]string{"-upstream", "http://x/events", "-upstream-prefix", "a b"}, "space"},
		{[]string{"-upstream", "http://x/events", "-upstream-prefix", "a."}, "ends in a dot"},
	} {
		if _, err := parseFlags(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error saying %q", c.args, err, c.want)
		}
	}
	if _, err := parseFlags([]string{"-upstream", "http://x/events", "-upstream-prefix", "a", "-upstream", "http://y/events", "-upstream-prefix", "ab"}); err != nil {
		t.Errorf("two prefixes apart: %v", err)
	}
}

// TestUpstreamStartupFails: when startup fails after the followers are
// made (here the HTTP port is taken, or the second -upstream is no URL),
// Sonde exits with the error rather than wait for followers that never
// ran.
func TestUpstreamStartupFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-http", busy.Addr().String(), "-upstream", "http://127.0.0.1:9/events", "-upstream-prefix", "a"}, "address already in use"},
		{[]string{"-upstream", "http://127.0.0.1:9/events", "-upstream-prefix", "a", "-upstream", "ftp://x", "-upstream-prefix", "b"}, "want an http"},
	} {
		args := append([]string{"-data", t.TempDir(), "-tcp", "127.0.0.1:0", "-graphite", "", "-statsd", "", "-collectd", "", "-logatron", ""}, c.args...)
		done := make(chan struct{})
		var code int
		var out string
		go func() {
			defer close(done)
			code, out = sondeCmd(t, args...)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%q: sonde did not exit", c.args)
		}
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("%q: exit %d, %q; want a failure saying %q", c.args, code, out, c.want)
		}
	}
}

// TestUpstreamIsSelf: a server told to follow its own event stream finds
// its own instance id there, says so and stores nothing.
func TestUpstreamIsSelf(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := start(t, t.TempDir(), "-http", addr, "-upstream", "http://"+addr+"/events", "-upstream-prefix", "me")
	p.poll("the refusal in the log", func() bool { return strings.Contains(p.logText(), "the upstream is this server") })
	dial(t, p.tcpAddr).do(t, "SET x 1")
	if st := p.follower("me"); st.Connects != 0 || st.Changes != 0 {
		t.Fatalf("follower stats %+v: it followed itself", st)
	}
	if n := strings.Count(p.logText(), "the upstream is this server"); n != 1 {
		t.Fatalf("the refusal was logged %d times, want once", n)
	}
}

// converge waits until the follower's cursor is upstream's index and the
// states under the prefix are equal.
func converge(t *testing.T, up, down *proc, prefix string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		idx := up.index()
		want, got := up.data(), down.data()
		if st := down.follower(strings.TrimSuffix(prefix, ".")); st.Cursor == idx && sameUnder(want, got, prefix) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged: upstream at %d, follower %+v; %s", idx, down.follower(strings.TrimSuffix(prefix, ".")), diffUnder(want, got, prefix))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func setKeys(t *testing.T, p *proc, prefix string, n int) {
	t.Helper()
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("SET %s%02d %d", prefix, i, i)
	}
	for _, r := range dial(t, p.tcpAddr).do(t, lines...) {
		if r != "+OK" {
			t.Fatal(r)
		}
	}
}

// TestChainingUpstreamReplaced: an upstream whose data directory is
// replaced, by a fresh one or by a restore from a backup, gives out again
// ids the follower had from the old one. When it has passed the
// follower's cursor by the time the follower comes back, the follower
// must not resume there: its epoch (docs/format/epochs.md) is one the
// upstream does not vouch for, so it gets a reset, and ends with
// upstream's state.
func TestChainingUpstreamReplaced(t *testing.T) {
	for _, how := range []string{"wiped", "restored"} {
		t.Run(how, func(t *testing.T) {
			upDir, downDir := t.TempDir(), t.TempDir()
			up := start(t, upDir)
			upFlags := []string{"-tcp", up.tcpAddr, "-http", up.httpAddr}
			downFlags := []string{"-upstream", "http://" + up.httpAddr + "/events", "-upstream-prefix", "up"}
			setKeys(t, up, "old.k", 10)
			backup := t.TempDir()
			if how == "restored" {
				if up.stop() != 0 {
					t.Fatal("upstream stop")
				}
				copyDir(t, upDir, backup)
				up = start(t, upDir, upFlags...)
			}
			down := start(t, downDir, downFlags...)
			setKeys(t, up, "later.k", 10) // ids past the backup
			converge(t, up, down, "up.")
			cursor := down.follower("up").Cursor
			down.kill()
			up.kill()
			switch how {
			case "wiped":
				upDir = t.TempDir()
			case "restored":
				os.RemoveAll(upDir)
				copyDir(t, backup, upDir)
			}
			up = start(t, upDir, upFlags...)
			setKeys(t, up, "new.k", 30) // past the follower's cursor
			if idx := up.index(); idx <= cursor {
				t.Fatalf("upstream at %d, the follower's cursor %d: the case needs upstream past it", idx, cursor)
			}
			down = start(t, downDir, downFlags...)
			converge(t, up, down, "up.")
			if st := down.follower("up"); st.Resets != 1 {
				t.Fatalf("follower %+v: want one reset", st)
			}
		})
	}
}

// TestEventsEpoch: /events says its epoch; a client that resumes with it
// is resumed, one with an epoch the store does not know (or an id it no
// longer vouches for) gets a reset, one with no epoch is resumed as a
// browser's EventSource is; an epoch that is not a number is a 400.
func TestEventsEpoch(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	setKeys(t, p, "k", 3)
	first := func(epoch string) (string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", p.url("/events"), nil)
		req.Header.Set("Last-Event-ID", "1")
		if epoch != "" {
			req.Header.Set("X-Sonde-Epoch", epoch)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return resp.Status, ""
		}
		br := bufio.NewReader(resp.Body)
		line, _ := br.ReadString('\n')
		if strings.HasPrefix(line, "id:") { // the event type follows the id
			line, _ = br.ReadString('\n')
		}
		return resp.Header.Get("X-Sonde-Epoch"), strings.TrimSpace(line)
	}
	epoch, line := first("")
	if epoch == "" || line != ": resumed" {
		t.Fatalf("no epoch sent: epoch %q, first line %q", epoch, line)
	}
	if _, line := first(epoch); line != ": resumed" {
		t.Fatalf("the current epoch: first line %q", line)
	}
	if _, line := first("12345"); line != "event: reset" {
		t.Fatalf("an unknown epoch: first line %q", line)
	}
	if status, _ := first("x"); !strings.HasPrefix(status, "400") {
		t.Fatalf("a bad epoch: %s", status)
	}
	// After a restart the old epoch vouches for the ids it had (1..3).
	if p.stop() != 0 {
		t.Fatal("stop")
	}
	p = start(t, dir)
	if now, line := first(epoch); now == epoch || line != ": resumed" {
		t.Fatalf("after a restart: epoch %q (was %q), first line %q", now, epoch, line)
	}
}
