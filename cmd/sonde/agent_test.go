package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine"
)

// agentProc is a running `sonde agent`, its JSON log read line by line.
type agentProc struct {
	t        *testing.T
	cmd      *exec.Cmd
	exited   chan struct{}
	mu       sync.Mutex
	measured []int64 // the times of its measurements, in order
	logs     []string
	changed  chan struct{} // poked after each log line
}

func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"agent", "-log-format", "json", "-log-level", "debug"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{t: t, cmd: cmd, exited: make(chan struct{}), changed: make(chan struct{}, 1)}
	go func() {
		// The log is read to its end before Wait, which closes the pipe:
		// once exited is closed every line is in.
		defer close(a.exited)
		defer cmd.Wait()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m struct {
				Msg string `json:"msg"`
				At  int64  `json:"at"`
			}
			json.Unmarshal(sc.Bytes(), &m)
			a.mu.Lock()
			a.logs = append(a.logs, sc.Text())
			if m.Msg == "measured" {
				a.measured = append(a.measured, m.At)
			}
			a.mu.Unlock()
			select {
			case a.changed <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-a.exited:
		default:
			cmd.Process.Signal(syscall.SIGKILL)
			<-a.exited
		}
		if t.Failed() {
			a.mu.Lock()
			t.Logf("agent log:\n%s", strings.Join(a.logs, "\n"))
			a.mu.Unlock()
		}
	})
	return a
}

// waitLog waits until cond holds of the measurement times and the log
// lines, each time the agent logs a line, for at most 60 s.
func (a *agentProc) waitLog(what string, cond func(measured []int64, logs []string) bool) {
	a.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		a.mu.Lock()
		ok := cond(a.measured, a.logs)
		a.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-a.changed:
		case <-a.exited:
			a.t.Fatalf("agent exited while waiting for %s", what)
		case <-deadline:
			a.t.Fatalf("agent: no %s within 60 s", what)
		}
	}
}

// stop sends SIGTERM and waits for the exit.
func (a *agentProc) stop() {
	a.t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		a.t.Fatal("agent did not stop within 30 s of SIGTERM")
	}
}

func (a *agentProc) times() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.measured)
}

// pointTimes is the times of a key's stored and recent points.
func pointTimes(t *testing.T, p *proc, key string) []int64 {
	t.Helper()
	var out []int64
	for _, pt := range p.history(key) {
		out = append(out, int64(pt[0]))
	}
	return out
}

// TestAgent: two agents with their own -name make two hosts, each
// sending a point per interval at the time it measured it. The server
// is killed with SIGKILL and comes back 25 intervals later: the points
// measured in the gap arrive with their own times, and no point is
// stored twice.
func TestAgent(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	const interval = 200 * time.Millisecond
	a := startAgent(t, "-server", p.tcpAddr, "-interval", interval.String(), "-name", "alpha")
	b := startAgent(t, "-server", p.tcpAddr, "-interval", interval.String(), "-name", "beta")
	key := "alpha.agent.interval" // in every measurement

	// A point per interval, at its measured time, for both hosts.
	a.waitLog("5 measurements", func(m []int64, _ []string) bool { return len(m) >= 5 })
	want := a.times()
	p.poll("alpha's first 5 measurements stored", func() bool { return len(pointTimes(t, p, key)) >= len(want) })
	if got := pointTimes(t, p, key)[:len(want)]; !slices.Equal(got, want) {
		t.Fatalf("stored times %v, measured %v", got, want)
	}
	var data map[string]float64
	p.get("/data", &data)
	for _, host := range []string{"alpha", "beta"} {
		for _, k := range []string{"load.average-1", "memory.percent-free", "memory.used", "disk.percent-used", "cpu.percent-used",
			"network.rx-bytes-per-second", "agent.interval", "agent.dropped"} {
			if _, ok := data[host+"."+k]; !ok {
				t.Errorf("no %s.%s in /data: %v", host, k, data)
			}
		}
		if data[host+".agent.interval"] != interval.Seconds() || data[host+".agent.dropped"] != 0 {
			t.Errorf("%s announces interval %v, dropped %v", host, data[host+".agent.interval"], data[host+".agent.dropped"])
		}
		if v := data[host+".memory.percent-free"]; v <= 0 || v > 100 {
			t.Errorf("%s.memory.percent-free = %v", host, v)
		}
	}

	// kill -9, and 25 intervals without a server.
	p.kill()
	killed := len(a.times())
	a.waitLog("25 measurements with the server down", func(m []int64, _ []string) bool { return len(m) >= killed+25 })
	p = start(t, dir, "-tcp", p.tcpAddr)
	gapEnd := a.times()
	for _, ag := range []struct {
		key  string
		till int64
	}{{key, gapEnd[len(gapEnd)-1]}, {"beta.agent.interval", b.times()[len(b.times())-1]}} {
		p.poll("the gap's points stored", func() bool {
			got := pointTimes(t, p, ag.key)
			return len(got) > 0 && got[len(got)-1] >= ag.till
		})
	}
	a.stop()
	b.stop()
	for _, ag := range []*agentProc{a, b} {
		ag.mu.Lock()
		last := ag.logs[len(ag.logs)-1]
		ag.mu.Unlock()
		if !strings.Contains(last, `"unsent_points":0`) || !strings.Contains(last, `"dropped_points":0`) {
			t.Errorf("agent stopped with: %s", last)
		}
	}
	// Every measurement stored once, at its own time: the agent drained
	// what it held before it stopped (unsent_points 0).
	want = a.times()
	got := pointTimes(t, p, key)
	if !slices.Equal(got, want) {
		t.Fatalf("stored %d points, measured %d:\nstored   %v\nmeasured %v", len(got), len(want), got, want)
	}
	if n := len(pointTimes(t, p, "beta.agent.interval")); n != len(b.times()) {
		t.Errorf("beta: %d points stored, %d measured", n, len(b.times()))
	}
	t.Logf("alpha: %d measurements, %d of them while the server was down", len(want), len(gapEnd)-killed)
}

// TestAgentFlags: a -name that would not be one key segment is refused,
// and a hostname is made one.
func TestAgentFlags(t *testing.T) {
	for _, bad := range []string{"a.b", "a b", "a\x01", strings.Repeat("x", 129)} {
		if _, err := parseAgentFlags([]string{"-name", bad}, io.Discard); err == nil {
			t.Errorf("-name %q taken", bad)
		}
	}
	if _, err := parseAgentFlags([]string{"-interval", "1ms"}, io.Discard); err == nil {
		t.Error("-interval 1ms taken")
	}
	if got := hostKey("web01.example.com"); got != "web01_example_com" {
		t.Errorf("hostKey = %q", got)
	}
	c, err := parseAgentFlags(nil, io.Discard)
	if err != nil || c.name == "" || strings.Contains(c.name, ".") {
		t.Errorf("default name %q, %v", c.name, err)
	}
}

// TestAgentResendsUnansweredPoints: the replies to a batch the server has
// stored are lost (a proxy between the agent and the server reads them
// and drops the connection). The agent sends the batch again on a new
// connection, the server answers +OK and stores nothing twice.
func TestAgentResendsUnansweredPoints(t *testing.T) {
	p := start(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var armed atomic.Bool
	dropped := make(chan struct{})
	var mu sync.Mutex
	sent := map[string]int{} // the lines the agent sent, and how often
	go func() {
		for {
			ac, err := ln.Accept()
			if err != nil {
				return
			}
			sc, err := net.Dial("tcp", p.tcpAddr)
			if err != nil {
				ac.Close()
				continue
			}
			// agent → server, line by line, counting each line. Every line
			// the agent sends is counted, until it hangs up, even after the
			// server side is cut: the server may have answered part of a
			// batch the proxy was still forwarding line by line.
			go func() {
				defer ac.Close()
				defer sc.Close()
				lr := bufio.NewScanner(ac)
				cut := false
				for lr.Scan() {
					mu.Lock()
					sent[lr.Text()]++
					mu.Unlock()
					if !cut {
						_, err := sc.Write(append(lr.Bytes(), '\n'))
						cut = err != nil
					}
				}
			}()
			go func() {
				// The agent reads the end of the replies; what it sends is
				// still read and counted above.
				defer ac.(*net.TCPConn).CloseWrite()
				buf := make([]byte, 64<<10)
				for {
					n, err := sc.Read(buf)
					if err != nil {
						return
					}
					if armed.CompareAndSwap(true, false) {
						sc.Close() // the server stored the batch and answered; the agent never hears it
						close(dropped)
						return
					}
					if _, err := ac.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	a := startAgent(t, "-server", ln.Addr().String(), "-interval", "100ms", "-name", "gamma")
	key := "gamma.agent.interval"
	a.waitLog("3 measurements", func(m []int64, _ []string) bool { return len(m) >= 3 })
	armed.Store(true)
	select {
	case <-dropped:
	case <-time.After(60 * time.Second):
		t.Fatal("no reply went through the proxy within 60 s")
	}
	a.waitLog("a new connection", func(_ []int64, logs []string) bool {
		return strings.Count(strings.Join(logs, "\n"), `"msg":"connected"`) >= 2
	})
	n := len(a.times()) + 3
	a.waitLog("3 more measurements", func(m []int64, _ []string) bool { return len(m) >= n })
	last := a.times()[n-1]
	p.poll("the measurements after the lost replies stored", func() bool {
		got := pointTimes(t, p, key)
		return len(got) > 0 && got[len(got)-1] >= last
	})
	a.stop()
	if got, want := pointTimes(t, p, key), a.times(); !slices.Equal(got, want) {
		t.Fatalf("stored %d points, measured %d:\nstored   %v\nmeasured %v", len(got), len(want), got, want)
	}
	// The batch whose replies were lost went out again, whole.
	mu.Lock()
	defer mu.Unlock()
	twice := 0
	for line, n := range sent {
		if n > 2 {
			t.Errorf("%q sent %d times", line, n)
		}
		if n == 2 {
			twice++
		}
	}
	if twice < 8 { // a batch has 8 points or more
		t.Fatalf("%d lines sent twice: the unanswered batch was not sent again", twice)
	}
}

// TestTransientRefusal ties the agent's list of refusals to hold and send
// again to the engine's own errors, as the command listener writes them
// ("-ERR " and the error), so that rewording one does not make the agent
// drop points; a refusal for good stays one.
func TestTransientRefusal(t *testing.T) {
	for _, e := range []error{engine.ErrPaused, engine.ErrNotApplied, engine.ErrClosed} {
		if reply := "-ERR " + fmt.Errorf("%w: no space left on device", e).Error(); !transientRefusal(reply) {
			t.Errorf("%q is not taken as transient", reply)
		}
	}
	for _, e := range []error{engine.ErrOutOfOrder, engine.ErrValue, engine.ErrKind, engine.ErrTooManySeries} {
		if reply := "-ERR " + e.Error(); transientRefusal(reply) {
			t.Errorf("%q is taken as transient", reply)
		}
	}
}
