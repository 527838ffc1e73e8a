package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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
		// A run this fast may end before the first 100 ms tick: the
		// timeline is only checked for what it holds.
		checkTimeline(t, fmt.Sprintf("incr=%v", incr), res)
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
	cc := CompareConfig{Load: Config{Keys: 200, Conns: 4, Count: 30_000, Shape: Mixed}, Pair: Pair{SondeBin: sondeBin}}
	cc.Load.setDefaults()
	c, err := crashSonde(context.Background(), cc, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.Acked != 30_000 || c.Survived != c.Acked || c.LostPct != 0 {
		t.Fatalf("after kill -9: %+v; want all 30000 acknowledged samples back", c)
	}
}

// compare on a small load, with the crash rounds and the cardinality
// phase: Graphite plaintext into VictoriaMetrics (Debian's package, which
// make test installs), read back over its Prometheus API; Sonde twice over
// its command protocol and once over Graphite plaintext.
func TestCompareSmallLoad(t *testing.T) {
	bin := debianPeer
	needPeer(t, bin)
	// A snapshot every 300 ms, so that Sonde reports its history size
	// soon, costs Sonde (built with -race) about 3 % of a core at rest:
	// the cardinality phase waits for it to go under 25 %.
	idle := fastIdle
	idle.Quiet = 0.25
	cc := CompareConfig{Load: Config{Keys: 200, Conns: 2, Count: 20_000, Shape: Mixed, VisibleTimeout: time.Minute},
		Crash: true, Cardinality: 300,
		Pair: Pair{SondeBin: sondeBin, PeerBin: bin, WorkDir: t.TempDir(), Idle: idle, SondeFlags: []string{"-snapshot-interval", "300ms"}}}
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
	// Each ratio is of the phases its documentation names.
	always, interval, peer, graphite := cr.Phases[0].Result, cr.Phases[1].Result, cr.Phases[2].Result, cr.Phases[3].Result
	if cr.EndToEnd != peer.VisibleSeconds/always.VisibleSeconds || cr.IngestRatio != interval.IngestRate/peer.IngestRate ||
		cr.GraphiteEndToEnd != peer.VisibleSeconds/graphite.VisibleSeconds {
		t.Errorf("ratios: end to end %v, ingest %v, graphite end to end %v; phases: visible %v %v %v, ingest rate %v %v",
			cr.EndToEnd, cr.IngestRatio, cr.GraphiteEndToEnd, always.VisibleSeconds, peer.VisibleSeconds, graphite.VisibleSeconds,
			interval.IngestRate, peer.IngestRate)
	}
	if len(cr.Crash) != 2 {
		t.Fatalf("%d crash results, want 2", len(cr.Crash))
	}
	if c := cr.Crash[0]; c.Server != "sonde" || c.Acked != 20_000 || c.Survived != 20_000 || c.LostPct != 0 {
		t.Errorf("sonde after kill -9: %+v, want every acknowledged sample", c)
	}
	if c := cr.Crash[1]; c.Server != "victoria-metrics" || c.Sent != 20_000 || c.Survived > c.Sent {
		t.Errorf("victoria-metrics after kill -9: %+v", c)
	}
	// The cardinality phase: 300 keys x 4 samples over Graphite to each,
	// visible (TestCountsMeanVisible checks what that means), then quiet.
	if len(cr.Cardinality) != 2 || cr.Cardinality[0].Server != "sonde" || cr.Cardinality[1].Server != "victoria-metrics" {
		t.Fatalf("%d cardinality runs, want sonde then victoria-metrics", len(cr.Cardinality))
	}
	for _, r := range cr.Cardinality {
		checkWatched(t, r, idle, false)
		res := r.Result
		if res.Scenario != "graphite" || res.Keys != 300 || res.Sent != 1200 {
			t.Errorf("cardinality, %s: %s, %d keys, %d samples; want graphite, 300 and 1200", r.Server, res.Scenario, res.Keys, res.Sent)
		}
		if r.VisibleSeconds < res.IngestSeconds || r.BusySeconds < r.VisibleSeconds || r.CPUVisible <= 0 || r.CPUVisible > r.CPUSeconds {
			t.Errorf("cardinality, %s: ingested at %vs, visible at %vs, quiet at %vs; CPU %vs at visible, %vs in all",
				r.Server, res.IngestSeconds, r.VisibleSeconds, r.BusySeconds, r.CPUVisible, r.CPUSeconds)
		}
	}
	if f := cr.Cardinality[1].Flags; !slices.Equal(f, []string{"-search.maxUniqueTimeseries", "600"}) {
		t.Errorf("the peer's flags in the cardinality phase: %q", f)
	}
}

// checkPlots draws with draw to a PNG and an SVG file, checks each is
// one, and that the SVG holds texts; and that a .gif is refused.
func checkPlots(t *testing.T, draw func(path string) error, texts ...string) {
	t.Helper()
	dir := t.TempDir()
	for name, magic := range map[string][]byte{"p.png": []byte("\x89PNG"), "p.svg": []byte("<?xml")} {
		path := filepath.Join(dir, name)
		if err := draw(path); err != nil {
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
			for _, text := range texts {
				if !bytes.Contains(b, []byte(text)) {
					t.Errorf("p.svg has no %q", text)
				}
			}
		}
	}
	if err := draw(filepath.Join(dir, "p.gif")); err == nil {
		t.Error("a plot to a .gif: no error")
	}
}

func TestPlotWritesPNGAndSVG(t *testing.T) {
	runs := []PlotRun{{Label: "a", Visible: 0.25, Timeline: []Tick{{T: 0.1, Rate: 100, P50: 1, P99: 2}, {T: 0.2, Rate: 2e6, P50: 1.5, P99: 3}}},
		{Label: "b", Timeline: []Tick{{T: 0.1, Rate: 50}, {T: 0.2, Rate: 70}}}}
	checkPlots(t, func(path string) error { return Plot(path, "test", runs) }, "a: all visible at 0.25s", "2M", "ack latency, ms", "a p99")
}

func TestPlotProc(t *testing.T) {
	runs := []ProcRun{
		{Label: "a", LoadEnd: 1.5, Samples: []ProcSample{{T: 0, CPU: 0.1, RSS: 20 << 20, Disk: 0}, {T: 1, CPU: 0.9, RSS: 300 << 20, Disk: 5 << 30}, {T: 2, CPU: 1.2, RSS: 310 << 20, Disk: 6 << 30}}},
		{Label: "b", Samples: []ProcSample{{T: 0, CPU: 0, RSS: 10 << 20}, {T: 1, CPU: 0.5, RSS: 40 << 20, Disk: 1 << 30}}},
	}
	// Each panel's axis in its unit: RSS up to 310 MiB, the disk up to 6 GiB.
	checkPlots(t, func(path string) error { return PlotProc(path, "test", runs) },
		"a: load ends at 1.5s", "server CPU seconds", "300 MiB", "6 GiB", "data directory, bytes")
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
	// Both runs, with and without subscribers, are the same paced load,
	// every sample acknowledged.
	if r.Baseline.Acked != 4000 || r.Baseline.Errors != 0 {
		t.Errorf("baseline: acked %d, errors %d (%s)", r.Baseline.Acked, r.Baseline.Errors, r.Baseline.FirstErr)
	}
	checkPaced(t, "baseline", r.Baseline, load.Rate, load.Conns, load.Count)
	checkPaced(t, "with subscribers", r.Loaded, load.Rate, load.Conns, load.Count)
}

func TestQueryBenchAnswersEveryKind(t *testing.T) {
	srv := startSonde(t, t.TempDir())
	if _, err := Run(context.Background(), Config{Target: srv.Ingest, Keys: 300, Conns: 2, Count: 1200, Prefix: "q"}); err != nil {
		t.Fatal(err)
	}
	qs, err := QueryBench(context.Background(), QueryConfig{Query: srv.Query, Prefix: "q", Keys: 300, Conns: 2, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 5 {
		t.Fatalf("%d kinds, want 5", len(qs))
	}
	// Nothing is written during the queries, so the answers do not change:
	// the bytes the tool counts are those of the answers it got, which the
	// test reads itself.
	size := func(path string) int64 {
		resp, err := httpClient.Get("http://" + srv.Query + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s, %v", path, resp.Status, err)
		}
		return n
	}
	type span struct{ least, most int64 }
	perKey := func(path func(key string) string) span {
		s := span{math.MaxInt64, 0}
		for i := range 300 {
			n := size(path(KeyName("q", i)))
			s.least, s.most = min(s.least, n), max(s.most, n)
		}
		return s
	}
	dump := size("/data?match=q.*")
	want := []struct {
		path  string
		bytes span
		items int
	}{
		{"/data?match=q.*", span{dump, dump}, 0},
		{"/api/v1/series/{key}/history?limit=100", perKey(func(k string) string { return "/api/v1/series/" + k + "/history?limit=100" }), 0},
		{"/render?target={key}&from=-1h&format=json", perKey(func(k string) string { return "/render?target=" + k + "&from=-1h&format=json" }), 1},
		// k0000100 to k0000199.
		{"/render?target=q.k00001*&from=-1h&format=json", span{size("/render?target=q.k00001*&from=-1h&format=json"), 0}, 100},
		{"/metrics/find?query=q.*", span{size("/metrics/find?query=q.*"), 0}, 300},
	}
	for i, q := range qs {
		w := want[i]
		if w.bytes.most == 0 {
			w.bytes.most = w.bytes.least
		}
		if q.Path != w.path || q.Requests == 0 || q.Errors != 0 || q.Latency.Count != q.Requests || q.Items != w.items {
			t.Errorf("%s: %+v; want %s answered, %d items", q.Path, q, w.path, w.items)
		}
		if q.Bytes < q.Requests*w.bytes.least || q.Bytes > q.Requests*w.bytes.most {
			t.Errorf("%s: %d bytes in %d answers of %d to %d bytes", q.Path, q.Bytes, q.Requests, w.bytes.least, w.bytes.most)
		}
	}
}

// restart on a small load: Sonde after kill -9 (every record in its WAL,
// all replayed) and after a clean stop (nothing left to replay), then
// Debian's VictoriaMetrics after each. Every field of the table is filled,
// and what came back is counted right: all of Sonde's, and of the peer's
// all after a clean stop, at most what was sent after kill -9.
func TestRestartSondeAndThePeer(t *testing.T) {
	needPeer(t, debianPeer)
	const keys, count = 2000, 20_000
	r, err := Restart(context.Background(), RestartConfig{Load: Config{Keys: keys, Conns: 2, Count: count},
		Pair: Pair{SondeBin: sondeBin, PeerBin: debianPeer, WorkDir: t.TempDir()}, Settle: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Cases) != 4 {
		t.Fatalf("%d cases, want 4", len(r.Cases))
	}
	for i, c := range r.Cases {
		server, kase := []string{"sonde", "victoria-metrics"}[i/2], []string{RestartKill, RestartStop}[i%2]
		if c.Server != server || c.Case != kase {
			t.Fatalf("case %d: %s after %s, want %s after %s", i, c.Server, c.Case, server, kase)
		}
		name := server + " after " + kase
		if l := c.Load; l == nil || l.Sent != count || l.Errors != 0 || l.IngestSeconds <= 0 {
			t.Fatalf("%s: the load %+v", name, l)
		}
		if c.ListeningSeconds <= 0 || c.ReadySeconds < c.ListeningSeconds || c.CPUReady <= 0 {
			t.Errorf("%s: listening at %vs, ready at %vs, %v CPU seconds by then", name, c.ListeningSeconds, c.ReadySeconds, c.CPUReady)
		}
		if (kase == RestartStop) != (c.StopSeconds > 0) {
			t.Errorf("%s: stopped in %vs", name, c.StopSeconds)
		}
		if c.Complete != (c.SeriesCount >= keys) || c.Series > keys || c.Samples > count ||
			c.Verified != (c.Series == keys && c.Samples == count) {
			t.Errorf("%s: complete %v at a series count of %d; read back %d series, %d samples, verified %v",
				name, c.Complete, c.SeriesCount, c.Series, c.Samples, c.Verified)
		}
		if server == "sonde" || kase == RestartStop {
			if !c.Complete || !c.Verified || c.DiskBytes <= 0 {
				t.Errorf("%s: complete %v, %d series and %d samples back, of %d and %d; %d bytes on disk",
					name, c.Complete, c.Series, c.Samples, keys, count, c.DiskBytes)
			}
		}
	}
	kill, stop := r.Cases[0], r.Cases[1]
	if kill.Replayed != count || kill.WALBytes <= 0 || kill.WALBytes > kill.DiskBytes || !slices.Equal(kill.Flags[len(kill.Flags)-len(neverSnapshot):], neverSnapshot) {
		t.Errorf("sonde after kill -9: replayed %d of %d records, WAL %d of %d bytes, flags %q", kill.Replayed, count, kill.WALBytes, kill.DiskBytes, kill.Flags)
	}
	if stop.Replayed != 0 || len(stop.Flags) != 0 {
		t.Errorf("sonde after a clean stop: replayed %d records, flags %q; want none", stop.Replayed, stop.Flags)
	}
	if r.Keys != keys || r.Records != count || r.WALBytes != kill.WALBytes || r.AfterKill != kill.ListeningSeconds || !r.Verified {
		t.Errorf("the figures of before: %d keys, %d records, %d WAL bytes, %vs after kill, verified %v", r.Keys, r.Records, r.WALBytes, r.AfterKill, r.Verified)
	}
	if len(r.Ratios) != 2 {
		t.Fatalf("%d ratios, want 2", len(r.Ratios))
	}
	for i, x := range r.Ratios {
		s, p := r.Cases[i], r.Cases[2+i]
		if x.Case != s.Case || x.Ready != s.ReadySeconds/p.ReadySeconds || x.Listening != s.ListeningSeconds/p.ListeningSeconds || x.PeerComplete != p.Complete {
			t.Errorf("ratio %+v of sonde %+v and the peer %+v", x, s, p)
		}
	}
	t.Logf("the peer after kill -9: %d series, %d samples of %d", r.Cases[2].Series, r.Cases[2].Samples, count)
}

// Without a peer, only Sonde's cases run.
func TestRestartWithoutAPeer(t *testing.T) {
	r, err := Restart(context.Background(), RestartConfig{Load: Config{Keys: 300, Conns: 2, Count: 3000},
		Pair: Pair{SondeBin: sondeBin, WorkDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Cases) != 2 || len(r.Ratios) != 0 || !r.Verified || r.Cases[0].Samples != 3000 || r.Cases[1].Samples != 3000 {
		t.Fatalf("%d cases, %d ratios, verified %v: %+v", len(r.Cases), len(r.Ratios), r.Verified, r.Cases)
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
	for i, s := range steps {
		if s.Keys != []int{100, 1000}[i] || s.Points != 8 || s.Errors != 0 || s.RSS <= 0 || s.PeakRSS < s.RSS || s.HeapInuse <= 0 || s.BaseRSS <= 0 {
			t.Errorf("%+v", s)
		}
	}
}

// The disk floor writes every arrived sample once, in segments, and
// accounts for each sample's latency, idle and beside a real load. How many
// samples a run gets through depends on the disk's speed: what is checked
// here holds at any speed.
func TestDiskFloor(t *testing.T) {
	dir := t.TempDir()
	const rate, record, segment = 20_000, 40, 16 << 10
	dc := DiskConfig{Dir: dir, Rate: rate, Duration: 300 * time.Millisecond, RecordBytes: record, SegmentSize: segment}
	load := Config{Conns: 2, Keys: 50, Rate: 5_000, Shape: Walk}
	r, err := DiskUnderLoad(context.Background(), dc, sondeBin, t.TempDir(), load)
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]DiskResult{"idle": r.Idle, "loaded": r.Loaded} {
		if d.Groups == 0 || d.Fsync.Count != d.Groups {
			t.Errorf("%s: %d groups, %d fsyncs timed", name, d.Groups, d.Fsync.Count)
		}
		n := d.Latency.Count
		if n*record != d.Bytes {
			t.Errorf("%s: %d samples timed but %d bytes written", name, n, d.Bytes)
		}
		// A round writes the samples that arrived since the one before,
		// at least one; none is written before it arrives, and by the end
		// of the run at most rate*duration have.
		if n < d.Groups || n > int64(rate*dc.Duration.Seconds()) {
			t.Errorf("%s: %d samples in %d rounds; want at least one a round and at most %v", name, n, d.Groups, rate*dc.Duration.Seconds())
		}
		// A segment ends at the first round that takes it to 16 KiB or
		// past: every segment but the last holds at least 16 KiB, and
		// there is a second one once 16 KiB were written.
		if most := int(d.Bytes/segment) + 1; d.Segments > most || (d.Bytes >= segment) != (d.Segments >= 2) {
			t.Errorf("%s: %d segments for %d bytes", name, d.Segments, d.Bytes)
		}
		// Every sample waits at least for the fsync of its round, and no
		// sample waits longer than the run.
		if d.Latency.Max < d.Fsync.Max || d.Latency.Max > 1000*d.Seconds {
			t.Errorf("%s: slowest sample %.3fms, slowest fsync %.3fms, run %.3fs", name, d.Latency.Max, d.Fsync.Max, d.Seconds)
		}
		t.Logf("%s: %d samples in %d rounds, %d segments", name, n, d.Groups, d.Segments)
	}
	// The load beside it ran for the floor's duration and a second more:
	// every line it sent was acknowledged, and its timeline shows them.
	if r.Load == nil || r.Load.Sent == 0 || r.Load.Acked != r.Load.Sent || r.Load.Errors != 0 {
		t.Fatalf("the load beside the floor: %+v", r.Load)
	}
	checkPaced(t, "the load beside the floor", r.Load, load.Rate, load.Conns, 0)
	if len(r.Load.Timeline) == 0 {
		t.Error("the load beside the floor ran for 1.3 s and has no timeline")
	}
	checkTimeline(t, "the load beside the floor", r.Load)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the floor left %d files behind", len(left))
	}
}

// checkPaced checks that a load paced at rate samples/s over conns
// connections kept to it: the pacer lets the n-th sample of a connection
// leave no earlier than n/(rate/conns) seconds after the start, a chunk
// (chunkSize) at a time, so the connection that sent the most, at least
// Sent/conns, cannot have sent its last chunk sooner. A slow machine only
// makes the run longer. count is the load's sample count (0 when it ran
// for a duration: res.Sent is used).
func checkPaced(t *testing.T, name string, res *Result, rate float64, conns int, count int64) {
	t.Helper()
	if count == 0 {
		count = res.Sent
	}
	per := rate / float64(conns)
	first := count / int64(conns) // the connection that sent the most sent at least this many
	if first <= chunkSize(per) {
		t.Fatalf("%s: %d samples over %d connections is too few to check the pace", name, count, conns)
	}
	if least := float64(first-chunkSize(per)) / per; res.SendSeconds < least {
		t.Errorf("%s: sent %d samples in %.3fs, faster than %v/s allows (at least %.3fs)", name, res.Sent, res.SendSeconds, rate, least)
	}
}

// checkTimeline checks that a run's timeline is in time order and adds up
// to no more samples than the server took.
func checkTimeline(t *testing.T, name string, res *Result) {
	t.Helper()
	var prev, sum float64
	for i, tick := range res.Timeline {
		if tick.T <= prev || tick.Rate < 0 {
			t.Fatalf("%s: tick %d %+v after t=%v", name, i, tick, prev)
		}
		sum += tick.Rate * (tick.T - prev)
		prev = tick.T
	}
	taken := res.Acked // acknowledged, or written when there are no replies
	if res.Scenario == "graphite" {
		taken = res.Sent
	}
	if sum > float64(taken)+0.5 {
		t.Errorf("%s: the timeline adds up to %.1f samples, %d were taken", name, sum, taken)
	}
}

// The statsd scenario's figures agree with what the server and the kernel
// report on their own: every line the tool sent was either taken by the
// server, parsed and stored, or is in a datagram the kernel dropped on the
// server's socket; the loss the tool reports is exactly those lines.
func TestStatsdScenario(t *testing.T) {
	srv := startSonde(t, t.TempDir())
	const lines, perDatagram = 20_000, 20
	ctx := context.Background()
	before, err := readStatsdCounts(ctx, srv.Query)
	if err != nil {
		t.Fatal(err)
	}
	// A generous Settle: the tool's loss must not include lines the server
	// was still reading.
	r, err := Statsd(ctx, StatsdConfig{Load: Config{Target: srv.Statsd, Query: srv.Query, Conns: 2, Keys: 30, Count: lines, Rate: 50_000, Prefix: "sd"},
		PerDatagram: perDatagram, Settle: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != lines || r.Datagrams != lines/perDatagram {
		t.Fatalf("the tool says it sent %d lines in %d datagrams, want %d in %d", r.Sent, r.Datagrams, lines, lines/perDatagram)
	}
	// Each of the 1000 datagrams was read or dropped: wait for the
	// server's counters to account for all of them, and for every line
	// taken to be durable.
	var drops int64
	now := waitStatsdCounts(t, srv.Query, func(c statsdCounts) bool {
		drops = c.KernelDrops - before.KernelDrops
		return c.Lines+c.BadLines-before.Lines-before.BadLines+drops*perDatagram >= lines && c.Written-before.Written >= c.Lines-before.Lines
	})
	taken, bad := now.Lines-before.Lines, now.BadLines-before.BadLines
	if before.KernelDrops < 0 || bad != 0 || taken+drops*perDatagram != lines {
		t.Fatalf("the server took %d good and %d bad lines, the kernel dropped %d datagrams (before: %+v); want every line good and %d in all",
			taken, bad, drops, before, lines)
	}
	if r.Counted != taken || r.KernelDrops != drops || r.Lost != drops*perDatagram {
		t.Fatalf("the tool reports %d lines counted, %d kernel drops, %d lost; the server %d lines, the kernel %d drops (%d lines)",
			r.Counted, r.KernelDrops, r.Lost, taken, drops, drops*perDatagram)
	}
	// Counters, gauges and timers each write one raw sample per line, and
	// the store holds them: counters as INCR 1 on stats_counts.<name>,
	// gauges and timers as points of stats.gauges.<name> and
	// stats.timers.<name>.samples.
	if r.Written != r.Counted {
		t.Fatalf("%d lines counted, %d raw samples written", r.Counted, r.Written)
	}
	var stored int64
	for _, fam := range []struct{ match, suffix string }{{"stats_counts.sd.*", ""}, {"stats.gauges.sd.*", ""}, {"stats.timers.sd.*", ".samples"}} {
		var list []struct {
			Key    string  `json:"key"`
			Value  float64 `json:"value"`
			Points int64   `json:"points"`
		}
		if err := getJSON(ctx, "http://"+srv.Query+"/api/v1/series?match="+url.QueryEscape(fam.match), &list); err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, se := range list {
			if !strings.HasSuffix(se.Key, fam.suffix) {
				continue
			}
			if fam.suffix == "" && strings.HasPrefix(se.Key, "stats_counts.") && int64(se.Value) != se.Points {
				t.Errorf("%s: total %g over %d increments of 1", se.Key, se.Value, se.Points)
			}
			n += se.Points
		}
		if n == 0 {
			t.Errorf("no samples stored under %s", fam.match)
		}
		stored += n
		t.Logf("%s%s: %d samples", fam.match, fam.suffix, n)
	}
	if stored != taken {
		t.Fatalf("the store holds %d raw samples, the server took %d lines", stored, taken)
	}
	t.Logf("%d of %d lines counted, %d kernel drops", r.Counted, r.Sent, r.KernelDrops)
}

// waitStatsdCounts polls the statsd counters of the Sonde whose HTTP API
// is at addr until ok holds, for at most a minute.
func waitStatsdCounts(t *testing.T, addr string, ok func(statsdCounts) bool) statsdCounts {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := readStatsdCounts(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		if ok(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("statsd counters after a minute: %+v, still not what was waited for", c)
		}
		if err := pause(context.Background(), 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
}
