package alert

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/sample"
)

var testSecrets = Secrets{
	Getenv: func(k string) string {
		if k == "PO_TOKEN" {
			return "tok-from-env"
		}
		return ""
	},
	ReadFile: func(f string) ([]byte, error) {
		if f == "/run/pw" {
			return []byte("pw\n"), nil
		}
		return nil, os.ErrNotExist
	},
}

func TestParseChannel(t *testing.T) {
	for _, c := range []struct {
		spec, kind, target, err string
	}{
		{"name=ops,webhook=https://hooks.example.com/x", "webhook", "https://hooks.example.com/…", ""},
		{"name=ops,webhook=https://user:secret@hooks.example.com/x?token=T", "webhook", "https://hooks.example.com/…", ""},
		{"name=ops,webhook=https://hooks.example.com", "webhook", "https://hooks.example.com", ""},
		{"name=m,email=a@b.c;d@e.f,smtp=mx:587,from=s@b.c,user=u,password-file=/run/pw", "email", "a@b.c;d@e.f via mx:587", ""},
		{"name=po,pushover=USER,token-env=PO_TOKEN", "pushover", DefaultPushover, ""},
		{"name=po,pushover=USER,token-env=PO_TOKEN,url=http://127.0.0.1:9/m", "pushover", "http://127.0.0.1:9/m", ""},
		{"webhook=https://x", "", "", "name="},
		{"name=a b,webhook=https://x", "", "", "name="},
		{"name=ops", "", "", "want webhook=, email= or pushover="},
		{"name=ops,webhook=ftp://x", "", "", "http or https"},
		{"name=ops,webhook=https://x,colour=red", "", "", "colour= is not a setting"},
		{"name=ops,webhook=https://x,name=b", "", "", "given twice"},
		{"name=po,pushover=U,token=abc", "", "", "token= is refused: a flag shows in ps"},
		{"name=m,email=a@b.c,smtp=mx:25,from=s@b.c,user=u,password=pw", "", "", "password= is refused"},
		{"name=m,email=a@b.c,smtp=mx:25,from=s@b.c,user=u", "", "", "user= needs password-file="},
		{"name=m,email=a@b.c,smtp=mx:25,from=s@b.c,user=u,password-file=/nope", "", "", "read password-file"},
		{"name=po,pushover=U,token-env=UNSET", "", "", "empty or unset"},
		{"name=po,pushover=U", "", "", "token-file= or token-env="},
		{"name=m,email=a@b.c,smtp=mx,from=s@b.c", "", "", "host:port"},
		{"name=m,email=<a@b.c>,smtp=mx:25,from=s@b.c", "", "", "want addresses"},
		{"name=m,email=a@b.c,smtp=mx:25,from=s@b.c\r\nBcc: x@y.z", "", "", "from="},
		{"name=m,email=a@b.c,smtp=mx:25,from=s@b.c,starttls=never", "", "", "starttls="},
		{"name=ops,webhook=https://x,timeout=1h", "", "", "timeout="},
	} {
		ch, err := ParseChannel(c.spec, testSecrets)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want an error with %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.spec, err)
			continue
		}
		if ch.Kind != c.kind || ch.Target != c.target {
			t.Errorf("%q: %s %s, want %s %s", c.spec, ch.Kind, ch.Target, c.kind, c.target)
		}
	}
}

// lateAlert opens a store with a fake clock and makes a heartbeat of
// service with channel go late: one alert queued.
func lateAlert(t *testing.T, channel string) (*engine.DB, sample.Alert) {
	t.Helper()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	db, err := engine.Open(t.TempDir(), engine.Options{SnapshotInterval: time.Hour, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	if err := db.Pulse(ctx, "cron", time.Second, channel); err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(2 * time.Second))
	if err := db.Append(ctx, []sample.Op{{Code: sample.Set, Key: "tick", Value: 1}}, make([]error, 1)); err != nil {
		t.Fatal(err)
	}
	alerts := db.PendingAlerts(nil)
	if len(alerts) != 1 {
		t.Fatalf("alerts: %+v", alerts)
	}
	return db, alerts[0]
}

// deliver runs a Deliverer until cond holds.
func deliver(t *testing.T, db *engine.DB, chs []*Channel, cond func() bool) *Deliverer {
	t.Helper()
	d := NewDeliverer(db, chs, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	timeout := time.After(30 * time.Second)
	for {
		wait := db.NotifyEvents() // every outcome is an event
		if cond() {
			return d
		}
		select {
		case <-wait:
		case <-timeout:
			t.Fatal("delivery did not happen within 30 s")
		}
	}
}

func messages(t *testing.T, db *engine.DB) string {
	t.Helper()
	page, err := db.Events(context.Background(), sample.EventQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range page.Events {
		out = append(out, ev.Message)
	}
	return strings.Join(out, "\n")
}

// TestPushover posts Pushover's form to its API (here a local server at
// url=) with the token from the environment.
func TestPushover(t *testing.T) {
	forms := make(chan map[string]string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		f := map[string]string{}
		for k := range r.PostForm {
			f[k] = r.PostForm.Get(k)
		}
		forms <- f
		w.Write([]byte(`{"status":1,"request":"x"}`))
	}))
	defer srv.Close()
	ch, err := ParseChannel("name=phone,pushover=USERKEY,token-env=PO_TOKEN,url="+srv.URL+"/1/messages.json", testSecrets)
	if err != nil {
		t.Fatal(err)
	}
	db, a := lateAlert(t, "phone")
	deliver(t, db, []*Channel{ch}, func() bool { return len(db.PendingAlerts(nil)) == 0 })
	f := <-forms
	if f["token"] != "tok-from-env" || f["user"] != "USERKEY" || f["title"] != "sonde: cron late" ||
		f["message"] != "Service cron has not pulsed (alert "+strconv.FormatUint(a.ID, 10)+")" {
		t.Fatalf("form: %v", f)
	}
	if !strings.Contains(messages(t, db), "delivered to phone") {
		t.Fatalf("events: %s", messages(t, db))
	}
}

// TestDeliveryRetries: a receiver that fails twice gets the alert a
// third time, with the same id; each failed attempt is an event.
func TestDeliveryRetries(t *testing.T) {
	var calls atomic.Int32
	var ids [3]atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n <= 3 {
			ids[n-1].Store(r.Header.Get("X-Sonde-Alert-ID"))
		}
		if n <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ch, err := ParseChannel("name=ops,webhook="+srv.URL, testSecrets)
	if err != nil {
		t.Fatal(err)
	}
	db, a := lateAlert(t, "ops")
	d := deliver(t, db, []*Channel{ch}, func() bool { return len(db.PendingAlerts(nil)) == 0 })
	if calls.Load() != 3 {
		t.Fatalf("%d calls, want 3", calls.Load())
	}
	for i := range ids {
		if got := ids[i].Load(); got != strconv.FormatUint(a.ID, 10) {
			t.Fatalf("call %d had alert id %v, want %d", i, got, a.ID)
		}
	}
	ev := messages(t, db)
	if strings.Count(ev, "failed (attempt") != 2 || !strings.Contains(ev, "503 Service Unavailable") || !strings.Contains(ev, "delivered to ops") {
		t.Fatalf("events:\n%s", ev)
	}
	if st := d.Stats(); st.Delivered != 1 || st.Failed != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDroppedChannel: an alert whose channel is no longer configured is
// taken off the queue, and an event says why.
func TestDroppedChannel(t *testing.T) {
	db, a := lateAlert(t, "gone")
	d := deliver(t, db, nil, func() bool { return len(db.PendingAlerts(nil)) == 0 })
	if !strings.Contains(messages(t, db), `dropped: channel "gone" is not configured`) || d.Stats().Dropped != 1 {
		t.Fatalf("events: %s", messages(t, db))
	}
	if err := db.AlertDone(context.Background(), a.ID, "again"); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("done after the drop: %v", err)
	}
}

func TestParseCheck(t *testing.T) {
	c, err := ParseCheck("web=https://example.com/health,every=1m,expect=204,alert=ops,timeout=5s")
	if err != nil || c.Name != "web" || c.URL != "https://example.com/health" || c.Every != time.Minute || c.Expect != 204 ||
		c.Channel != "ops" || c.Timeout != 5*time.Second {
		t.Fatalf("%+v %v", c, err)
	}
	if c, err := ParseCheck("db=http://10.0.0.1:8080/,every=2s"); err != nil || c.Timeout != 2*time.Second || c.Expect != 200 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, bad := range []string{"https://x", "web=ftp://x", "a b=https://x", "web=https://x,every=10ms", "web=https://x,expect=99",
		"web=https://x,colour=red", "web=https://x,every=2d"} {
		if _, err := ParseCheck(bad); err == nil {
			t.Errorf("%q taken", bad)
		}
	}
}

// TestWebhookSecretsStayOut: a failed webhook's event and error name the
// host, never the path, query or password that may hold its token.
func TestWebhookSecretsStayOut(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusForbidden)
	}))
	defer srv.Close()
	for _, target := range []string{srv.URL + "/services/T0/B0/SECRETPATH?token=SECRETQUERY", "http://bob:SECRETPW@127.0.0.1:1/x?token=SECRETQUERY"} {
		ch, err := ParseChannel("name=ops,webhook="+target, testSecrets)
		if err != nil {
			t.Fatal(err)
		}
		err = ch.Send(context.Background(), &sample.Alert{ID: 1, Service: "s", Kind: sample.AlertLate})
		if err == nil || strings.Contains(err.Error(), "SECRET") || strings.Contains(ch.Target, "SECRET") {
			t.Fatalf("%s: error %v, target %s", target, err, ch.Target)
		}
	}
}
