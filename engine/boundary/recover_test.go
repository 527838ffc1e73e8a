package boundary

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a log sink the handler and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records decodes the JSON log lines written so far.
func (s *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func jsonLogger() (*slog.Logger, *syncBuffer) {
	var buf syncBuffer
	return slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

// panicsAt runs f in a goroutine of its own, as a boundary does, and
// waits for it.
func panicsAt(where string, log *slog.Logger, then func(), f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer Recover(where, log, then)
		f()
	}()
	<-done
}

//go:noinline
func failingStep() { panic("boom") }

// freshPanicLog starts the tests' panic log intervals anew (-count=n runs
// them again within a minute).
func freshPanicLog() { panicLog = NewLogLimiter(PanicLogInterval) }

func TestRecoverCountsLogsAndAnswers(t *testing.T) {
	freshPanicLog()
	log, buf := jsonLogger()
	before := Panics()
	answered := 0
	panicsAt("test-recover", log, func() { answered++ }, failingStep)
	panicsAt("test-recover", log, func() { answered++ }, failingStep)
	after := Panics()
	if got := after["test-recover"] - before["test-recover"]; got != 2 {
		t.Errorf("counted %d panics at test-recover, want 2", got)
	}
	if got := after["total"] - before["total"]; got != 2 {
		t.Errorf("total grew by %d, want 2", got)
	}
	if answered != 2 {
		t.Errorf("the client was answered %d times, want 2", answered)
	}
	recs := buf.records(t)
	// One stack per boundary per PanicLogInterval: the second is only
	// counted, and logged as a number when the interval ends.
	if len(recs) != 1 {
		t.Fatalf("%d log lines, want 1: %v", len(recs), recs)
	}
	r := recs[0]
	stack, _ := r["stack"].(string)
	if r["level"] != "ERROR" || r["msg"] != "panic recovered" || r["where"] != "test-recover" || r["panic"] != "boom" ||
		!strings.Contains(stack, "boundary.failingStep") {
		t.Errorf("log line %v: want an ERROR naming the boundary, the panic and a stack through failingStep", r)
	}
}

func TestRecoverWithoutPanic(t *testing.T) {
	log, buf := jsonLogger()
	before := Panics()["total"]
	called := false
	panicsAt("test-calm", log, func() { called = true }, func() {})
	if called || Panics()["total"] != before || len(buf.records(t)) != 0 {
		t.Errorf("no panic, yet answered=%v, total %d -> %d, log %v", called, before, Panics()["total"], buf.records(t))
	}
	if _, ok := Panics()["total"]; !ok {
		t.Error("Panics has no total")
	}
}

// TestRecoverAnswerPanics: a callback that panics in turn (say, writing
// to a response that is gone) must not take the process down either.
func TestRecoverAnswerPanics(t *testing.T) {
	freshPanicLog()
	log, buf := jsonLogger()
	panicsAt("test-answer", log, func() { panic("answer failed") }, failingStep)
	recs := buf.records(t)
	if len(recs) != 2 || recs[1]["panic"] != "answer failed" {
		t.Fatalf("log %v: want the panic, then the failed answer", recs)
	}
}
