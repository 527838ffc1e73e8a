package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
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
func vmSeries(t *testing.T, addr, selector string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d series for %s in VictoriaMetrics", n, selector), func() bool {
		if resp, err := http.Get("http://" + addr + "/internal/force_flush"); err == nil {
			resp.Body.Close()
		}
		resp, err := http.Get("http://" + addr + "/api/v1/series?match[]=" + url.QueryEscape(selector))
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

// seriesName writes labels as name="value" pairs sorted by name.
func seriesName(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sortStrings(parts)
	return strings.Join(parts, ",")
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
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

// TestRemoteWriteVictoriaMetrics: a million points in over three
// protocols (Graphite with tags, the command protocol, collectd's PUTVAL)
// arrive at VictoriaMetrics, each one, named as docs/remote-write.md
// says, with the external label; a COUNTER arrives as its total.
func TestRemoteWriteVictoriaMetrics(t *testing.T) {
	vm := startVM(t)
	p := start(t, t.TempDir(), "-remote-write", "http://"+vm.Query+"/api/v1/write,name=vm", "-external-label", "site=e2e")
	const keys, per = 200, 1000 // per protocol: keys × per points, collectd half
	base := time.Now().Add(-2 * time.Hour).Unix()
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
	vmSeries(t, vm.Query, `{site="e2e"}`, len(want)+1)
	got := vmExport(t, vm.Query, `{site="e2e"}`)
	for name, pts := range want {
		if g := got[name]; !equalRW(g, pts) {
			t.Fatalf("%s: VictoriaMetrics holds %d points (first %v), want %d (first %v)", name, len(g), first(g), len(pts), first(pts))
		}
		delete(got, name)
	}
	count := got[`__name__="rw_count",site="e2e"`]
	if len(count) == 0 || count[len(count)-1].v != 15 {
		t.Fatalf("rw.count: %v, want its total 15 last; other series: %v", count, keysOf(got))
	}
	delete(got, `__name__="rw_count",site="e2e"`)
	if len(got) != 0 {
		t.Fatalf("VictoriaMetrics holds series the test did not send: %v", keysOf(got))
	}
}

func first(p []rwPoint) any {
	if len(p) == 0 {
		return nil
	}
	return p[0]
}

func equalRW(a, b []rwPoint) bool {
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

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	if len(out) > 10 {
		out = out[:10]
	}
	return out
}

var _ = sync.Mutex{}
var _ = os.Getpid
var _ = exec.Command
var _ = filepath.Join
var _ = syscall.SIGKILL
