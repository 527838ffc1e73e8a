package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wtClient makes the calls watchtower's own client makes (its client.py):
// the same methods, paths, JSON bodies and password header, and the same
// test of the answer: HTTP 200 and "result" 200.
type wtClient struct {
	t        *testing.T
	base     string
	password string
}

func (c *wtClient) call(method, path string, query url.Values, body any) map[string]any {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if query != nil {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("password", c.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil {
		c.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return out
}

// ok calls and wants result 200, as client.py's _processResult does.
func (c *wtClient) ok(method, path string, query url.Values, body any) map[string]any {
	c.t.Helper()
	out := c.call(method, path, query, body)
	if out["result"] != 200.0 {
		c.t.Fatalf("%s %s: result %v: %v", method, path, out["result"], out)
	}
	return out
}

// TestWatchtower: watchtower's client calls (pulse, cancel, heartbeats,
// add event, events) succeed against -watchtower, with its answer
// shapes; a wrong or missing password gets {"result":403}; a pulse is a
// Sonde heartbeat, alerting through the channel its alert type names.
func TestWatchtower(t *testing.T) {
	r := newReceiver(t, nil)
	pw := filepath.Join(t.TempDir(), "wt-password")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, t.TempDir(), "-watchtower", "127.0.0.1:0", "-watchtower-password-file", pw,
		"-alert", "name=ops,webhook="+r.URL)
	base := "http://" + p.addrs["watchtower"].(string)
	c := &wtClient{t: t, base: base, password: "hunter2"}

	hello := c.ok("GET", "/hello", nil, nil)
	if w, _ := hello["world"].(float64); time.Since(time.Unix(int64(w), 0)).Abs() > time.Minute {
		t.Fatalf("hello: %v", hello)
	}
	// pulse, as HearbeatManager sends it (alertType webhook: the only
	// channel of that kind)
	out := c.ok("POST", "/heartbeat", nil, map[string]any{"service": "backup", "alertType": "webhook", "alertTarget": "me@example.com", "nextIn": 1})
	hb, _ := out["heartBeat"].(map[string]any)
	if out["action"] != "pulse" || hb["service"] != "backup" || hb["alertTarget"] != "ops" || hb["nextIn"] != 1.0 || hb["cancelled"] != false {
		t.Fatalf("pulse: %v", out)
	}
	if call := r.call(t); call.Service != "backup" || call.Kind != "late" {
		t.Fatalf("late call: %+v", call)
	}
	list := c.ok("GET", "/heartbeats", nil, nil)
	hbs, _ := list["heartBeats"].([]any)
	if len(hbs) != 1 || hbs[0].(map[string]any)["alerted"] != true {
		t.Fatalf("heartbeats: %v", list)
	}
	if one := c.ok("GET", "/heartbeat/backup", nil, nil); one["heartBeat"].(map[string]any)["service"] != "backup" {
		t.Fatalf("one heartbeat: %v", one)
	}
	if miss := c.call("GET", "/heartbeat/nobody", nil, nil); miss["result"] != 500.0 || miss["hint"] != "service not found" {
		t.Fatalf("missing heartbeat: %v", miss)
	}
	// cancel
	if out := c.ok("DELETE", "/heartbeat", nil, map[string]any{"service": "backup"}); out["action"] != "cancel" ||
		out["heartBeat"].(map[string]any)["cancelled"] != true {
		t.Fatalf("cancel: %v", out)
	}
	if out := c.ok("DELETE", "/heartbeat", nil, map[string]any{"service": "nobody"}); out["heartBeat"] != "nobody" {
		t.Fatalf("cancel of an unknown service: %v", out)
	}
	// add event, events
	for i := range 3 {
		c.ok("POST", "/event", nil, map[string]any{"service": "deploy", "level": i, "message": fmt.Sprintf("Step %d (of 3)", i)})
	}
	c.ok("POST", "/event", nil, map[string]any{"service": "other", "level": 5, "message": "unrelated"})
	evs := c.ok("GET", "/events", url.Values{"service": {"DEPLOY"}, "level": {"1"}, "message": {"(of 3)"}}, nil)
	list2, _ := evs["events"].([]any)
	if len(list2) != 2 {
		t.Fatalf("events: %v", evs)
	}
	first := list2[0].(map[string]any)
	if first["message"] != "Step 1 (of 3)" || first["service"] != "deploy" || first["level"] != 1.0 ||
		time.Since(time.Unix(int64(first["date"].(float64)), 0)).Abs() > time.Minute {
		t.Fatalf("first event (oldest first, date in seconds): %v", first)
	}
	old := c.ok("GET", "/events", url.Values{"from": {"0"}, "to": {fmt.Sprint(time.Now().Add(-time.Hour).Unix())}}, nil)
	if l, _ := old["events"].([]any); len(l) != 0 {
		t.Fatalf("events of an hour ago: %v", old)
	}
	if pings := c.ok("GET", "/pings", nil, nil); pings["pings"] == nil {
		t.Fatalf("pings: %v", pings)
	}
	// watchtower's hints, in its shape
	if out := c.call("POST", "/heartbeat", nil, map[string]any{"service": "x", "alertType": "webhook", "alertTarget": "ops"}); out["result"] != 500.0 || out["hint"] != "no nextIn provided" {
		t.Fatalf("no nextIn: %v", out)
	}
	if out := c.call("POST", "/heartbeat", nil, map[string]any{"service": "x", "nextIn": 5, "alertType": "sms", "alertTarget": "+33..."}); out["result"] != 500.0 {
		t.Fatalf("an alert type with no channel: %v", out)
	}
	// hostile values get watchtower's answer, never a panic or everything
	if out := c.call("GET", "/events", url.Values{"service": {"\xff"}}, nil); out["result"] != 500.0 || !strings.Contains(out["hint"].(string), "UTF-8") {
		t.Fatalf("invalid UTF-8: %v", out)
	}
	if out := c.ok("GET", "/events", url.Values{"from": {"9223372036854776"}, "to": {"9223372036854776"}}, nil); len(out["events"].([]any)) != 0 {
		t.Fatalf("times past the year 9999: %v", out)
	}
	if out := c.call("GET", "/nowhere", nil, nil); out["result"] != 404.0 {
		t.Fatalf("an unknown route: %v", out)
	}
	if n := p.panics()["watchtower"]; n != 0 {
		t.Fatalf("%d panics in the watchtower handler", n)
	}
	// a wrong or missing password
	for _, bad := range []string{"", "hunter3"} {
		wrong := &wtClient{t: t, base: base, password: bad}
		for _, call := range []struct{ method, path string }{{"GET", "/hello"}, {"GET", "/heartbeats"}, {"POST", "/event"}, {"GET", "/events"}} {
			if out := wrong.call(call.method, call.path, nil, map[string]any{"service": "x", "message": "y"}); out["result"] != 403.0 || len(out) != 1 {
				t.Fatalf("password %q, %s %s: %v", bad, call.method, call.path, out)
			}
		}
	}
	if n := len(p.listEvents("service=^x$")); n != 0 {
		t.Fatalf("a refused request wrote %d events", n)
	}
}
