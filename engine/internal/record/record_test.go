package record

import (
	"errors"
	"math"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestRoundTrip(t *testing.T) {
	for _, r := range []Record{
		{Code: sample.Set, Time: 1700000000123, Key: "cpu.load", Value: 0.75, Ordinal: 1},
		{Code: sample.Set, Time: -5, Key: "neg", Value: -1e300, Ordinal: 1 << 40},
		{Code: sample.Incr, Time: 1, Key: "hits", Value: 10, Running: 4, Shown: 6, WinStart: 60000, Interval: 60000, Ordinal: 3},
		{Code: sample.Window, Time: 2, Key: "hits", Value: 10, Shown: 4, WinStart: 120000, Interval: 60000, Ordinal: 3},
		{Code: sample.CounterSet, Time: 3, Key: "c", Value: math.MaxFloat64, Interval: 1, Ordinal: 9},
		{Code: sample.Delete, Time: 4, Key: "gone"},
		{Code: Event, Time: 5, Key: "backup", Level: -3, Alert: true, Message: "done in 4 min"},
		{Code: Event, Time: 6, Key: "cron", Level: math.MaxInt32},
		{Code: Pulse, Time: 7, Key: "cron", Interval: 60_000, Channel: "ops"},
		{Code: Pulse, Time: 8, Key: "cron", Interval: 1000},
		{Code: Cancel, Time: 9, Key: "cron"},
		{Code: Alert, Time: 10, Key: "cron", Level: 2, Channel: "ops", Message: "Service cron has not pulsed"},
		{Code: Delivered, Time: 11, Key: "cron", Ordinal: 1 << 40},
		{Code: Check, Time: 12, Key: "web", Level: 1, Interval: 30_000, Channel: "ops", Message: "503 Service Unavailable"},
		{Code: Check, Time: 13, Key: "web", Interval: 1000},
		{Code: Client, Time: 14, Key: "worker1", Level: ClientConnected},
		{Code: Client, Time: 15, Key: "worker1"},
		{Code: Client, Time: 16, Key: "worker1", Level: ClientForgotten},
		{Code: Log, Time: 17, Key: "worker1", Message: "started ✓"},
		{Code: Log, Time: 18, Key: "worker1"},
		{Code: State, Time: 19, Key: "worker1", Channel: "phase", Message: "idle"},
		{Code: State, Time: 20, Key: "worker1", Channel: "empty"},
	} {
		b := Append(nil, &r)
		var got Record
		if err := Decode(b, &got); err != nil {
			t.Fatalf("decode %+v: %v", r, err)
		}
		if got != r {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
		// Every strict prefix is malformed, never a different record.
		for i := range len(b) {
			if err := Decode(b[:i], &got); !errors.Is(err, ErrMalformed) {
				t.Fatalf("prefix %d of %+v decoded: %v", i, r, err)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Append(nil, &Record{Code: sample.Set, Time: 17, Key: "a", Value: 1, Ordinal: 1}))
	f.Add(Append(nil, &Record{Code: sample.Incr, Time: 17, Key: "hits", Value: 5, Running: 5, WinStart: 10, Interval: 60000, Ordinal: 2}))
	f.Add(Append(nil, &Record{Code: sample.Delete, Time: 17, Key: "x"}))
	f.Add(Append(nil, &Record{Code: Event, Time: 17, Key: "svc", Level: 2, Alert: true, Message: "late"}))
	f.Add(Append(nil, &Record{Code: Pulse, Time: 17, Key: "svc", Interval: 5000, Channel: "ops"}))
	f.Add(Append(nil, &Record{Code: Alert, Time: 17, Key: "svc", Level: 1, Channel: "ops", Message: "late"}))
	f.Add(Append(nil, &Record{Code: Delivered, Time: 17, Key: "svc", Ordinal: 9}))
	f.Add(Append(nil, &Record{Code: Check, Time: 17, Key: "web", Level: 1, Interval: 9, Channel: "c", Message: "m"}))
	f.Add(Append(nil, &Record{Code: Client, Time: 18, Key: "w", Level: ClientConnected}))
	f.Add(Append(nil, &Record{Code: Log, Time: 19, Key: "w", Message: "m"}))
	f.Add(Append(nil, &Record{Code: State, Time: 20, Key: "w", Channel: "k", Message: "v"}))
	f.Add([]byte{})
	f.Add([]byte{9, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 10240 {
			return
		}
		var r Record
		if err := Decode(b, &r); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// Whatever decodes re-encodes to a record that decodes the same.
		var r2 Record
		if err := Decode(Append(nil, &r), &r2); err != nil {
			t.Fatalf("re-decode of %+v: %v", r, err)
		}
		same := r2 == r || (math.IsNaN(r.Value) || math.IsNaN(r.Running) || math.IsNaN(r.Shown))
		if !same {
			t.Fatalf("round trip changed %+v into %+v", r, r2)
		}
	})
}
