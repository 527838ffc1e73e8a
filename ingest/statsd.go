package ingest

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/statsd"
)

// StatsdOptions configure the statsd listener.
type StatsdOptions struct {
	// Addr is the UDP listen address; default "127.0.0.1:8125".
	Addr string
	// Readers is how many goroutines read the socket; default GOMAXPROCS,
	// at least 2.
	Readers int
	// ReadBuffer is the socket receive buffer asked for (SO_RCVBUFFORCE
	// when permitted, else SO_RCVBUF, capped by net.core.rmem_max);
	// default 16 MiB.
	ReadBuffer int
	// FlushInterval is how often timers, sets and counter rates are
	// aggregated and written; default 10 s.
	FlushInterval time.Duration
	// Percentiles are the timer percentiles written at each flush; default
	// 50, 90, 95, 99.
	Percentiles []float64
	// MaxNames caps the names one reader aggregates in one interval, and
	// MaxSetMembers the members one set counts; defaults 100,000 each.
	// Samples past them still go to the WAL but are left out of the
	// interval's aggregates, and counted (unaggregated).
	MaxNames      int
	MaxSetMembers int
	// Logger receives messages; nil discards them.
	Logger *slog.Logger
}

func (o StatsdOptions) withDefaults() StatsdOptions {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8125"
	}
	if o.Readers <= 0 {
		o.Readers = max(runtime.GOMAXPROCS(0), 2)
	}
	if o.ReadBuffer <= 0 {
		o.ReadBuffer = 16 << 20
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 10 * time.Second
	}
	if o.Percentiles == nil {
		o.Percentiles = []float64{50, 90, 95, 99}
	}
	if o.MaxNames <= 0 {
		o.MaxNames = 100_000
	}
	if o.MaxSetMembers <= 0 {
		o.MaxSetMembers = 100_000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// StatsdStats counts what the statsd listener has seen.
type StatsdStats struct {
	Packets     int64 `json:"packets"`
	Lines       int64 `json:"lines"`        // good lines, every sample of which was queued for the WAL
	BadLines    int64 `json:"bad_lines"`    // lines that did not parse
	BadKeys     int64 `json:"bad_keys"`     // of those, lines refused for their name or tags (not UTF-8, empty, too long)
	Written     int64 `json:"written"`      // raw samples durable in the WAL
	Failed      int64 `json:"failed"`       // writes the store refused
	Flushes     int64 `json:"flushes"`      // aggregations written
	Aggregates  int64 `json:"aggregates"`   // values the flushes wrote
	KernelDrops int64 `json:"kernel_drops"` // datagrams the kernel dropped: the socket's buffer was full
	// Unaggregated counts samples left out of the interval's aggregates
	// by MaxNames or MaxSetMembers (their raw samples are written).
	Unaggregated int64 `json:"unaggregated"`
	ReadBuffer   int   `json:"read_buffer"` // the socket's receive buffer, as the kernel reports it
}

// Statsd receives the statsd line protocol over UDP. Every counter, gauge
// and timer sample goes to the WAL as it arrives; every FlushInterval the
// timers, sets and counter rates of the interval are aggregated and
// written too. Outputs are named as statsd's Graphite backend names them
// (docs/statsd.md).
type Statsd struct {
	opts StatsdOptions
	app  Appender
	conn *net.UDPConn
	log  *slog.Logger

	queue   chan []sample.Op // raw samples, a datagram's worth per entry
	aggs    []*statsdAgg     // one per reader
	mu      sync.Mutex       // guards closed against readers starting during Close
	closed  bool
	readers sync.WaitGroup
	writers sync.WaitGroup
	stopped chan struct{} // closed by Close: the flusher stops
	flushed chan struct{} // closed when the flusher wrote its last flush
	rcvbuf  int

	packets, lines, badLines, badKeys, written, failed, flushes, aggregates, unaggregated atomic.Int64
}

// statsdAgg is one reader's aggregation of the current interval.
type statsdAgg struct {
	mu       sync.Mutex
	names    int // entries in the three maps
	counters map[string]float64
	timers   map[string]*timerAgg
	sets     map[string]map[string]struct{}
}

type timerAgg struct {
	values []float64
	count  float64 // samples, each weighed 1/rate
}

func newStatsdAgg() *statsdAgg {
	return &statsdAgg{counters: map[string]float64{}, timers: map[string]*timerAgg{}, sets: map[string]map[string]struct{}{}}
}

// ListenStatsd binds the UDP socket; Serve reads it.
func ListenStatsd(opts StatsdOptions, app Appender) (*Statsd, error) {
	opts = opts.withDefaults()
	addr, err := net.ResolveUDPAddr("udp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("resolve statsd address %s: %w", opts.Addr, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for statsd on %s: %w", opts.Addr, err)
	}
	s := &Statsd{opts: opts, app: app, conn: conn, log: opts.Logger,
		queue: make(chan []sample.Op, 4096), stopped: make(chan struct{}), flushed: make(chan struct{})}
	s.rcvbuf = setReadBuffer(conn, opts.ReadBuffer)
	for range opts.Readers {
		s.aggs = append(s.aggs, newStatsdAgg())
	}
	for range 2 {
		s.writers.Add(1)
		go s.write()
	}
	go s.flushLoop()
	return s, nil
}

// setReadBuffer asks for n bytes of receive buffer, past rmem_max when the
// process may (SO_RCVBUFFORCE), and returns what the kernel granted.
func setReadBuffer(conn *net.UDPConn, n int) int {
	got := 0
	if rc, err := conn.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n) != nil {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
			}
			got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		})
	}
	return got
}

// Addr returns the bound address.
func (s *Statsd) Addr() net.Addr { return s.conn.LocalAddr() }

// Serve reads datagrams until Close.
func (s *Statsd) Serve() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	for i := range s.opts.Readers {
		s.readers.Add(1)
		go s.read(s.aggs[i])
	}
	s.mu.Unlock()
	s.readers.Wait()
	return nil
}

// Close stops reading, writes every sample already read, takes a last
// flush of the interval so far, and waits for all of it to be durable.
func (s *Statsd) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.conn.Close()
	s.readers.Wait()
	close(s.stopped)
	<-s.flushed
	close(s.queue)
	s.writers.Wait()
	if err != nil {
		return fmt.Errorf("close statsd listener: %w", err)
	}
	return nil
}

func (s *Statsd) read(agg *statsdAgg) {
	defer s.readers.Done()
	// After a panic (the datagram is lost) a new reader takes over, counted
	// before this one is done so that Close still waits for it.
	defer boundary.Recover("statsd", s.log, func() { s.readers.Add(1); go s.read(agg) })
	buf := make([]byte, 65536)
	var samples []statsd.Sample
	for {
		n, _, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		s.packets.Add(1)
		boundary.Inject("statsd", buf[:n])
		var good, bad, badKeys int
		var first error
		samples, good, bad, badKeys, first = statsd.Parse(buf[:n], samples[:0])
		if bad > 0 {
			s.badLines.Add(int64(bad))
			s.badKeys.Add(int64(badKeys))
			s.log.Debug("bad statsd line", "err", first)
		}
		if len(samples) == 0 {
			continue
		}
		ops := make([]sample.Op, 0, len(samples))
		func() {
			agg.mu.Lock()
			defer agg.mu.Unlock() // a panic must not leave the flusher waiting
			for i := range samples {
				ops = s.take(agg, &samples[i], ops)
			}
		}()
		s.lines.Add(int64(good))
		if len(ops) > 0 {
			s.queue <- ops // blocks when the WAL falls behind: the kernel buffer takes the rest, or drops
		}
	}
}

// take adds one sample to the interval and to the raw writes.
func (s *Statsd) take(agg *statsdAgg, m *statsd.Sample, ops []sample.Op) []sample.Op {
	// room reports whether a name not yet in the interval may join it.
	room := func() bool {
		if agg.names >= s.opts.MaxNames {
			s.unaggregated.Add(1)
			return false
		}
		agg.names++
		return true
	}
	switch m.Type {
	case statsd.Counter:
		if _, ok := agg.counters[m.Name]; ok || room() {
			agg.counters[m.Name] += m.Value
		}
		return append(ops, sample.Op{Code: sample.Incr, Key: statsdKey("stats_counts.", m.Name, ""), Value: m.Value,
			Interval: s.opts.FlushInterval.Milliseconds()})
	case statsd.Gauge:
		return append(ops, sample.Op{Code: sample.Set, Key: statsdKey("stats.gauges.", m.Name, ""), Value: m.Value, Delta: m.Delta})
	case statsd.Timer:
		t := agg.timers[m.Name]
		if t == nil && room() {
			t = &timerAgg{}
			agg.timers[m.Name] = t
		}
		if t != nil {
			t.values = append(t.values, m.Value)
			t.count += 1 / m.Rate
		}
		return append(ops, sample.Op{Code: sample.Set, Key: statsdKey("stats.timers.", m.Name, ".samples"), Value: m.Value})
	case statsd.Set:
		set := agg.sets[m.Name]
		if set == nil && room() {
			set = map[string]struct{}{}
			agg.sets[m.Name] = set
		}
		if set != nil {
			if _, ok := set[m.Set]; ok || len(set) < s.opts.MaxSetMembers {
				set[m.Set] = struct{}{}
			} else {
				s.unaggregated.Add(1)
			}
		}
	}
	return ops
}

// statsdKey puts prefix and suffix around a name, before its tags.
func statsdKey(prefix, name, suffix string) string {
	base, tags, _ := strings.Cut(name, ";")
	if tags != "" {
		tags = ";" + tags
	}
	return prefix + base + suffix + tags
}

// write appends queued samples in batches until the queue is closed.
func (s *Statsd) write() {
	defer s.writers.Done()
	// After a panic (its batch is lost) a new writer takes over.
	defer boundary.Recover("statsd-writer", s.log, func() { s.writers.Add(1); go s.write() })
	var batch []sample.Op
	var errs []error
	for ops := range s.queue {
		batch = append(batch[:0], ops...)
	more:
		for len(batch) < 16384 {
			select {
			case ops, ok := <-s.queue:
				if !ok {
					break more
				}
				batch = append(batch, ops...)
			default:
				break more
			}
		}
		errs = s.appendOps(batch, errs, &s.written)
	}
}

// appendOps appends ops and adds the number stored to stored.
func (s *Statsd) appendOps(ops []sample.Op, errs []error, stored *atomic.Int64) []error {
	errs, _ = appendBatch(context.Background(), s.app, ops, errs) // a whole-batch error is in every errs[i]
	ok := int64(0)
	for i, err := range errs {
		if err == nil {
			ok++
			continue
		}
		logRefused(s.log, s.failed.Add(1), "key", ops[i].Key, "err", err)
	}
	stored.Add(ok)
	return errs
}

func (s *Statsd) flushLoop() {
	defer close(s.flushed)
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.flush()
		case <-s.stopped:
			s.flush()
			return
		}
	}
}

// flush writes the interval's aggregates: counter rates, timer statistics
// and set sizes, each as a GAUGE at the flush time.
func (s *Statsd) flush() {
	defer boundary.Recover("statsd-flusher", s.log, nil) // the interval's aggregates are lost; the next flush goes on
	counters := map[string]float64{}
	timers := map[string]*timerAgg{}
	sets := map[string]map[string]struct{}{}
	for _, a := range s.aggs {
		a.mu.Lock()
		c, t, st := a.counters, a.timers, a.sets
		a.counters, a.timers, a.sets = map[string]float64{}, map[string]*timerAgg{}, map[string]map[string]struct{}{}
		a.names = 0
		a.mu.Unlock()
		for k, v := range c {
			counters[k] += v
		}
		for k, v := range t {
			if m := timers[k]; m != nil {
				m.values = append(m.values, v.values...)
				m.count += v.count
			} else {
				timers[k] = v
			}
		}
		for k, v := range st {
			if m := sets[k]; m != nil {
				for member := range v {
					m[member] = struct{}{}
				}
			} else {
				sets[k] = v
			}
		}
	}
	secs := s.opts.FlushInterval.Seconds()
	var ops []sample.Op
	gauge := func(key string, v float64) {
		ops = append(ops, sample.Op{Code: sample.Set, Key: key, Value: v})
	}
	for name, v := range counters {
		gauge(statsdKey("stats.", name, ""), v/secs)
	}
	for name, t := range timers {
		for _, st := range timerStats(t, secs, s.opts.Percentiles) {
			gauge(statsdKey("stats.timers.", name, "."+st.name), st.v)
		}
	}
	for name, set := range sets {
		gauge(statsdKey("stats.sets.", name, ".count"), float64(len(set)))
	}
	s.flushes.Add(1)
	if len(ops) > 0 {
		s.appendOps(ops, nil, &s.aggregates)
	}
}

type stat struct {
	name string
	v    float64
}

// timerStats computes what statsd's Graphite backend writes for a timer:
// count (samples weighed by 1/rate), count_ps, lower, upper, mean, median,
// sum, std, and per percentile p: upper_p, mean_p and sum_p over the
// lowest p% of the values.
func timerStats(t *timerAgg, secs float64, pcts []float64) []stat {
	v := slices.Clone(t.values)
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
	out := []stat{{"count", t.count}, {"count_ps", t.count / secs}, {"lower", v[0]}, {"upper", v[n-1]},
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

// Stats returns the listener's counters, with the kernel's drop count
// for its socket.
func (s *Statsd) Stats() StatsdStats {
	return StatsdStats{Packets: s.packets.Load(), Lines: s.lines.Load(), BadLines: s.badLines.Load(), BadKeys: s.badKeys.Load(),
		Written: s.written.Load(), Failed: s.failed.Load(), Flushes: s.flushes.Load(), Aggregates: s.aggregates.Load(),
		Unaggregated: s.unaggregated.Load(),
		KernelDrops:  kernelDrops(s.conn.LocalAddr().(*net.UDPAddr)), ReadBuffer: s.rcvbuf}
}

// kernelDrops reads the drops column of the socket bound to addr from
// /proc/net/udp (or udp6); -1 when it cannot be read.
func kernelDrops(addr *net.UDPAddr) int64 {
	file := "/proc/net/udp"
	if addr.IP.To4() == nil {
		file = "/proc/net/udp6"
	}
	f, err := os.Open(file)
	if err != nil {
		return -1
	}
	defer f.Close()
	port := fmt.Sprintf(":%04X", addr.Port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 13 || !strings.HasSuffix(fields[1], port) {
			continue
		}
		n, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	return -1
}
