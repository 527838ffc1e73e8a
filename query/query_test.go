package query

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestIncreaseAndRateHandleResets(t *testing.T) {
	pts := []sample.Point{{T: 0, V: 10}, {T: 1000, V: 15}, {T: 2000, V: 3}, {T: 3000, V: 8}, {T: 4000, V: 8}}
	inc, resets := Increase(pts)
	if inc != 5+3+5 || resets != 1 {
		t.Fatalf("increase %v with %d resets, want 13 with 1", inc, resets)
	}
	rate, inc2, _, ok := Rate(pts)
	if !ok || inc2 != 13 || rate != 13.0/4 {
		t.Fatalf("rate %v (ok %v), want 3.25", rate, ok)
	}
	if _, _, _, ok := Rate(pts[:1]); ok {
		t.Fatal("rate of one point must be undefined")
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, key string
		want     bool
	}{
		{"*", "anything/at.all", true}, {"cpu.*", "cpu.load", true}, {"cpu.*", "mem.free", false},
		{"*.load", "host1.cpu.load", true}, {"h?st", "host", true}, {"h?st", "hoost", false},
		{"a*b*c", "aXXbYYc", true}, {"a*b*c", "aXXbYY", false}, {`a\*`, "a*", true}, {`a\*`, "ab", false},
		{"", "", true}, {"", "x", false}, {"**", "", true},
	} {
		g, err := CompileGlob(c.pat)
		if err != nil {
			t.Fatalf("CompileGlob(%q): %v", c.pat, err)
		}
		if got := g.Match(c.key); got != c.want {
			t.Errorf("Glob(%q).Match(%q) = %v", c.pat, c.key, got)
		}
	}
}

func TestJSONEncoding(t *testing.T) {
	for v, want := range map[float64]string{42: "42", 0.5: "0.5", -1.25: "-1.25", 1e21: "1e+21", 1e-7: "1e-07", 0: "0", math.NaN(): "null"} {
		if got := string(appendFloat(nil, v)); got != want {
			t.Errorf("appendFloat(%v) = %s, want %s", v, got, want)
		}
	}
	s := "a\"b\\c\x01<é>\xff"
	var back string
	if err := json.Unmarshal(appendString(nil, s), &back); err != nil {
		t.Fatal(err)
	}
	if back != "a\"b\\c\x01<é>\ufffd" {
		t.Fatalf("round trip %q", back)
	}
	// JSONP: no raw line separator, which JavaScript before ES2019 ends a
	// string at.
	if got := string(appendString(nil, "a\u2028b\u2029")); got != `"a\u2028b\u2029"` {
		t.Fatalf("line separators: %s", got)
	}
}

// TestRateOverHTTPWithReset serves a real engine whose counter restarted
// (as a collectd or Prometheus counter does) and asks for its rate.
func TestRateOverHTTPWithReset(t *testing.T) {
	var clock atomic.Int64
	clock.Store(1_000_000)
	db, err := engine.Open(t.TempDir(), engine.Options{Now: func() time.Time { return time.UnixMilli(clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, v := range []float64{100, 160, 220, 20, 80} {
		errs := make([]error, 1)
		if err := db.Append(context.Background(), []sample.Op{{Code: sample.CounterSet, Key: "rx", Value: v}}, errs); err != nil || errs[0] != nil {
			t.Fatal(err, errs[0])
		}
		clock.Add(10_000)
	}
	srv, err := Listen(Options{Addr: "127.0.0.1:0"}, db)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Shutdown(context.Background())
	get := func(path string, v any) int {
		resp, err := http.Get("http://" + srv.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %q: %v", path, b, err)
		}
		return resp.StatusCode
	}
	var r struct {
		Rate     float64 `json:"rate"`
		Increase float64 `json:"increase"`
		Resets   int     `json:"resets"`
	}
	if code := get("/api/v1/series/rx/history?fn=rate", &r); code != 200 {
		t.Fatalf("status %d", code)
	}
	// 60 + 60 + 20 (reset: restarted from 0) + 60 over 40 s.
	if r.Increase != 200 || r.Resets != 1 || r.Rate != 5 {
		t.Fatalf("got %+v, want increase 200, 1 reset, 5/s", r)
	}
	// A sub-range: only the points in [1010000, 1030000].
	if get("/api/v1/series/rx/history?fn=rate&from=1010000&to=1030000", &r); r.Increase != 80 || r.Rate != 4 {
		t.Fatalf("sub-range: %+v, want increase 80 over 20 s", r)
	}
	var h struct {
		Points [][2]float64 `json:"points"`
	}
	if get("/api/v1/series/rx/history?limit=2", &h); len(h.Points) != 2 || h.Points[1][1] != 80 {
		t.Fatalf("limit=2: %v", h.Points)
	}
}
