package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

var sondeBin string

// TestMain builds the real sonde binary: the load tool is tested against
// a real process over real sockets.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sonde-bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sondeBin = filepath.Join(dir, "sonde")
	out, err := exec.Command("go", "build", "-race", "-o", sondeBin, "../cmd/sonde").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build sonde: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startSonde(t *testing.T, dir string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := StartSonde(ctx, sondeBin, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return srv
}

func TestTCPLoadIsAckedAndReadBack(t *testing.T) {
	srv := startSonde(t, t.TempDir())
	for _, incr := range []bool{false, true} {
		cfg := Config{Scenario: "tcp", Target: srv.Ingest, Query: srv.Query, Keys: 500, Conns: 4,
			Count: 40_000, Shape: Mixed, Incr: incr, Prefix: fmt.Sprintf("incr%v", incr), VisibleTimeout: 10 * time.Second}
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 0 || res.Sent != 40_000 || res.Acked != 40_000 {
			t.Fatalf("incr=%v: sent %d acked %d errors %d (%s), want 40000, 40000, 0", incr, res.Sent, res.Acked, res.Errors, res.FirstErr)
		}
		v := res.Verify
		if v == nil || v.Found != 500 || v.Wrong != 0 || v.Stored != 40_000 || res.VisibleSeconds <= 0 {
			t.Fatalf("incr=%v: read-back %+v, visible after %vs", incr, v, res.VisibleSeconds)
		}
		if res.Latency.Count != 40_000 || res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 {
			t.Errorf("incr=%v: latency summary %+v", incr, res.Latency)
		}
		if len(res.Timeline) == 0 {
			t.Errorf("incr=%v: empty timeline", incr)
		}
	}
}

// The read-back is not a formality: a key whose value the server does not
// hold is reported.
func TestReadBackCatchesAWrongValue(t *testing.T) {
	srv := startSonde(t, t.TempDir())
	cfg := Config{Scenario: "tcp", Target: srv.Ingest, Keys: 10, Conns: 2, Count: 100, Prefix: "w"}
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	// Expect values that were never sent: every key must come out wrong.
	cfg.Query = srv.Query
	cfg.VisibleTimeout = 300 * time.Millisecond
	cfg.setDefaults()
	works := []*workload{newWorkload("w", 10, 1, 0, Const, false)}
	for k := range works[0].keys {
		works[0].sent[k] = 1
		works[0].state[k] = -1 // never sent
	}
	v, err := waitVisible(context.Background(), cfg, works)
	if err == nil || v.Wrong != 10 {
		t.Fatalf("read-back of values never sent: %+v, err %v; want 10 wrong and an error", v, err)
	}
}

func TestKill9AfterTheLoadLosesNothingAcked(t *testing.T) {
	cc := CompareConfig{Load: Config{Keys: 200, Conns: 4, Count: 30_000, Shape: Mixed}, SondeBin: sondeBin}
	cc.Load.setDefaults()
	c, err := crashSonde(context.Background(), cc, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.Acked != 30_000 || c.Survived != c.Acked || c.LostPct != 0 {
		t.Fatalf("after kill -9: %+v; want all 30000 acknowledged samples back", c)
	}
}

// compare on a small load, with the crash rounds: Graphite plaintext into
// VictoriaMetrics (Debian's package, which make test installs), read back
// over its Prometheus API; Sonde twice over its command protocol and once
// over Graphite plaintext.
func TestCompareSmallLoad(t *testing.T) {
	bin := "/usr/bin/victoria-metrics"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (make test-deps installs Debian's victoria-metrics)", bin, err)
	}
	cc := CompareConfig{Load: Config{Keys: 200, Conns: 2, Count: 20_000, Shape: Mixed, VisibleTimeout: time.Minute},
		SondeBin: sondeBin, PeerBin: bin, WorkDir: t.TempDir(), Crash: true,
		SondeFlags: []string{"-snapshot-interval", "300ms"}} // so that Sonde reports its history size soon
	cr, err := Compare(context.Background(), cc)
	if err != nil {
		t.Fatal(err)
	}
	if len(cr.Phases) != 4 || cr.Phases[3].Name != "sonde-graphite" {
		t.Fatalf("%d phases, want 4 ending with sonde-graphite", len(cr.Phases))
	}
	for _, p := range cr.Phases {
		r := p.Result
		if r.Errors != 0 || r.Sent != 20_000 || r.Verify == nil || r.Verify.Found != 200 || r.Verify.Wrong != 0 || r.Verify.Stored != 20_000 {
			t.Errorf("%s: sent %d, errors %d (%s), read-back %+v", p.Name, r.Sent, r.Errors, r.FirstErr, r.Verify)
		}
		if r.IngestSeconds < r.SendSeconds || r.VisibleSeconds < r.IngestSeconds {
			t.Errorf("%s: times out of order: send %v ingest %v visible %v", p.Name, r.SendSeconds, r.IngestSeconds, r.VisibleSeconds)
		}
		if p.PeakRSS <= 0 || p.DiskBytes <= 0 {
			t.Errorf("%s: peak RSS %d, disk %d", p.Name, p.PeakRSS, p.DiskBytes)
		}
		if (p.Server == "sonde") != (p.HistoryBytesPerPoint > 0) {
			t.Errorf("%s: history bytes per point %v", p.Name, p.HistoryBytesPerPoint)
		}
	}
	if cr.EndToEnd <= 0 || cr.IngestRatio <= 0 || cr.GraphiteEndToEnd <= 0 {
		t.Errorf("ratios %v %v %v", cr.EndToEnd, cr.IngestRatio, cr.GraphiteEndToEnd)
	}
	if len(cr.Crash) != 2 {
		t.Fatalf("%d crash results, want 2", len(cr.Crash))
	}
	if c := cr.Crash[0]; c.Server != "sonde" || c.Acked != 20_000 || c.Survived != 20_000 || c.LostPct != 0 {
		t.Errorf("sonde after kill -9: %+v, want every acknowledged sample", c)
	}
	if c := cr.Crash[1]; c.Server != "victoria-metrics" || c.Survived > c.Sent {
		t.Errorf("victoria-metrics after kill -9: %+v", c)
	}
}

func TestPlotWritesPNGAndSVG(t *testing.T) {
	runs := []PlotRun{{Label: "a", Visible: 0.25, Timeline: []Tick{{T: 0.1, Rate: 100, P50: 1, P99: 2}, {T: 0.2, Rate: 2e6, P50: 1.5, P99: 3}}},
		{Label: "b", Timeline: []Tick{{T: 0.1, Rate: 50}, {T: 0.2, Rate: 70}}}}
	dir := t.TempDir()
	for name, magic := range map[string][]byte{"p.png": []byte("\x89PNG"), "p.svg": []byte("<?xml")} {
		path := filepath.Join(dir, name)
		if err := Plot(path, "test", runs); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, magic) || len(b) < 1000 {
			t.Errorf("%s: %d bytes starting %q", name, len(b), b[:min(len(b), 8)])
		}
		if name == "p.svg" {
			for _, text := range []string{"a: all visible at 0.25s", "2M", "ack latency, ms"} {
				if !bytes.Contains(b, []byte(text)) {
					t.Errorf("p.svg has no %q", text)
				}
			}
		}
	}
	if err := Plot(filepath.Join(dir, "p.gif"), "test", runs); err == nil {
		t.Error("Plot to a .gif: no error")
	}
}

func TestSSESubscribersGetEveryUpdate(t *testing.T) {
	srv := startSonde(t, t.TempDir())
	load := Config{Target: srv.Ingest, Query: srv.Query, Keys: 50, Conns: 2, Count: 4000, Rate: 20_000, Prefix: "sse"}
	r, err := SSE(context.Background(), SSEConfig{Load: load, Subscribers: 5})
	if err != nil {
		t.Fatal(err)
	}
	if r.Loaded.Acked != 4000 || r.Expected != 5*4000 || r.Delivered != r.Expected || r.MissedMax != 0 || r.CutOff != 0 {
		t.Fatalf("acked %d, delivered %d of %d, missed max %d, cut off %d", r.Loaded.Acked, r.Delivered, r.Expected, r.MissedMax, r.CutOff)
	}
	if r.Lag.Count != r.Delivered || r.Lag.P50 <= 0 || r.Lag.P99 < r.Lag.P50 {
		t.Errorf("lag %+v", r.Lag)
	}
	if r.Baseline.IngestRate <= 0 || r.Loaded.IngestRate <= 0 {
		t.Errorf("rates %v %v", r.Baseline.IngestRate, r.Loaded.IngestRate)
	}
}

func TestQueryBenchAnswersEveryKind(t *testing.T) {
	srv := startSonde(t, t.TempDir())
	if _, err := Run(context.Background(), Config{Target: srv.Ingest, Keys: 20, Conns: 2, Count: 400, Prefix: "q"}); err != nil {
		t.Fatal(err)
	}
	qs, err := QueryBench(context.Background(), QueryConfig{Query: srv.Query, Prefix: "q", Keys: 20, Conns: 2, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 {
		t.Fatalf("%d kinds, want 2", len(qs))
	}
	for _, q := range qs {
		if q.Requests == 0 || q.Errors != 0 || q.Bytes == 0 || q.Latency.Count != q.Requests {
			t.Errorf("%s: %+v", q.Path, q)
		}
	}
}

func TestRestartReplaysTheWholeWAL(t *testing.T) {
	r, err := Restart(context.Background(), RestartConfig{Load: Config{Keys: 300, Conns: 2, Count: 30_000},
		SondeBin: sondeBin, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Verified || r.AfterKill <= 0 || r.WALBytes <= 0 {
		t.Fatalf("restart: %+v", r)
	}
}

func TestMemReportsEachStep(t *testing.T) {
	steps, err := Mem(context.Background(), MemConfig{Load: Config{Conns: 2}, SondeBin: sondeBin, WorkDir: t.TempDir(),
		KeysList: []int{100, 1000}, Points: 8, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 {
		t.Fatalf("%d steps", len(steps))
	}
	for _, s := range steps {
		if s.Errors != 0 || s.RSS <= 0 || s.PeakRSS < s.RSS || s.HeapInuse <= 0 || s.BaseRSS <= 0 {
			t.Errorf("%+v", s)
		}
	}
}

// The disk floor writes every arrived sample once, in segments, and
// accounts for each sample's latency, idle and beside a real load.
func TestDiskFloor(t *testing.T) {
	dir := t.TempDir()
	dc := DiskConfig{Dir: dir, Rate: 20_000, Duration: 300 * time.Millisecond, RecordBytes: 40, SegmentSize: 16 << 10}
	r, err := DiskUnderLoad(context.Background(), dc, sondeBin, t.TempDir(), Config{Conns: 2, Keys: 50, Rate: 5_000, Shape: Walk})
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]DiskResult{"idle": r.Idle, "loaded": r.Loaded} {
		if d.Groups == 0 || d.Fsync.Count != d.Groups {
			t.Errorf("%s: %d groups, %d fsyncs timed", name, d.Groups, d.Fsync.Count)
		}
		if d.Latency.Count*40 != d.Bytes {
			t.Errorf("%s: %d samples timed but %d bytes written", name, d.Latency.Count, d.Bytes)
		}
		// 20k/s for 0.3 s is about 6000 samples; the loop must keep up.
		if d.Latency.Count < 3000 || d.Latency.Count > 6000 {
			t.Errorf("%s: %d samples, want about 6000", name, d.Latency.Count)
		}
		// A segment ends at the first round that takes it past 16 KiB.
		if most := int(d.Bytes/(16<<10)) + 1; d.Segments < 2 || d.Segments > most {
			t.Errorf("%s: %d segments for %d bytes", name, d.Segments, d.Bytes)
		}
		if d.Latency.Max < d.Fsync.P50 {
			t.Errorf("%s: slowest sample %.3fms faster than the median fsync %.3fms", name, d.Latency.Max, d.Fsync.P50)
		}
	}
	if r.Load == nil || r.Load.Acked == 0 || r.Load.Errors != 0 {
		t.Fatalf("the load beside the floor: %+v", r.Load)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the floor left %d files behind", len(left))
	}
}

// The statsd scenario counts every line a real Sonde took, and the loss.
func TestStatsdScenario(t *testing.T) {
	srv, err := StartSonde(context.Background(), sondeBin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	r, err := Statsd(context.Background(), StatsdConfig{Load: Config{Target: srv.Statsd, Query: srv.Query, Conns: 2, Keys: 30, Count: 20_000, Rate: 50_000}, PerDatagram: 20})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 20_000 || r.Datagrams != 1000 || r.Counted+r.Lost != r.Sent || r.Counted > r.Sent {
		t.Fatalf("result %+v", r)
	}
	// Counters and gauges and timers each write one raw sample per line.
	if r.Written != r.Counted {
		t.Fatalf("%d lines counted, %d raw samples written", r.Counted, r.Written)
	}
	t.Logf("%d of %d lines counted, %d kernel drops", r.Counted, r.Sent, r.KernelDrops)
}
