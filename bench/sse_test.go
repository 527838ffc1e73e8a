package bench

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

func frames(start uint64, stamps ...int64) []byte {
	var b []byte
	for i, s := range stamps {
		b = fmt.Appendf(b, "id: %d\r\ndata: {\"k%d\":%d}\r\n\r\n", start+uint64(i), i, s)
	}
	return b
}

func TestAccountCountsAndTimesEvents(t *testing.T) {
	now := int64(1_000_000_000)
	stamps := make([]int64, 40)
	for i := range stamps {
		stamps[i] = now - int64(1000*(40-i)) // 40 ms .. 1 ms old
	}
	evs := append(frames(7, stamps...), ": ping\r\n\r\n"...)
	var s subscriber
	var lag Hist
	if n := s.account(evs, now, &lag); n != 40 || s.got.Load() != 40 {
		t.Fatalf("account = %d (got %d), want 40", n, s.got.Load())
	}
	// Events 0, 16 and 32 are timed, standing for 16, 16 and 8 events.
	if lag.Count() != 40 || lag.Max() != 40*time.Millisecond {
		t.Fatalf("lag count %d max %v, want 40 and 40ms", lag.Count(), lag.Max())
	}
	if id := eventID(evs[bytes.LastIndex(evs[:len(evs)-14], sepEvent)+1:]); id != 46 {
		t.Errorf("last event id %d, want 46", id)
	}
}

// FuzzAccount feeds the subscriber's scanner arbitrary stream bytes: it
// must count exactly the data lines and never panic.
func FuzzAccount(f *testing.F) {
	f.Add(frames(1, 5, 6, 7))
	f.Add([]byte("id: 3\r\ndata: {\"a\":}\r\n\r\n"))
	f.Add([]byte("data: data: :}\r\n\r\nid: x\r\n"))
	f.Add([]byte(": ping\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s subscriber
		var lag Hist
		n := s.account(b, 1e15, &lag)
		if want := int64(bytes.Count(b, sepData)); n != want {
			t.Fatalf("account = %d, want %d", n, want)
		}
		if lag.Count() > n {
			t.Fatalf("timed %d events of %d", lag.Count(), n)
		}
		eventID(b)
	})
}
