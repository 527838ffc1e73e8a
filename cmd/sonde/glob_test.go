package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestHostileGlobs stores 4000 keys of 255 bytes, then asks /data and
// /render for the hostile patterns of issue 10 (each one took seconds per
// request with the old matchers) while other requests go on: every answer
// is the exact set of keys, and patterns over the limits get a 400.
func TestHostileGlobs(t *testing.T) {
	p := start(t, t.TempDir())
	c := dial(t, p.tcpAddr)
	const n = 4000
	var globWant, renderWant []string
	lines := make([]string, n)
	for i := range n {
		k := []byte(fmt.Sprintf("k%04d-%s", i, strings.Repeat("a", 255)))[:255]
		switch i % 4 {
		case 0: // ends in 120 a's: the glob matches
			globWant = append(globWant, string(k))
		case 1: // ends in z, no dot: the Graphite pattern matches
			k[254] = 'z'
			renderWant = append(renderWant, string(k))
		case 2: // a dot, which '*' and '?' do not cross in Graphite
			k[5], k[254] = '.', 'z'
		case 3: // a b among the last 120 bytes
			k[200] = 'b'
		}
		lines[i] = fmt.Sprintf("SET %s %d", k, i)
	}
	for i, r := range c.do(t, lines...) {
		if r != "+OK" {
			t.Fatalf("%s: %s", lines[i][:20], r)
		}
	}

	// '*' then 120 escaped a's: 241 bytes.
	hostileGlob := "*" + strings.Repeat(`\a`, 120)
	hostileTarget := strings.Repeat("*?", 100) + "z"
	dataPath := "/data?match=" + url.QueryEscape(hostileGlob)
	renderPath := "/render?format=json&from=-1h&until=now&target=" + url.QueryEscape(hostileTarget)
	checkData := func(body []byte) error {
		var got map[string]float64
		if err := json.Unmarshal(body, &got); err != nil {
			return fmt.Errorf("/data: %v in %.200s", err, body)
		}
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, globWant) {
			return fmt.Errorf("/data?match=<241 bytes>: %d keys, want %d", len(keys), len(globWant))
		}
		return nil
	}
	checkRender := func(body []byte) error {
		var got []renderSeries
		if err := json.Unmarshal(body, &got); err != nil {
			return fmt.Errorf("/render: %v in %.200s", err, body)
		}
		keys := make([]string, 0, len(got))
		for _, s := range got {
			if len(s.Datapoints) != 1 {
				return fmt.Errorf("/render: %s has %d points, want 1", s.Target, len(s.Datapoints))
			}
			keys = append(keys, s.Target)
		}
		if !slices.Equal(keys, renderWant) {
			return fmt.Errorf("/render?target=<*? x100 z>: %d series, want %d", len(keys), len(renderWant))
		}
		return nil
	}
	fetch := func(path string) ([]byte, error) {
		resp, err := http.Get(p.url(path))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("%.40s: status %d: %s", path, resp.StatusCode, body)
		}
		return body, err
	}

	// Two clients repeat the hostile requests while this one reads and
	// writes single keys.
	errs := make(chan error, 2)
	for _, q := range []struct {
		path  string
		check func([]byte) error
	}{{dataPath, checkData}, {renderPath, checkRender}} {
		go func() {
			for range 3 {
				body, err := fetch(q.path)
				if err == nil {
					err = q.check(body)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := range 20 {
		key := lines[i*7][len("SET ") : len("SET ")+255]
		var one map[string]float64
		if code := p.get("/data?match="+key[:6]+"*", &one); code != 200 || len(one) != 1 || one[key] != float64(i*7) {
			t.Fatalf("/data?match=%s*: %d %v", key[:6], code, one)
		}
		if r := c.do(t, fmt.Sprintf("SET other%d %d", i, i)); r[0] != "+OK" {
			t.Fatalf("SET other%d: %s", i, r[0])
		}
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var others map[string]float64
	if p.get("/data?match=other*", &others); len(others) != 20 || others["other19"] != 19 {
		t.Fatalf("/data?match=other*: %v", others)
	}

	// Over the limits: a clear 400, on every endpoint that takes a pattern.
	long := url.QueryEscape(strings.Repeat("a", 1025))
	for _, path := range []string{
		"/data?match=" + long, "/vapor?match=" + long, "/events?match=" + long,
		"/api/v1/series?match=" + long, "/api/v1/history?match=" + long,
	} {
		var e struct{ Error string }
		if code := p.get(path, &e); code != 400 || !strings.Contains(e.Error, "1025 bytes; at most 1024") {
			t.Errorf("%.30s...: %d %q, want 400 naming the limit", path, code, e.Error)
		}
	}
	for target, want := range map[string]string{
		strings.Repeat("a", 1025):     "at most 1024",
		strings.Repeat("{ab,cd}", 10): "positions",
	} {
		code, _, body := grafanaRender(t, p, url.Values{"target": {target}, "from": {"-1h"}})
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("render %.20s...: %d %s, want 400 with %q", target, code, body, want)
		}
		var e struct{ Error string }
		if code := p.get("/metrics/find?query="+url.QueryEscape(target), &e); code != 400 || !strings.Contains(e.Error, want) {
			t.Errorf("find %.20s...: %d %q, want 400 with %q", target, code, e.Error, want)
		}
	}
}
