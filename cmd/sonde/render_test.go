package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type renderSeries struct {
	Target     string            `json:"target"`
	Tags       map[string]string `json:"tags"`
	Datapoints [][2]*float64     `json:"datapoints"`
}

// grafanaRender posts a render request the way Grafana's Graphite data
// source does: a form with epoch-second from/until, format=json and
// maxDataPoints.
func grafanaRender(t *testing.T, p *proc, form url.Values) (int, []renderSeries, string) {
	t.Helper()
	resp, err := http.PostForm(p.url("/render"), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []renderSeries
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("render: %v in %s", err, body)
		}
	}
	return resp.StatusCode, out, string(body)
}

func points(s renderSeries) string {
	var b strings.Builder
	for _, dp := range s.Datapoints {
		if dp[0] == nil {
			fmt.Fprintf(&b, "[null %.0f]", *dp[1])
		} else {
			fmt.Fprintf(&b, "[%v %.0f]", *dp[0], *dp[1])
		}
	}
	return b.String()
}

// TestGraphiteRenderAPI drives /render and /metrics/find with the request
// shapes Grafana's Graphite data source sends and checks the JSON.
func TestGraphiteRenderAPI(t *testing.T) {
	p := start(t, t.TempDir())
	c := p.dialGraphite()
	t0 := time.Now().Unix() - 100
	fmt.Fprintf(c, "servers.web01.load 1 %d\nservers.web01.load 2 %d\nservers.web01.load 3 %d\n", t0, t0+10, t0+20)
	fmt.Fprintf(c, "servers.web02.load 5 %d\nservers.web01.cpu.user 7 %d\ndisk.used;dc=eu 9 %d\n", t0, t0, t0)
	p.waitStats("graphite", func(s listenerStats) bool { return s.Commands == 6 })

	form := url.Values{"target": {"servers.*.load"}, "from": {fmt.Sprint(t0 - 5)}, "until": {fmt.Sprint(t0 + 25)}, "format": {"json"}}
	code, got, body := grafanaRender(t, p, form)
	if code != 200 || len(got) != 2 || got[0].Target != "servers.web01.load" || got[1].Target != "servers.web02.load" || got[0].Tags["name"] != got[0].Target {
		t.Fatalf("render: %d %s", code, body)
	}
	if want := fmt.Sprintf("[1 %d][2 %d][3 %d]", t0, t0+10, t0+20); points(got[0]) != want {
		t.Errorf("raw points %s, want %s", points(got[0]), want)
	}
	// maxDataPoints=2 over 30 s: 15 s steps from `from`, averaged, null
	// where a step has nothing.
	form.Set("maxDataPoints", "2")
	form.Set("target", "servers.web01.load")
	_, got, body = grafanaRender(t, p, form)
	if want := fmt.Sprintf("[1 %d][2.5 %d][null %d]", t0-5, t0+10, t0+25); len(got) != 1 || points(got[0]) != want {
		t.Errorf("consolidated %s, want %s", body, want)
	}
	// Grafana's health check.
	code, got, body = grafanaRender(t, p, url.Values{"target": {"constantLine(100)"}, "from": {"-1h"}, "until": {"now"}, "format": {"json"}, "maxDataPoints": {"100"}})
	if code != 200 || len(got) != 1 || len(got[0].Datapoints) != 2 || *got[0].Datapoints[0][0] != 100 {
		t.Fatalf("constantLine: %d %s", code, body)
	}
	// Several targets, a brace pattern, and a GET.
	resp, err := http.Get(p.url("/render?format=json&target=servers.web0{1,2}.load&target=disk.*&from=" + fmt.Sprint(t0-5) + "&until=" + fmt.Sprint(t0+5)))
	if err != nil {
		t.Fatal(err)
	}
	var many []renderSeries
	json.NewDecoder(resp.Body).Decode(&many)
	resp.Body.Close()
	if len(many) != 3 || many[2].Target != "disk.used;dc=eu" {
		t.Errorf("several targets: %+v", many)
	}
	for target, want := range map[string]string{
		"sumSeries(servers.*.load)": "Graphite functions are not served",
		"servers.[web":              "[ without ]",
	} {
		code, _, body := grafanaRender(t, p, url.Values{"target": {target}, "from": {"-1h"}})
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s, want 400 with %q", target, code, body, want)
		}
	}
	if code, _, body := grafanaRender(t, p, url.Values{"target": {"x"}, "from": {"yesterday"}}); code != 400 || !strings.Contains(body, "yesterday") {
		t.Errorf("bad from: %d %s", code, body)
	}

	type node struct {
		Text       string `json:"text"`
		ID         string `json:"id"`
		Leaf       int    `json:"leaf"`
		Expandable int    `json:"expandable"`
	}
	for q, want := range map[string][]node{
		"*":                 {{"disk", "disk", 0, 1}, {"servers", "servers", 0, 1}},
		"servers.*":         {{"web01", "servers.web01", 0, 1}, {"web02", "servers.web02", 0, 1}},
		"servers.web01.*":   {{"cpu", "servers.web01.cpu", 0, 1}, {"load", "servers.web01.load", 1, 0}},
		"servers.web0?.lo*": {{"load", "servers.web01.load", 1, 0}, {"load", "servers.web02.load", 1, 0}},
		"nothing.*":         {},
	} {
		var got []node
		if code := p.get("/metrics/find?query="+url.QueryEscape(q), &got); code != 200 {
			t.Fatalf("find %s: %d", q, code)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("find %s = %v, want %v", q, got, want)
		}
	}
}

// TestHistoryStepAndMatch: history reads downsampled by step and agg, for
// one key and for every key a glob matches, over a real server.
func TestHistoryStepAndMatch(t *testing.T) {
	p := start(t, t.TempDir())
	c := p.dialGraphite()
	base := (time.Now().Unix()/600 - 2) * 600 // a 10-minute boundary, so steps of 1 and 2 minutes start there
	for i, v := range []float64{1, 2, 3, 10, 20, 30} {
		fmt.Fprintf(c, "web.a.load %v %d\nweb.b.load %v %d\n", v, base+int64(i)*20, v*2, base+int64(i)*20)
	}
	p.waitStats("graphite", func(s listenerStats) bool { return s.Commands == 12 })
	cl := dial(t, p.tcpAddr)
	for range 3 {
		cl.do(t, "INCR hits 5")
	}
	var one struct {
		Step   int64        `json:"step"`
		Agg    string       `json:"agg"`
		Points [][2]float64 `json:"points"`
	}
	p.get("/api/v1/series/web.a.load/history?step=1m&agg=max", &one)
	want := [][2]float64{{float64(base * 1000), 3}, {float64((base + 60) * 1000), 30}}
	if one.Step != 60000 || one.Agg != "max" || !equalPoints(one.Points, want) {
		t.Fatalf("step=1m&agg=max: %+v, want %v", one, want)
	}
	p.get("/api/v1/series/web.a.load/history?step=60000", &one)
	if one.Agg != "avg" || len(one.Points) != 2 || one.Points[0][1] != 2 || one.Points[1][1] != 20 {
		t.Fatalf("default avg: %+v", one)
	}
	var many historyMany
	p.get("/api/v1/history?match=web.*.load&step=2m&agg=sum", &many)
	if len(many.Series) != 2 || many.Series[1].Key != "web.b.load" || len(many.Series[1].Points) != 1 || many.Series[1].Points[0][1] != 132 {
		t.Fatalf("match: %+v", many)
	}
	var e map[string]string
	for path, want := range map[string]string{
		"/api/v1/series/web.a.load/history?agg=max":            "agg= needs step=",
		"/api/v1/series/web.a.load/history?step=1m&agg=median": "median",
		"/api/v1/series/web.a.load/history?step=1m&agg=rate":   "need a COUNTER",
		"/api/v1/series/hits/history?fn=rate&step=1m":          "whole range",
		"/api/v1/history": "match= is missing",
	} {
		if code := p.get(path, &e); code != 400 || !strings.Contains(e["error"], want) {
			t.Errorf("%s: %d %v, want 400 with %q", path, code, e, want)
		}
	}
	var inc struct {
		Points [][2]float64 `json:"points"`
	}
	p.get("/api/v1/series/hits/history?step=1h&agg=increase", &inc)
	// Totals 5, 10, 15: the first point counts from nothing, so the steps
	// (one, or two if an hour began between the writes) add up to 10.
	var sum float64
	for _, pt := range inc.Points {
		sum += pt[1]
	}
	if len(inc.Points) == 0 || len(inc.Points) > 2 || sum != 10 {
		t.Fatalf("increase per hour: %+v, want steps adding up to 10", inc)
	}
}

// TestGraphiteTags sends tagged series over Graphite plaintext and
// selects them by tag: /tags/findSeries and /render?target=seriesByTag.
func TestGraphiteTags(t *testing.T) {
	p := start(t, t.TempDir())
	c := p.dialGraphite()
	t0 := time.Now().Unix() - 100
	lines := []string{
		"cpu;dc=eu;host=a 1", "cpu;dc=eu;host=b 2", "cpu;dc=us;host=c 3",
		"mem;dc=eu;host=a 4", "cpu 5", "cpu.user;dc=eu 6",
	}
	for _, l := range lines {
		fmt.Fprintf(c, "%s %d\n", l, t0)
	}
	p.waitStats("graphite", func(s listenerStats) bool { return s.Commands == int64(len(lines)) })
	find := func(exprs ...string) (int, []string, string) {
		t.Helper()
		q := url.Values{"expr": exprs}
		resp, err := http.Get(p.url("/tags/findSeries?" + q.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var keys []string
		if resp.StatusCode == 200 {
			if err := json.Unmarshal(body, &keys); err != nil {
				t.Fatalf("findSeries: %v in %s", err, body)
			}
		}
		return resp.StatusCode, keys, string(body)
	}
	for _, c := range []struct {
		exprs []string
		want  string
	}{
		{[]string{"dc=eu"}, "cpu.user;dc=eu cpu;dc=eu;host=a cpu;dc=eu;host=b mem;dc=eu;host=a"},
		{[]string{"name=cpu", "dc=eu"}, "cpu;dc=eu;host=a cpu;dc=eu;host=b"},
		{[]string{"name=cpu", "host!=a"}, "cpu cpu;dc=eu;host=b cpu;dc=us;host=c"},
		{[]string{"host=~[ab]", "name!=mem"}, "cpu;dc=eu;host=a cpu;dc=eu;host=b"},
		{[]string{"dc=~u"}, "cpu;dc=us;host=c"},
	} {
		code, keys, body := find(c.exprs...)
		if code != 200 || strings.Join(keys, " ") != c.want {
			t.Errorf("findSeries %q: %d %q (%s), want %q", c.exprs, code, keys, body, c.want)
		}
	}
	for _, bad := range [][]string{{"dc!=eu"}, {"dc"}, {"dc=~("}, nil} {
		if code, _, body := find(bad...); code != 400 {
			t.Errorf("findSeries %q: %d %s, want 400", bad, code, body)
		}
	}
	code, out, body := grafanaRender(t, p, url.Values{"target": {"seriesByTag('name=cpu','dc=eu')"},
		"from": {fmt.Sprint(t0 - 10)}, "until": {fmt.Sprint(t0 + 10)}, "format": {"json"}})
	if code != 200 || len(out) != 2 {
		t.Fatalf("render seriesByTag: %d %s", code, body)
	}
	for i, want := range []string{"cpu;dc=eu;host=a", "cpu;dc=eu;host=b"} {
		if out[i].Tags["name"] != "cpu" || out[i].Tags["host"] != want[len(want)-1:] || out[i].Tags["dc"] != "eu" || len(out[i].Datapoints) == 0 {
			t.Errorf("render seriesByTag: series %d is %+v, want %s", i, out[i], want)
		}
	}
	if code, _, body := grafanaRender(t, p, url.Values{"target": {"seriesByTag(name=cpu)"}, "format": {"json"}}); code != 400 {
		t.Errorf("seriesByTag without quotes: %d %s, want 400", code, body)
	}
}
