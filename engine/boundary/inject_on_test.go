//go:build sondetest

package boundary

import "testing"

func TestInject(t *testing.T) {
	for _, c := range []struct {
		input, where string
		panics       bool
	}{
		{"GET /data?match=sonde-test-panic", "http", true},
		{"GET /data", "http", false},
		{"sonde-test-panic.sse", "http", false},
		{"sonde-test-panic.sse", "sse", true},
		{"stats.sets.sonde-test-panic.statsd-flusher.count", "statsd-flusher", true},
		{"stats.sets.sonde-test-panic.statsd-flusher.count", "statsd", false},
		{"sonde-test-panic.other then sonde-test-panic", "tcp", true},
		{"sonde-test-panic.", "tcp", true},
	} {
		got := func() (p bool) {
			defer func() { p = recover() != nil }()
			Inject(c.where, []byte(c.input))
			return false
		}()
		if got != c.panics {
			t.Errorf("Inject(%q, %q) panicked: %v, want %v", c.where, c.input, got, c.panics)
		}
	}
	if !Injecting {
		t.Error("Injecting is false with the sondetest tag")
	}
}
