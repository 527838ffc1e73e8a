package ingest

import (
	"context"
	"hash/maphash"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/statsd"
)

// The statsd aggregate table: every counter, timer and set name the
// listener aggregates, shared by all readers, under one global bound for
// each thing it holds (names, set members, timer values). A name stays in
// the table while it gets samples and for IdleFlushes flushes after its
// last one (writing zeros), then it is forgotten.

// aggShards is how many locks the table is split under, so that readers
// adding to different names rarely wait for one another.
const aggShards = 64

// flushBatch is the most aggregate values one flush appends at once: a
// flush of 100,000 timers (two million values) is written in pieces and
// never built whole.
const flushBatch = 16384

// cause is the bound that kept a sample out of the aggregates.
type cause int

const (
	byNames cause = iota
	bySetMembers
	byTimerValues
	numCauses
)

var causeFlags = [numCauses]string{"-statsd-max-names", "-statsd-max-set", "-statsd-max-timer-values"}

type aggTable struct {
	seed   maphash.Seed
	shards [aggShards]aggShard
	// What the table holds, against the bounds, each on its own cache line.
	names   atomic.Int64
	_       [56]byte
	members atomic.Int64
	_       [56]byte
	values  atomic.Int64
	_       [56]byte
}

type aggShard struct {
	mu       sync.Mutex
	counters map[string]*counterAgg
	timers   map[string]*timerAgg
	sets     map[string]*setAgg
	// The most entries each map held at a flush: Go maps never shrink, so
	// one is rebuilt once it holds under a quarter of that.
	peak [3]int
	_    [72]byte // a shard to itself in a pair of cache lines: readers on other shards do not slow it
}

// activity is a name's recency: seen says a sample arrived this
// interval; idle counts the flushes since the last one.
type activity struct {
	seen bool
	idle int
}

type counterAgg struct {
	activity
	sum float64
}

type timerAgg struct {
	activity
	values []float64
	count  float64 // samples, each weighed 1/rate
}

type setAgg struct {
	activity
	members map[uint64]struct{} // members by their 64-bit hash; nil when idle
}

func (t *aggTable) init() {
	t.seed = maphash.MakeSeed()
	for i := range t.shards {
		sh := &t.shards[i]
		sh.counters, sh.timers, sh.sets = map[string]*counterAgg{}, map[string]*timerAgg{}, map[string]*setAgg{}
	}
}

// take reserves one unit of n against limit.
func take(n *atomic.Int64, limit int) bool {
	if n.Add(1) > int64(limit) {
		n.Add(-1)
		return false
	}
	return true
}

// aggregate adds one counter, timer or set sample to the table, or counts
// it as unaggregated when a bound keeps it out.
func (s *Statsd) aggregate(m *statsd.Sample) {
	if m.Type == statsd.Gauge {
		return // the store keeps a gauge's value: nothing to aggregate
	}
	sh := &s.table.shards[maphash.String(s.table.seed, m.Name)%aggShards]
	c, ok := func() (cause, bool) {
		sh.mu.Lock()
		defer sh.mu.Unlock() // a panic (caught at the reader's boundary) must not leave the shard locked
		return s.addLocked(sh, m)
	}()
	if !ok {
		s.refuse(c, m.Name)
	}
}

// addLocked adds m under its shard's lock; when a bound refuses it, it
// returns which one and false.
func (s *Statsd) addLocked(sh *aggShard, m *statsd.Sample) (cause, bool) {
	t := &s.table
	switch m.Type {
	case statsd.Counter:
		c := sh.counters[m.Name]
		if c == nil {
			if !take(&t.names, s.opts.MaxNames) {
				return byNames, false
			}
			c = &counterAgg{}
			sh.counters[m.Name] = c
		}
		c.seen = true
		c.sum += m.Value
	case statsd.Timer:
		if !take(&t.values, s.opts.MaxTimerValues) {
			return byTimerValues, false
		}
		tm := sh.timers[m.Name]
		if tm == nil {
			if !take(&t.names, s.opts.MaxNames) {
				t.values.Add(-1)
				return byNames, false
			}
			tm = &timerAgg{}
			sh.timers[m.Name] = tm
		}
		tm.seen = true
		tm.values = append(tm.values, m.Value)
		tm.count += 1 / m.Rate
	case statsd.Set:
		h := maphash.String(t.seed, m.Set)
		st := sh.sets[m.Name]
		if st != nil {
			if _, ok := st.members[h]; ok {
				st.seen = true
				return 0, true
			}
		}
		if !take(&t.members, s.opts.MaxSetMembers) {
			return bySetMembers, false
		}
		if st == nil {
			if !take(&t.names, s.opts.MaxNames) {
				t.members.Add(-1)
				return byNames, false
			}
			st = &setAgg{}
			sh.sets[m.Name] = st
		}
		if st.members == nil {
			st.members = map[uint64]struct{}{}
		}
		st.members[h] = struct{}{}
		st.seen = true
	}
	return 0, true
}

// refuse counts a sample a bound kept out of the aggregates, and logs the
// first of each interval as a warning.
func (s *Statsd) refuse(c cause, name string) {
	s.unaggregated.Add(1)
	s.unaggregatedBy[c].Add(1)
	if s.warned.CompareAndSwap(false, true) {
		s.log.Warn("statsd aggregates full: sample written raw only, left out of the interval's aggregates; "+
			"later ones this interval are counted (unaggregated) and logged at debug level",
			"bound", causeFlags[c], "name", name)
		return
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("statsd sample not aggregated", "bound", causeFlags[c], "name", name)
	}
}

// state is what a flush does with one name.
type state int

const (
	active    state = iota // samples this interval: write its aggregates
	idle                   // none, but within IdleFlushes: write zeros
	forgotten              // idle too long: drop it, write nothing
)

// settle moves a name to the next interval and says what to write for
// the one ending.
func (s *Statsd) settle(a *activity) state {
	if a.seen {
		a.seen, a.idle = false, 0
		return active
	}
	a.idle++
	if a.idle > s.opts.IdleFlushes {
		return forgotten
	}
	return idle
}

// flushWriter gathers a flush's values and appends them flushBatch at a
// time. The flusher goroutine keeps one for every flush.
type flushWriter struct {
	s    *Statsd
	ops  []sample.Op
	errs []error
}

func (f *flushWriter) gauge(key string, v float64) {
	f.ops = append(f.ops, sample.Op{Code: sample.Set, Key: key, Value: v})
}

// write appends what is gathered, in pieces of flushBatch, once there is
// at least atLeast of it.
func (f *flushWriter) write(atLeast int) {
	if len(f.ops) < max(atLeast, 1) {
		return
	}
	for ops := f.ops; len(ops) > 0; {
		n := min(len(ops), flushBatch)
		f.errs = f.s.appendOps(ops[:n], f.errs, &f.s.aggregates)
		ops = ops[n:]
	}
	clear(f.ops) // let the keys go
	f.ops = f.ops[:0]
}

// takenTimer is an active timer's interval, taken out of the table so that
// its statistics are computed outside the shard's lock.
type takenTimer struct {
	name   string
	values []float64
	count  float64
}

// flush writes the interval's aggregates: counter rates, timer statistics
// and set sizes, each as a GAUGE at the flush time; zeros for the names
// idle for up to IdleFlushes flushes; and it forgets the names idle for
// longer.
func (s *Statsd) flush() {
	f := &s.flusher
	// After a panic the interval's aggregates gathered so far are lost, and
	// dropped, so that the next flush does not meet them again.
	defer boundary.Recover("statsd-flusher", s.log, func() { clear(f.ops); f.ops = f.ops[:0] })
	s.warned.Store(false) // a new interval: its first refusal is a warning again
	secs := s.opts.FlushInterval.Seconds()
	for i := range s.table.shards {
		s.flushShard(&s.table.shards[i], f, secs)
	}
	f.write(1)
	s.flushes.Add(1)
}

func (s *Statsd) flushShard(sh *aggShard, f *flushWriter, secs float64) {
	t := &s.table
	var timers []takenTimer
	forget := func() {
		t.names.Add(-1)
		s.forgotten.Add(1)
	}
	sh.mu.Lock()
	locked := true
	defer func() {
		if locked { // a panic (caught at the flusher's boundary) must not leave the shard locked
			sh.mu.Unlock()
		}
	}()
	sh.peak[0] = max(sh.peak[0], len(sh.counters))
	for name, c := range sh.counters {
		switch s.settle(&c.activity) {
		case active:
			f.gauge(statsdKey("stats.", name, ""), c.sum/secs)
			c.sum = 0
		case idle:
			f.gauge(statsdKey("stats.", name, ""), 0)
		case forgotten:
			delete(sh.counters, name)
			forget()
		}
	}
	sh.peak[1] = max(sh.peak[1], len(sh.timers))
	for name, tm := range sh.timers {
		switch s.settle(&tm.activity) {
		case active:
			timers = append(timers, takenTimer{name, tm.values, tm.count})
			tm.values, tm.count = nil, 0
		case idle: // as statsd writes an empty timer
			f.gauge(statsdKey("stats.timers.", name, ".count"), 0)
			f.gauge(statsdKey("stats.timers.", name, ".count_ps"), 0)
		case forgotten:
			delete(sh.timers, name)
			forget()
		}
	}
	sh.peak[2] = max(sh.peak[2], len(sh.sets))
	for name, st := range sh.sets {
		switch s.settle(&st.activity) {
		case active:
			f.gauge(statsdKey("stats.sets.", name, ".count"), float64(len(st.members)))
			t.members.Add(-int64(len(st.members)))
			st.members = nil
		case idle:
			f.gauge(statsdKey("stats.sets.", name, ".count"), 0)
		case forgotten:
			delete(sh.sets, name)
			forget()
		}
	}
	sh.counters = shrink(sh.counters, &sh.peak[0])
	sh.timers = shrink(sh.timers, &sh.peak[1])
	sh.sets = shrink(sh.sets, &sh.peak[2])
	sh.mu.Unlock()
	locked = false
	for _, tt := range timers {
		for _, st := range timerStats(tt.values, tt.count, secs, s.opts.Percentiles) {
			f.gauge(statsdKey("stats.timers.", tt.name, "."+st.name), st.v)
		}
		t.values.Add(-int64(len(tt.values))) // they are garbage now
		f.write(flushBatch)
	}
	f.write(flushBatch)
}

// shrink rebuilds m once it holds under a quarter of its peak, so that the
// memory of forgotten names is freed too.
func shrink[V any](m map[string]V, peak *int) map[string]V {
	if len(m) >= *peak/4 {
		return m
	}
	n := make(map[string]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	*peak = len(m)
	return n
}

type stat struct {
	name string
	v    float64
}

// timerStats computes what statsd's Graphite backend writes for a timer:
// count (samples weighed by 1/rate), count_ps, lower, upper, mean, median,
// sum, std, and per percentile p: upper_p, mean_p and sum_p over the
// lowest p% of the values. It sorts v.
func timerStats(v []float64, count, secs float64, pcts []float64) []stat {
	slices.Sort(v)
	n := len(v)
	var sum float64
	for _, x := range v {
		sum += x
	}
	mean := sum / float64(n)
	var sq float64
	for _, x := range v {
		sq += (x - mean) * (x - mean)
	}
	median := v[n/2]
	if n%2 == 0 {
		median = (v[n/2-1] + v[n/2]) / 2
	}
	out := []stat{{"count", count}, {"count_ps", count / secs}, {"lower", v[0]}, {"upper", v[n-1]},
		{"mean", mean}, {"median", median}, {"sum", sum}, {"std", math.Sqrt(sq / float64(n))}}
	for _, p := range pcts {
		k := int(math.Round(p / 100 * float64(n)))
		if k < 1 {
			continue // too few values for this percentile, as statsd skips it
		}
		var ps float64
		for _, x := range v[:k] {
			ps += x
		}
		suffix := strings.ReplaceAll(strconv.FormatFloat(p, 'f', -1, 64), ".", "_")
		out = append(out, stat{"upper_" + suffix, v[k-1]}, stat{"mean_" + suffix, ps / float64(k)}, stat{"sum_" + suffix, ps})
	}
	return out
}
