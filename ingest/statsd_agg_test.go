package ingest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/statsd"
)

// recorder is an Appender that keeps every op appended to it, and counts
// the batches that asked to wait for an fsync (Append).
type recorder struct {
	mu    sync.Mutex
	ops   []sample.Op
	acked int
}

func (r *recorder) Append(ctx context.Context, ops []sample.Op, errs []error) error {
	r.mu.Lock()
	r.acked++
	r.mu.Unlock()
	return r.AppendUnacked(ctx, ops, errs)
}

func (r *recorder) AppendUnacked(_ context.Context, ops []sample.Op, _ []error) error {
	r.mu.Lock()
	r.ops = append(r.ops, ops...)
	r.mu.Unlock()
	return nil
}

// take returns what was appended since the last call, as key → value.
func (r *recorder) take() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]float64{}
	for _, op := range r.ops {
		out[op.Key] = op.Value
	}
	r.ops = nil
	return out
}

// newTestStatsd is a listener whose readers never run: the test adds
// samples and calls flush itself (the flush loop's own tick is an hour).
func newTestStatsd(t *testing.T, opts StatsdOptions) (*Statsd, *recorder) {
	t.Helper()
	opts.Addr, opts.FlushInterval = "127.0.0.1:0", time.Hour
	rec := &recorder{}
	s, err := ListenStatsd(opts, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.acked > 0 {
			// Nobody waits for a statsd write: it must not hold up the
			// committer's fsync (AppendUnacked).
			t.Errorf("statsd appended %d batches with Append, want AppendUnacked", rec.acked)
		}
	})
	return s, rec
}

func counter(name string) *statsd.Sample {
	return &statsd.Sample{Name: name, Type: statsd.Counter, Value: 3600, Rate: 1}
}

// TestStatsdIdleFlushes: a name without samples is written as zero for
// IdleFlushes flushes, then forgotten (its room in MaxNames is free
// again); a sample in between starts the count over.
func TestStatsdIdleFlushes(t *testing.T) {
	s, rec := newTestStatsd(t, StatsdOptions{IdleFlushes: 2, MaxNames: 1})
	flush := func(want map[string]float64) {
		t.Helper()
		s.flush()
		got := rec.take()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("flush %d wrote %v, want %v", s.flushes.Load(), got, want)
		}
	}
	s.aggregate(counter("a"))
	s.aggregate(counter("b")) // past MaxNames
	if n := s.unaggregatedBy[byNames].Load(); n != 1 {
		t.Fatalf("unaggregated by names %d, want 1", n)
	}
	flush(map[string]float64{"stats.a": 1})
	flush(map[string]float64{"stats.a": 0})
	s.aggregate(counter("a"))
	flush(map[string]float64{"stats.a": 1})
	flush(map[string]float64{"stats.a": 0})
	flush(map[string]float64{"stats.a": 0})
	if s.table.names.Load() != 1 {
		t.Fatalf("a forgotten too early")
	}
	flush(map[string]float64{})
	if s.table.names.Load() != 0 || s.forgotten.Load() != 1 {
		t.Fatalf("names %d, forgotten %d: want a forgotten", s.table.names.Load(), s.forgotten.Load())
	}
	s.aggregate(counter("b")) // room again
	flush(map[string]float64{"stats.b": 1})
}

// TestStatsdNoIdleFlushes: negative IdleFlushes is statsd's
// deleteIdleStats: no zeros, the name is forgotten at its first flush
// without samples.
func TestStatsdNoIdleFlushes(t *testing.T) {
	s, rec := newTestStatsd(t, StatsdOptions{IdleFlushes: -1})
	s.aggregate(&statsd.Sample{Name: "t", Type: statsd.Timer, Value: 5, Rate: 1})
	s.aggregate(&statsd.Sample{Name: "s", Type: statsd.Set, Set: "x", Rate: 1})
	s.flush()
	if got := rec.take(); got["stats.timers.t.count"] != 1 || got["stats.sets.s.count"] != 1 {
		t.Fatalf("first flush wrote %v", got)
	}
	if s.table.values.Load() != 0 || s.table.members.Load() != 0 {
		t.Fatalf("%d timer values and %d set members held after the flush", s.table.values.Load(), s.table.members.Load())
	}
	s.flush()
	if got := rec.take(); len(got) != 0 || s.table.names.Load() != 0 {
		t.Fatalf("second flush wrote %v, %d names held; want nothing and none", got, s.table.names.Load())
	}
}

// TestStatsdAggregateConcurrent: readers adding to shared names while
// flushes run lose and double-count nothing (run with -race).
func TestStatsdAggregateConcurrent(t *testing.T) {
	s, rec := newTestStatsd(t, StatsdOptions{})
	const readers, samples = 4, 5000
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			for i := range samples {
				s.aggregate(&statsd.Sample{Name: fmt.Sprint("t", i%50), Type: statsd.Timer, Value: float64(r), Rate: 1})
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	total := 0.0
	for running := true; running; {
		select {
		case <-done:
			running = false // one more flush, after the last sample
		default:
		}
		s.flush()
		rec.mu.Lock()
		for _, op := range rec.ops {
			if strings.HasSuffix(op.Key, ".count") {
				total += op.Value
			}
		}
		rec.ops = nil
		rec.mu.Unlock()
	}
	if total != readers*samples {
		t.Fatalf("timer counts add up to %v, want %d", total, readers*samples)
	}
	if v := s.table.values.Load(); v != 0 {
		t.Fatalf("%d timer values held after the last flush", v)
	}
}

// readerDatagrams are 500 datagrams of 20 lines over 10,000 names, the
// load of sonde-bench statsd (counters, timers and gauges in turn) with a
// set member on every fourth line, parsed.
func readerDatagrams(b *testing.B) [][]statsd.Sample {
	var out [][]statsd.Sample
	for d := range 500 {
		var dgram []byte
		for l := range 20 {
			i := d*20 + l
			name := fmt.Sprintf("app.metric.%d", i%10000)
			switch i % 4 {
			case 0:
				dgram = fmt.Appendf(dgram, "%s:1|c\n", name)
			case 1:
				dgram = fmt.Appendf(dgram, "%s:%d|ms\n", name, i%500)
			case 2:
				dgram = fmt.Appendf(dgram, "%s:%d|g\n", name, i)
			case 3:
				dgram = fmt.Appendf(dgram, "%s:u%d|s\n", name, i%300)
			}
		}
		samples, _, bad, _, _ := statsd.Parse(dgram, nil)
		if bad != 0 {
			b.Fatal("bad lines")
		}
		out = append(out, samples)
	}
	return out
}

// BenchmarkStatsdReader is a reader's work on parsed datagrams (adding
// each sample to the aggregates and making its raw op), in ns per sample:
// on one reader, then on GOMAXPROCS readers at once. There is no flush
// (one every 10 s is nothing beside the readers' work), so past 500,000
// timer values they are refused, as a full interval's would be.
func BenchmarkStatsdReader(b *testing.B) {
	dgrams := readerDatagrams(b)
	run := func(b *testing.B, parallel bool) {
		s, _ := newBenchStatsd(b)
		var readers atomic.Int64
		work := func(next func() bool) {
			reader := int(readers.Add(1) - 1)
			var ops []sample.Op
			for i := 0; next(); i++ {
				ops = takeDatagram(s, reader, dgrams[i%len(dgrams)], ops[:0])
			}
		}
		if parallel {
			b.RunParallel(func(pb *testing.PB) { work(pb.Next) })
		} else {
			work(b.Loop)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20, "ns/sample")
	}
	b.Run("1", func(b *testing.B) { run(b, false) })
	b.Run("GOMAXPROCS", func(b *testing.B) { run(b, true) })
}

// nopAppender takes every op.
type nopAppender struct{}

func (nopAppender) Append(context.Context, []sample.Op, []error) error        { return nil }
func (nopAppender) AppendUnacked(context.Context, []sample.Op, []error) error { return nil }

func newBenchStatsd(b *testing.B) (*Statsd, nopAppender) {
	s, err := ListenStatsd(StatsdOptions{Addr: "127.0.0.1:0", FlushInterval: time.Hour, Readers: runtime.GOMAXPROCS(0)}, nopAppender{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, nopAppender{}
}

// takeDatagram is what a reader does with one parsed datagram.
func takeDatagram(s *Statsd, _ int, samples []statsd.Sample, ops []sample.Op) []sample.Op {
	for i := range samples {
		s.aggregate(&samples[i])
		ops = rawOp(&samples[i], s.opts.FlushInterval, ops)
	}
	return ops
}
