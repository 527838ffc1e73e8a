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

// FuzzAccount feeds the subscriber's scanner two streams. One is built
// from the fuzzer's values the way Sonde writes /events: change frames
// with ids from start, each value a send time ages[i] ms before now, and
// ping comments where the bits of pings say. The scanner must count each
// frame once, time every one (one in lagEvery read, standing for the
// others) no older than the oldest, and find the last frame's id. The
// other is arbitrary bytes: it must not panic, nor time more events than
// it counted.
func FuzzAccount(f *testing.F) {
	f.Add(uint64(1), []byte{5, 6, 7}, uint8(0), []byte("id: 3\r\ndata: {\"a\":}\r\n\r\n"))
	f.Add(uint64(7), make([]byte, 40), uint8(0xa5), []byte("data: data: :}\r\n\r\nid: x\r\n"))
	f.Add(uint64(1<<64-3), []byte{255, 0, 1, 2, 3}, uint8(0xff), []byte(": ping\r\n\r\n"))
	f.Fuzz(func(t *testing.T, start uint64, ages []byte, pings uint8, junk []byte) {
		const now = int64(1e15)
		var evs []byte
		var oldest int64
		for i, a := range ages {
			if pings>>(i%8)&1 == 1 {
				evs = append(evs, ": ping\r\n\r\n"...)
			}
			evs = append(evs, frames(start+uint64(i), now-int64(a)*1000)...)
			oldest = max(oldest, int64(a))
		}
		var s subscriber
		var lag Hist
		n := s.account(evs, now, &lag)
		if n != int64(len(ages)) || s.got.Load() != n || lag.Count() != n {
			t.Fatalf("%d frames: account = %d, got %d, timed %d", len(ages), n, s.got.Load(), lag.Count())
		}
		if lag.Max() > time.Duration(oldest)*time.Millisecond {
			t.Fatalf("lag %v, the oldest frame is %d ms old", lag.Max(), oldest)
		}
		if len(ages) > 0 {
			last := evs[bytes.LastIndex(evs[:len(evs)-len(sepEvent)], sepEvent)+1:] // from before the last frame's id line
			if id := eventID(last); id != start+uint64(len(ages)-1) {
				t.Fatalf("last event id %d, want %d", id, start+uint64(len(ages)-1))
			}
		}
		var j subscriber
		var jlag Hist
		if m := j.account(junk, now, &jlag); jlag.Count() > m || m < 0 {
			t.Fatalf("arbitrary bytes: timed %d events of %d", jlag.Count(), m)
		}
		eventID(junk)
	})
}
