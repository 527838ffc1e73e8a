package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// residentBytes is the server's resident set size, from /proc.
func (p *proc) residentBytes() int64 {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				p.t.Fatal(err)
			}
			return kb << 10
		}
	}
	p.t.Fatal("no VmRSS in /proc status")
	return 0
}

// walFirst is the first index the server's WAL holds.
func (p *proc) walFirst() uint64 {
	var st struct {
		Engine struct {
			First uint64 `json:"wal_first_index"`
		} `json:"engine"`
	}
	p.get("/api/v1/stats", &st)
	return st.Engine.First
}

// TestSSEResumeAfterTruncation: a client resuming from an id that neither
// memory nor the WAL holds any more gets an event of type "reset" holding
// the whole state, so it drops what was deleted meanwhile; before, it got
// a plain dump frame and kept the deleted key for ever.
func TestSSEResumeAfterTruncation(t *testing.T) {
	// Flags the release before the fix has too, so that this shows the bug
	// there: more changes than memory holds (65536), and more WAL than a
	// segment (8 MiB), so that a snapshot truncates it.
	p := start(t, t.TempDir(), "-snapshot-interval", "50ms", "-tcp-oneshot-idle", "-1s")
	c := dial(t, p.tcpAddr)
	if r := c.do(t, "SET crlf 1", "SET crx 2"); r[0] != "+OK" || r[1] != "+OK" {
		t.Fatal(r)
	}
	pad := strings.Repeat("p", 200)
	lines := make([]string, 0, 1000)
	for round := range 80 {
		lines = lines[:0]
		for i := range 1000 {
			lines = append(lines, fmt.Sprintf("SET other.%s.%d %d", pad, i, round))
		}
		c.do(t, lines...)
	}
	c.do(t, "DELETE crlf")
	p.poll("the WAL to be truncated past id 3", func() bool { return p.walFirst() > 3 })
	evs := subscribe(t, p, "?match=cr*", 2)
	ev := next(t, evs)
	if ev.event != "reset" || ev.data != `{"crx":2}` || ev.id < 80003 {
		t.Fatalf("first event of the resumed stream = %+v, want a reset holding only crx", ev)
	}
	c.do(t, "SET crz 3")
	if ev := next(t, evs); ev.event != "" || ev.data != `{"crz":3}` {
		t.Fatalf("live event after the reset = %+v", ev)
	}
	// A fresh subscriber's first frame stays a plain message (mesures).
	fresh := subscribe(t, p, "?match=cr*", 0)
	if ev := next(t, fresh); ev.event != "" || !strings.Contains(ev.data, `"crz":3`) {
		t.Fatalf("a fresh subscriber's dump = %+v", ev)
	}
}

// TestIdleWindowsCostNoDisk: a 1 ms window is refused; idle counters
// still send an event at every window end (mesures) but write nothing:
// the WAL index stands still while the events go on, each with the id of
// the newest stored change.
func TestIdleWindowsCostNoDisk(t *testing.T) {
	// The default flags, which the release before the fix has too.
	p := start(t, t.TempDir(), "-tcp-oneshot-idle", "-1s")
	c := dial(t, p.tcpAddr)
	if r := c.do(t, "INCR tick1 1 1")[0]; !strings.Contains(r, "shorter than the minimum of 1000 ms") {
		t.Fatalf("INCR with a 1 ms window: %q", r)
	}
	lines := make([]string, 0, 50)
	for i := range 50 {
		lines = append(lines, fmt.Sprintf("INCR idle.%d 1 1000", i))
	}
	for _, r := range c.do(t, lines...) {
		if r != "+OK" {
			t.Fatal(r)
		}
	}
	evs := subscribe(t, p, "?match=idle.*", 0)
	next(t, evs) // the dump
	// A follower's stream leaves the idle windows out (?ticks=0): a tick
	// repeats the id of the change before it, so ids there only go up.
	changesOnly := subscribe(t, p, "?match=idle.*&ticks=0", 0)
	next(t, changesOnly)
	// Each key: its INCR, a window that counted 1 and one that counted 0
	// are stored; from then on its windows are idle.
	p.poll("every key's windows to go idle", func() bool {
		var st struct {
			Engine struct {
				Idle uint64 `json:"idle_windows"`
			} `json:"engine"`
		}
		p.get("/api/v1/stats", &st)
		return st.Engine.Idle >= 50
	})
	stored := p.index()
	perKey := map[string]int{}
	for n := 0; n < 50*2; {
		ev := next(t, evs)
		if ev.id > stored {
			t.Fatalf("event %+v after the index stood at %d: an idle window was stored", ev, stored)
		}
		if ev.id == stored && strings.HasSuffix(ev.data, ":0}") {
			perKey[ev.data]++
			n++
		}
	}
	if len(perKey) != 50 {
		t.Fatalf("idle events for %d keys, want 50: %v", len(perKey), perKey)
	}
	if idx := p.index(); idx != stored {
		t.Fatalf("the WAL index moved from %d to %d while every counter was idle", stored, idx)
	}
	// A count after idleness is stored again.
	c.do(t, "INCR idle.7 4")
	for {
		ev := next(t, evs)
		if ev.data == `{"idle.7":4}` {
			if ev.id <= stored+1 {
				t.Fatalf("the window that counted 4 has id %d, want a stored change after %d", ev.id, stored+1)
			}
			break
		}
	}
	for last := uint64(0); ; {
		ev := next(t, changesOnly)
		if ev.id <= last {
			t.Fatalf("with ?ticks=0, event %+v after id %d: an idle window's end", ev, last)
		}
		last = ev.id
		if ev.data == `{"idle.7":4}` {
			break
		}
	}
	if code := p.get("/events?ticks=2", nil); code != 400 {
		t.Fatalf("?ticks=2: status %d, want 400", code)
	}
}

// TestStalledSubscribersMemory: 300 subscribers that never read, on a
// 5 MB dump, cost the server little memory (the dump is streamed from the
// live state, and blocks of frames are written from the shared blocks),
// and a live subscriber still gets its events. (TestStalledSubscriber
// shows a stalled one is cut off.)
func TestStalledSubscribersMemory(t *testing.T) {
	// Long timeouts: 300 streams formatting their dumps (under the race
	// detector) keep both cores busy while the rest connect.
	p := start(t, t.TempDir(), "-sse-write-timeout", "2m", "-http-header-timeout", "1m", "-max-conns", "2000", "-tcp-oneshot-idle", "-1s")
	c := dial(t, p.tcpAddr)
	const keys = 20990
	lines := make([]string, 0, 1000)
	for i := 0; i < keys; {
		lines = lines[:0]
		for ; len(lines) < 1000 && i < keys; i++ {
			lines = append(lines, fmt.Sprintf("SET %0255d %d", i, i))
		}
		for _, r := range c.do(t, lines...) {
			if r != "+OK" {
				t.Fatal(r)
			}
		}
	}
	base := p.residentBytes()
	var conns []*net.TCPConn
	for range 300 {
		conns = append(conns, openStalled(t, p))
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	waitFor(t, "300 subscribers", func() bool { return subscribers(t, p) == 300 })
	// Every stream has written as much of its dump as the client takes.
	waitFor(t, "every dump to stall", func() bool {
		for _, c := range conns {
			if unread(t, c) < 2048 {
				return false
			}
		}
		return true
	})
	grown := p.residentBytes() - base
	t.Logf("RSS %d MiB before the subscribers, +%d MiB with 300 stalled on a %d-key dump", base>>20, grown>>20, keys)
	if grown > 300<<20 {
		t.Fatalf("300 stalled subscribers added %d MiB of RSS, want < 300 MiB", grown>>20)
	}
	live := subscribe(t, p, "?match=live", 0)
	next(t, live)
	c.do(t, "SET live 1")
	if ev := next(t, live); ev.data != `{"live":1}` {
		t.Fatalf("live subscriber: %+v", ev)
	}
}

// unread is how many bytes wait in c's receive queue.
func unread(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	rc.Control(func(fd uintptr) {
		syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	})
	return n
}
