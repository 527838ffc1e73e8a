package main

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestGOGC: the server's collector lets the heap grow by -gogc percent of
// what is live or -gogc-floor bytes, whichever is more; at a small heap
// the floor decides.
func TestGOGC(t *testing.T) {
	type goStats struct {
		GOGC      uint64 `json:"gogc"`
		Floor     uint64 `json:"gogc_floor"`
		GCPercent uint64 `json:"gc_percent"`
	}
	for _, tc := range []struct {
		env   string // the server's GOGC environment variable
		flags []string
		check func(g goStats) bool
	}{
		// A heap of a few MiB: 64 MiB of growth is far more than 30 %.
		{"", nil, func(g goStats) bool { return g.GOGC == defaultGOGC && g.Floor == defaultGCFloor && g.GCPercent > 1000 }},
		{"", []string{"-gogc", "75", "-gogc-floor", "0"}, func(g goStats) bool { return g.GOGC == 75 && g.Floor == 0 && g.GCPercent == 75 }},
		// The environment's replaces the default, untuned.
		{"200", nil, func(g goStats) bool { return g.GOGC == 0 && g.GCPercent == 200 }},
		{"200", []string{"-gogc", "75", "-gogc-floor", "0"}, func(g goStats) bool { return g.GOGC == 75 && g.GCPercent == 75 }},
	} {
		t.Setenv("GOGC", tc.env) // the server inherits it
		p := start(t, t.TempDir(), tc.flags...)
		var st struct {
			Go goStats `json:"go"`
		}
		p.get("/api/v1/stats", &st)
		if !tc.check(st.Go) {
			t.Errorf("GOGC=%q %v: the server runs with %+v", tc.env, tc.flags, st.Go)
		}
		p.stop()
	}
}

// TestGCPercent: the growth allowed is the share of the live heap or the
// floor, whichever is more.
func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, floor uint64
		want        int
	}{
		{1000 * mib, 64 * mib, 30}, // 30 % is 300 MiB
		{200 * mib, 64 * mib, 32},  // 64 MiB is 32 %
		{64 * mib, 64 * mib, 100},
		{8 * mib, 64 * mib, 800},
		{0, 64 * mib, 1600},       // counted as the runtime's 4 MiB: the smallest goal is then 64 MiB
		{2 * mib, 64 * mib, 1600}, // the same
		{8 * mib, 0, 30},
	} {
		if got := gcPercent(tc.live, 30, tc.floor); got != tc.want {
			t.Errorf("live %d MiB, floor %d MiB: GOGC %d, want %d", tc.live/mib, tc.floor/mib, got, tc.want)
		}
	}
}

// TestGOGCFlag: the GOGC environment variable wins over the default, the
// flag over both; a percentage must be above 0.
func TestGOGCFlag(t *testing.T) {
	t.Setenv("GOGC", "")
	if c, err := parseFlags(nil); err != nil || c.gogc != defaultGOGC {
		t.Fatalf("no flag, no environment: %d %v", c.gogc, err)
	}
	t.Setenv("GOGC", "200")
	if c, err := parseFlags(nil); err != nil || c.gogc != 0 {
		t.Fatalf("GOGC=200, no flag: %d %v, want 0 (the runtime's)", c.gogc, err)
	}
	if c, err := parseFlags([]string{"-gogc", "50"}); err != nil || c.gogc != 50 {
		t.Fatalf("GOGC=200, -gogc 50: %d %v", c.gogc, err)
	}
	for _, bad := range []string{"0", "-1"} {
		if _, err := parseFlags([]string{"-gogc", bad}); err == nil {
			t.Fatalf("-gogc %s taken", bad)
		}
	}
}

// TestTuneGCFollowsTheLiveHeap: after each collection GOGC follows the
// live heap: 30 once it is big, the floor's share again once it is not.
func TestTuneGCFollowsTheLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tuneGC(defaultGOGC, defaultGCFloor)
	waitFor := func(what string, ok func(p int64) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok(gcTuning.now.Load()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC is %d", what, gcTuning.now.Load())
			}
			runtime.GC() // the tuner runs after a collection; this makes one
			runtime.Gosched()
		}
	}
	big := make([]byte, 256<<20) // 64 MiB is a quarter of it
	for i := range big {
		big[i] = byte(i)
	}
	waitFor("256 MiB live", func(p int64) bool { return p == defaultGOGC })
	runtime.KeepAlive(big)
	big = nil
	waitFor("the 256 MiB dropped", func(p int64) bool { return p > 1000 })
}
