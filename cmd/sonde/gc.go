package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// The Go collector's setting. GOGC lets the heap grow by a share of what
// is live before the next collection: 100 (Go's default) doubles it, which
// at a million series is 1.9 GiB of RSS for 0.8 GiB live. Sonde runs at
// -gogc 30, as VictoriaMetrics does (app/victoria-metrics/main.go). But a
// small heap at 30 % is collected every few MiB, and reads that allocate
// a few MiB each pay for it: at 10k series, /render and /metrics/find
// served 23-25 % fewer requests a second at 30 than at 100
// (docs/benchmarks.md). So the growth allowed is 30 % of the live heap or
// -gogc-floor (64 MiB), whichever is more: after each collection GOGC is
// set from the live heap it found.

// defaultGOGC is -gogc's default.
const defaultGOGC = 30

// defaultGCFloor is -gogc-floor's default.
const defaultGCFloor = 64 << 20

// gcPercent returns the GOGC that lets a heap of live bytes grow by
// percent of itself or by floor bytes, whichever is more.
func gcPercent(live uint64, percent int, floor uint64) int {
	// The runtime's smallest heap goal is 4 MiB scaled by GOGC/100: a live
	// heap taken as smaller than 4 MiB would give a GOGC whose smallest
	// goal is far past live + floor. At startup (nothing live yet) the
	// first collection came at 256 MiB, the peak of a whole soak.
	live = max(live, heapMinimum)
	if p := floor * 100 / live; p > uint64(percent) {
		return int(min(p, 1<<20))
	}
	return percent
}

// heapMinimum is the Go runtime's smallest heap goal at GOGC 100
// (runtime/mgcpacer.go, defaultHeapMinimum).
const heapMinimum = 4 << 20

// gcTuning is the collector's setting as run sets it, for /api/v1/stats.
var gcTuning struct {
	percent atomic.Int64 // -gogc; 0 when the GOGC environment variable decides
	floor   atomic.Int64 // -gogc-floor
	now     atomic.Int64 // GOGC as last set
}

// tuneGC sets GOGC from percent and floor now and after every collection
// (a finalizer on an object dropped at once runs after each cycle that
// frees it, and arms the next). Percent 0 leaves the runtime's setting,
// the GOGC environment variable's, and only records it.
func tuneGC(percent int, floor uint64) {
	if percent == 0 {
		prev := debug.SetGCPercent(100) // setting it is the only way to read it
		debug.SetGCPercent(prev)
		gcTuning.now.Store(int64(prev))
		return
	}
	gcTuning.percent.Store(int64(percent))
	gcTuning.floor.Store(int64(floor))
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := func() {
		metrics.Read(live)
		p := gcPercent(live[0].Value.Uint64(), percent, floor)
		if int64(p) != gcTuning.now.Load() {
			debug.SetGCPercent(p)
			gcTuning.now.Store(int64(p))
		}
	}
	set()
	if floor == 0 {
		return
	}
	var arm func()
	arm = func() {
		s := &gcSentinel{}
		runtime.SetFinalizer(s, func(*gcSentinel) { set(); arm() })
	}
	arm()
}

// gcSentinel is big enough to be its own allocation (the tiny allocator
// packs smaller pointer-free objects together, and their finalizers may
// never run).
type gcSentinel struct {
	_ *int
	_ [16]byte
}
