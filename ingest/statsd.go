package ingest

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
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
	// Access, when set, holds the sources taken (-allow; a refused one is
	// closed at once, a datagram dropped, and counted) and TLS.
	Access *boundary.Access
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
	// The aggregates hold at most MaxNames counter, timer and set names
	// (default 50,000; active or idle, over all readers), MaxSetMembers
	// members of all sets together and MaxTimerValues values of all
	// timers together in one interval (default 500,000 each). Samples past
	// them still go to the WAL raw but are left out of the aggregates, and
	// counted (unaggregated). docs/statsd.md has what the defaults cost.
	MaxNames       int
	MaxSetMembers  int
	MaxTimerValues int
	// IdleFlushes is how many flushes write zeros for a name that got no
	// sample (counter rate, timer count and count_ps, set count) before
	// it is forgotten: dropped from memory, nothing more written. 0 means
	// the default, 3; negative means none (forgotten at its first flush
	// without samples, statsd's deleteIdleStats).
	IdleFlushes int
	// MaxQueue caps the raw samples read and not yet durable in the WAL;
	// default 65,536. When it is full the readers wait, and the socket's
	// receive buffer takes what arrives meanwhile, or the kernel drops it.
	MaxQueue int
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
		o.MaxNames = 50_000
	}
	if o.MaxSetMembers <= 0 {
		o.MaxSetMembers = 500_000
	}
	if o.MaxTimerValues <= 0 {
		o.MaxTimerValues = 500_000
	}
	switch {
	case o.IdleFlushes == 0:
		o.IdleFlushes = 3
	case o.IdleFlushes < 0:
		o.IdleFlushes = 0
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 65536
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
	// Unaggregated counts samples a bound left out of the aggregates
	// (their raw samples are written), in all and by bound.
	Unaggregated            int64 `json:"unaggregated"`
	UnaggregatedNames       int64 `json:"unaggregated_names"`        // MaxNames
	UnaggregatedSetMembers  int64 `json:"unaggregated_set_members"`  // MaxSetMembers
	UnaggregatedTimerValues int64 `json:"unaggregated_timer_values"` // MaxTimerValues
	// What the aggregates hold now: names (active and idle), set members,
	// timer values; and the names forgotten after IdleFlushes.
	Names       int64 `json:"names"`
	SetMembers  int64 `json:"set_members"`
	TimerValues int64 `json:"timer_values"`
	Forgotten   int64 `json:"forgotten"`
	Queued      int64 `json:"queued"`      // raw samples read, not yet durable
	ReadBuffer  int   `json:"read_buffer"` // the socket's receive buffer, as the kernel reports it
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
	queued  opCount          // samples in queue or being written, at most MaxQueue
	table   aggTable         // the aggregates, shared by the readers
	flusher flushWriter      // the flusher goroutine's
	mu      sync.Mutex       // guards closed against readers starting during Close
	closed  bool
	readers sync.WaitGroup
	writers sync.WaitGroup
	stopped chan struct{} // closed by Close: the flusher stops
	flushed chan struct{} // closed when the flusher wrote its last flush
	rcvbuf  int

	packets, lines, badLines, badKeys, written, failed, flushes, aggregates, unaggregated, forgotten atomic.Int64

	unaggregatedBy [numCauses]atomic.Int64
	warned         atomic.Bool // this interval's first refusal was logged
}

// opCount bounds the raw samples between the readers and the WAL: a
// reader waits in add until there is room (or nothing is queued: one
// datagram bigger than the bound still goes).
type opCount struct {
	mu   sync.Mutex
	room sync.Cond
	n    int
	max  int
}

func (c *opCount) add(n int) {
	c.mu.Lock()
	for c.n > 0 && c.n+n > c.max {
		c.room.Wait()
	}
	c.n += n
	c.mu.Unlock()
}

func (c *opCount) done(n int) {
	c.mu.Lock()
	c.n -= n
	c.room.Broadcast()
	c.mu.Unlock()
}

func (c *opCount) load() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
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
	s.queued.max = opts.MaxQueue
	s.queued.room.L = &s.queued.mu
	s.table.init()
	s.flusher.s = s
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
	for range s.opts.Readers {
		s.readers.Add(1)
		go s.read()
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

func (s *Statsd) read() {
	defer s.readers.Done()
	// After a panic (the datagram is lost) a new reader takes over, counted
	// before this one is done so that Close still waits for it.
	defer boundary.Recover("statsd", s.log, func() { s.readers.Add(1); go s.read() })
	buf := make([]byte, 65536)
	var samples []statsd.Sample
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		if !s.opts.Access.AllowedIP(from.Addr()) {
			s.opts.Access.Refuse("statsd")
			continue
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
		for i := range samples {
			s.aggregate(&samples[i])
			ops = rawOp(&samples[i], s.opts.FlushInterval, ops)
		}
		s.lines.Add(int64(good))
		if len(ops) > 0 {
			// Both wait when the WAL falls behind: the kernel buffer takes
			// the rest, or drops it.
			s.queued.add(len(ops))
			s.queue <- ops
		}
	}
}

// rawOp appends the op that writes m to the WAL as it arrives: sets
// have none.
func rawOp(m *statsd.Sample, interval time.Duration, ops []sample.Op) []sample.Op {
	switch m.Type {
	case statsd.Counter:
		return append(ops, sample.Op{Code: sample.Incr, Key: statsdKey("stats_counts.", m.Name, ""), Value: m.Value,
			Interval: interval.Milliseconds()})
	case statsd.Gauge:
		return append(ops, sample.Op{Code: sample.Set, Key: statsdKey("stats.gauges.", m.Name, ""), Value: m.Value, Delta: m.Delta})
	case statsd.Timer:
		return append(ops, sample.Op{Code: sample.Set, Key: statsdKey("stats.timers.", m.Name, ".samples"), Value: m.Value})
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
		s.queued.done(len(batch))
		clear(batch) // let the keys go
	}
}

// appendOps appends ops and adds the number stored to stored.
func (s *Statsd) appendOps(ops []sample.Op, errs []error, stored *atomic.Int64) []error {
	// Nobody is answered: statsd's senders get no reply.
	errs, _ = appendBatch(context.Background(), s.app, ops, errs, false) // a whole-batch error is in every errs[i]
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

// Stats returns the listener's counters, with the kernel's drop count
// for its socket.
func (s *Statsd) Stats() StatsdStats {
	return StatsdStats{Packets: s.packets.Load(), Lines: s.lines.Load(), BadLines: s.badLines.Load(), BadKeys: s.badKeys.Load(),
		Written: s.written.Load(), Failed: s.failed.Load(), Flushes: s.flushes.Load(), Aggregates: s.aggregates.Load(),
		Unaggregated: s.unaggregated.Load(), UnaggregatedNames: s.unaggregatedBy[byNames].Load(),
		UnaggregatedSetMembers: s.unaggregatedBy[bySetMembers].Load(), UnaggregatedTimerValues: s.unaggregatedBy[byTimerValues].Load(),
		Names: s.table.names.Load(), SetMembers: s.table.members.Load(), TimerValues: s.table.values.Load(),
		Forgotten: s.forgotten.Load(), Queued: int64(s.queued.load()),
		KernelDrops: kernelDrops(s.conn.LocalAddr().(*net.UDPAddr)), ReadBuffer: s.rcvbuf}
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
