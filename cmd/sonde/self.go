package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/remotewrite"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest"
	"github.com/sonde-metrics/sonde/query"
)

// selfPrefix names the series Sonde records of itself.
const selfPrefix = "sonde.self."

// minSelfInterval is the shortest -self-interval: each reading lists the
// WAL's directory and writes a group of records.
const minSelfInterval = 100 * time.Millisecond

// selfReading is one reading of Sonde's own figures, taken from the engine,
// the HTTP server and the Go runtime. Both the sonde.self.* series and
// /metrics are made from it.
type selfReading struct {
	rss         uint64 // bytes resident (0 where /proc/self/statm is missing)
	heap        uint64 // bytes of heap objects, live and not yet collected
	goroutines  int
	engine      engine.Stats
	reads       int64 // bounded reads served since start (query.ReadStats.Total)
	subscribers int   // open event streams
	forward     []remotewrite.Stats
}

// selfSource takes readings. Its fields are set before the first.
type selfSource struct {
	db         *engine.DB
	http       *query.Server
	forwarders []*remotewrite.Forwarder
}

func (s *selfSource) read() selfReading {
	r := s.readServer()
	r.rss, r.heap, r.goroutines = residentBytes(), heapObjectBytes(), runtime.NumGoroutine()
	return r
}

// readServer reads the engine and the HTTP server only: what /metrics adds
// to the runtime's and the process's own collectors.
func (s *selfSource) readServer() selfReading {
	r := selfReading{engine: s.db.Stats(), reads: s.http.ReadStats().Total, subscribers: s.http.Subscribers()}
	for _, f := range s.forwarders {
		r.forward = append(r.forward, f.Stats())
	}
	return r
}

// heapObjectBytes reads the heap's objects from runtime/metrics (through
// readSamples, which checks the kind), without stopping the world as
// runtime.ReadMemStats does.
func heapObjectBytes() uint64 {
	sm := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	if !readSamples(sm) {
		return 0
	}
	return sm[0].Value.Uint64()
}

// residentBytes reads the process's resident set from /proc/self/statm;
// 0 when it cannot.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// selfFigure is one sonde.self.* series: its name after the prefix and its
// value in a reading, given the reading before it (nil at the first) and
// the seconds between the two.
type selfFigure struct {
	name  string
	value func(now, prev *selfReading, seconds float64) (float64, bool)
}

func gaugeOf(f func(r *selfReading) float64) func(now, prev *selfReading, seconds float64) (float64, bool) {
	return func(now, _ *selfReading, _ float64) (float64, bool) { return f(now), true }
}

// rateOf is a per-second rate over the interval; none at the first reading.
func rateOf(f func(r *selfReading) float64) func(now, prev *selfReading, seconds float64) (float64, bool) {
	return func(now, prev *selfReading, seconds float64) (float64, bool) {
		if prev == nil || seconds <= 0 {
			return 0, false
		}
		return max(f(now)-f(prev), 0) / seconds, true
	}
}

// selfFigures are the series recorded every -self-interval, in the order
// they are written. The README ("Self-monitoring") lists them.
var selfFigures = []selfFigure{
	{"rss", gaugeOf(func(r *selfReading) float64 { return float64(r.rss) })},
	{"heap", gaugeOf(func(r *selfReading) float64 { return float64(r.heap) })},
	{"goroutines", gaugeOf(func(r *selfReading) float64 { return float64(r.goroutines) })},
	{"series", gaugeOf(func(r *selfReading) float64 { return float64(r.engine.Series) })},
	{"wal.bytes", gaugeOf(func(r *selfReading) float64 { return float64(r.engine.WALBytes) })},
	{"subscribers", gaugeOf(func(r *selfReading) float64 { return float64(r.subscribers) })},
	{"snapshot.seconds", gaugeOf(func(r *selfReading) float64 { return r.engine.Snapshots.LastSeconds })},
	// Records the WAL took, less the ones this recorder wrote itself
	// (selfRecorder.tick takes them off the WAL index).
	{"ingest.rate", rateOf(func(r *selfReading) float64 { return float64(r.engine.Index) })},
	{"query.rate", rateOf(func(r *selfReading) float64 { return float64(r.reads) })},
}

// selfRecorder writes the sonde.self.* series every interval until stop.
type selfRecorder struct {
	src      *selfSource
	app      ingest.Appender
	interval time.Duration
	logger   *slog.Logger
	done     chan struct{}
	wg       sync.WaitGroup

	// Owned by the recorder's goroutine:
	prev   *selfReading // the last reading, nil before the first
	prevAt time.Time
	own    uint64 // records the last tick wrote
	ops    []sample.Op
	errs   []error
}

// startSelf starts recording through app; interval 0 records nothing.
func startSelf(src *selfSource, app ingest.Appender, interval time.Duration, logger *slog.Logger) *selfRecorder {
	r := &selfRecorder{src: src, app: app, interval: interval, logger: logger, done: make(chan struct{}),
		errs: make([]error, len(selfFigures))}
	if interval > 0 {
		r.wg.Add(1)
		go r.run()
	}
	return r
}

// stop ends the recorder and waits for a write under way.
func (r *selfRecorder) stop() {
	close(r.done)
	r.wg.Wait()
}

func (r *selfRecorder) run() {
	defer r.wg.Done()
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		r.tick(time.Now())
		select {
		case <-r.done:
			return
		case <-t.C:
		}
	}
}

// tick records one reading. A panic here is counted and logged, and the
// next tick tries again.
func (r *selfRecorder) tick(now time.Time) {
	defer boundary.Recover("self-monitoring", r.logger, nil)
	cur := r.src.read()
	// The ingest rate leaves out what this recorder wrote: published by
	// now, it is in cur's WAL index and not in prev's.
	adj := cur
	adj.engine.Index -= min(r.own, adj.engine.Index)
	r.ops = r.ops[:0]
	for _, f := range selfFigures {
		v, ok := f.value(&adj, r.prev, now.Sub(r.prevAt).Seconds())
		if !ok {
			continue
		}
		r.ops = append(r.ops, sample.Op{Code: sample.Set, Key: selfPrefix + f.name, Value: v, Time: now.UnixMilli()})
	}
	// Each remote_write destination: its backlog, and the points it sent
	// per second.
	for i, fs := range cur.forward {
		key := selfPrefix + "remote_write." + fs.Name
		r.ops = append(r.ops, sample.Op{Code: sample.Set, Key: key + ".backlog", Value: float64(fs.Backlog), Time: now.UnixMilli()})
		if r.prev != nil && i < len(r.prev.forward) && now.Sub(r.prevAt) > 0 {
			rate := float64(max(fs.Sent-r.prev.forward[i].Sent, 0)) / now.Sub(r.prevAt).Seconds()
			r.ops = append(r.ops, sample.Op{Code: sample.Set, Key: key + ".sent.rate", Value: rate, Time: now.UnixMilli()})
		}
	}
	if cap(r.errs) < len(r.ops) {
		r.errs = make([]error, len(r.ops))
	}
	errs := r.errs[:len(r.ops)]
	clear(errs)
	// own: the records this tick wrote, which the next reading leaves out.
	// An error for the whole batch means none was written.
	own := uint64(0)
	err := r.app.AppendUnacked(context.Background(), r.ops, errs)
	if err == nil {
		for i, e := range errs {
			if e == nil {
				own++
			} else if err == nil {
				err = fmt.Errorf("%s: %w", r.ops[i].Key, e)
			}
		}
	}
	if err != nil {
		r.logger.Warn("record own figures", "err", err)
	}
	r.prev, r.prevAt, r.own = &cur, now, own
}

// metricsHandler serves /metrics in the Prometheus exposition formats
// (client_golang's, content negotiation and gzip included): the Go
// runtime's and the process's standard collectors, and Sonde's own.
func metricsHandler(src *selfSource, logger *slog.Logger) fasthttp.RequestHandler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), sondeCollector{src, logger})
	h := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return func(ctx *fasthttp.RequestCtx) {
		if !ctx.IsGet() && !ctx.IsHead() {
			ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":"only GET is served here"}` + "\n")
			return
		}
		h(ctx)
	}
}

// sondeCollector turns a reading into Prometheus metrics.
type sondeCollector struct {
	src    *selfSource
	logger *slog.Logger
}

var sondeMetrics = struct {
	series, walBytes, walRecords, reads, subscribers, snapSeconds, snapshots, snapFailures, dbBytes, points, panics *prometheus.Desc
}{
	series:       prometheus.NewDesc("sonde_series", "Series (keys) the store holds.", nil, nil),
	walBytes:     prometheus.NewDesc("sonde_wal_bytes", "Bytes of the write-ahead log's files on disk.", nil, nil),
	walRecords:   prometheus.NewDesc("sonde_wal_records_total", "Records written to the write-ahead log: the WAL index, kept across restarts.", nil, nil),
	reads:        prometheus.NewDesc("sonde_reads_total", "Bounded reads served (/data, /vapor, /render, history, ...) since start.", nil, nil),
	subscribers:  prometheus.NewDesc("sonde_sse_subscribers", "Open Server-Sent Events streams.", nil, nil),
	snapSeconds:  prometheus.NewDesc("sonde_snapshot_last_seconds", "How long the last snapshot that stored something took.", nil, nil),
	snapshots:    prometheus.NewDesc("sonde_snapshots_total", "Snapshots taken since start, empty ones included.", nil, nil),
	snapFailures: prometheus.NewDesc("sonde_snapshot_failures_total", "Failed snapshot database writes since start.", nil, nil),
	dbBytes:      prometheus.NewDesc("sonde_snapshot_db_bytes", "Bytes of the snapshot database file.", nil, nil),
	points:       prometheus.NewDesc("sonde_history_points", "Stored history points, raw and archived.", nil, nil),
	panics:       prometheus.NewDesc("sonde_panics_total", "Panics caught at a boundary since start.", nil, nil),
}

// Describe sends every Desc, without a reading: the registry calls it
// when the collector is registered, before the HTTP server exists.
func (c sondeCollector) Describe(ch chan<- *prometheus.Desc) {
	d := &sondeMetrics
	for _, desc := range []*prometheus.Desc{d.series, d.walBytes, d.walRecords, d.reads, d.subscribers, d.snapSeconds,
		d.snapshots, d.snapFailures, d.dbBytes, d.points, d.panics} {
		ch <- desc
	}
	describeRemoteWrite(ch)
}

// Collect runs on a goroutine of the registry's, outside the HTTP
// server's boundary: it catches its own panics.
func (c sondeCollector) Collect(ch chan<- prometheus.Metric) {
	defer boundary.Recover("metrics", c.logger, nil)
	r := c.src.readServer()
	d := &sondeMetrics
	e := r.engine
	ch <- prometheus.MustNewConstMetric(d.series, prometheus.GaugeValue, float64(e.Series))
	ch <- prometheus.MustNewConstMetric(d.walBytes, prometheus.GaugeValue, float64(e.WALBytes))
	ch <- prometheus.MustNewConstMetric(d.walRecords, prometheus.CounterValue, float64(e.Index))
	ch <- prometheus.MustNewConstMetric(d.reads, prometheus.CounterValue, float64(r.reads))
	ch <- prometheus.MustNewConstMetric(d.subscribers, prometheus.GaugeValue, float64(r.subscribers))
	ch <- prometheus.MustNewConstMetric(d.snapSeconds, prometheus.GaugeValue, e.Snapshots.LastSeconds)
	ch <- prometheus.MustNewConstMetric(d.snapshots, prometheus.CounterValue, float64(e.Snapshots.Taken))
	ch <- prometheus.MustNewConstMetric(d.snapFailures, prometheus.CounterValue, float64(e.Snapshots.Failures))
	if h := e.History; h != nil {
		ch <- prometheus.MustNewConstMetric(d.dbBytes, prometheus.GaugeValue, float64(h.FileBytes))
		ch <- prometheus.MustNewConstMetric(d.points, prometheus.GaugeValue, float64(h.Points+h.ArchivePoints))
	}
	ch <- prometheus.MustNewConstMetric(d.panics, prometheus.CounterValue, float64(boundary.Panics()["total"]))
	collectRemoteWrite(ch, r.forward)
}

// selfNames lists the figures' keys, for the flag's help.
func selfNames() string {
	names := make([]string, len(selfFigures))
	for i, f := range selfFigures {
		names[i] = selfPrefix + f.name
	}
	return strings.Join(names, ", ")
}
