package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// webhookCall is one alert a receiver got.
type webhookCall struct {
	ID      uint64 `json:"id"`
	Service string `json:"service"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
	Channel string `json:"channel"`
	Header  string `json:"-"` // X-Sonde-Alert-ID
}

// receiver is a real local HTTP server taking webhook alerts. Each call
// is sent on calls; answer decides the status (nil: 200), and may block.
type receiver struct {
	*httptest.Server
	calls  chan webhookCall
	answer func(webhookCall) int
}

func newReceiver(t *testing.T, answer func(webhookCall) int) *receiver {
	r := &receiver{calls: make(chan webhookCall, 100), answer: answer}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var c webhookCall
		if err := json.Unmarshal(b, &c); err != nil {
			t.Errorf("webhook body %q: %v", b, err)
		}
		c.Header = req.Header.Get("X-Sonde-Alert-ID")
		r.calls <- c
		code := 200
		if r.answer != nil {
			code = r.answer(c)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.Close)
	return r
}

// call waits for the receiver's next call.
func (r *receiver) call(t *testing.T) webhookCall {
	t.Helper()
	select {
	case c := <-r.calls:
		return c
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook call within 30 s")
		return webhookCall{}
	}
}

// noMore fails if the receiver got a call not taken yet.
func (r *receiver) noMore(t *testing.T) {
	t.Helper()
	select {
	case extra := <-r.calls:
		t.Fatalf("an extra call: %+v", extra)
	default:
	}
}

func (p *proc) send(method, path, body string) (int, string) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.url(path), strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type heartbeatJSON struct {
	Service  string  `json:"service"`
	NextIn   float64 `json:"nextIn"`
	Alert    string  `json:"alert"`
	Last     int64   `json:"last"`
	Expected int64   `json:"expected"`
	State    string  `json:"state"`
	Alerted  bool    `json:"alerted"`
}

func (p *proc) heartbeat(service string) heartbeatJSON {
	p.t.Helper()
	var h heartbeatJSON
	p.get("/api/v1/heartbeats/"+service, &h)
	return h
}

// TestHeartbeatWebhook: a pulse with nextIn=1 and no renewal gives one
// late event and one webhook call on a real local receiver; the next
// pulse gives the "pulsing again" event and call. The channel must be
// configured, the series charts the state, and cancel works once.
func TestHeartbeatWebhook(t *testing.T) {
	r := newReceiver(t, nil)
	p := start(t, t.TempDir(), "-alert", "name=ops,webhook="+r.URL+"/hook")
	if code, body := p.send("POST", "/api/v1/heartbeats", `{"service":"cron","nextIn":1,"alert":"pager"}`); code != 400 || !strings.Contains(body, `\"pager\" is not configured (configured: ops)`) {
		t.Fatalf("unknown channel: %d %s", code, body)
	}
	if code, body := p.send("POST", "/api/v1/heartbeats", `{"service":"cron","nextIn":1,"alert":"ops"}`); code != 200 || !strings.Contains(body, `"state":"on-time"`) {
		t.Fatalf("pulse: %d %s", code, body)
	}
	c := r.call(t)
	if c.Kind != "late" || c.Service != "cron" || c.Message != "Service cron has not pulsed" || c.Channel != "ops" || c.Header != fmt.Sprint(c.ID) {
		t.Fatalf("late call: %+v", c)
	}
	waitFor(t, "the late alert done", func() bool { return len(p.alerts()) == 0 })
	if h := p.heartbeat("cron"); h.State != "late" || !h.Alerted || h.NextIn != 1 || h.Alert != "ops" {
		t.Fatalf("heartbeat while late: %+v", h)
	}
	var se struct {
		Value float64 `json:"value"`
	}
	p.get("/api/v1/series/heartbeat.cron.late", &se)
	if se.Value != 1 {
		t.Fatalf("heartbeat.cron.late = %v while late", se.Value)
	}
	if code, body := p.send("POST", "/api/v1/heartbeats", `{"service":"cron","nextIn":3600,"alert":"ops"}`); code != 200 {
		t.Fatalf("pulse: %d %s", code, body)
	}
	back := r.call(t) // the next call: no second late one came before it
	if back.Kind != "back" || back.Message != "Service cron is pulsing again" || back.ID <= c.ID {
		t.Fatalf("back call: %+v after %+v", back, c)
	}
	p.get("/api/v1/series/heartbeat.cron.late", &se)
	if se.Value != 0 {
		t.Fatalf("heartbeat.cron.late = %v after the pulse", se.Value)
	}
	evs := p.listEvents("service=^cron$")
	var msgs []string
	for _, ev := range evs {
		msgs = append(msgs, ev.Message)
	}
	want := []string{"Service cron is pulsing again", "Service cron has not pulsed"}
	if len(msgs) < 2 || !strings.Contains(strings.Join(msgs, "|"), want[0]) || !strings.Contains(strings.Join(msgs, "|"), want[1]) ||
		!strings.Contains(strings.Join(msgs, "|"), fmt.Sprintf("alert %d (late) delivered to ops", c.ID)) {
		t.Fatalf("events: %q", msgs)
	}
	if code, _ := p.send("DELETE", "/api/v1/heartbeats/cron", ""); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	if h := p.heartbeat("cron"); h.State != "cancelled" {
		t.Fatalf("after cancel: %+v", h)
	}
	if code, body := p.send("DELETE", "/api/v1/heartbeats/cron", ""); code != 404 || !strings.Contains(body, `no heartbeat of \"cron\"`) {
		t.Fatalf("cancel twice: %d %s, want 404", code, body)
	}
	for _, bad := range []string{"%00", "%ff", strings.Repeat("s", 201)} {
		if code, body := p.send("DELETE", "/api/v1/heartbeats/"+bad, ""); code != 400 {
			t.Fatalf("cancel %.20s: %d %s, want 400", bad, code, body)
		}
	}
	r.noMore(t)
}

func (p *proc) alerts() []webhookCall {
	p.t.Helper()
	var out struct {
		Alerts []webhookCall `json:"alerts"`
	}
	p.get("/api/v1/alerts", &out)
	return out.Alerts
}

// TestAlertSurvivesKill: Sonde is killed with SIGKILL after it decided an
// alert and while the receiver holds the delivery; after the restart the
// alert is delivered again, with the same id, and then taken off the
// queue.
func TestAlertSurvivesKill(t *testing.T) {
	hold := make(chan struct{})
	var held atomic.Bool
	r := newReceiver(t, func(c webhookCall) int {
		if held.CompareAndSwap(false, true) {
			<-hold // the delivery in flight when Sonde dies
		}
		return 200
	})
	defer close(hold)
	dir := t.TempDir()
	flag := "name=ops,webhook=" + r.URL
	p := start(t, dir, "-alert", flag)
	if code, body := p.send("POST", "/api/v1/heartbeats", `{"service":"backup","nextIn":1,"alert":"ops"}`); code != 200 {
		t.Fatalf("pulse: %d %s", code, body)
	}
	c := r.call(t)
	if c.Kind != "late" {
		t.Fatalf("call: %+v", c)
	}
	p.kill()
	p = start(t, dir, "-alert", flag)
	again := r.call(t)
	if again.ID != c.ID || again.Kind != "late" || again.Service != "backup" {
		t.Fatalf("after the restart: %+v, want the same alert as %+v", again, c)
	}
	waitFor(t, "the alert done", func() bool { return len(p.alerts()) == 0 })
	if h := p.heartbeat("backup"); h.State != "late" || !h.Alerted {
		t.Fatalf("after the restart: %+v", h)
	}
	// One death, one alert: the restart decided no second one.
	r.noMore(t)
}

// TestHTTPCheck: a -check whose URL starts failing records an event and
// alerts once, however many failed runs follow, and once more when it
// passes again; /api/v1/checks and watchtower's /pings list it.
func TestHTTPCheck(t *testing.T) {
	r := newReceiver(t, nil)
	var status atomic.Int32
	status.Store(200)
	runs := make(chan int32, 100)
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		code := status.Load()
		w.WriteHeader(int(code))
		select {
		case runs <- code:
		default:
		}
	}))
	defer health.Close()
	p := start(t, t.TempDir(), "-alert", "name=ops,webhook="+r.URL, "-check", "web="+health.URL+"/health,every=1s,alert=ops",
		"-watchtower", "127.0.0.1:0")
	nextRun := func(want int32) {
		t.Helper()
		for {
			select {
			case code := <-runs:
				if code == want {
					return
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no check run answered %d within 30 s", want)
			}
		}
	}
	nextRun(200)
	status.Store(503)
	c := r.call(t)
	if c.Kind != "failing" || c.Service != "web" || !strings.Contains(c.Message, "Check web is failing: GET "+health.URL+"/…: 503") || strings.Contains(c.Message, "/health") {
		t.Fatalf("failing call: %+v", c)
	}
	nextRun(503) // two more failed runs: no second alert
	nextRun(503)
	var checks struct {
		Checks []struct {
			Name     string  `json:"name"`
			Failing  bool    `json:"failing"`
			Every    float64 `json:"every"`
			Expect   int     `json:"expect"`
			LastPass int64   `json:"lastPass"`
		} `json:"checks"`
	}
	p.get("/api/v1/checks", &checks)
	if len(checks.Checks) != 1 || !checks.Checks[0].Failing || checks.Checks[0].Every != 1 || checks.Checks[0].Expect != 200 || checks.Checks[0].LastPass == 0 {
		t.Fatalf("checks: %+v", checks)
	}
	wt := &wtClient{t: t, base: "http://" + p.addrs["watchtower"].(string)}
	pings := wt.ok("GET", "/pings", nil, nil)["pings"].([]any)
	if len(pings) != 1 || pings[0].(map[string]any)["service"] != "web" || pings[0].(map[string]any)["alerted"] != true {
		t.Fatalf("pings: %v", pings)
	}
	status.Store(200)
	back := r.call(t)
	if back.Kind != "passing" || back.Message != "Check web passes again" {
		t.Fatalf("passing call: %+v", back)
	}
	var se struct {
		Value float64 `json:"value"`
	}
	p.get("/api/v1/series/check.web.failing", &se)
	if se.Value != 0 {
		t.Fatalf("check.web.failing = %v after recovery", se.Value)
	}
	r.noMore(t)
}
