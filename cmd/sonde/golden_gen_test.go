//go:build golden

package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGenerateGolden writes a golden data directory with a released sonde
// binary: engine/testdata/golden-<name>/ holds its WAL segments and
// snapshot.db, and expected.json what that release answered for every key
// (series and full history) just before it was killed with SIGKILL.
// engine's TestGoldenDataDir opens the directory with today's engine and
// checks every value and point, so every later format change keeps old
// data readable.
//
// It is built only with the golden tag, and run with a released binary:
//
//	git worktree add /tmp/rel <release commit> && (cd /tmp/rel && go build -o /tmp/sonde-rel ./cmd/sonde)
//	SONDE_GOLDEN_BINARY=/tmp/sonde-rel SONDE_GOLDEN_NAME=v2 go test -tags golden -run TestGenerateGolden ./cmd/sonde/
//
// golden-v1 was written by commit 84c0299 (the release before issue 10).
func TestGenerateGolden(t *testing.T) {
	rel, name := os.Getenv("SONDE_GOLDEN_BINARY"), os.Getenv("SONDE_GOLDEN_NAME")
	if rel == "" || name == "" {
		t.Fatal("set SONDE_GOLDEN_BINARY (a released sonde) and SONDE_GOLDEN_NAME (v2, v3, ...)")
	}
	saved := binary
	binary = rel
	defer func() { binary = saved }()
	out, err := filepath.Abs(filepath.Join("..", "..", "engine", "testdata", "golden-"+name))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	dir := filepath.Join(work, "data")
	now := time.Now()

	// Phase 1: many small snapshots, compaction into small chunks, rings
	// that wrap, retention that archives and expires old points; it ends
	// with SIGTERM (a final snapshot).
	p := start(t, dir, "-snapshot-interval", "200ms", "-chunk-points", "16", "-ring", "8", "-tcp-oneshot-idle", "-1s")
	c := dial(t, p.tcpAddr)
	for i := range 10 {
		for j := range 60 {
			v := []string{fmt.Sprint(i*1000 + j), fmt.Sprintf("%d.25", -j), "1e15", "0.000000001", fmt.Sprintf("%d.5", j*j)}[(i+j)%5]
			mustOK(t, c, fmt.Sprintf("SET g.%d %s", i, v))
		}
	}
	for i := range 4 {
		mustOK(t, c, fmt.Sprintf("INCR c.%d %d 1000", i, i+1))
	}
	// Let windows close, with increments in between.
	for round := range 3 {
		idx := p.index()
		p.poll("a window end", func() bool { return p.index() > idx+3 })
		for i := range 4 {
			mustOK(t, c, fmt.Sprintf("INCR c.%d %d", i, round+2))
		}
	}
	mustOK(t, c, "DELETE g.9")
	for j := range 10 {
		mustOK(t, c, fmt.Sprintf("SET g.9 %d", 100+j))
	}
	mustOK(t, c, "DELETE g.8")
	// Graphite: an old series that retention archives and expires, and a
	// tagged recent one.
	g := p.dialGraphite()
	old := now.Add(-30 * 24 * time.Hour).Truncate(time.Hour).Unix()
	var b strings.Builder
	for k := range 1440 {
		fmt.Fprintf(&b, "old.metric %.2f %d\n", 50+20*math.Sin(float64(k)/30), old+30+int64(k)*600)
	}
	recent := now.Add(-30 * time.Minute).Unix()
	for k := range 150 {
		fmt.Fprintf(&b, "recent.metric;host=a %d %d\n", k%7, recent+int64(k)*10)
	}
	if _, err := g.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	p.waitStats("graphite", func(s listenerStats) bool { return s.Commands == 1590 })
	// collectd: derives, with a reset, and a counter (CounterSet records).
	cd := "http://" + p.collectdAddr + "/"
	for k, v := range []int{100, 250, 400, 50, 90} {
		body := fmt.Sprintf("PUTVAL web01/interface-eth0/if_octets interval=10 %d:%d:%d\n", recent+int64(k)*10, v, v*2)
		if code, m := post(t, cd, "text/plain", body); code != 200 {
			t.Fatalf("collectd post: %d %v", code, m)
		}
	}
	// Wait for retention to have archived old.metric and expired its raw
	// points: the archived and expired counts stop moving.
	var last [2]int64
	steady := 0
	p.poll("retention to settle", func() bool {
		h := p.engineStats()
		cur := [2]int64{h.Archived, h.Expired}
		if cur == last && cur[0] > 0 && cur[1] > 0 {
			steady++
		} else {
			steady = 0
		}
		last = cur
		return steady >= 20
	})
	if code := p.stop(); code != 0 {
		t.Fatalf("phase 1: exit %d", code)
	}
	pristine := filepath.Join(work, "phase1")
	copyDir(t, dir, pristine)

	// Phase 2: writes that only the WAL holds, then SIGKILL. Retried when a
	// window closed while the expected answers were read.
	var exp golden
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			t.Fatal("the index moved during every dump")
		}
		os.RemoveAll(dir)
		copyDir(t, pristine, dir)
		p = start(t, dir, "-snapshot-interval", "1h", "-tcp-oneshot-idle", "-1s")
		c = dial(t, p.tcpAddr)
		for i := range 8 {
			for j := range 5 {
				mustOK(t, c, fmt.Sprintf("SET g.%d %d.75", i, i*10+j))
			}
		}
		for j := range 5 {
			mustOK(t, c, fmt.Sprintf("SET g.9 %d", 200+j))
		}
		mustOK(t, c, "DELETE g.7")
		mustOK(t, c, "SET late.gauge 3.5")
		mustOK(t, c, "SET late.gauge -7")
		for i := range 4 {
			mustOK(t, c, fmt.Sprintf("INCR c.%d 10", i))
		}
		mustOK(t, c, "INCR late.counter 5 3600000")
		g = p.dialGraphite()
		fmt.Fprintf(g, "recent.metric;host=a 42 %d\nrecent.metric;host=a 43 %d\n", recent+1600, recent+1610)
		p.waitStats("graphite", func(s listenerStats) bool { return s.Commands == 2 })
		cd = "http://" + p.collectdAddr + "/"
		if code, m := post(t, cd, "text/plain", fmt.Sprintf("PUTVAL web01/interface-eth0/if_octets interval=10 %d:120:240\n", recent+1700)); code != 200 {
			t.Fatalf("collectd post: %d %v", code, m)
		}
		exp = golden{NowMs: time.Now().UnixMilli(), Index: p.index()}
		p.get("/api/v1/series", &exp.Series)
		for i := range exp.Series {
			s := &exp.Series[i]
			var h struct {
				Points [][2]float64 `json:"points"`
			}
			p.get("/api/v1/series/"+url.PathEscape(s.Key)+"/history", &h)
			s.History = h.Points
		}
		p.get("/data", &exp.Data)
		moved := p.index() != exp.Index
		p.kill()
		if !moved {
			break
		}
		t.Logf("attempt %d: a window closed during the dump; again", attempt)
	}
	os.RemoveAll(out)
	copyDir(t, dir, out)
	os.Remove(filepath.Join(out, "LOCK"))
	js, err := json.MarshalIndent(exp, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "expected.json"), append(js, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: %d series, index %d", out, len(exp.Series), exp.Index)
}

// golden is engine/testdata/golden-*/expected.json (the engine test has
// its own copy of this shape).
type golden struct {
	NowMs  int64              `json:"now_ms"`
	Index  uint64             `json:"index"`
	Data   map[string]float64 `json:"data"`
	Series []goldenSeries     `json:"series"`
}

type goldenSeries struct {
	Key      string       `json:"key"`
	Type     string       `json:"type"`
	Value    float64      `json:"value"`
	View     float64      `json:"view"`
	Updated  int64        `json:"updated"`
	Points   uint64       `json:"points"`
	Interval int64        `json:"interval"`
	History  [][2]float64 `json:"history"`
}

func mustOK(t *testing.T, c *client, line string) {
	t.Helper()
	if r := c.do(t, line)[0]; r != "+OK" {
		t.Fatalf("%s: %s", line, r)
	}
}

type engineCounters struct {
	Archived int64 `json:"archived_points"`
	Expired  int64 `json:"expired_chunks"`
}

func (p *proc) engineStats() engineCounters {
	var st struct {
		Engine engineCounters `json:"engine"`
	}
	p.get("/api/v1/stats", &st)
	return st.Engine
}
