package boundary

import (
	"fmt"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"
)

func TestLogLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, buf := jsonLogger()
		l := NewLogLimiter(time.Minute)
		for i := range 5 {
			l.Log(log, slog.LevelWarn, "a", "message a", "i", i)
		}
		l.Log(log, slog.LevelInfo, "b", "message b")
		recs := buf.records(t)
		if len(recs) != 2 || recs[0]["msg"] != "message a" || recs[0]["i"] != 0.0 || recs[1]["msg"] != "message b" {
			t.Fatalf("first lines %v: want the first of each kind", recs)
		}
		time.Sleep(time.Minute)
		synctest.Wait() // the interval's end has run
		recs = buf.records(t)
		if len(recs) != 3 {
			t.Fatalf("after the interval %v: want one summary (kind b had no repeats)", recs)
		}
		if s := recs[2]; s["msg"] != "suppressed 4 similar messages" || s["kind"] != "a" || s["suppressed"] != 4.0 || s["level"] != "WARN" {
			t.Fatalf("summary %v", s)
		}
		// A new interval: the next message is logged in full again.
		l.Log(log, slog.LevelWarn, "a", "message a", "i", 5)
		if recs = buf.records(t); len(recs) != 4 || recs[3]["i"] != 5.0 {
			t.Fatalf("after the summary %v: want the next message in full", recs)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if recs = buf.records(t); len(recs) != 4 {
			t.Fatalf("an interval without repeats logged %v", recs[4:])
		}
	})
}

func TestPrinterKindIsFormat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, buf := jsonLogger()
		p := Printer{Limiter: NewLogLimiter(time.Minute), Logger: log}
		p.Printf("error when serving connection %q: %v", "127.0.0.1:1", "EOF")
		p.Printf("error when serving connection %q: %v", "127.0.0.1:2", "EOF")
		p.Printf("other %d", 1)
		recs := buf.records(t)
		if len(recs) != 2 || recs[0]["msg"] != `error when serving connection "127.0.0.1:1": EOF` || recs[1]["msg"] != "other 1" || recs[0]["level"] != "WARN" {
			t.Fatalf("lines %v: want the first of each format, as warnings", recs)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
	})
}

// TestPrinterLeavesOutRequestBytes: what fasthttp's errors quote of a
// request (a bad header's value, a URI) is left out; the addresses stay.
func TestPrinterLeavesOutRequestBytes(t *testing.T) {
	log, buf := jsonLogger()
	p := Printer{Limiter: NewLogLimiter(time.Minute), Logger: log}
	err := fmt.Errorf("error when reading request headers: %w", fmt.Errorf("invalid header value %q", "Bearer tok-\"1\"\x01"))
	p.Printf("error when serving connection %q<->%q: %v", "127.0.0.1:1337", "127.0.0.1:5", err)
	p.Printf("other %v", fmt.Errorf("invalid request uri %q in %q", "/data?token=tok-2\x00", "GET /data?token=tok-2"))
	recs := buf.records(t)
	if len(recs) != 2 || recs[0]["msg"] != `error when serving connection "127.0.0.1:1337"<->"127.0.0.1:5": error when reading request headers: invalid header value "…"` ||
		recs[1]["msg"] != `other invalid request uri "…" in "…"` {
		t.Fatalf("lines %v", recs)
	}
}

func TestLogLimiterSkipsDisabledLevels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf syncBuffer
		log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
		l := NewLogLimiter(time.Minute)
		l.Log(log, slog.LevelDebug, "a", "debug")
		l.Log(log, slog.LevelWarn, "a", "warn") // not counted as a repeat of a line never written
		if recs := buf.records(t); len(recs) != 1 || recs[0]["msg"] != "warn" {
			t.Fatalf("lines %v", recs)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
	})
}
