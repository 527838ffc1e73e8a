package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestParseEvents(t *testing.T) {
	for _, c := range []struct {
		body string
		want []sample.Event
	}{
		{`{"service":"backup"}`, []sample.Event{{Service: "backup"}}},
		{` {"service":"backup","level":-2,"message":"done\nin 4 min","time":1790000000000,"alert":true}`,
			[]sample.Event{{Service: "backup", Level: -2, Message: "done\nin 4 min", Time: 1790000000000, Alert: true}}},
		{`[{"service":"a","level":1},{"service":"b é","message":"x"}]`,
			[]sample.Event{{Service: "a", Level: 1}, {Service: "b é", Message: "x"}}},
	} {
		got, err := ParseEvents([]byte(c.body))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %+v %v, want %+v", c.body, got, err, c.want)
		}
	}
}

func TestParseEventsRefuses(t *testing.T) {
	many := "[" + strings.Repeat(`{"service":"a"},`, MaxEvents) + `{"service":"a"}]`
	for _, c := range []struct{ body, why string }{
		{``, "an empty body"},
		{`{}`, "no service"},
		{`{"service":""}`, "empty key"},
		{`{"service":"` + strings.Repeat("s", MaxService+1) + `"}`, "longer than 200"},
		{`{"service":"a\u0001"}`, "control character"},
		{`{"service":"a","level":1.5}`, "want an integer"},
		{`{"service":"a","level":1e40}`, "want an integer"},
		{`{"service":"a","level":"x"}`, "invalid number"},
		{`{"service":"a","level":true}`, "level"},
		{`{"service":"a","time":0}`, "want an integer from 1"},
		{`{"service":"a","message":"` + strings.Repeat("m", MaxMessage+1) + `"}`, "longer than 4096"},
		{`{"service":"a","message":"a\u0000b"}`, "control character"},
		{`{"service":"a","mesage":"typo"}`, "unknown field"},
		{`{"service":"a"} {}`, "data after"},
		{`[]`, "empty list"},
		{many, "more than 1000 events"},
		{`[{"service":"a"},{"level":1}]`, "event 1: syntax: no service"},
		{`[1]`, "event 0: syntax: want a JSON object, not a JSON number"},
		// What encoding/json would let through, changed or in any case:
		{"{\"service\":\"a\xff\"}", "not valid UTF-8"},
		{`{"service":"ok\ud800"}`, "surrogate"},
		{`{"service":"ok\udc00x"}`, "surrogate"},
		{`{"service":"ok\ud800\u0041"}`, "surrogate"},
		{`{"SERVICE":"case"}`, "unknown field \"SERVICE\""},
		{`{"service":"a","service":"b"}`, "given twice"},
		{`[{"service":"a"},{"Service":"b"}]`, "event 1: syntax: unknown field"},
	} {
		_, err := ParseEvents([]byte(c.body))
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%.60s: %v, want a syntax error saying %q", c.body, err, c.why)
		}
	}
}

func TestParsePulse(t *testing.T) {
	p, err := ParsePulse([]byte(`{"service":"cron","nextIn":1.5,"alert":"ops"}`))
	if err != nil || p != (Pulse{Service: "cron", NextIn: 1500 * time.Millisecond, Alert: "ops"}) {
		t.Fatalf("%+v %v", p, err)
	}
	for _, c := range []struct{ body, why string }{
		{`{"nextIn":5}`, "no service"},
		{`{"service":"a"}`, "no nextIn"},
		{`{"service":"a","nextIn":0.5}`, "want seconds from 1"},
		{`{"service":"a","nextIn":1e12}`, "want seconds from 1"},
		{`{"service":"a","nextIn":5,"alert":"` + strings.Repeat("c", MaxChannel+1) + `"}`, "alert channel"},
		{`{"service":"a","nextIn":5,"alertTarget":"me@example.com"}`, "unknown field"},
	} {
		_, err := ParsePulse([]byte(c.body))
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v, want a syntax error saying %q", c.body, err, c.why)
		}
	}
}

// FuzzParseEvents: any body parses or is refused with a syntax error,
// never a panic; what parses keeps every limit and reads back the same
// when written as JSON again.
func FuzzParseEvents(f *testing.F) {
	f.Add([]byte(`[{"service":"a","level":1,"message":"m","time":5,"alert":true}]`))
	f.Add([]byte(`{"service":"é","message":"x\ny"}`))
	f.Add([]byte(`[{"service":"a"},{"service":"b"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := ParseEvents(body)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("%q: %v is not a syntax error", body, err)
			}
			return
		}
		if len(evs) == 0 || len(evs) > MaxEvents {
			t.Fatalf("%q: %d events", body, len(evs))
		}
		type out struct {
			Service string `json:"service"`
			Level   int64  `json:"level"`
			Message string `json:"message"`
			Time    int64  `json:"time,omitempty"`
			Alert   bool   `json:"alert"`
		}
		var again []out
		for _, e := range evs {
			if len(e.Service) == 0 || len(e.Service) > MaxService || len(e.Message) > MaxMessage || e.Time < 0 {
				t.Fatalf("%q: an event past the limits: %+v", body, e)
			}
			again = append(again, out{e.Service, e.Level, e.Message, e.Time, e.Alert})
		}
		b, _ := json.Marshal(again)
		evs2, err := ParseEvents(b)
		if err != nil || fmt.Sprint(evs2) != fmt.Sprint(evs) {
			t.Fatalf("%q read back from %s: %+v %v", body, b, evs2, err)
		}
	})
}

// FuzzParsePulse: any body parses or is refused with a syntax error; a
// pulse that parses keeps the limits.
func FuzzParsePulse(f *testing.F) {
	f.Add([]byte(`{"service":"cron","nextIn":60,"alert":"ops"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePulse(body)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("%q: %v is not a syntax error", body, err)
			}
			return
		}
		if p.Service == "" || len(p.Service) > MaxService || p.NextIn < MinNextIn || p.NextIn > MaxNextIn || len(p.Alert) > MaxChannel {
			t.Fatalf("%q: a pulse past the limits: %+v", body, p)
		}
	})
}

func TestParseSurrogatePairs(t *testing.T) {
	evs, err := ParseEvents([]byte(`{"service":"a","message":"\ud83d\ude00 \\ud800 \"\\\""}`))
	if err != nil || evs[0].Message != "😀 \\ud800 \"\\\"" {
		t.Fatalf("%+v %v", evs, err)
	}
}

func TestParseQuotedNumbers(t *testing.T) {
	evs, err := ParseEvents([]byte(`{"service":"a","level":"2","time":"5"}`))
	if err != nil || evs[0].Level != 2 || evs[0].Time != 5 {
		t.Fatalf("%+v %v", evs, err)
	}
}

func TestWatchtowerBodies(t *testing.T) {
	p, err := ParseWatchtowerPulse([]byte(`{"service":"backup","alertType":"pushover","alertTarget":"uKEY","nextIn":3600,"extra":1}`))
	if err != nil || p.Service != "backup" || p.NextIn != time.Hour || p.AlertType != "pushover" || p.AlertTarget != "uKEY" {
		t.Fatalf("pulse: %+v %v", p, err)
	}
	for body, hint := range map[string]string{
		`{"nextIn":1,"alertType":"a","alertTarget":"b"}`:               "no service provided",
		`{"service":"s","alertType":"a","alertTarget":"b"}`:            "no nextIn provided",
		`{"service":"s","nextIn":1,"alertType":"a"}`:                   "no alert target provided",
		`{"service":"s","nextIn":1,"alertTarget":"b"}`:                 "no alert type provided",
		`{"service":"s","nextIn":0,"alertType":"a","alertTarget":"b"}`: "nextIn 0",
		`not json`: "syntax",
		`{"Service":"s","nextIn":1,"alertType":"a","alertTarget":"b"}`: "no service provided",
		"{\"service\":\"s\xff\",\"nextIn\":1}":                         "not valid UTF-8",
		`[1]`:                                                          "want a JSON object",
		``:                                                             "an empty body",
	} {
		if _, err := ParseWatchtowerPulse([]byte(body)); err == nil || !strings.Contains(err.Error(), hint) {
			t.Errorf("%s: %v, want %q", body, err, hint)
		}
	}
	if s, err := ParseWatchtowerCancel([]byte(`{"service":"backup"}`)); err != nil || s != "backup" {
		t.Fatalf("cancel: %q %v", s, err)
	}
	if _, err := ParseWatchtowerCancel([]byte(`{}`)); err == nil || !strings.Contains(err.Error(), "no service provided") {
		t.Fatalf("cancel without service: %v", err)
	}
	ev, err := ParseWatchtowerEvent([]byte(`{"service":"backup","message":"done","level":2,"alert":true}`))
	if err != nil || ev.Service != "backup" || ev.Message != "done" || ev.Level != 2 || !ev.Alert {
		t.Fatalf("event: %+v %v", ev, err)
	}
	if _, err := ParseWatchtowerEvent([]byte(`{"service":"backup"}`)); err == nil || !strings.Contains(err.Error(), "no message provided") {
		t.Fatalf("event without message: %v", err)
	}
}

// FuzzParseWatchtower: watchtower's three bodies parse or are refused
// with a syntax error; what parses keeps the limits.
func FuzzParseWatchtower(f *testing.F) {
	f.Add([]byte(`{"service":"backup","alertType":"pushover","alertTarget":"uKEY","nextIn":3600}`))
	f.Add([]byte(`{"service":"backup","message":"done","level":2,"alert":true}`))
	f.Add([]byte(`{"service":"backup"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		syntax := func(err error) {
			if err != nil && !errors.Is(err, ErrSyntax) {
				t.Fatalf("%q: %v is not a syntax error", body, err)
			}
		}
		p, err := ParseWatchtowerPulse(body)
		syntax(err)
		if err == nil && (p.Service == "" || len(p.Service) > MaxService || p.NextIn < MinNextIn || p.NextIn > MaxNextIn || len(p.AlertType) > 256 || len(p.AlertTarget) > 256) {
			t.Fatalf("%q: a pulse past the limits: %+v", body, p)
		}
		s, err := ParseWatchtowerCancel(body)
		syntax(err)
		if err == nil && (s == "" || len(s) > MaxService) {
			t.Fatalf("%q: a service past the limits: %q", body, s)
		}
		ev, err := ParseWatchtowerEvent(body)
		syntax(err)
		if err == nil && (ev.Service == "" || len(ev.Message) > MaxMessage || !utf8.ValidString(ev.Message)) {
			t.Fatalf("%q: an event past the limits: %+v", body, ev)
		}
	})
}
