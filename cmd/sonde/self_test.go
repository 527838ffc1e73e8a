package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sonde-metrics/sonde/engine/boundary"
)

// latest folds SSE change events into the newest value of each key, until
// cond holds of them; it fails the test if the stream goes quiet for 30 s.
func latest(t *testing.T, evs <-chan event, vals map[string]float64, cond func(map[string]float64) bool) {
	t.Helper()
	for !cond(vals) {
		ev := next(t, evs)
		var m map[string]*float64
		if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
			t.Fatalf("event %q: %v", ev.data, err)
		}
		for k, v := range m {
			if v == nil {
				delete(vals, k)
			} else {
				vals[k] = *v
			}
		}
	}
}

// vmRSS is a process's resident set in bytes, from /proc.
func vmRSS(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb * 1024
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// TestSelfMonitoring: with -self-interval Sonde records its own figures as
// ordinary series, and each one says what it should.
func TestSelfMonitoring(t *testing.T) {
	p := start(t, t.TempDir(), "-self-interval", "200ms", "-snapshot-interval", "100ms")
	evs := subscribe(t, p, "?match=sonde.self.*", 0)
	vals := map[string]float64{}
	figures := []string{"rss", "heap", "goroutines", "series", "wal.bytes", "subscribers", "snapshot.seconds", "ingest.rate", "query.rate"}
	latest(t, evs, vals, func(m map[string]float64) bool { return len(m) == len(figures) })
	for _, f := range figures {
		if _, ok := vals["sonde.self."+f]; !ok {
			t.Fatalf("no sonde.self.%s among %v", f, vals)
		}
	}

	// The resident set, beside the kernel's own reading of it.
	rss := vmRSS(t, p.cmd.Process.Pid)
	if got := vals["sonde.self.rss"]; got < rss/2 || got > rss*2 {
		t.Errorf("sonde.self.rss %.0f, /proc says %.0f", got, rss)
	}
	if h := vals["sonde.self.heap"]; h <= 0 || h > vals["sonde.self.rss"] {
		t.Errorf("sonde.self.heap %.0f with rss %.0f", h, vals["sonde.self.rss"])
	}
	if g := vals["sonde.self.goroutines"]; g < 5 {
		t.Errorf("sonde.self.goroutines %v", g)
	}
	latest(t, evs, vals, func(m map[string]float64) bool { return m["sonde.self.subscribers"] == 1 })

	// 1000 acknowledged SETs: the ingest rate, summed over the intervals,
	// counts them (and none of the recorder's own records).
	before := p.history("sonde.self.ingest.rate")
	c := dial(t, p.tcpAddr)
	lines := make([]string, 1000)
	for i := range lines {
		lines[i] = fmt.Sprintf("SET test.k%d %d", i%10, i)
	}
	for i, r := range c.do(t, lines...) {
		if r != "+OK" {
			t.Fatalf("SET %d: %q", i, r)
		}
	}
	latest(t, evs, vals, func(m map[string]float64) bool { return m["sonde.self.series"] == float64(len(figures)+10) })
	// Every SET is published before its +OK: the first point stamped
	// after now was read after all of them.
	acked := time.Now().UnixMilli()
	var after [][2]float64
	delete(vals, "sonde.self.ingest.rate")
	latest(t, evs, vals, func(m map[string]float64) bool {
		if _, ok := m["sonde.self.ingest.rate"]; !ok {
			return false
		}
		delete(m, "sonde.self.ingest.rate")
		after = p.history("sonde.self.ingest.rate")
		return len(after) > 0 && after[len(after)-1][0] > float64(acked)
	})
	if len(before) == 0 {
		t.Fatal("no ingest.rate point before the writes")
	}
	// A rate is over the exact interval, its point's time in whole ms: an
	// interval's records and rate × stored interval differ by under rate × 1 ms.
	sum, slack := 0.0, 0.0
	for i := len(before); i < len(after); i++ { // the intervals after the last point before the writes
		dt := (after[i][0] - after[i-1][0]) / 1000
		sum += after[i][1] * dt
		slack += after[i][1] / 1000
	}
	t.Logf("ingest.rate over %d intervals sums to %.2f records", len(after)-len(before), sum)
	if math.Abs(sum-1000) > slack {
		t.Errorf("ingest.rate × interval summed to %.1f records, want 1000 ± %.1f", sum, slack)
	}

	// A snapshot stored the SETs: its duration is recorded.
	latest(t, evs, vals, func(m map[string]float64) bool { return m["sonde.self.snapshot.seconds"] > 0 })
	if w := vals["sonde.self.wal.bytes"]; w <= 0 {
		t.Errorf("sonde.self.wal.bytes %v", w)
	}

	// Reads show in the query rate.
	for range 20 {
		p.get("/data?match=test.*", nil)
	}
	latest(t, evs, vals, func(m map[string]float64) bool { return m["sonde.self.query.rate"] > 0 })
	if code := p.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// scrape fetches /metrics and returns the body and the value of each
// sample without labels.
func scrape(t *testing.T, p *proc) ([]byte, map[string]float64) {
	t.Helper()
	resp, err := http.Get(p.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	vals := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("sample %q: %v", sc.Text(), err)
		}
		vals[name] = f
	}
	return body, vals
}

// TestMetricsPromtool: /metrics passes promtool's check (Debian's
// prometheus package, installed by make test-deps) and agrees with
// /api/v1/stats.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is missing (Debian package prometheus; make test-deps installs it): %v", err)
	}
	p := start(t, t.TempDir(), "-snapshot-interval", "100ms")
	c := dial(t, p.tcpAddr)
	for i, r := range c.do(t, "SET a 1", "SET b 2", "SET c 3") {
		if r != "+OK" {
			t.Fatalf("write %d: %q", i, r)
		}
	}
	for range 3 {
		p.get("/data", nil)
	}
	body, vals := scrape(t, p)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s\n--- body:\n%s", err, out, body)
	}
	var st struct {
		Index  float64 `json:"index"`
		Engine struct {
			Series float64 `json:"series"`
		} `json:"engine"`
	}
	p.get("/api/v1/stats", &st)
	for name, want := range map[string]float64{"sonde_series": st.Engine.Series, "sonde_wal_records_total": st.Index,
		"sonde_reads_total": 3, "sonde_sse_subscribers": 0, "sonde_panics_total": 0} {
		if got, ok := vals[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if st.Engine.Series != 3 {
		t.Errorf("engine series %v, want 3", st.Engine.Series)
	}
	if rss := vals["process_resident_memory_bytes"]; rss <= 0 {
		t.Errorf("process_resident_memory_bytes %v", rss)
	}
	if g := vals["go_goroutines"]; g < 5 {
		t.Errorf("go_goroutines %v", g)
	}
	// Only GET and HEAD.
	if code := p.postStatus("/metrics"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d", code)
	}
	// Self-monitoring is off in this test: /metrics wrote no series.
	var data map[string]float64
	p.get("/data", &data)
	if len(data) != 3 {
		t.Errorf("/data = %v, want the three keys written", data)
	}
}

// TestSelfPanicsCaught: a panic while reading the figures (here a source
// with no store) is caught and counted, in the recorder's tick and in the
// collector, which runs on a goroutine of the Prometheus registry's,
// outside the HTTP server's boundary.
func TestSelfPanicsCaught(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	before := boundary.Panics()
	c := sondeCollector{src: &selfSource{}, logger: quiet}
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	r := &selfRecorder{src: &selfSource{}, logger: quiet, errs: make([]error, len(selfFigures))}
	r.tick(time.Now())
	r.tick(time.Now())
	after := boundary.Panics()
	if after["metrics"] != before["metrics"]+1 || after["self-monitoring"] != before["self-monitoring"]+2 {
		t.Fatalf("panics before %v, after %v", before, after)
	}
}

func TestSelfIntervalFlag(t *testing.T) {
	if c, err := parseFlags(nil); err != nil || c.selfInterval != 10*time.Second {
		t.Fatalf("default: %v, %v", c.selfInterval, err)
	}
	for _, ok := range []string{"0", "100ms", "1m"} {
		if _, err := parseFlags([]string{"-self-interval", ok}); err != nil {
			t.Errorf("-self-interval %s: %v", ok, err)
		}
	}
	for _, bad := range []string{"-1s", "1ns", "99ms"} {
		if _, err := parseFlags([]string{"-self-interval", bad}); err == nil {
			t.Errorf("-self-interval %s taken", bad)
		}
	}
}
