package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
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

// The heap's pages freed by a collection stay with the process until the
// runtime's background scavenger returns them, and it works slowly: under
// the soak's load 40-80 MiB of freed pages were resident beside a heap
// of 70-130 MiB (docs/benchmarks.md). A soft memory limit makes the runtime
// return them as soon as the process' memory nears it. A fixed limit
// cannot fit both a small store and a million series (650 MiB live), so
// after each collection the limit is set to the heap goal just computed
// plus the runtime's memory outside the heap plus -gc-headroom or a tenth
// of the goal, whichever is more (and never above a GOMEMLIMIT the
// environment gave). With a limit, the scavenger keeps the process' memory
// under 95 % of it. The runtime also derives a heap goal of its own from
// the limit: the limit, less what it counts outside the heap (which takes
// in the free slots of spans in use, not only what the limit here adds
// for it), less 3 %. Where that is under GOGC's goal, a collection comes
// earlier. So the limit binds a little in most cycles; memoryLimit says
// why the headroom grows with the goal.

// defaultGOGC is -gogc's default.
const defaultGOGC = 30

// defaultGCFloor is -gogc-floor's default.
const defaultGCFloor = 64 << 20

// defaultGCHeadroom is -gc-headroom's default.
const defaultGCHeadroom = 16 << 20

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

// memoryLimit returns the soft memory limit for a heap goal, the
// runtime's memory outside the heap and the headroom: the headroom or a
// tenth of the goal, whichever is more. A tenth covers the 3 % the runtime
// takes off the limit for its own goal, the 5 % under the limit its
// scavenger aims at, and some fragmentation; 16 MiB over an 800 MiB goal
// (a million series) did not, and ingest went 26 % slower.
func memoryLimit(goal, outside, headroom uint64) int64 {
	l := goal + outside + max(headroom, goal/10)
	if l < goal || l > math.MaxInt64 { // overflowed
		return math.MaxInt64
	}
	return int64(l)
}

// gcTuning is the collector's setting as run sets it, for /api/v1/stats.
var gcTuning struct {
	percent  atomic.Int64 // -gogc; 0 when the GOGC environment variable decides
	floor    atomic.Int64 // -gogc-floor
	headroom atomic.Int64 // -gc-headroom; 0: the limit is left to GOMEMLIMIT
	now      atomic.Int64 // GOGC as last set
	limit    atomic.Int64 // the soft memory limit as last set or read
}

// The runtime's figures the tuner reads after each collection.
var gcSamples = []string{
	"/gc/heap/live:bytes",
	"/gc/scan/stack:bytes",
	"/gc/scan/globals:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// newGCSamples returns the samples of gcSamples, to be read by readSamples.
func newGCSamples() []metrics.Sample {
	ms := make([]metrics.Sample, len(gcSamples))
	for i, name := range gcSamples {
		ms[i].Name = name
	}
	return ms
}

// readSamples reads ms and reports whether every one is a count of
// bytes: a name the runtime does not know reads as KindBad, and Uint64
// panics on it, here on the finalizer goroutine, which would end the
// process.
func readSamples(ms []metrics.Sample) bool {
	metrics.Read(ms)
	for _, m := range ms {
		if m.Value.Kind() != metrics.KindUint64 {
			return false
		}
	}
	return true
}

// heapGoal is the heap size at which GOGC percent starts the next
// collection, as the runtime computes it (runtime/mgcpacer.go,
// gcControllerState.commit, gcPercentHeapGoal): the live heap plus
// percent of it, of the stacks and of the globals, and never below the
// smallest goal. The
// runtime's own reading (/gc/heap/goal) is lowered by the memory limit
// when that binds: a limit set from it would ratchet down.
func heapGoal(live, stacks, globals uint64, percent int) uint64 {
	goal := live + (live+stacks+globals)*uint64(percent)/100
	return max(goal, heapMinimum*uint64(percent)/100)
}

// tuneGC sets GOGC from percent and floor, and the soft memory limit from
// the heap goal and headroom, now and after every collection (a finalizer
// on an object dropped at once runs after each cycle that frees it, and
// arms the next). Percent 0 leaves GOGC to the runtime (the GOGC
// environment variable's), headroom 0 the memory limit (GOMEMLIMIT's);
// both are then only recorded. With the collector off (GOGC=off) there
// is no goal, and the limit is left as it is. A limit the environment
// set (GOMEMLIMIT) is the most the tuner sets. stop ends the tuning: once
// it returns, the tuner changes neither again, and both stay as last set
// (tests restore their own).
func tuneGC(percent int, floor, headroom uint64) (stop func()) {
	if percent == 0 {
		floor = 0                       // not used
		prev := debug.SetGCPercent(100) // setting it is the only way to read it
		debug.SetGCPercent(prev)
		gcTuning.now.Store(int64(prev))
		if prev < 0 {
			headroom = 0 // GOGC=off: no goal to follow
		}
	}
	gcTuning.percent.Store(int64(percent))
	gcTuning.floor.Store(int64(floor))
	gcTuning.headroom.Store(int64(headroom))
	ceiling := debug.SetMemoryLimit(-1) // a negative limit only reads it: GOMEMLIMIT's, or none
	gcTuning.limit.Store(ceiling)
	ms := newGCSamples()
	set := func() {
		if !readSamples(ms) {
			return // a runtime without these figures: leave both as they are
		}
		live := ms[0].Value.Uint64()
		if percent != 0 {
			p := gcPercent(live, percent, floor)
			if int64(p) != gcTuning.now.Load() {
				debug.SetGCPercent(p)
				gcTuning.now.Store(int64(p))
			}
		}
		if headroom != 0 {
			goal := heapGoal(live, ms[1].Value.Uint64(), ms[2].Value.Uint64(), int(gcTuning.now.Load()))
			total := ms[3].Value.Uint64()
			heap := ms[4].Value.Uint64() + ms[5].Value.Uint64() + ms[6].Value.Uint64() + ms[7].Value.Uint64()
			l := min(memoryLimit(goal, total-min(heap, total), headroom), ceiling)
			debug.SetMemoryLimit(l)
			gcTuning.limit.Store(l)
		}
	}
	set()
	if floor == 0 && headroom == 0 {
		return func() {} // nothing changes with the live heap
	}
	var mu sync.Mutex // a set under way finishes before stop returns
	stopped := false
	var arm func()
	arm = func() {
		s := &gcSentinel{}
		runtime.SetFinalizer(s, func(*gcSentinel) {
			mu.Lock()
			defer mu.Unlock()
			if !stopped {
				set()
				arm()
			}
		})
	}
	arm()
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
}

// gcSentinel is big enough to be its own allocation (the tiny allocator
// packs smaller pointer-free objects together, and their finalizers may
// never run).
type gcSentinel struct {
	_ *int
	_ [16]byte
}
