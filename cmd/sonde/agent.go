package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
	gnet "github.com/shirou/gopsutil/v4/net"
)

// agentConfig is what `sonde agent` is told.
type agentConfig struct {
	server    string
	interval  time.Duration
	name      string
	disk      string
	maxHeld   int
	logLevel  string
	logFormat string
	token     string      // from -token-file: sent as AUTH first
	tls       *tls.Config // -tls or -ca-file: the server speaks TLS
}

// oneShotGrace is how long the agent waits after connecting before it
// writes: the command listener takes a connection that writes within 100
// ms of connecting for a scripted nc and closes it after 300 ms without
// input (README, "One-shot connections"); the agent is a long-lived
// client that writes once a second.
const oneShotGrace = 150 * time.Millisecond

func parseAgentFlags(args []string, stderr io.Writer) (agentConfig, error) {
	var c agentConfig
	fs := flag.NewFlagSet("sonde agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.server, "server", "127.0.0.1:8124", "address of a Sonde's command protocol listener")
	fs.DurationVar(&c.interval, "interval", time.Second, "how often the host's figures are measured and sent")
	fs.StringVar(&c.name, "name", "", "the host's name in the keys, <name>.load.average-1 and so on (default: the hostname, its dots made underscores)")
	fs.StringVar(&c.disk, "disk", "/", "the file system whose use is reported as disk.percent-used")
	fs.IntVar(&c.maxHeld, "max-held", 100_000, "most points held while the server is away or refuses writes for a while; past it the oldest are dropped, counted in <name>.agent.dropped")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error (debug logs every measurement)")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	tokenFile := fs.String("token-file", "", "a file holding a token with the write scope, sent as AUTH first (the server's -auth-file)")
	useTLS := fs.Bool("tls", false, "connect with TLS (the server's -tls-cert), trusting the system's CAs")
	caFile := fs.String("ca-file", "", "connect with TLS, trusting these PEM CA certificates besides the system's")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *tokenFile != "" {
		tok, err := readToken("-token-file", *tokenFile)
		if err != nil {
			return c, err
		}
		c.token = tok
	}
	if *caFile != "" {
		t, err := clientTLS("-ca-file", *caFile)
		if err != nil {
			return c, err
		}
		c.tls = t
	} else if *useTLS {
		c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.tls != nil {
		host, _, err := net.SplitHostPort(c.server)
		if err != nil {
			return c, fmt.Errorf("-server %s: %w", c.server, err)
		}
		c.tls = c.tls.Clone()
		c.tls.ServerName = host
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.interval < 10*time.Millisecond {
		return c, fmt.Errorf("-interval %s: want at least 10ms", c.interval)
	}
	if c.maxHeld < 1 {
		return c, fmt.Errorf("-max-held %d: want at least 1", c.maxHeld)
	}
	if c.name == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("read the hostname (give -name): %w", err)
		}
		c.name = hostKey(h)
	}
	if err := checkHostName(c.name); err != nil {
		return c, err
	}
	return c, nil
}

// hostKey makes a hostname one key segment: dots, spaces and control
// characters become underscores ("web01.example.com" → "web01_example_com").
func hostKey(h string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, h)
}

func checkHostName(name string) error {
	if name == "" || len(name) > 128 || hostKey(name) != name {
		return fmt.Errorf("-name %q: want 1 to 128 bytes with no dot, space or control character", name)
	}
	return nil
}

// agentMain runs `sonde agent` until SIGINT or SIGTERM.
func agentMain(args []string, stderr io.Writer) int {
	c, err := parseAgentFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sonde agent:", err)
		return 2
	}
	logger, err := newLogger(config{logLevel: c.logLevel, logFormat: c.logFormat})
	if err != nil {
		fmt.Fprintln(stderr, "sonde agent:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a := newAgent(c, logger)
	logger.Info("agent running", "server", c.server, "name", c.name, "interval", c.interval)
	a.run(ctx)
	return 0
}

// agentPoint is one measured figure.
type agentPoint struct {
	key string
	v   float64
	t   int64 // ms
}

// agentBatch is one interval's points, sent together.
type agentBatch struct {
	seq uint64
	pts []agentPoint
}

// agent measures the host every interval into a bounded queue of batches,
// and sends them in order, one batch in flight at a time: a batch is
// resent whole after a dropped connection, which the server's resend rule
// makes safe (docs/semantics.md, "Point times"), and the next batch goes
// only once every reply of the last is in, so a key never has two points
// unanswered.
type agent struct {
	cfg agentConfig
	log *slog.Logger

	mu      sync.Mutex
	held    []agentBatch // oldest first
	nheld   int          // points in held
	seq     uint64
	dropped int64 // points dropped since start: the queue was full, or the server refused them
	wake    chan struct{}

	// The collector's own: the last good reading of each cumulative
	// figure, for rates.
	prevCPU, prevDisk, prevNet counterReading
}

// counterReading is one reading of a pair of cumulative figures (CPU busy
// and total; bytes read and written; received and sent). A rate is made
// only from two good readings, so a read that failed once never makes a
// rate from zero (the total since boot in one interval).
type counterReading struct {
	a, b float64
	at   time.Time
	ok   bool
}

func newAgent(c agentConfig, logger *slog.Logger) *agent {
	return &agent{cfg: c, log: logger, wake: make(chan struct{}, 1)}
}

// drainTime is how long a stopping agent goes on sending what it holds.
const drainTime = 2 * time.Second

// run measures until ctx ends, then sends what it still holds for up to
// drainTime.
func (a *agent) run(ctx context.Context) {
	sendCtx, cancelSend := context.WithCancel(context.Background())
	defer cancelSend()
	go func() {
		<-ctx.Done()
		t := time.NewTimer(drainTime)
		defer t.Stop()
		select {
		case <-t.C:
			cancelSend()
		case <-sendCtx.Done():
		}
	}()
	// The sender ends once the collector has held its last batch and
	// nothing is left, not before: a measurement may land as ctx ends.
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		a.collect(ctx)
	}()
	a.send(sendCtx, collected)
	<-collected
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log.Info("agent stopped", "unsent_points", a.nheld, "dropped_points", a.dropped)
}

// collect measures every interval until ctx ends.
func (a *agent) collect(ctx context.Context) {
	t := time.NewTicker(a.cfg.interval)
	defer t.Stop()
	for {
		a.hold(a.measure(time.Now()))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measure reads the host's figures; one that cannot be read is left out
// (and logged at debug level).
func (a *agent) measure(now time.Time) []agentPoint {
	ms := now.UnixMilli()
	var pts []agentPoint
	add := func(name string, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			pts = append(pts, agentPoint{key: a.cfg.name + "." + name, v: v, t: ms})
		}
	}
	skip := func(what string, err error) { a.log.Debug("measure", "what", what, "err", err) }
	if l, err := load.Avg(); err == nil {
		add("load.average-1", l.Load1)
		add("load.average-5", l.Load5)
		add("load.average-15", l.Load15)
	} else {
		skip("load", err)
	}
	if m, err := mem.VirtualMemory(); err == nil && m.Total > 0 {
		add("memory.percent-free", 100*float64(m.Available)/float64(m.Total))
		add("memory.used", float64(m.Used))
	} else {
		skip("memory", err)
	}
	if u, err := disk.Usage(a.cfg.disk); err == nil {
		add("disk.percent-used", u.UsedPercent)
	} else {
		skip("disk use", err)
	}
	cpuNow, diskNow, netNow := a.readCounters(now)
	if p, c := a.prevCPU, cpuNow; p.ok && c.ok {
		if total := c.b - p.b; total > 0 {
			add("cpu.percent-used", min(max(100*(c.a-p.a)/total, 0), 100)) // float sums can stray past the ends
		}
	}
	rates := func(p, c counterReading, first, second string) {
		if !p.ok || !c.ok {
			return
		}
		secs := c.at.Sub(p.at).Seconds()
		if secs <= 0 {
			return
		}
		if c.a >= p.a { // a counter that went back (a device gone) gives no rate
			add(first, (c.a-p.a)/secs)
		}
		if c.b >= p.b {
			add(second, (c.b-p.b)/secs)
		}
	}
	rates(a.prevDisk, diskNow, "disk.read-bytes-per-second", "disk.write-bytes-per-second")
	rates(a.prevNet, netNow, "network.rx-bytes-per-second", "network.tx-bytes-per-second")
	for _, r := range []struct {
		prev *counterReading
		cur  counterReading
	}{{&a.prevCPU, cpuNow}, {&a.prevDisk, diskNow}, {&a.prevNet, netNow}} {
		if r.cur.ok {
			*r.prev = r.cur
		}
	}
	add("agent.interval", a.cfg.interval.Seconds())
	a.mu.Lock()
	dropped := a.dropped
	a.mu.Unlock()
	add("agent.dropped", float64(dropped))
	a.log.Debug("measured", "at", ms, "points", len(pts))
	return pts
}

// readCounters reads the cumulative CPU (busy, total seconds), disk
// (bytes read, written) and network (bytes received, sent) figures. Disk
// I/O is summed over whole disks (/sys/block, without loop and ram
// devices), not their partitions, which the kernel counts again; network
// over every interface but loopback.
func (a *agent) readCounters(now time.Time) (cpuR, diskR, netR counterReading) {
	if ts, err := cpu.Times(false); err == nil && len(ts) == 1 {
		t := ts[0] // guest time is in User already
		total := t.User + t.Nice + t.System + t.Idle + t.Iowait + t.Irq + t.Softirq + t.Steal
		cpuR = counterReading{a: total - t.Idle - t.Iowait, b: total, at: now, ok: true}
	} else {
		a.log.Debug("measure", "what", "cpu", "err", err)
	}
	if io, err := disk.IOCounters(); err == nil {
		diskR = counterReading{at: now, ok: true}
		for name, s := range io {
			if wholeDisk(name) {
				diskR.a += float64(s.ReadBytes)
				diskR.b += float64(s.WriteBytes)
			}
		}
	} else {
		a.log.Debug("measure", "what", "disk i/o", "err", err)
	}
	if ns, err := gnet.IOCounters(true); err == nil {
		netR = counterReading{at: now, ok: true}
		for _, s := range ns {
			if s.Name != "lo" {
				netR.a += float64(s.BytesRecv)
				netR.b += float64(s.BytesSent)
			}
		}
	} else {
		a.log.Debug("measure", "what", "network", "err", err)
	}
	return cpuR, diskR, netR
}

// wholeDisk says whether a block device is a disk rather than one of its
// partitions or a loop or ram device.
func wholeDisk(name string) bool {
	if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") {
		return false
	}
	_, err := os.Stat("/sys/block/" + name)
	return err == nil
}

// hold queues a batch, dropping the oldest points past -max-held.
func (a *agent) hold(pts []agentPoint) {
	if len(pts) == 0 {
		return
	}
	a.mu.Lock()
	a.seq++
	a.held = append(a.held, agentBatch{seq: a.seq, pts: pts})
	a.nheld += len(pts)
	var dropped int
	for a.nheld > a.cfg.maxHeld {
		b := &a.held[0]
		n := min(len(b.pts), a.nheld-a.cfg.maxHeld)
		b.pts = b.pts[n:]
		a.nheld -= n
		dropped += n
		if len(b.pts) == 0 {
			a.held = a.held[1:]
		}
	}
	a.dropped += int64(dropped)
	total := a.dropped
	a.mu.Unlock()
	if dropped > 0 {
		a.log.Warn("dropped the oldest points: the server has been away too long", "dropped", dropped, "dropped_since_start", total, "max_held", a.cfg.maxHeld)
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// front returns a copy of the oldest batch; false when none is held.
func (a *agent) front() (agentBatch, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.held) == 0 {
		return agentBatch{}, false
	}
	b := a.held[0]
	b.pts = append([]agentPoint(nil), b.pts...)
	return b, true
}

// settle replaces batch seq, if it is still held, with the points to try
// again (none: it is gone), and counts the refused ones as dropped.
func (a *agent) settle(seq uint64, retry []agentPoint, refused int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropped += int64(refused)
	if len(a.held) == 0 || a.held[0].seq != seq {
		return // dropped meanwhile (the queue overflowed)
	}
	a.nheld -= len(a.held[0].pts) - len(retry)
	if len(retry) == 0 {
		a.held = a.held[1:]
		return
	}
	a.held[0].pts = retry
}

// errDrained ends serve: the agent is stopping and holds nothing more.
var errDrained = errors.New("agent: everything held was sent")

// send delivers held batches, reconnecting with backoff, until ctx ends,
// or collected is closed (the collector is done) and nothing is held.
func (a *agent) send(ctx context.Context, collected <-chan struct{}) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		var conn net.Conn
		var err error
		if a.cfg.tls != nil {
			conn, err = (&tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: a.cfg.tls}).DialContext(ctx, "tcp", a.cfg.server)
		} else {
			conn, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", a.cfg.server)
		}
		if err != nil {
			a.log.Debug("connect", "server", a.cfg.server, "err", err, "retry_in", backoff)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		a.log.Info("connected", "server", a.cfg.server)
		answered, err := a.serve(ctx, collected, conn)
		conn.Close()
		if errors.Is(err, errDrained) || ctx.Err() != nil {
			return
		}
		a.log.Warn("connection lost; the unanswered points will be sent again", "server", a.cfg.server, "err", err, "retry_in", backoff)
		// The backoff starts again only after a connection that answered a
		// batch: a server that closes at once (-max-conns) is not hammered.
		if answered {
			backoff = 100 * time.Millisecond
		}
		if !sleepCtx(ctx, backoff) {
			return
		}
		if !answered {
			backoff = min(backoff*2, 5*time.Second)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serve sends batches on one connection until it fails, ctx ends, or
// collected is closed and nothing is held (errDrained). answered says
// whether the server answered a whole batch on it.
func (a *agent) serve(ctx context.Context, collected <-chan struct{}, conn net.Conn) (answered bool, err error) {
	if !sleepCtx(ctx, oneShotGrace) {
		return false, ctx.Err()
	}
	br := bufio.NewReaderSize(conn, 4096) // a reply longer than this is not Sonde's: ReadSlice fails
	bw := bufio.NewWriter(conn)
	if a.cfg.token != "" {
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(conn, "AUTH "+a.cfg.token+"\n"); err != nil {
			return false, fmt.Errorf("send AUTH: %w", err)
		}
		r, err := br.ReadSlice('\n')
		if err != nil {
			return false, fmt.Errorf("read the answer to AUTH: %w", err)
		}
		if s := strings.TrimRight(string(r), "\r\n"); s != "+OK" {
			return false, fmt.Errorf("the server refused the token: %s", s)
		}
	}
	var line []byte
	for {
		select {
		case <-collected:
			if _, ok := a.front(); !ok { // nothing comes after collected
				return answered, errDrained
			}
		default:
		}
		b, ok := a.front()
		if !ok {
			select {
			case <-ctx.Done():
				return answered, ctx.Err()
			case <-collected:
			case <-a.wake:
			}
			continue
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		for _, p := range b.pts {
			line = append(line[:0], "SET "...)
			line = append(line, p.key...)
			line = append(line, ' ')
			line = strconv.AppendFloat(line, p.v, 'g', -1, 64)
			line = append(line, " @"...)
			line = strconv.AppendInt(line, p.t, 10)
			line = append(line, '\n')
			if _, err := bw.Write(line); err != nil {
				return answered, fmt.Errorf("send points: %w", err)
			}
		}
		if err := bw.Flush(); err != nil {
			return answered, fmt.Errorf("send points: %w", err)
		}
		var retry []agentPoint
		refused := 0
		for _, p := range b.pts {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return answered, fmt.Errorf("read replies: %w", err)
			}
			r := strings.TrimRight(string(line), "\r\n")
			switch {
			case r == "+OK":
			case transientRefusal(r):
				retry = append(retry, p)
			default:
				refused++
				a.log.Warn("point refused", "key", p.key, "at", p.t, "reply", r)
			}
		}
		a.settle(b.seq, retry, refused)
		answered = true
		if len(retry) > 0 {
			a.log.Warn("the server refused points for now; trying again", "points", len(retry))
			if !sleepCtx(ctx, time.Second) {
				return answered, ctx.Err()
			}
		}
	}
}

// transientRefusal says whether a reply refuses a write for a while only:
// the server's disk is full or failing (until it is restarted, for a
// failed fsync), it is shutting down, or it hit a bug. The point is held
// and sent again: if it was stored after all, the resend rule stores it
// once. Other refusals (a bad value, another writer's newer point) are for
// good.
func transientRefusal(reply string) bool {
	for _, p := range []string{"-ERR engine: writes are paused", "-ERR engine: nothing of this batch was applied",
		"-ERR engine: the outcome of this batch is unknown", "-ERR engine: wal failed", "-ERR engine: closed",
		"-ERR internal error", "-ERR too many connections"} {
		if strings.HasPrefix(reply, p) {
			return true
		}
	}
	return false
}
