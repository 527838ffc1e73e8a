package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	statsdclient "github.com/cactus/go-statsd-client/v5/statsd"
)

// statsdStats is what /api/v1/stats says of the statsd listener.
type statsdStats struct {
	Packets     int64 `json:"packets"`
	Lines       int64 `json:"lines"`
	BadLines    int64 `json:"bad_lines"`
	Written     int64 `json:"written"`
	Failed      int64 `json:"failed"`
	Flushes     int64 `json:"flushes"`
	KernelDrops int64 `json:"kernel_drops"`
	ReadBuffer  int   `json:"read_buffer"`
	// Unaggregated: samples past -statsd-max-names or -statsd-max-set.
	Unaggregated int64 `json:"unaggregated"`
}

func (p *proc) statsd() statsdStats {
	p.t.Helper()
	var all map[string]json.RawMessage
	p.get("/api/v1/stats", &all)
	var st statsdStats
	if err := json.Unmarshal(all["statsd"], &st); err != nil {
		p.t.Fatalf("statsd stats: %v", err)
	}
	return st
}

// waitStatsd polls the statsd stats until cond holds: UDP has no answer
// to wait on.
func (p *proc) waitStatsd(cond func(statsdStats) bool) statsdStats {
	p.t.Helper()
	var st statsdStats
	p.poll("statsd stats", func() bool { st = p.statsd(); return cond(st) })
	return st
}

// value returns the value of key (GAUGE value or COUNTER total).
func (p *proc) value(key string) float64 {
	p.t.Helper()
	var s struct {
		Value float64 `json:"value"`
	}
	if code := p.get("/api/v1/series/"+key, &s); code != 200 {
		p.t.Fatalf("%s: status %d", key, code)
	}
	return s.Value
}

// TestStatsd sends known counters, sampled counters, gauges with deltas,
// timers and sets over raw UDP, nc and a statsd client library, then
// checks every raw and every flushed value exactly. The flush interval is
// an hour, so the one flush is the one SIGTERM takes, and the values are
// read after a restart (which also shows they are durable).
func TestStatsd(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir, "-statsd-flush", "1h")
	conn, err := net.Dial("udp", p.statsdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	datagrams := []string{
		"hits:1|c\nhits:1|c\nhits:2|c|@0.5", // 1 + 1 + 4
		"temp:10|g\ntemp:+5|g\ntemp:-3|g",   // 12
		"rt:10|ms\nrt:20|ms:30|ms\nrt:40|ms|@0.5",
		"users:alice|s\nusers:bob|s\nusers:alice|s\nusers:carol|s",
		"this is not statsd\nhits:x|c", // two bad lines
	}
	lines := 0
	for _, d := range datagrams {
		if _, err := conn.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(d, "\n") + 1
	}
	// The command from the issue, with the real nc.
	// Its input is a file: with -w0, nc gives up on a pipe that is still
	// empty when it first looks, which a busy machine makes likely.
	in := filepath.Join(t.TempDir(), "line")
	if err := os.WriteFile(in, []byte("hits:1|c"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	host, port, _ := strings.Cut(p.statsdAddr, ":")
	nc := exec.Command("nc", "-u", "-w0", host, port)
	nc.Stdin = f
	if out, err := nc.CombinedOutput(); err != nil {
		t.Fatalf("nc: %v %s", err, out)
	}
	// A real client library.
	cl, err := statsdclient.NewClientWithConfig(&statsdclient.ClientConfig{Address: p.statsdAddr, Prefix: "app"})
	if err != nil {
		t.Fatal(err)
	}
	cl.Inc("logins", 3, 1, statsdclient.Tag{"region", "eu"})
	// Several readers take datagrams, so two datagrams may be applied in
	// either order (docs/statsd.md): the client's deltas commute.
	cl.Gauge("queue", 7, 1)
	cl.GaugeDelta("depth", 3, 1)
	cl.GaugeDelta("depth", -1, 1)
	cl.TimingDuration("db", 1500*time.Microsecond, 1)
	cl.Set("visitors", "x", 1)
	cl.Close()
	goodLines := lines - 2 + 1 + 6
	st := p.waitStatsd(func(s statsdStats) bool { return s.Lines+s.BadLines >= int64(lines+1+6) })
	if st.Lines != int64(goodLines) || st.BadLines != 2 || st.KernelDrops != 0 {
		t.Fatalf("stats %+v, want %d good lines, 2 bad, no drops", st, goodLines)
	}
	// Raw samples are in the WAL as they arrive, before any flush.
	// hits 3, temp 3, rt 4, users none (sets live until the flush), nc 1,
	// the client 1+3+1.
	p.waitStatsd(func(s statsdStats) bool { return s.Written == 3+3+4+1+1+3+1 })
	if v := p.value("stats_counts.hits"); v != 7 {
		t.Errorf("stats_counts.hits = %v, want 7 (1+1+2/0.5+1)", v)
	}
	if v := p.value("stats.gauges.temp"); v != 12 {
		t.Errorf("stats.gauges.temp = %v, want 12", v)
	}
	if got := values(p.history("stats.timers.rt.samples")); strings.Join(got, " ") != "10 20 30 40" {
		t.Errorf("raw timer samples %v", got)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	p = start(t, dir, "-statsd-flush", "1h")
	want := map[string]float64{
		"stats_counts.hits":                 7,
		"stats.hits":                        7.0 / 3600,
		"stats.gauges.temp":                 12,
		"stats.timers.rt.count":             5, // 10, 20, 30 and 40 sampled at 0.5
		"stats.timers.rt.count_ps":          5.0 / 3600,
		"stats.timers.rt.lower":             10,
		"stats.timers.rt.upper":             40,
		"stats.timers.rt.mean":              25,
		"stats.timers.rt.median":            25,
		"stats.timers.rt.sum":               100,
		"stats.timers.rt.upper_50":          20,
		"stats.timers.rt.mean_50":           15,
		"stats.timers.rt.upper_90":          40,
		"stats.timers.rt.sum_99":            100,
		"stats.sets.users.count":            3,
		"stats_counts.app.logins;region=eu": 3,
		"stats.gauges.app.queue":            7,
		"stats.gauges.app.depth":            2,
		"stats.timers.app.db.upper":         1.5,
		"stats.sets.app.visitors.count":     1,
	}
	for key, v := range want {
		if got := p.value(key); got != v {
			t.Errorf("%s = %v, want %v", key, got, v)
		}
	}
	if std := p.value("stats.timers.rt.std"); std < 11.18 || std > 11.19 { // sqrt(125)
		t.Errorf("stats.timers.rt.std = %v, want sqrt(125)", std)
	}
}

func values(pts [][2]float64) []string {
	out := make([]string, len(pts))
	for i, pt := range pts {
		out[i] = strconv.FormatFloat(pt[1], 'g', -1, 64)
	}
	return out
}

// TestStatsdPeriodicFlush: aggregates are written every -statsd-flush
// while the server runs.
func TestStatsdPeriodicFlush(t *testing.T) {
	p := start(t, t.TempDir(), "-statsd-flush", "100ms", "-min-window", "100ms")
	conn, err := net.Dial("udp", p.statsdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("job:250|ms\njob:150|ms")); err != nil {
		t.Fatal(err)
	}
	var mean struct {
		Value float64 `json:"value"`
	}
	p.poll("a flush", func() bool { return p.get("/api/v1/series/stats.timers.job.mean", &mean) == 200 })
	if mean.Value != 200 {
		t.Fatalf("mean %v, want 200", mean.Value)
	}
	if st := p.statsd(); st.Flushes < 1 {
		t.Fatalf("flushes %d", st.Flushes)
	}
}

// TestStatsdLimits: past -statsd-max-names and -statsd-max-set, samples
// still reach the WAL raw but stay out of the interval's aggregates, and
// are counted.
func TestStatsdLimits(t *testing.T) {
	dir := t.TempDir()
	flags := []string{"-statsd-flush", "1h", "-statsd-max-names", "3", "-statsd-max-set", "2"}
	p := start(t, dir, flags...)
	conn, err := net.Dial("udp", p.statsdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// One datagram, so one reader takes it all: a and b and the set s fill
	// the three names; c is one too many, and so is the set's third member.
	if _, err := conn.Write([]byte("a:1|c\nb:1|c\ns:x|s\ns:y|s\nc:1|c\ns:z|s\ns:x|s")); err != nil {
		t.Fatal(err)
	}
	st := p.waitStatsd(func(s statsdStats) bool { return s.Lines >= 7 })
	if st.Unaggregated != 2 {
		t.Fatalf("stats %+v, want 2 samples left out of the aggregates", st)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p = start(t, dir, flags...)
	if v := p.value("stats.sets.s.count"); v != 2 {
		t.Errorf("set count %v, want 2 (capped)", v)
	}
	if v := p.value("stats_counts.c"); v != 1 {
		t.Errorf("the raw counter c = %v, want 1", v)
	}
	if code := p.get("/api/v1/series/stats.c", nil); code != 404 {
		t.Errorf("stats.c: status %d, want 404 (not aggregated)", code)
	}
}
