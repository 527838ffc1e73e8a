package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// TestGOGC: the server's collector lets the heap grow by -gogc percent of
// what is live or -gogc-floor bytes, whichever is more; at a small heap
// the floor decides.
func TestGOGC(t *testing.T) {
	type goStats struct {
		GOGC        uint64 `json:"gogc"`
		Floor       uint64 `json:"gogc_floor"`
		GCPercent   uint64 `json:"gc_percent"`
		Headroom    uint64 `json:"gc_headroom"`
		MemoryLimit uint64 `json:"memory_limit"`
	}
	const mib = 1 << 20
	for _, tc := range []struct {
		env, limitEnv string // the server's GOGC and GOMEMLIMIT environment variables
		flags         []string
		check         func(g goStats) bool
	}{
		// A heap of a few MiB: 64 MiB of growth is far more than 30 %.
		// The limit is the goal (at least the floor) plus the headroom and
		// the runtime's own memory: far below what nothing set would be.
		{"", "", nil, func(g goStats) bool {
			return g.GOGC == defaultGOGC && g.Floor == defaultGCFloor && g.GCPercent > 1000 &&
				g.Headroom == defaultGCHeadroom && g.MemoryLimit > (defaultGCFloor+defaultGCHeadroom) && g.MemoryLimit < 1<<30
		}},
		{"", "", []string{"-gogc", "75", "-gogc-floor", "0", "-gc-headroom", "0"}, func(g goStats) bool {
			return g.GOGC == 75 && g.Floor == 0 && g.GCPercent == 75 && g.Headroom == 0 && g.MemoryLimit == math.MaxInt64
		}},
		// The environment's replaces the default, untuned.
		{"200", "", nil, func(g goStats) bool {
			return g.GOGC == 0 && g.Floor == 0 && g.GCPercent == 200 && g.MemoryLimit < 1<<30
		}},
		{"200", "", []string{"-gogc", "75", "-gogc-floor", "0"}, func(g goStats) bool { return g.GOGC == 75 && g.GCPercent == 75 }},
		{"off", "", nil, func(g goStats) bool {
			return g.GOGC == 0 && g.GCPercent == 0 && g.Headroom == 0 && g.MemoryLimit == math.MaxInt64
		}},
		{"", "300MiB", nil, func(g goStats) bool { return g.Headroom == 0 && g.MemoryLimit == 300*mib }},
		{"", "300MiB", []string{"-gc-headroom", "1048576"}, func(g goStats) bool { return g.Headroom == mib && g.MemoryLimit < 300*mib }},
		{"", "300MiB", []string{"-gc-headroom", "0"}, func(g goStats) bool { return g.Headroom == 0 && g.MemoryLimit == 300*mib }},
		// The environment's limit caps the tuned one (at least the 64 MiB floor plus the headroom).
		{"", "50MiB", []string{"-gc-headroom", "16777216"}, func(g goStats) bool { return g.Headroom == 16*mib && g.MemoryLimit == 50*mib }},
	} {
		t.Setenv("GOGC", tc.env) // the server inherits them
		t.Setenv("GOMEMLIMIT", tc.limitEnv)
		p := start(t, t.TempDir(), tc.flags...)
		var st struct {
			Go goStats `json:"go"`
		}
		p.get("/api/v1/stats", &st)
		if !tc.check(st.Go) {
			t.Errorf("GOGC=%q GOMEMLIMIT=%q %v: the server runs with %+v", tc.env, tc.limitEnv, tc.flags, st.Go)
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
// flag over both; a percentage must be above 0. GOMEMLIMIT and
// -gc-headroom go the same way (headroom 0: the environment's limit).
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
	t.Setenv("GOMEMLIMIT", "")
	if c, err := parseFlags(nil); err != nil || c.gcHeadroom != defaultGCHeadroom {
		t.Fatalf("no GOMEMLIMIT, no flag: headroom %d %v", c.gcHeadroom, err)
	}
	t.Setenv("GOMEMLIMIT", "300MiB")
	if c, err := parseFlags(nil); err != nil || c.gcHeadroom != 0 {
		t.Fatalf("GOMEMLIMIT=300MiB, no flag: headroom %d %v, want 0 (the runtime's limit)", c.gcHeadroom, err)
	}
	if c, err := parseFlags([]string{"-gc-headroom", "1024"}); err != nil || c.gcHeadroom != 1024 {
		t.Fatalf("GOMEMLIMIT=300MiB, -gc-headroom 1024: headroom %d %v", c.gcHeadroom, err)
	}
}

// TestTuneGCFollowsTheLiveHeap: after each collection GOGC and the
// memory limit follow the live heap: GOGC 30 and a limit above 1.3 times
// it once it is big, the floor's share and a limit near the floor again
// once it is not.
func TestTuneGCFollowsTheLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	defer tuneGC(defaultGOGC, defaultGCFloor, defaultGCHeadroom)()
	waitFor := func(what string, ok func(p, limit int64) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok(gcTuning.now.Load(), gcTuning.limit.Load()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC is %d, the memory limit %d", what, gcTuning.now.Load(), gcTuning.limit.Load())
			}
			runtime.GC() // the tuner runs after a collection; this makes one
			runtime.Gosched()
		}
		if got := debug.SetMemoryLimit(-1); got != gcTuning.limit.Load() {
			t.Fatalf("%s: the runtime's memory limit is %d, the tuner's %d", what, got, gcTuning.limit.Load())
		}
	}
	const big = 256 << 20 // 64 MiB is a quarter of it
	b := make([]byte, big)
	for i := range b {
		b[i] = byte(i)
	}
	waitFor("256 MiB live", func(p, limit int64) bool {
		return p == defaultGOGC && limit >= big*13/10+defaultGCHeadroom && limit < 2*big
	})
	runtime.KeepAlive(b)
	b = nil
	waitFor("the 256 MiB dropped", func(p, limit int64) bool { return p > 1000 && limit < big })
}

// TestHeapGoal: heapGoal is the runtime's goal while no memory limit
// binds.
func TestHeapGoal(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	keep := make([][]byte, 0, 64)
	for _, p := range []int{30, 100, 1600} {
		debug.SetGCPercent(p)
		keep = append(keep, make([]byte, 8<<20))
		runtime.GC()
		ms := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}, {Name: "/gc/heap/goal:bytes"}}
		metrics.Read(ms)
		got := heapGoal(ms[0].Value.Uint64(), ms[1].Value.Uint64(), ms[2].Value.Uint64(), p)
		if want := ms[3].Value.Uint64(); got != want {
			t.Errorf("GOGC %d, live %d: heapGoal %d, the runtime's goal %d", p, ms[0].Value.Uint64(), got, want)
		}
	}
	runtime.KeepAlive(keep)
	// A small heap's goal is the runtime's smallest, scaled by GOGC.
	if got := heapGoal(1<<20, 0, 0, 100); got != heapMinimum {
		t.Errorf("1 MiB live at GOGC 100: heapGoal %d, want %d", got, heapMinimum)
	}
	if got := heapGoal(1<<20, 0, 0, 200); got != 2*heapMinimum {
		t.Errorf("1 MiB live at GOGC 200: heapGoal %d, want %d", got, 2*heapMinimum)
	}
}

// TestReadSamples: every figure the tuner reads is one this runtime
// has, and a name it does not know is refused rather than read.
func TestReadSamples(t *testing.T) {
	if !readSamples(newGCSamples()) {
		t.Fatalf("the runtime lacks one of %v", gcSamples)
	}
	if readSamples([]metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/no/such/figure:bytes"}}) {
		t.Fatal("an unknown figure was taken")
	}
}

// TestMemoryLimit: the limit is the goal plus the rest, and never wraps.
func TestMemoryLimit(t *testing.T) {
	if got := memoryLimit(100, 20, 30); got != 150 {
		t.Fatalf("memoryLimit(100, 20, 30) = %d", got)
	}
	if got := memoryLimit(1000, 20, 30); got != 1120 { // a tenth of the goal is more
		t.Fatalf("memoryLimit(1000, 20, 30) = %d", got)
	}
	if got := memoryLimit(math.MaxUint64-1, 20, 3); got != math.MaxInt64 {
		t.Fatalf("an overflowing limit: %d", got)
	}
	if got := memoryLimit(math.MaxInt64, 1, 0); got != math.MaxInt64 {
		t.Fatalf("a limit past int64: %d", got)
	}
}
