package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/bench"
	"github.com/sonde-metrics/sonde/engine/remotewrite"
)

// The remote_write tests send to real receivers from Debian's packages:
// VictoriaMetrics (its /api/v1/write) and Prometheus
// (--web.enable-remote-write-receiver), and read what they hold through
// their own query APIs.

// rwPoint is one point as a receiver holds it.
type rwPoint struct {
	ts int64
	v  float64
}

// startVM starts Debian's VictoriaMetrics, which drops a sample whose
// series already has one at that millisecond (-dedup.minScrapeInterval
// 1ms: its deduplication of replicated writes).
func startVM(t *testing.T) *bench.Server {
	t.Helper()
	vm, err := bench.StartVictoriaMetrics(context.Background(), "/usr/bin/victoria-metrics", t.TempDir(), "-dedup.minScrapeInterval", "1ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			t.Logf("victoria-metrics log:\n%s", vm.Log())
		}
	})
	return vm
}

// vmExport reads every series VictoriaMetrics holds that match selector,
// by the key Sonde sent it as (labels name="value" joined by ',', sorted,
// as remote_write sent them).
func vmExport(t *testing.T, addr, selector string) map[string][]rwPoint {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/internal/force_flush")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + addr + "/api/v1/export?match[]=" + url.QueryEscape(selector))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("export: %s", resp.Status)
	}
	out := map[string][]rwPoint{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			Metric     map[string]string `json:"metric"`
			Values     []float64         `json:"values"`
			Timestamps []int64           `json:"timestamps"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("export line: %v", err)
		}
		name := seriesName(line.Metric)
		for i, ts := range line.Timestamps {
			out[name] = append(out[name], rwPoint{ts, line.Values[i]})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// vmSeries waits until VictoriaMetrics finds n series for selector: it
// makes a new series searchable up to a second after it took it, even
// after /internal/force_flush.
//
// The range is given: without start and end, VictoriaMetrics' series API
// looks only at the current UTC day (Prometheus' at all time), so points
// written an hour ago are not found between 00:00 and 01:00 UTC. It keeps
// a month by default and takes samples up to two days ahead.
func vmSeries(t *testing.T, addr, selector string, n int) {
	t.Helper()
	q := url.Values{"match[]": {selector},
		"start": {fmt.Sprint(time.Now().Add(-31 * 24 * time.Hour).Unix())},
		"end":   {fmt.Sprint(time.Now().Add(48 * time.Hour).Unix())}}
	waitFor(t, fmt.Sprintf("%d series for %s in VictoriaMetrics", n, selector), func() bool {
		if resp, err := http.Get("http://" + addr + "/internal/force_flush"); err == nil {
			resp.Body.Close()
		}
		resp, err := http.Get("http://" + addr + "/api/v1/series?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct {
			Data []map[string]string `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return len(r.Data) >= n
	})
}

// vmExportAtLeast exports selector once VictoriaMetrics finds series
// series and shows at least minPoints points: a series can be found
// before all its rows are searchable, even after /internal/force_flush,
// so it reads again until they show (Prometheus shows a write once it
// answered it).
func vmExportAtLeast(t *testing.T, addr, selector string, series, minPoints int) map[string][]rwPoint {
	t.Helper()
	vmSeries(t, addr, selector, series)
	deadline := time.Now().Add(time.Minute)
	for {
		got := vmExport(t, addr, selector)
		n := 0
		for _, pts := range got {
			n += len(pts)
		}
		if n >= minPoints || time.Now().After(deadline) {
			return got
		}
		t.Logf("victoria-metrics shows %d points of at least %d; reading again", n, minPoints)
	}
}

// seriesName writes labels as name="value" pairs sorted by name.
func seriesName(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// rwStats reads a destination's figures from /api/v1/stats.
func (p *proc) rwStats(name string) remotewrite.Stats {
	var s remotewrite.Stats
	p.section("remote_write."+name, &s)
	return s
}

// waitSent waits until the destination sent everything Sonde stored: no
// backlog, and at least n points acknowledged or refused as duplicates.
func (p *proc) waitSent(t *testing.T, name string, n int64) remotewrite.Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		s := p.rwStats(name)
		if s.Backlog == 0 && s.Sent+s.Duplicates >= n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination %s did not catch up: %+v", name, s)
		}
		time.Sleep(100 * time.Millisecond) // its figures are only visible through the API
	}
}

// sendCommands writes lines to the command protocol and checks that
// every reply is +OK.
func sendCommands(t *testing.T, addr string, lines []string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		for _, l := range lines {
			w.WriteString(l)
			w.WriteByte('\n')
		}
		errc <- w.Flush()
	}()
	r := bufio.NewReader(c)
	for i := range lines {
		reply, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if reply != "+OK\r\n" && reply != "+OK\n" {
			t.Fatalf("%q: %q", lines[i], reply)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestRemoteWriteMillion: a million points in over three protocols
// (Graphite with tags, the command protocol, collectd's PUTVAL) arrive at
// VictoriaMetrics and at Prometheus, each one, named as
// docs/remote-write.md says, with the external label; a COUNTER arrives
// as its total.
func TestRemoteWriteMillion(t *testing.T) {
	for _, kind := range []string{"victoria-metrics", "prometheus"} {
		t.Run(kind, func(t *testing.T) { testRemoteWriteMillion(t, kind) })
	}
}

func testRemoteWriteMillion(t *testing.T, kind string) {
	rcv := newReceiverProc(t, kind)
	p := start(t, t.TempDir(), "-remote-write", rcv.url()+",name=vm", "-external-label", "site=e2e")
	const keys, per = 200, 1000 // per protocol: keys × per points, collectd half
	// Within the hour before the newest point (the counter's, now), which
	// is what Prometheus takes.
	base := time.Now().Add(-40 * time.Minute).Unix()
	want := map[string][]rwPoint{}

	// Graphite, tagged, seconds.
	var g bytes.Buffer
	for j := range per {
		for i := range keys * 2 {
			fmt.Fprintf(&g, "rw.graphite.k%d;dc=east %d %d\n", i, i*100000+j, base+int64(j))
			name := fmt.Sprintf(`__name__="rw_graphite_k%d",dc="east",site="e2e"`, i)
			want[name] = append(want[name], rwPoint{(base + int64(j)) * 1000, float64(i*100000 + j)})
		}
	}
	gc, err := net.Dial("tcp", p.graphiteAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gc.Write(g.Bytes()); err != nil {
		t.Fatal(err)
	}
	gc.Close()

	// The command protocol, with each point's own time in ms.
	var lines []string
	for j := range per {
		for i := range keys * 2 {
			ts := base*1000 + int64(j)*7
			lines = append(lines, fmt.Sprintf("SET rw.cmd.k%d %d @%d", i, -(i*100000+j), ts))
			name := fmt.Sprintf(`__name__="rw_cmd_k%d",site="e2e"`, i)
			want[name] = append(want[name], rwPoint{ts, float64(-(i*100000 + j))})
		}
	}
	sendCommands(t, p.tcpAddr, lines)

	// collectd's PUTVAL, a post per host.
	for i := range keys {
		var body bytes.Buffer
		name := fmt.Sprintf(`__name__="h%d_memory_memory_used",site="e2e"`, i)
		for j := range per {
			ts := base + int64(j)
			fmt.Fprintf(&body, "PUTVAL h%d/memory/memory-used interval=1 %d.5:%d\n", i, ts, i*1000+j)
			want[name] = append(want[name], rwPoint{ts*1000 + 500, float64(i*1000 + j)})
		}
		if code, m := post(t, "http://"+p.collectdAddr+"/", "text/plain", body.String()); code != 200 {
			t.Fatalf("PUTVAL: %d %v", code, m)
		}
	}

	// A COUNTER: its total goes.
	sendCommands(t, p.tcpAddr, []string{"INCR rw.count 5", "INCR rw.count 5", "INCR rw.count 5"})

	total := int64(0)
	for _, pts := range want {
		total += int64(len(pts))
	}
	if total != 1_000_000 {
		t.Fatalf("the test sends %d points", total)
	}
	// Everything stored is sent before we look.
	waitFor(t, "every point stored", func() bool {
		var st struct {
			Graphite struct {
				Commands int64 `json:"commands"`
			} `json:"graphite"`
		}
		p.get("/api/v1/stats", &st)
		return st.Graphite.Commands == int64(keys*2*per)
	})
	st := p.waitSent(t, "vm", total+1)
	if st.Refused != 0 || st.Cut != 0 || st.Duplicates != 0 {
		t.Fatalf("stats %+v", st)
	}
	got := rcv.points(t, `{site="e2e"}`, len(want)+1, int(total)+1)
	for name, pts := range want {
		if g := got[name]; !slices.Equal(g, pts) {
			t.Fatalf("%s: the receiver holds %d points (first %v), want %d (first %v)", name, len(g), first(g), len(pts), first(pts))
		}
		delete(got, name)
	}
	count := got[`__name__="rw_count",site="e2e"`]
	if len(count) == 0 || count[len(count)-1].v != 15 {
		t.Fatalf("rw.count: %v, want its total 15 last; other series: %v", count, keysOf(got))
	}
	delete(got, `__name__="rw_count",site="e2e"`)
	if len(got) != 0 {
		t.Fatalf("the receiver holds series the test did not send: %v", keysOf(got))
	}
}

func first(p []rwPoint) any {
	if len(p) == 0 {
		return nil
	}
	return p[0]
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	if len(out) > 10 {
		out = out[:10]
	}
	return out
}

// receiverProc is a remote_write receiver process that can be stopped and
// started again on the same address and data.
type receiverProc struct {
	t      *testing.T
	kind   string // "prometheus" or "victoria-metrics"
	addr   string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	log    bytes.Buffer
	mu     sync.Mutex
}

func newReceiverProc(t *testing.T, kind string) *receiverProc {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &receiverProc{t: t, kind: kind, addr: addr, dir: t.TempDir()}
	r.start()
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			r.mu.Lock()
			t.Logf("%s log (tail):\n%s", kind, tailText(r.log.String(), 4000))
			r.mu.Unlock()
		}
	})
	return r
}

func tailText(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (r *receiverProc) url() string { return "http://" + r.addr + "/api/v1/write" }

// start starts the receiver and waits until it is ready.
func (r *receiverProc) start() {
	r.t.Helper()
	var cmd *exec.Cmd
	var ready string
	switch r.kind {
	case "prometheus":
		cfg := filepath.Join(r.dir, "prometheus.yml")
		if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\n"), 0o644); err != nil {
			r.t.Fatal(err)
		}
		cmd = exec.Command("/usr/bin/prometheus", "--config.file", cfg, "--storage.tsdb.path", filepath.Join(r.dir, "data"),
			"--web.listen-address", r.addr, "--web.enable-remote-write-receiver", "--log.level", "warn")
		ready = "/-/ready"
	default:
		cmd = exec.Command("/usr/bin/victoria-metrics", "-storageDataPath", filepath.Join(r.dir, "data"), "-httpListenAddr", r.addr,
			"-retentionPeriod", "10y", "-loggerLevel", "WARN", "-dedup.minScrapeInterval", "1ms")
		ready = "/health"
	}
	cmd.Stdout, cmd.Stderr = &lockedWriter{&r.mu, &r.log}, &lockedWriter{&r.mu, &r.log}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	exited := r.exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + r.addr + ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-exited:
			r.t.Fatalf("%s exited before it was ready", r.kind)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s was not ready within a minute", r.kind)
		}
		time.Sleep(20 * time.Millisecond) // readiness is only visible through its API
	}
}

// stop stops the receiver with SIGTERM and waits for it to exit.
func (r *receiverProc) stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	<-r.exited
}

func (r *receiverProc) kill() {
	if r.cmd != nil {
		r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.exited
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// points reads the receiver's raw points of the series matching selector.
func (r *receiverProc) points(t *testing.T, selector string, series, minPoints int) map[string][]rwPoint {
	t.Helper()
	if r.kind != "prometheus" {
		return vmExportAtLeast(t, r.addr, selector, series, minPoints)
	}
	// A range vector at now holds every raw sample of the range.
	if series > 0 {
		waitFor(t, fmt.Sprintf("%d series for %s in prometheus", series, selector), func() bool {
			resp, err := http.Get("http://" + r.addr + "/api/v1/series?" + url.Values{"match[]": {selector}}.Encode())
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b struct {
				Data []map[string]string `json:"data"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
				t.Fatal(err)
			}
			return len(b.Data) >= series
		})
	}
	q := url.Values{"query": {selector + "[3h]"}, "time": {fmt.Sprint(time.Now().Unix() + 1)}}
	resp, err := http.Get("http://" + r.addr + "/api/v1/query?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" {
		t.Fatalf("prometheus query: %v %s", err, body.Status)
	}
	out := map[string][]rwPoint{}
	for _, s := range body.Data.Result {
		name := seriesName(s.Metric)
		for _, v := range s.Values {
			sec, _ := v[0].(float64)
			var val float64
			fmt.Sscan(v[1].(string), &val)
			out[name] = append(out[name], rwPoint{int64(math.Round(sec * 1000)), val})
		}
	}
	return out
}

// rwWriter writes points to Sonde's command protocol at a steady pace,
// from one goroutine, through whatever Sonde runs now, and records which
// were acknowledged and which were sent without an answer.
type rwWriter struct {
	mu       sync.Mutex
	addr     string
	acked    map[string][]rwPoint // by series name, as the receiver names it
	maybe    map[string][]rwPoint // sent, no answer: Sonde may hold them
	nAcked   int
	n        int64 // the next point's number: its time offset and value
	base     int64
	stop     chan struct{}
	done     chan struct{}
	progress chan struct{}
}

const rwKeys = 20

func newRWWriter(addr string) *rwWriter {
	w := &rwWriter{addr: addr, acked: map[string][]rwPoint{}, maybe: map[string][]rwPoint{},
		base: time.Now().Add(-5 * time.Minute).UnixMilli(), stop: make(chan struct{}), done: make(chan struct{}),
		progress: make(chan struct{}, 1)}
	go w.run()
	return w
}

func (w *rwWriter) setAddr(addr string) {
	w.mu.Lock()
	w.addr = addr
	w.mu.Unlock()
}

func (w *rwWriter) acks() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nAcked
}

// waitAcks waits until n points in all were acknowledged.
func (w *rwWriter) waitAcks(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(3 * time.Minute)
	for w.acks() < n {
		select {
		case <-w.progress:
		case <-deadline:
			t.Fatalf("the writer got %d acknowledgements, want %d", w.acks(), n)
		}
	}
}

func (w *rwWriter) run() {
	defer close(w.done)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var c net.Conn
	var r *bufio.Reader
	for {
		select {
		case <-w.stop:
			if c != nil {
				c.Close()
			}
			return
		case <-tick.C:
		}
		if c == nil {
			w.mu.Lock()
			addr := w.addr
			w.mu.Unlock()
			var err error
			if c, err = net.DialTimeout("tcp", addr, time.Second); err != nil {
				c = nil
				continue // Sonde is being restarted
			}
			r = bufio.NewReader(c)
		}
		// A batch of 50 points, 1 ms apart, over the keys in turn.
		type sent struct {
			name string
			p    rwPoint
		}
		var batch []sent
		var lines bytes.Buffer
		for range 50 {
			k := w.n % rwKeys
			p := rwPoint{w.base + w.n, float64(w.n)}
			w.n++
			fmt.Fprintf(&lines, "SET rw.k%d %d @%d\n", k, int64(p.v), p.ts)
			batch = append(batch, sent{fmt.Sprintf(`__name__="rw_k%d"`, k), p})
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write(lines.Bytes())
		got := 0
		for err == nil && got < len(batch) {
			var reply string
			if reply, err = r.ReadString('\n'); err == nil {
				if !strings.HasPrefix(reply, "+OK") {
					err = fmt.Errorf("reply %q", reply)
				}
				got++
			}
		}
		w.mu.Lock()
		for i, s := range batch {
			if i < got && err == nil || i < got-1 {
				w.acked[s.name] = append(w.acked[s.name], s.p)
				w.nAcked++
			} else {
				w.maybe[s.name] = append(w.maybe[s.name], s.p)
			}
		}
		w.mu.Unlock()
		select {
		case w.progress <- struct{}{}:
		default:
		}
		if err != nil {
			c.Close()
			c = nil
		}
	}
}

// TestRemoteWriteOutageAndCrash: while points arrive at a steady pace,
// the receiver is stopped for 10 s and started again, and Sonde is killed
// with SIGKILL while it sends the backlog, then started again. Every
// acknowledged point arrives, nothing arrives that was not sent, and no
// point arrives twice: the resent chunks are refused by Prometheus as
// ones it has (counted as duplicates), and absorbed by VictoriaMetrics'
// deduplication.
func TestRemoteWriteOutageAndCrash(t *testing.T) {
	for _, kind := range []string{"prometheus", "victoria-metrics"} {
		t.Run(kind, func(t *testing.T) {
			rcv := newReceiverProc(t, kind)
			dir := t.TempDir()
			flags := []string{"-remote-write", rcv.url() + ",name=r,max-samples=500", "-tcp-oneshot-idle", "-1s"}
			p := start(t, dir, flags...)
			w := newRWWriter(p.tcpAddr)
			defer func() {
				select {
				case <-w.done:
				default:
					close(w.stop)
					<-w.done
				}
			}()
			w.waitAcks(t, 5000)

			// The receiver goes away for 10 s; Sonde notices (its retries).
			rcv.stop()
			before := p.rwStats("r")
			waitFor(t, "a failed request", func() bool { return p.rwStats("r").Retries > before.Retries })
			outage := time.After(10 * time.Second)
			<-outage
			rcv.start()
			// Sonde sends its backlog: it is killed while it does.
			sentAt := p.rwStats("r").Sent
			waitFor(t, "sending again", func() bool { return p.rwStats("r").Sent > sentAt })
			p.kill()
			acked := w.acks()
			p = start(t, dir, flags...)
			w.setAddr(p.tcpAddr)
			w.waitAcks(t, acked+5000)
			close(w.stop)
			<-w.done

			st := p.waitSent(t, "r", 1)
			if st.Refused != 0 || st.Cut != 0 {
				t.Fatalf("stats after the restart %+v", st)
			}
			got := rcv.points(t, `{__name__=~"rw_k.*"}`, rwKeys, w.acks())
			w.mu.Lock()
			defer w.mu.Unlock()
			missing, extra, twice := 0, 0, 0
			for k := range rwKeys {
				name := fmt.Sprintf(`__name__="rw_k%d"`, k)
				have := map[int64]float64{}
				for _, pt := range got[name] {
					if _, ok := have[pt.ts]; ok {
						twice++
					}
					have[pt.ts] = pt.v
				}
				for _, pt := range w.acked[name] {
					if v, ok := have[pt.ts]; !ok || v != pt.v {
						missing++
					}
					delete(have, pt.ts)
				}
				for _, pt := range w.maybe[name] {
					delete(have, pt.ts)
				}
				extra += len(have)
			}
			maybe := 0
			for _, pts := range w.maybe {
				maybe += len(pts)
			}
			t.Logf("%d acknowledged, %d without an answer; after the restart: %+v", w.nAcked, maybe, st)
			if missing != 0 || extra != 0 || twice != 0 {
				t.Fatalf("%s holds: %d acknowledged points missing, %d points never sent, %d twice", kind, missing, extra, twice)
			}
		})
	}
}

// TestRemoteWriteTwoSondes: two Sondes at the edge forward to one
// VictoriaMetrics; told apart by their external label, a query there
// sees the points of both.
//
// The points are from the day before (UTC), always: VictoriaMetrics looks
// up series by day, and a read that looked only at today failed this test
// between 00:00 and 01:00 UTC when its points were an hour old.
func TestRemoteWriteTwoSondes(t *testing.T) {
	vm := startVM(t)
	base := time.Now().UTC().Truncate(24 * time.Hour).Add(-time.Hour).UnixMilli()
	for _, edge := range []string{"a", "b"} {
		p := start(t, t.TempDir(), "-remote-write", "http://"+vm.Query+"/api/v1/write,name=central", "-external-label", "edge="+edge)
		var lines []string
		for i := range 100 {
			lines = append(lines, fmt.Sprintf("SET two.load %d @%d", i+int(edge[0])*1000, base+int64(i)))
		}
		sendCommands(t, p.tcpAddr, lines)
		p.waitSent(t, "central", 100)
	}
	got := vmExportAtLeast(t, vm.Query, `{__name__="two_load"}`, 2, 200)
	for _, edge := range []string{"a", "b"} {
		pts := got[fmt.Sprintf(`__name__="two_load",edge=%q`, edge)]
		if len(pts) != 100 || pts[0] != (rwPoint{base, float64(int(edge[0]) * 1000)}) || pts[99].ts != base+99 {
			t.Fatalf("edge %s: %d points (first %v); VictoriaMetrics holds %v", edge, len(pts), first(pts), keysOf(got))
		}
	}
	// The same through its PromQL API: one series per edge.
	resp, err := http.Get("http://" + vm.Query + "/api/v1/query?" + url.Values{"query": {"count by (edge) (count_over_time(two_load[2d]))"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Data.Result) != 2 {
		t.Fatalf("PromQL by edge: %v %+v", err, body.Data.Result)
	}
}
