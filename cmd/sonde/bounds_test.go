package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// getRaw fetches path and returns the status and body.
func (p *proc) getRaw(path string) (int, string) {
	p.t.Helper()
	resp, err := http.Get(p.url(path))
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// TestRenderTimeOverflow: times at the ends of int64, or far past them,
// are clamped to 1970 and the year 9999; before, the first of these GETs
// made consolidate panic and Sonde exit.
func TestRenderTimeOverflow(t *testing.T) {
	p := start(t, t.TempDir(), "-tcp-oneshot-idle", "-1s")
	c := dial(t, p.tcpAddr)
	if r := c.do(t, "SET base 1")[0]; r != "+OK" {
		t.Fatal(r)
	}
	for _, q := range []string{
		"from=-9223372036854775808&until=now&maxDataPoints=10",
		"from=now-9999999999999999y&until=now",
		"from=now-99999999999999999999999y&until=now&maxDataPoints=9",
		"from=-1h&until=now&maxDataPoints=9223372036854775807",
		"from=-99999999999999999999&until=9223372036854775807&maxDataPoints=1",
	} {
		code, body := p.getRaw("/render?target=base&" + q)
		var series []struct {
			Datapoints [][2]*float64 `json:"datapoints"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &series) != nil || len(series) != 1 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		found := false
		for _, dp := range series[0].Datapoints {
			found = found || (dp[0] != nil && *dp[0] == 1)
		}
		if !found {
			t.Fatalf("%s: the point is missing: %s", q, body)
		}
	}
	if code, body := p.getRaw("/render?target=base&from=99999999999999999999&until=now"); code != 400 || !strings.Contains(body, "from is not before until") {
		t.Fatalf("from after the year 9999: %d %s", code, body)
	}
	code, body := p.getRaw("/api/v1/series/base/history?from=-9223372036854775808&to=9223372036854775807&step=1ms")
	if code != 200 || !strings.Contains(body, `,1]]`) {
		t.Fatalf("history over all of int64: %d %s", code, body)
	}
	if r := c.do(t, "SET base 2")[0]; r != "+OK" {
		t.Fatalf("after the reads: %s", r)
	}
}

// TestQueryBounds: a read that would hold too many points, cover too
// many series or answer too many bytes gets a 422 naming the flag, before
// it holds them; one past its time gets 503; the server goes on.
func TestQueryBounds(t *testing.T) {
	p := start(t, t.TempDir(), "-tcp-oneshot-idle", "-1s")
	c := dial(t, p.tcpAddr)
	if r := c.do(t, "SET base 1")[0]; r != "+OK" {
		t.Fatal(r)
	}
	before := p.residentBytes()
	for _, q := range []string{
		"/render?target=base&from=0&until=now&maxDataPoints=100000000", // the issue's: 98M slots since 1970
		"/render?target=base&from=-1y&until=now&maxDataPoints=100000000",
	} {
		code, body := p.getRaw(q)
		if code != 422 || !strings.Contains(body, "-query-max-points") {
			t.Fatalf("%s: %d %s", q, code, body)
		}
	}
	if grown := p.residentBytes() - before; grown > 100<<20 {
		t.Fatalf("the refused reads grew RSS by %d MiB", grown>>20)
	}
	if r := c.do(t, "SET base 3")[0]; r != "+OK" {
		t.Fatalf("a write after the refused reads: %s", r)
	}
	p.stop()

	p = start(t, t.TempDir(), "-query-max-points", "1000", "-query-max-series", "5", "-query-max-bytes", "4000", "-tcp-oneshot-idle", "-1s")
	c = dial(t, p.tcpAddr)
	lines := make([]string, 0, 1500)
	for i := range 1500 {
		lines = append(lines, fmt.Sprintf("SET h %d", i))
	}
	for i := range 10 {
		lines = append(lines, fmt.Sprintf("SET m.%d %d", i, i))
	}
	for i := range 40 {
		lines = append(lines, fmt.Sprintf("SET %s.%d %d", strings.Repeat("long", 30), i, i))
	}
	for _, r := range c.do(t, lines...) {
		if r != "+OK" {
			t.Fatal(r)
		}
	}
	for _, c := range []struct{ path, flag string }{
		{"/api/v1/series/h/history", "-query-max-points"},
		{"/api/v1/series/h/history?step=1h&agg=max", "-query-max-points"},
		{"/render?target=h&from=-1h", "-query-max-points"},
		{"/api/v1/history?match=m.*", "-query-max-series"},
		{"/render?target=m.*&from=-1h", "-query-max-series"},
		{"/vapor?match=m.*", "-query-max-series"},
		{"/data", "-query-max-bytes"},
		{"/api/v1/series", "-query-max-bytes"},
	} {
		code, body := p.getRaw(c.path)
		if code != 422 || !strings.Contains(body, c.flag) {
			t.Errorf("%s: %d %s, want 422 naming %s", c.path, code, body, c.flag)
		}
	}
	// Within the bounds, the same routes answer.
	for _, path := range []string{"/api/v1/series/h/history?limit=5&from=" + url.QueryEscape("2000-01-01T00:00:00Z"),
		"/api/v1/history?match=m.1*", "/data?match=m.*", "/vapor?match=m.2"} {
		if code, body := p.getRaw(path); code != 200 {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	var st struct {
		Reads struct {
			TooLarge int64 `json:"too_large"`
		} `json:"reads"`
	}
	p.get("/api/v1/stats", &st)
	if st.Reads.TooLarge != 8 {
		t.Errorf("too_large = %d, want 8", st.Reads.TooLarge)
	}
	p.stop()

	// No read can run at all within a nanosecond; the rest still serves.
	p = start(t, t.TempDir(), "-query-timeout", "1ns")
	for _, path := range []string{"/data", "/vapor", "/api/v1/series", "/render?target=x"} {
		if code, body := p.getRaw(path); code != 503 || !strings.Contains(body, "-query-timeout") {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	if code, _ := p.getRaw("/healthz"); code != 200 {
		t.Errorf("healthz: %d", code)
	}
}
