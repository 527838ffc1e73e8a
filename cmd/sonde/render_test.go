package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
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
	c, err := net.Dial("tcp", p.graphiteAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
