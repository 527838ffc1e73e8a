// Command sonde-bench is Sonde's load tool. It sends load over a protocol,
// measures throughput, latency and loss, reads every key back, and can
// compare Sonde with a peer on the same load.
//
//	sonde-bench tcp      -target 127.0.0.1:8124 -http 127.0.0.1:1337
//	sonde-bench graphite -target 127.0.0.1:2003 -http 127.0.0.1:8428 -api prometheus
//	sonde-bench compare  -sonde bin/sonde -peer /usr/bin/victoria-metrics
//	sonde-bench -cardinality 1000000 compare
//	sonde-bench -keys 100000 -rate 200000 -duration 5m -plot soak.png soak
//	sonde-bench -peer ./victoria-metrics -count 1200000 query
//	sonde-bench -keys 1000000 -count 10000000 restart
//
// See docs/benchmarks.md for the figures and the commands behind them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sonde-metrics/sonde/bench"
)

const usage = `usage: sonde-bench [flags] <scenario>

scenarios:
  tcp       mesures SET (or -incr INCR) lines, pipelined, every reply read
  graphite  Graphite plaintext lines, no replies (-taken reads the server's count)
  statsd    statsd lines over UDP (-per-datagram in each), counters, gauges and
            timers mixed; loss = sent minus what the server counted
  query     concurrent reads of a running Sonde at -http: /data, history,
            and Graphite's /render of one key and of -glob, /metrics/find
            of -find; with -peer, it starts Sonde and the peer itself,
            sends both the same Graphite data, and asks each the Graphite
            reads (the peer must serve /render: VictoriaMetrics from source)
  sse       subscribers on /events while -rate writes arrive: delivery lag
  compare   Sonde (-fsync=always, then interval), VictoriaMetrics, then Sonde
            over Graphite plaintext, all on the same load; -cardinality N
            adds N keys x 4 samples over Graphite to Sonde, then the peer:
            peak RSS, CPU, time until visible, time to stop
  soak      a steady -rate load for -duration over -keys, to Sonde (over
            -protocol) and then to the peer (Graphite), each server's CPU,
            RSS and data directory sampled every -sample-every; CPU per
            sample, peak RSS and disk bytes per sample, plotted with -plot
  forward   remote_write against ingest in the same run: -count samples
            flat out over acknowledged SETs to a Sonde forwarding to the peer
            (VictoriaMetrics); the WAL records forwarded over those written
            in the load's middle (1.0: the backlog does not grow); then the
            same load with the receiver down, and how fast the backlog drains
            once it is up, against the ingest rate
  ingest    raw ingest: -count samples over -keys, flat out, to a fresh Sonde
            over acknowledged SETs, a fresh Sonde over Graphite and the peer
            over Graphite, -runs times; each server watched until its CPU
            goes quiet: server CPU per sample and the rate until quiet,
            the median of the runs
  mem       peak RSS and bytes per series at each of -keys-list
  restart   -count samples over -keys series into Sonde (acknowledged SETs),
            then kill -9, all of them in its WAL; again on a fresh
            directory, then SIGTERM; then the same load into the peer over
            Graphite, kill -9 and SIGTERM: each server restarted on its own
            directory, timed from exec until it listens and until it
            serves every series, and read back (-peer '': Sonde only)
  disk      the ack latency floor of the disk under -workdir: an ideal
            fsync-per-group log at -rate, idle and beside a -rate load
            on a Sonde whose data is in memory (-mem-dir)

flags:
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "sonde-bench:", err)
		os.Exit(1)
	}
}

type flags struct {
	load         bench.Config
	shape        string
	out          string
	plot         string
	sondeBin     string
	peerBin      string
	workDir      string
	crash        bool
	subs         int
	keysList     string
	points       int
	extra        string
	memDir       string
	perDgram     int
	card         int
	runs         int
	protocol     string
	idle         bench.IdleConfig
	glob         string
	find         string
	settle       time.Duration
	fwdOpts      string
	fwdReceivers string
}

func run(args []string) error {
	var f flags
	fs := flag.NewFlagSet("sonde-bench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	l := &f.load
	fs.StringVar(&l.Target, "target", "127.0.0.1:8124", "address the load is sent to")
	fs.StringVar(&l.Query, "http", "127.0.0.1:1337", "HTTP API to read back from; empty skips the read-back")
	fs.StringVar(&l.API, "api", "sonde", "read-back API: sonde or prometheus")
	fs.IntVar(&l.Conns, "conns", 4, "connections")
	fs.IntVar(&l.Keys, "keys", 10_000, "distinct keys")
	fs.Int64Var(&l.Count, "count", 2_000_000, "samples in all (0: run for -duration)")
	fs.DurationVar(&l.Duration, "duration", 10*time.Second, "how long to run when -count is 0")
	fs.Float64Var(&l.Rate, "rate", 0, "samples per second in all (0: flat out)")
	fs.StringVar(&f.shape, "shape", "mixed", "values: walk, counter, const, mixed or stamp")
	fs.BoolVar(&l.Incr, "incr", false, "tcp: send INCR deltas instead of SET values")
	fs.IntVar(&l.Pipeline, "pipeline", 8192, "tcp: most unanswered lines per connection")
	fs.StringVar(&l.Prefix, "prefix", "bench", "key prefix")
	fs.DurationVar(&l.VisibleTimeout, "visible-timeout", 2*time.Minute, "how long the read-back waits for every sample to show")
	fs.StringVar(&f.out, "out", "", "write the result as JSON to this file")
	fs.StringVar(&f.plot, "plot", "", "draw throughput and latency over time to this .png or .svg file")
	fs.StringVar(&f.sondeBin, "sonde", "bin/sonde", "compare, ingest, soak, query -peer, mem, restart: the sonde binary to start")
	fs.StringVar(&f.peerBin, "peer", "/usr/bin/victoria-metrics", "compare, soak, query, restart: VictoriaMetrics' single-node binary (query: only when given; restart: '' for none)")
	fs.StringVar(&f.workDir, "workdir", "", "compare, mem, restart: where data directories go (default: a new temporary directory, removed after)")
	fs.BoolVar(&f.crash, "crash", false, "compare: also kill -9 each server right after the load and count what survived")
	fs.IntVar(&f.card, "cardinality", 0, "compare: add the cardinality phase with this many keys, 4 samples each (0: none)")
	fs.IntVar(&f.runs, "runs", 3, "ingest: runs of each case; the medians are reported")
	fs.StringVar(&f.protocol, "protocol", "tcp", "soak: what Sonde takes: tcp (acknowledged SETs) or graphite; the peer takes graphite")
	fs.DurationVar(&f.idle.Every, "sample-every", time.Second, "soak, compare -cardinality, query -peer: how often each server's CPU, RSS and data directory are read")
	fs.DurationVar(&f.idle.Window, "idle-window", 15*time.Second, "soak, compare -cardinality, query -peer: a server is done with a load once its CPU stays under -idle-cpu this long")
	fs.Float64Var(&f.idle.Quiet, "idle-cpu", 0.03, "soak, compare -cardinality, query -peer: the share of one core under which a server counts as idle")
	fs.DurationVar(&f.idle.Most, "idle-wait", 5*time.Minute, "soak, compare -cardinality, query -peer: the longest wait for a server to go idle after a load")
	fs.StringVar(&f.glob, "glob", "", "query: the /render target matching many series (default PREFIX.k00001*: 100 keys)")
	fs.StringVar(&f.find, "find", "", "query: the /metrics/find query (default PREFIX.*: one level down from the prefix)")
	fs.DurationVar(&f.settle, "settle", 5*time.Second, "restart: how long a restarted server's series count must stay below the keys sent, unchanged, to be taken as final")
	fs.IntVar(&f.subs, "subscribers", 100, "sse: subscribers")
	fs.StringVar(&f.keysList, "keys-list", "10000,100000,1000000", "mem: key counts")
	fs.IntVar(&f.points, "points", 0, "mem: samples per key (0: 120, /vapor's length)")
	fs.StringVar(&f.extra, "sonde-flags", "", "compare, ingest, soak, query -peer, mem, restart: more flags for sonde, space separated")
	fs.IntVar(&f.perDgram, "per-datagram", 20, "statsd: lines in each datagram")
	fs.StringVar(&f.fwdReceivers, "forward-receivers", "null,victoria-metrics", "forward: the receivers measured, in order")
	fs.StringVar(&f.fwdOpts, "forward-options", "", "forward: more fields of Sonde's -remote-write value, e.g. ,shards=8,max-samples=10000")
	fs.StringVar(&f.memDir, "mem-dir", "/dev/shm", "disk: a tmpfs for the data of the Sonde that makes the CPU load")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("want one scenario, got %d arguments", fs.NArg())
	}
	var err error
	if l.Shape, err = bench.ParseShape(f.shape); err != nil {
		return err
	}
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		l.TTY = true
	}
	l.Progress = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	scenario := fs.Arg(0)
	switch scenario {
	case "tcp", "graphite":
		l.Scenario = scenario
		res, err := bench.Run(ctx, *l)
		if err != nil {
			return err
		}
		printResult(os.Stdout, scenario, res)
		if err := writeOut(f.out, res); err != nil {
			return err
		}
		if f.plot != "" {
			if err := bench.Plot(f.plot, scenario+" load on "+l.Target, []bench.PlotRun{{Label: scenario, Timeline: res.Timeline, Visible: res.VisibleSeconds}}); err != nil {
				return err
			}
		}
		if res.Errors > 0 {
			return fmt.Errorf("%d errors, the first: %s", res.Errors, res.FirstErr)
		}
		return nil
	case "compare":
		dir, cleanup, err := workDir(f.workDir)
		if err != nil {
			return err
		}
		defer cleanup()
		if f.card < 0 {
			return fmt.Errorf("-cardinality %d: want a key count, or 0 for none", f.card)
		}
		cr, err := bench.Compare(ctx, bench.CompareConfig{Load: *l, Crash: f.crash, Cardinality: f.card, Pair: f.pair(dir)})
		if err != nil {
			return err
		}
		printCompare(os.Stdout, cr)
		if err := writeOut(f.out, cr); err != nil {
			return err
		}
		if f.plot != "" {
			var runs []bench.PlotRun
			for _, p := range cr.Phases {
				runs = append(runs, bench.PlotRun{Label: p.Name, Timeline: p.Result.Timeline, Visible: p.Result.VisibleSeconds})
			}
			if err := bench.Plot(f.plot, "compare: the same load on each server", runs); err != nil {
				return err
			}
			if len(cr.Cardinality) > 0 {
				title := fmt.Sprintf("cardinality: %d keys x 4 samples over graphite", f.card)
				if err := bench.PlotProc(suffixed(f.plot, "-cardinality"), title, procRuns(cr.Cardinality)); err != nil {
					return err
				}
			}
		}
		return nil
	case "ingest":
		if explicit(fs, "rate") || explicit(fs, "duration") {
			return fmt.Errorf("ingest sends -count samples flat out: -rate and -duration do not apply")
		}
		dir, cleanup, err := workDir(f.workDir)
		if err != nil {
			return err
		}
		defer cleanup()
		runs, err := bench.Ingest(ctx, bench.IngestConfig{Load: *l, Runs: f.runs, Pair: f.pair(dir)})
		if err != nil {
			return err
		}
		printIngest(os.Stdout, l, runs)
		return writeOut(f.out, runs)
	case "soak":
		if explicit(fs, "count") {
			return fmt.Errorf("soak runs for -duration: -count does not apply")
		}
		if !explicit(fs, "rate") {
			l.Rate = 200_000
		}
		dir, cleanup, err := workDir(f.workDir)
		if err != nil {
			return err
		}
		defer cleanup()
		runs, err := bench.Soak(ctx, bench.SoakConfig{Load: *l, Protocol: f.protocol, Pair: f.pair(dir)})
		if err != nil {
			return err
		}
		printSoak(os.Stdout, l, f.protocol, runs)
		if err := writeOut(f.out, runs); err != nil {
			return err
		}
		if f.plot != "" {
			title := fmt.Sprintf("soak: %d keys at %s for %s (sonde over %s, the peer over graphite)", l.Keys, rate(l.Rate), l.Duration, f.protocol)
			return bench.PlotProc(f.plot, title, procRuns(runs))
		}
		return nil
	case "query":
		qc := bench.QueryConfig{Query: l.Query, Prefix: l.Prefix, Keys: l.Keys, Conns: l.Conns, Duration: l.Duration, Glob: f.glob, Find: f.find}
		if explicit(fs, "peer") {
			dir, cleanup, err := workDir(f.workDir)
			if err != nil {
				return err
			}
			defer cleanup()
			r, err := bench.QueryCompare(ctx, bench.QueryCompareConfig{Load: *l, Query: qc, Pair: f.pair(dir)})
			if err != nil {
				return err
			}
			printQueryCompare(os.Stdout, r)
			return writeOut(f.out, r)
		}
		qs, err := bench.QueryBench(ctx, qc)
		for _, q := range qs {
			printKind(os.Stdout, "", q)
		}
		if werr := writeOut(f.out, qs); werr != nil {
			return werr
		}
		return err
	case "sse":
		r, err := bench.SSE(ctx, bench.SSEConfig{Load: *l, Subscribers: f.subs})
		if err != nil {
			return err
		}
		fmt.Printf("sse: %d subscribers, %d updates at %s over %d keys\n", r.Subscribers, r.Loaded.Sent, rate(r.Loaded.Paced), r.Loaded.Keys)
		fmt.Printf("  ingest alone %s, with subscribers %s: %.1f%% lower\n", rate(r.Baseline.IngestRate), rate(r.Loaded.IngestRate), r.RateDrop)
		fmt.Printf("  delivery lag p50 %.2fms p99 %.2fms p999 %.2fms max %.2fms (one event in 16 timed)\n", r.Lag.P50, r.Lag.P99, r.Lag.P999, r.Lag.Max)
		fmt.Printf("  delivered %d of %d events; most missed by one subscriber %d; cut off %d\n", r.Delivered, r.Expected, r.MissedMax, r.CutOff)
		if err := writeOut(f.out, r); err != nil {
			return err
		}
		if f.plot != "" {
			runs := []bench.PlotRun{{Label: "alone", Timeline: r.Baseline.Timeline}, {Label: "with subscribers", Timeline: r.Loaded.Timeline}}
			return bench.Plot(f.plot, "sse: ingest with and without subscribers", runs)
		}
		return nil
	case "mem":
		dir, cleanup, err := workDir(f.workDir)
		if err != nil {
			return err
		}
		defer cleanup()
		var keys []int
		for _, k := range strings.Split(f.keysList, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(k))
			if err != nil || n <= 0 {
				return fmt.Errorf("-keys-list: %q is not a key count", k)
			}
			keys = append(keys, n)
		}
		points := f.points
		if points <= 0 {
			points = 120 // /vapor's length, and issue 11's figure
		}
		steps, err := bench.Mem(ctx, bench.MemConfig{Load: *l, SondeBin: f.sondeBin, Flags: strings.Fields(f.extra),
			WorkDir: dir, KeysList: keys, Points: points, Log: os.Stderr})
		for _, s := range steps {
			fmt.Printf("%9d keys x %d points: RSS %7.1f MiB (peak %7.1f, at start %5.1f), %6.0f bytes/series, Go heap in use %7.1f MiB, %s, errors %d, stop %.1fs\n",
				s.Keys, s.Points, mib(s.RSS), mib(s.PeakRSS), mib(s.BaseRSS), s.BytesPerSeries, mib(s.HeapInuse), rate(s.IngestRate), s.Errors, s.StopSeconds)
		}
		if werr := writeOut(f.out, steps); werr != nil {
			return werr
		}
		return err
	case "forward":
		dir, cleanup, err := workDir(f.workDir)
		if err != nil {
			return err
		}
		defer cleanup()
		r, err := bench.Forward(ctx, bench.ForwardConfig{Load: *l, Pair: f.pair(dir), Options: f.fwdOpts, Receivers: strings.Split(f.fwdReceivers, ",")})
		if err != nil {
			return err
		}
		printForward(os.Stdout, r)
		return writeOut(f.out, r)
	case "restart":
		dir, cleanup, err := workDir(f.workDir)
		if err != nil {
			return err
		}
		defer cleanup()
		r, err := bench.Restart(ctx, bench.RestartConfig{Load: *l, Pair: f.pair(dir), Settle: f.settle})
		if err != nil {
			return err
		}
		printRestart(os.Stdout, r)
		return writeOut(f.out, r)
	case "statsd":
		if !explicit(fs, "target") {
			l.Target = "127.0.0.1:8125"
		}
		r, err := bench.Statsd(ctx, bench.StatsdConfig{Load: *l, PerDatagram: f.perDgram})
		if err != nil {
			return err
		}
		fmt.Printf("statsd: %d lines in %d datagrams to %s in %.3fs (%s)\n", r.Sent, r.Datagrams, r.Target, r.SendSeconds, rate(r.SendRate))
		fmt.Printf("  counted by the server %d, lost %d (%.4f%%), kernel drops %d datagrams; %d raw samples durable after %.3fs\n",
			r.Counted, r.Lost, r.LossPct, r.KernelDrops, r.Written, r.DurableSeconds)
		return writeOut(f.out, r)
	case "disk":
		dir := f.workDir
		if dir == "" {
			dir = "."
		}
		if l.Rate <= 0 {
			l.Rate = 500_000
		}
		dc := bench.DiskConfig{Dir: dir, Rate: l.Rate, Duration: l.Duration}
		r, err := bench.DiskUnderLoad(ctx, dc, f.sondeBin, f.memDir, *l)
		if err != nil {
			return err
		}
		printDisk(os.Stdout, &r)
		return writeOut(f.out, r)
	}
	return fmt.Errorf("unknown scenario %q", scenario)
}

// pair is the servers that compare, soak and query -peer start, their
// data directories under dir.
func (f *flags) pair(dir string) bench.Pair {
	return bench.Pair{SondeBin: f.sondeBin, PeerBin: f.peerBin, SondeFlags: strings.Fields(f.extra), WorkDir: dir, Idle: f.idle, Log: os.Stderr}
}

func printDisk(w io.Writer, r *bench.DiskFloor) {
	fmt.Fprintf(w, "disk floor under %s: one write+fsync per group, samples arriving at %s\n", r.Idle.Dir, rate(r.Idle.Rate))
	for _, c := range []struct {
		name string
		d    bench.DiskResult
	}{{"idle", r.Idle}, {"loaded", r.Loaded}} {
		fmt.Fprintf(w, "  %-7s %6d fsyncs (p50 %.3fms p99 %.3fms max %.1fms)  sample ack floor p50 %.3fms p99 %.3fms p999 %.3fms max %.1fms\n",
			c.name, c.d.Groups, c.d.Fsync.P50, c.d.Fsync.P99, c.d.Fsync.Max, c.d.Latency.P50, c.d.Latency.P99, c.d.Latency.P999, c.d.Latency.Max)
	}
	if l := r.Load.Latency; l != nil {
		fmt.Fprintf(w, "  the load beside it: Sonde on %s took %s, ack p99 %.3fms\n", r.LoadDir, rate(r.Load.IngestRate), l.P99)
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// size is n bytes in B, KiB, MiB or GiB, three digits at most.
func size(n int64) string {
	v, units := float64(n), []string{"B", "KiB", "MiB", "GiB"}
	u := 0
	for v >= 1000 && u < len(units)-1 {
		v /= 1024
		u++
	}
	return strconv.FormatFloat(v, 'f', max(2-int(math.Log10(max(v, 1))), 0), 64) + " " + units[u]
}

func workDir(dir string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", nil, fmt.Errorf("create work directory: %w", err)
		}
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "sonde-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("create work directory: %w", err)
	}
	return d, func() { os.RemoveAll(d) }, nil
}

func writeOut(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

func rate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM/s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk/s", v/1e3)
	}
	return fmt.Sprintf("%.0f/s", v)
}

func printForward(w io.Writer, r *bench.ForwardResult) {
	for _, p := range r.Receivers {
		fmt.Fprintf(w, "%s, steady: %d samples flat out at %s (acknowledged SETs) while forwarding\n", p.Receiver, p.Ingest.Sent, rate(p.Ingest.IngestRate))
		fmt.Fprintf(w, "  in the load's middle (%.1f s): %d WAL records written, %d forwarded: ratio %.2f\n", p.WindowSeconds, p.WrittenRecords, p.SentRecords, p.SteadyRatio)
		fmt.Fprintf(w, "  backlog: at most %d records in the window, %d when the load ended, empty %.2f s later\n", p.BacklogMax, p.BacklogEnd, p.CatchUpSeconds)
		fmt.Fprintf(w, "%s, capacity: the same load in at %s with the receiver down; %d records drained at %s: ratio %.2f\n",
			p.Receiver, rate(p.IngestRate), p.Drained, rate(p.DrainRate), p.CapacityRatio)
	}
}

func printResult(w io.Writer, name string, r *bench.Result) {
	fmt.Fprintf(w, "%s: %d samples, %d keys, %d conns -> %s\n", name, r.Sent, r.Keys, r.Conns, r.Target)
	fmt.Fprintf(w, "  sent in      %8.3fs\n", r.SendSeconds)
	fmt.Fprintf(w, "  ingested in  %8.3fs  %s\n", r.IngestSeconds, rate(r.IngestRate))
	if r.Latency != nil {
		fmt.Fprintf(w, "  ack latency  p50 %.3fms  p99 %.3fms  p999 %.3fms  max %.3fms\n", r.Latency.P50, r.Latency.P99, r.Latency.P999, r.Latency.Max)
	}
	if r.Verify != nil {
		if r.VisibleSeconds > 0 {
			fmt.Fprintf(w, "  visible in   %8.3fs  %s (read back %d keys, %d samples stored, %d polls)\n", r.VisibleSeconds, rate(r.VisibleRate), r.Verify.Found, r.Verify.Stored, r.Verify.Polls)
		} else {
			fmt.Fprintf(w, "  NOT VISIBLE: %d of %d keys, %d wrong, %d samples stored (%s)\n", r.Verify.Found, r.Verify.Keys, r.Verify.Wrong, r.Verify.Stored, r.Verify.Example)
		}
	}
	fmt.Fprintf(w, "  errors       %d %s\n", r.Errors, r.FirstErr)
}

func printCompare(w io.Writer, cr *bench.CompareResult) {
	m := cr.Machine
	fmt.Fprintf(w, "machine: %s, %d cores, %s, %s\n", m.CPU, m.Cores, m.Memory, m.Go)
	fmt.Fprintf(w, "%-22s %10s %10s %10s %10s %10s %10s %8s %8s\n", "", "ingest s", "ingest", "visible s", "e2e rate", "ack p99", "peak RSS", "B/sample", "B/point")
	for _, p := range cr.Phases {
		r := p.Result
		p99 := "-"
		if r.Latency != nil {
			p99 = fmt.Sprintf("%.2fms", r.Latency.P99)
		}
		bpp := "-"
		if p.HistoryBytesPerPoint > 0 {
			bpp = fmt.Sprintf("%.2f", p.HistoryBytesPerPoint)
		}
		fmt.Fprintf(w, "%-22s %10.3f %10s %10.3f %10s %10s %9.0fM %8.2f %8s\n", p.Name, r.IngestSeconds, rate(r.IngestRate),
			r.VisibleSeconds, rate(r.VisibleRate), p99, float64(p.PeakRSS)/(1<<20), p.BytesPerSample, bpp)
	}
	fmt.Fprintf(w, "end to end: victoria-metrics needs %.2fx the time of sonde -fsync=always (target >= 4)\n", cr.EndToEnd)
	fmt.Fprintf(w, "ingest: sonde -fsync=interval takes %.2fx the rate of victoria-metrics (target >= 0.75)\n", cr.IngestRatio)
	fmt.Fprintln(w, "B/sample: the data directory (WAL and database) over samples sent; B/point: history as sonde reports it (database pages in use over stored points)")
	fmt.Fprintf(w, "end to end over graphite: victoria-metrics needs %.2fx the time of sonde -fsync=always\n", cr.GraphiteEndToEnd)
	for _, c := range cr.Crash {
		fmt.Fprintf(w, "kill -9 after %.2fs: %-17s sent %d, acked %d, survived %d, lost %.2f%%\n", c.KilledAfter, c.Server, c.Sent, c.Acked, c.Survived, c.LostPct)
	}
	if len(cr.Cardinality) == 2 {
		s, p := cr.Cardinality[0], cr.Cardinality[1]
		fmt.Fprintf(w, "cardinality: %d keys x 4 samples over graphite, 4 connections; seconds from the first byte\n", s.Result.Keys)
		fmt.Fprintf(w, "%-18s %9s %9s %9s %6s %13s %12s %10s %8s %10s\n", "", "ingest s", "visible s", "busy s", "rest", "CPU s to idle", "CPU s (life)", "peak RSS", "stop s", "disk")
		for _, r := range cr.Cardinality {
			busy := fmt.Sprintf("%.1f", r.BusySeconds)
			if !r.Idle {
				busy = ">" + busy
			}
			fmt.Fprintf(w, "%-18s %9.2f %9.2f %9s %5.1f%% %13.2f %12.2f %10s %8.2f %10s\n", r.Server, r.Result.IngestSeconds, r.VisibleSeconds, busy,
				100*r.RestCPU, r.CPULoad, r.CPUSeconds, size(r.PeakRSS), r.StopSeconds, size(r.DiskBytes))
		}
		fmt.Fprintln(w, "busy s: until the CPU went quiet (> when it had not by -idle-wait); rest: the share of a core over the last -idle-window; CPU s to idle: from the first byte until quiet; (life): from exec to exit, the stop included")
		fmt.Fprintf(w, "cardinality, sonde over victoria-metrics (target <= 1): peak RSS %.2fx, CPU seconds to idle %.2fx (life %.2fx), time to stop %.2fx\n",
			ratio(float64(s.PeakRSS), float64(p.PeakRSS)), ratio(s.CPULoad, p.CPULoad), ratio(s.CPUSeconds, p.CPUSeconds), ratio(s.StopSeconds, p.StopSeconds))
	}
}

func printRestart(w io.Writer, r *bench.RestartResult) {
	m := r.Machine
	fmt.Fprintf(w, "machine: %s, %d cores, %s, %s\n", m.CPU, m.Cores, m.Memory, m.Go)
	fmt.Fprintf(w, "restart: %d samples over %d keys; sonde takes acknowledged SETs, the peer graphite plaintext; seconds from exec\n", r.Records, r.Keys)
	fmt.Fprintf(w, "%-18s %-5s %8s %7s %10s %11s %8s %11s %9s %11s %10s %9s\n", "", "case", "ingest s", "stop s", "data dir",
		"listening s", "ready s", "CPU s ready", "series", "samples", "replayed", "read back")
	for _, c := range r.Cases {
		stop, ready, replayed, back := "-", fmt.Sprintf("%.2f", c.ReadySeconds), "-", "all"
		if c.Case == bench.RestartStop {
			stop = fmt.Sprintf("%.2f", c.StopSeconds)
		}
		if !c.Complete {
			ready += "*"
		}
		if c.Server == "sonde" {
			replayed = strconv.FormatInt(c.Replayed, 10)
		}
		if !c.Verified {
			back = "NOT ALL"
		}
		fmt.Fprintf(w, "%-18s %-5s %8.2f %7s %10s %11.2f %8s %11.2f %9d %11d %10s %9s\n", c.Server, c.Case, c.Load.IngestSeconds, stop,
			size(c.DiskBytes), c.ListeningSeconds, ready, c.CPUReady, c.Series, c.Samples, replayed, back)
	}
	fmt.Fprintln(w, "kill: kill -9 right after the last acknowledgement (sonde: snapshots off, every record in the WAL) or the peer's count of the last line; stop: SIGTERM, stop s until exit")
	fmt.Fprintln(w, "listening: exec until sonde logs \"listening\" (the WAL replayed) or the peer's /health answers 200; ready: until the series count it serves reaches the keys sent (* when it stayed short: until it reached what it had)")
	for _, x := range r.Ratios {
		note := ""
		if !x.PeerComplete {
			note = " (the peer came back without every series)"
		}
		fmt.Fprintf(w, "after %s, sonde over victoria-metrics (target <= 1): ready %.2fx, listening %.2fx%s\n", x.Case, x.Ready, x.Listening, note)
	}
	fmt.Fprintf(w, "%d keys, %d records in the WAL (%.0f MiB): restart after kill -9 took %.2fs; every key and sample read back: %v\n",
		r.Keys, r.Records, mib(r.WALBytes), r.AfterKill, r.Verified)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// suffixed puts suffix before path's extension: a.png, "-x" -> a-x.png.
func suffixed(path, suffix string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + suffix + ext
}

func procRuns(runs []bench.WatchedRun) []bench.ProcRun {
	out := make([]bench.ProcRun, len(runs))
	for i, r := range runs {
		out[i] = bench.ProcRun{Label: r.Server, Samples: r.Timeline, LoadEnd: r.Result.IngestSeconds}
	}
	return out
}

func printSoak(w io.Writer, l *bench.Config, protocol string, runs []bench.WatchedRun) {
	fmt.Fprintf(w, "soak: %d keys at %s for %s, %d connections; sonde over %s, the peer over graphite\n", l.Keys, rate(l.Rate), l.Duration, l.Conns, protocol)
	fmt.Fprintf(w, "%-18s %11s %7s %9s %10s %9s %6s %10s %10s %10s %9s %7s\n", "", "samples", "errors", "CPU s", "us/sample", "busy s", "rest",
		"peak RSS", "peak disk", "disk", "B/sample", "stop s")
	for _, r := range runs {
		busy := fmt.Sprintf("%.1f", r.BusySeconds)
		if !r.Idle {
			busy = ">" + busy
		}
		fmt.Fprintf(w, "%-18s %11d %7d %9.2f %10.3f %9s %5.1f%% %10s %10s %10s %9.2f %7.2f\n", r.Server, r.Result.Sent, r.Result.Errors,
			r.CPULoad, r.CPUPerSample, busy, 100*r.RestCPU, size(r.PeakRSS), size(r.PeakDisk), size(r.DiskBytes), r.BytesPerSample, r.StopSeconds)
	}
	fmt.Fprintln(w, "CPU s: server CPU from the first byte until it went quiet after the load (busy s; > when it had not by -idle-wait); rest: the share of a core over the last -idle-window; disk: after a clean stop")
	if len(runs) == 2 {
		s, p := runs[0], runs[1]
		fmt.Fprintf(w, "sonde over victoria-metrics (target <= 1): CPU per sample %.2fx, peak RSS %.2fx, disk bytes per sample %.2fx\n",
			ratio(s.CPUPerSample, p.CPUPerSample), ratio(float64(s.PeakRSS), float64(p.PeakRSS)), ratio(s.BytesPerSample, p.BytesPerSample))
	}
	for _, r := range runs {
		if h := r.History; h != nil {
			fmt.Fprintf(w, "%s reports %d points stored (%d archived) of %d sent: %.2f bytes per point in use, %.2f in the file\n",
				r.Server, h.Points, h.ArchivePoints, r.Result.Sent, h.UsedBytesPerPoint, h.FileBytesPerPoint)
		}
	}
}

func printIngest(w io.Writer, l *bench.Config, runs []bench.IngestRun) {
	fmt.Fprintf(w, "ingest: %d samples over %d keys, %d connections, flat out\n", l.Count, l.Keys, l.Conns)
	fmt.Fprintf(w, "%-4s %-18s %-9s %11s %7s %9s %10s %9s %12s %10s\n", "run", "", "over", "samples", "errors", "CPU s", "us/sample", "busy s", "rate to idle", "peak RSS")
	for _, r := range runs {
		busy := fmt.Sprintf("%.2f", r.BusySeconds)
		if !r.Idle {
			busy = ">" + busy
		}
		fmt.Fprintf(w, "%-4d %-18s %-9s %11d %7d %9.2f %10.3f %9s %12s %10s\n", r.Run, r.Server, r.Protocol, r.Result.Sent, r.Result.Errors,
			r.CPULoad, r.CPUPerSample, busy, rate(r.Rate), size(r.PeakRSS))
	}
	fmt.Fprintln(w, "CPU s: server CPU from the first byte until it went quiet after the load (busy s; > when it had not by -idle-wait); rate to idle: samples over busy s")
	med := bench.IngestMedians(runs)
	var peer *bench.IngestMedian
	for i := range med {
		m := &med[i]
		fmt.Fprintf(w, "median %-18s over %-9s %8.3f us/sample %12s to idle\n", m.Server, m.Protocol, m.CPUPerSample, rate(m.Rate))
		if m.Server != "sonde" {
			peer = m
		}
	}
	if peer == nil {
		return
	}
	for _, m := range med {
		if m.Server == "sonde" {
			fmt.Fprintf(w, "sonde over %s against the peer: CPU per sample %.2fx (target <= 1), rate to idle %.2fx (target >= 1)\n",
				m.Protocol, ratio(m.CPUPerSample, peer.CPUPerSample), ratio(m.Rate, peer.Rate))
		}
	}
}

func printKind(w io.Writer, server string, q bench.QueryKind) {
	if server != "" {
		server += " "
	}
	items := ""
	if q.Items > 0 {
		items = fmt.Sprintf(", %d items", q.Items)
	}
	fmt.Fprintf(w, "%s%-48s %8.0f req/s  p50 %.2fms p99 %.2fms p999 %.2fms  %d requests, %d errors, %.1f MiB%s\n", server, q.Path, q.Rate,
		q.Latency.P50, q.Latency.P99, q.Latency.P999, q.Requests, q.Errors, mib(q.Bytes), items)
	if q.FirstErr != "" {
		fmt.Fprintf(w, "%s  the first error: %s\n", strings.Repeat(" ", len(server)), q.FirstErr)
	}
}

func printQueryCompare(w io.Writer, r *bench.QueryCompareResult) {
	m := r.Machine
	fmt.Fprintf(w, "machine: %s, %d cores, %s, %s\n", m.CPU, m.Cores, m.Memory, m.Go)
	for _, s := range r.Servers {
		fmt.Fprintf(w, "%s: %d samples over %d keys (graphite), idle before the reads: %v\n", s.Server, s.Load.Sent, s.Load.Keys, s.Idle)
	}
	for j, x := range r.Ratios {
		for _, s := range r.Servers {
			printKind(w, fmt.Sprintf("%-16s", s.Server), s.Kinds[j])
		}
		fmt.Fprintf(w, "  sonde over the peer: %.2fx the requests per second (target >= 1)\n", x)
	}
}

// explicit reports whether the flag name was set on the command line.
func explicit(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
