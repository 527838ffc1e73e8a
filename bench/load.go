package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one load run.
type Config struct {
	Scenario string // "tcp" (mesures SET/INCR, every reply read) or "graphite" (plaintext, no replies)
	Target   string // host:port the load is sent to
	Query    string // host:port of the HTTP API the result is read back from; "" skips the read-back
	API      string // how to read back: "sonde" (/api/v1/series) or "prometheus" (/api/v1/query)
	Conns    int
	Keys     int
	Count    int64         // samples in all; 0 means run for Duration
	Duration time.Duration // used when Count is 0
	Rate     float64       // samples per second in all; 0 is flat out
	Shape    Shape
	Incr     bool // tcp: INCR deltas instead of SET values
	Pipeline int  // tcp: most lines in flight per connection
	Prefix   string
	// VisibleTimeout bounds how long the read-back waits for the data to show.
	VisibleTimeout time.Duration
	// Taken, when set, is the server's own count of samples taken in; a
	// run without replies (graphite) is ingested once it has grown by Sent.
	Taken func() (int64, error)
	// Poll is how often the server's own counts (Taken, and what it shows
	// its readers) are read; 5 ms when 0.
	Poll time.Duration
	// Progress receives a live status line; nil for none. TTY rewrites one
	// line in place; otherwise a line is printed every five seconds.
	Progress io.Writer
	TTY      bool
}

func (c *Config) setDefaults() {
	if c.Scenario == "" {
		c.Scenario = "tcp"
	}
	if c.API == "" {
		c.API = "sonde"
	}
	if c.Conns <= 0 {
		c.Conns = 4
	}
	if c.Keys <= 0 {
		c.Keys = 10_000
	}
	if c.Keys < c.Conns {
		c.Conns = c.Keys
	}
	if c.Count <= 0 && c.Duration <= 0 {
		c.Count = 2_000_000
	}
	if c.Shape == "" {
		c.Shape = Mixed
	}
	if c.Pipeline <= 0 {
		c.Pipeline = 8192
	}
	if c.Prefix == "" {
		c.Prefix = "bench"
	}
	if c.VisibleTimeout <= 0 {
		c.VisibleTimeout = 2 * time.Minute
	}
	if c.Poll <= 0 {
		c.Poll = 5 * time.Millisecond
	}
}

// Result is what a load run measured. Times are seconds from the first
// byte sent.
type Result struct {
	Scenario string  `json:"scenario"`
	Target   string  `json:"target"`
	Conns    int     `json:"conns"`
	Keys     int     `json:"keys"`
	Shape    Shape   `json:"shape"`
	Paced    float64 `json:"paced_rate,omitempty"`
	Sent     int64   `json:"sent"`
	Acked    int64   `json:"acked,omitempty"`
	Errors   int64   `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
	// SendSeconds: until the last byte was written.
	SendSeconds float64 `json:"send_s"`
	// IngestSeconds: until the server took every sample: the last reply
	// (tcp), or the server's own count (graphite); else SendSeconds.
	IngestSeconds float64 `json:"ingest_s"`
	IngestRate    float64 `json:"ingest_rate"`
	// VisibleSeconds: until the read-back saw every sample.
	VisibleSeconds float64       `json:"visible_s,omitempty"`
	VisibleRate    float64       `json:"visible_rate,omitempty"`
	Latency        *Summary      `json:"ack_latency,omitempty"`
	Verify         *VerifyResult `json:"verify,omitempty"`
	Timeline       []Tick        `json:"timeline"`
	// Start is when the run began: the origin of its times.
	Start time.Time `json:"-"`
}

// Tick is one 100 ms step of the timeline.
type Tick struct {
	T    float64 `json:"t"`    // seconds since the start
	Rate float64 `json:"rate"` // samples taken per second in this step
	P50  float64 `json:"p50_ms,omitempty"`
	P99  float64 `json:"p99_ms,omitempty"`
}

// recorder keeps the counters of a run and its timeline.
type recorder struct {
	start    time.Time
	done     atomic.Int64 // samples the server took (acked, or written when there are no replies)
	errs     atomic.Int64
	firstErr atomic.Pointer[string]
	lat      Hist
	step     atomic.Pointer[Hist]
	total    int64 // 0 when running for a duration

	mu       sync.Mutex // guards timeline.
	timeline []Tick
}

func newRecorder(total int64) *recorder {
	r := &recorder{start: time.Now(), total: total}
	r.step.Store(new(Hist))
	return r
}

func (r *recorder) fail(msg string) {
	r.errs.Add(1)
	r.firstErr.CompareAndSwap(nil, &msg)
}

func (r *recorder) observe(d time.Duration, n int64) {
	r.lat.Record(d, n)
	r.step.Load().Record(d, n)
}

// run samples the counters every 100 ms until ctx ends, printing progress.
func (r *recorder) run(ctx context.Context, name string, out io.Writer, tty bool) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last int64
	lastT := r.start
	lastPrint := r.start
	for {
		select {
		case <-ctx.Done():
			if out != nil && tty {
				fmt.Fprintln(out)
			}
			return
		case now := <-t.C:
			done := r.done.Load()
			h := r.step.Swap(new(Hist))
			tick := Tick{T: now.Sub(r.start).Seconds(), Rate: float64(done-last) / now.Sub(lastT).Seconds()}
			if h.Count() > 0 {
				tick.P50, tick.P99 = ms(h.Quantile(0.5)), ms(h.Quantile(0.99))
			}
			last, lastT = done, now
			r.mu.Lock()
			r.timeline = append(r.timeline, tick)
			r.mu.Unlock()
			if out == nil || (!tty && now.Sub(lastPrint) < 5*time.Second) || (tty && now.Sub(lastPrint) < 250*time.Millisecond) {
				continue
			}
			lastPrint = now
			line := fmt.Sprintf("%-8s %6.1fs %12d done %10.0f/s  p99 %7.2fms  errors %d", name, tick.T, done, tick.Rate, tick.P99, r.errs.Load())
			if r.total > 0 {
				line += fmt.Sprintf("  %5.1f%%", 100*float64(done)/float64(r.total))
			}
			if tty {
				fmt.Fprintf(out, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(out, line)
			}
		}
	}
}

// Run sends the load described by cfg and measures it.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.setDefaults()
	format := lineSet
	switch {
	case cfg.Scenario == "graphite":
		format = lineGraphite
	case cfg.Scenario != "tcp":
		return nil, fmt.Errorf("load scenario %q: want tcp or graphite", cfg.Scenario)
	case cfg.Incr:
		format = lineIncr
	}
	var taken0 int64
	if cfg.Taken != nil {
		var err error
		if taken0, err = cfg.Taken(); err != nil {
			return nil, fmt.Errorf("read the server's count before the run: %w", err)
		}
	}
	conns := make([]net.Conn, cfg.Conns)
	for i := range conns {
		c, err := net.Dial("tcp", cfg.Target)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return nil, fmt.Errorf("connect to %s: %w", cfg.Target, err)
		}
		conns[i] = c
	}
	base := time.Now().Unix() - 40 - cfg.Count/int64(cfg.Keys) // Graphite: the last points 40 s old
	works := make([]*workload, cfg.Conns)
	for i := range works {
		works[i] = newWorkload(cfg.Prefix, cfg.Keys, cfg.Conns, i, cfg.Shape, format == lineIncr)
		works[i].base = base
	}
	rec := newRecorder(cfg.Count)
	progCtx, stopProg := context.WithCancel(ctx)
	progDone := make(chan struct{})
	go func() { defer close(progDone); rec.run(progCtx, cfg.Scenario, cfg.Progress, cfg.TTY) }()

	var wg sync.WaitGroup
	var sendEnd atomic.Int64
	for i, c := range conns {
		count := cfg.Count / int64(cfg.Conns)
		if int64(i) < cfg.Count%int64(cfg.Conns) {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			var err error
			if format == lineGraphite {
				err = sendOnly(ctx, c, works[i], cfg, count, rec)
			} else {
				err = sendPipelined(ctx, c, works[i], cfg, format, count, rec)
			}
			if err != nil {
				rec.fail(err.Error())
			}
			end := int64(time.Since(rec.start))
			for {
				old := sendEnd.Load()
				if end <= old || sendEnd.CompareAndSwap(old, end) {
					break
				}
			}
		}()
	}
	wg.Wait()
	res := &Result{Scenario: cfg.Scenario, Target: cfg.Target, Conns: cfg.Conns, Keys: cfg.Keys,
		Shape: cfg.Shape, Paced: cfg.Rate, Errors: rec.errs.Load(), Start: rec.start}
	for _, w := range works {
		res.Sent += w.n
	}
	res.SendSeconds = time.Duration(sendEnd.Load()).Seconds()
	res.IngestSeconds = res.SendSeconds
	if format != lineGraphite {
		res.Acked = rec.done.Load()
		res.IngestSeconds = time.Since(rec.start).Seconds()
		s := rec.lat.Summary()
		res.Latency = &s
	} else if cfg.Taken != nil {
		if err := waitTaken(ctx, cfg, taken0+res.Sent, rec); err != nil {
			rec.fail(err.Error())
		}
		res.IngestSeconds = time.Since(rec.start).Seconds()
	}
	res.IngestRate = float64(res.Sent) / res.IngestSeconds
	if cfg.Query != "" {
		v, err := waitVisible(ctx, cfg, works)
		res.Verify = v
		if err != nil {
			rec.fail(err.Error())
		} else {
			res.VisibleSeconds = time.Since(rec.start).Seconds()
			res.VisibleRate = float64(res.Sent) / res.VisibleSeconds
		}
	}
	stopProg()
	<-progDone
	res.Errors = rec.errs.Load()
	if p := rec.firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	res.Timeline = rec.timeline
	return res, nil
}

// pacer spaces sends so that one connection keeps to its share of the rate.
type pacer struct {
	start time.Time
	per   float64 // samples per second for this connection; 0 is flat out
}

func (p pacer) wait(ctx context.Context, sent int64) error {
	if p.per <= 0 {
		return ctx.Err()
	}
	due := p.start.Add(time.Duration(float64(sent) / p.per * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

// chunkSize is how many lines go out in one write: at most 10 ms of the
// connection's paced rate, so pacing stays smooth.
func chunkSize(per float64) int64 {
	if per <= 0 {
		return 512
	}
	return min(max(int64(per/100), 1), 512)
}

func stopAt(cfg Config, start time.Time) time.Time {
	if cfg.Count > 0 {
		return time.Time{}
	}
	return start.Add(cfg.Duration)
}

type inflight struct {
	n    int64
	sent time.Time
}

// sendPipelined writes lines in chunks and reads every reply on a second
// goroutine; at most cfg.Pipeline lines are unanswered at once. The
// latency of a chunk is from just before its write to its last reply.
func sendPipelined(ctx context.Context, c net.Conn, w *workload, cfg Config, format int, count int64, rec *recorder) error {
	per := cfg.Rate / float64(cfg.Conns)
	chunk := chunkSize(per)
	q := make(chan inflight, max(cfg.Pipeline/int(chunk), 1))
	readErr := make(chan error, 1)
	go func() { readErr <- readReplies(c, q, rec) }()
	p := pacer{start: rec.start, per: per}
	end := stopAt(cfg, rec.start)
	buf := make([]byte, 0, 64<<10)
	var sent int64
	var err error
	for count == 0 || sent < count {
		if !end.IsZero() && time.Now().After(end) {
			break
		}
		if err = p.wait(ctx, sent); err != nil {
			break
		}
		n := chunk
		if count > 0 {
			n = min(n, count-sent)
		}
		buf = buf[:0]
		stamp := time.Now().UnixMicro()
		for range n {
			buf = w.appendLine(buf, format, stamp)
		}
		f := inflight{n: n, sent: time.Now()}
		select {
		case q <- f:
		case err = <-readErr:
			readErr <- err
		}
		if err != nil {
			break
		}
		if _, err = c.Write(buf); err != nil {
			err = fmt.Errorf("send: %w", err)
			break
		}
		sent += n
	}
	close(q)
	if err != nil {
		c.Close() // unblocks the reader
		<-readErr
		return err
	}
	return <-readErr
}

func readReplies(c net.Conn, q <-chan inflight, rec *recorder) error {
	br := bufio.NewReaderSize(c, 64<<10)
	for f := range q {
		for range f.n {
			line, err := br.ReadSlice('\n')
			if err != nil {
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("read replies: the server closed the connection")
				}
				return fmt.Errorf("read replies: %w", err)
			}
			if len(line) == 0 || line[0] != '+' {
				rec.fail(string(trimEOL(line)))
				continue
			}
			rec.done.Add(1)
		}
		rec.observe(time.Since(f.sent), f.n)
	}
	return nil
}

func trimEOL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// sendOnly writes lines with nothing to read back (Graphite plaintext).
func sendOnly(ctx context.Context, c net.Conn, w *workload, cfg Config, count int64, rec *recorder) error {
	per := cfg.Rate / float64(cfg.Conns)
	chunk := chunkSize(per)
	p := pacer{start: rec.start, per: per}
	end := stopAt(cfg, rec.start)
	buf := make([]byte, 0, 64<<10)
	var sent int64
	for count == 0 || sent < count {
		if !end.IsZero() && time.Now().After(end) {
			break
		}
		if err := p.wait(ctx, sent); err != nil {
			return err
		}
		n := chunk
		if count > 0 {
			n = min(n, count-sent)
		}
		buf = buf[:0]
		for range n {
			buf = w.appendLine(buf, lineGraphite, 0)
		}
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		sent += n
		rec.done.Add(n)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return tc.CloseWrite() // the server sees EOF once it has read everything
	}
	return nil
}

// waitTaken polls the server's own count until it reaches want.
func waitTaken(ctx context.Context, cfg Config, want int64, rec *recorder) error {
	deadline := time.Now().Add(cfg.VisibleTimeout)
	for {
		n, err := cfg.Taken()
		if err == nil && n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server counted %d of %d samples after %s (last error: %v)", n, want, cfg.VisibleTimeout, err)
		}
		if err := pause(ctx, cfg.Poll); err != nil {
			return err
		}
	}
}

// pause waits d between two polls of another server, whose state has no
// signal to wait on.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
