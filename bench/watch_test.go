package bench

import (
	"context"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// debianPeer is Debian's VictoriaMetrics, which make test-deps installs.
const debianPeer = "/usr/bin/victoria-metrics"

func needPeer(t *testing.T, bin string) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (make test-deps installs Debian's victoria-metrics)", bin, err)
	}
}

// fastIdle keeps the wait for a server to go quiet short: the loads here
// are tiny.
var fastIdle = IdleConfig{Every: 250 * time.Millisecond, Window: time.Second, Most: 30 * time.Second, Quiet: 0.03}

// The CPU time read from /proc/PID/stat is the kernel's own account: the
// test process's, read between two getrusage calls, lies between them
// (to a clock tick, the unit of /proc).
func TestProcCPUAgreesWithRusage(t *testing.T) {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// Burn some CPU first, so that a wrong field (or unit) cannot agree
	// by being zero.
	x := 0
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		x++
	}
	before := cpu()
	got, err := procCPU(os.Getpid())
	after := cpu()
	if err != nil {
		t.Fatal(err)
	}
	if before < 150*time.Millisecond || got < before-2*clockTick || got > after+2*clockTick {
		t.Fatalf("/proc says %v of CPU; getrusage %v before and %v after (%d loops)", got, before, after, x)
	}
}

func TestQuietSince(t *testing.T) {
	// CPU seconds at each second: busy until t=3, then quiet (under 3 %
	// of a core a step), with a busy blip at t=6 in the second case.
	steady := []ProcSample{{T: 0, CPU: 0}, {T: 1, CPU: 0.9}, {T: 2, CPU: 1.8}, {T: 3, CPU: 2.5}, {T: 4, CPU: 2.51}, {T: 5, CPU: 2.52}, {T: 6, CPU: 2.52}, {T: 7, CPU: 2.53}}
	blip := slices.Clone(steady)
	for i := 6; i < len(blip); i++ {
		blip[i].CPU += 0.2
	}
	for _, c := range []struct {
		name    string
		s       []ProcSample
		from, w float64
		at      float64
		long    bool
	}{
		{"quiet from 3 for 4 s", steady, 0, 4, 3, true},
		{"not yet long enough", steady, 0, 5, 3, false},
		{"counted from after the load", steady, 5, 2, 5, true},
		{"the blip restarts the stretch", blip, 0, 2, 6, false},
		{"nothing past from", steady, 8, 1, 8, false},
		{"one sample", steady[:1], 0, 1, 0, false},
	} {
		at, long := quietSince(c.s, c.from, c.w, 0.03)
		if at != c.at || long != c.long {
			t.Errorf("%s: quiet since %v (long enough %v), want %v (%v)", c.name, at, long, c.at, c.long)
		}
	}
}

// checkWatched checks what the tool says of one server's watched run
// against the kernel's account and against itself.
//
// loadCPU says whether the load is big enough to take a clock tick of the
// server's CPU (10 ms): 1200 Graphite lines may not.
func checkWatched(t *testing.T, r WatchedRun, ic IdleConfig, loadCPU bool) {
	t.Helper()
	res := r.Result
	if res.Errors != 0 || res.Sent == 0 {
		t.Errorf("%s: sent %d, errors %d (%s)", r.Server, res.Sent, res.Errors, res.FirstErr)
	}
	if len(r.Timeline) < 2 {
		t.Fatalf("%s: %d samples of the process", r.Server, len(r.Timeline))
	}
	var peakRSS, peakDisk int64
	for i, s := range r.Timeline {
		if i > 0 && (s.T <= r.Timeline[i-1].T || s.CPU < r.Timeline[i-1].CPU) {
			t.Errorf("%s: sample %d %+v after %+v", r.Server, i, s, r.Timeline[i-1])
		}
		if s.RSS <= 0 || s.Disk < 0 {
			t.Errorf("%s: sample %d %+v", r.Server, i, s)
		}
		peakRSS, peakDisk = max(peakRSS, s.RSS), max(peakDisk, s.Disk)
	}
	if first := r.Timeline[0].T; first > 0 || first < -ic.Every.Seconds() {
		t.Errorf("%s: the first sample at %vs from the first byte, want just before it", r.Server, first)
	}
	// The accounts of the whole life (the peak RSS, the kernel's CPU time)
	// bound every reading.
	last := r.Timeline[len(r.Timeline)-1]
	if r.PeakRSS < peakRSS || r.CPUSeconds+clockTick.Seconds() < last.CPU {
		t.Errorf("%s: peak RSS %d over its life, %d sampled; CPU %vs over its life, %vs sampled", r.Server, r.PeakRSS, peakRSS, r.CPUSeconds, last.CPU)
	}
	if r.CPULoad < 0 || (loadCPU && r.CPULoad == 0) || r.CPULoad > last.CPU-r.Timeline[0].CPU || r.CPUPerSample != r.CPULoad/float64(res.Sent)*1e6 {
		t.Errorf("%s: CPU %vs for the load, %v µs per sample of %d", r.Server, r.CPULoad, r.CPUPerSample, res.Sent)
	}
	// Quiet for a window, every step under ic.Quiet of a core: the samples
	// end there.
	if !r.Idle || r.BusySeconds < res.IngestSeconds || last.T-r.BusySeconds < ic.Window.Seconds() || r.RestCPU < 0 || r.RestCPU >= ic.Quiet {
		t.Errorf("%s: idle %v after %vs, %.3f of a core at rest; the load ended at %vs, the last sample at %vs",
			r.Server, r.Idle, r.BusySeconds, r.RestCPU, res.IngestSeconds, last.T)
	}
	if r.PeakDisk != peakDisk || r.DiskBytes <= 0 || r.BytesPerSample != float64(r.DiskBytes)/float64(res.Sent) || r.StopSeconds <= 0 {
		t.Errorf("%s: peak disk %d (sampled %d), %d bytes after the stop, %v per sample, stop %vs", r.Server, r.PeakDisk, peakDisk, r.DiskBytes, r.BytesPerSample, r.StopSeconds)
	}
}

// soak at a tiny size: Sonde over acknowledged SETs, then Debian's
// VictoriaMetrics over Graphite, each paced and sampled.
func TestSoak(t *testing.T) {
	needPeer(t, debianPeer)
	const rate, conns = 4000, 2
	sc := SoakConfig{Load: Config{Keys: 200, Conns: conns, Rate: rate, Duration: 1500 * time.Millisecond, Prefix: "soak"},
		Pair: Pair{SondeBin: sondeBin, PeerBin: debianPeer, SondeFlags: []string{"-fsync", "always"}, WorkDir: t.TempDir(), Idle: fastIdle}}
	runs, err := Soak(context.Background(), sc)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Server != "sonde" || runs[1].Server != "victoria-metrics" {
		t.Fatalf("%d runs, want sonde then victoria-metrics", len(runs))
	}
	for _, r := range runs {
		checkWatched(t, r, fastIdle, true) // 6000 acknowledged SETs, -fsync always
		checkPaced(t, r.Server, r.Result, rate, conns, 0)
		if r.Result.SendSeconds < 1.5 {
			t.Errorf("%s: the load ran %vs, want its 1.5 s", r.Server, r.Result.SendSeconds)
		}
	}
	if s := runs[0]; s.Result.Scenario != "tcp" || s.Result.Acked != s.Result.Sent || !slices.Equal(s.Flags, sc.SondeFlags) {
		t.Errorf("sonde: %s, acked %d of %d, flags %q", s.Result.Scenario, s.Result.Acked, s.Result.Sent, s.Flags)
	}
	if p := runs[1]; p.Result.Scenario != "graphite" {
		t.Errorf("the peer took %s", p.Result.Scenario)
	}
	for _, bad := range []SoakConfig{{Protocol: "udp", Load: sc.Load}, {Load: Config{Duration: time.Second}}} {
		if _, err := Soak(context.Background(), bad); err == nil {
			t.Errorf("Soak(%+v): no error", bad)
		}
	}
}

// What the tool counts as visible is: the moment the counts of each
// server show every sample, a read-back of every key finds every value
// and every sample.
func TestCountsMeanVisible(t *testing.T) {
	needPeer(t, debianPeer)
	ctx := context.Background()
	for _, name := range []string{"sonde", "victoria-metrics"} {
		dir := t.TempDir()
		var srv *Server
		var err error
		cfg := Config{Scenario: "graphite", Keys: 300, Conns: 2, Count: 1200, Shape: Mixed, Prefix: "vis", VisibleTimeout: time.Minute}
		if name == "sonde" {
			srv, err = StartSonde(ctx, sondeBin, dir)
			cfg.API = "sonde"
		} else {
			srv, err = StartVictoriaMetrics(ctx, debianPeer, dir)
			cfg.API = "prometheus"
		}
		if err != nil {
			t.Fatal(err)
		}
		res, _, err := loadInto(ctx, srv, cfg, true)
		if err != nil {
			srv.Kill()
			t.Fatal(err)
		}
		cfg.Query = srv.Query
		got, stored, err := readBack(ctx, cfg)
		srv.Stop()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != 300 || stored != 1200 || res.Sent != 1200 {
			t.Errorf("%s: visible by its counts, but a read-back finds %d keys and %d samples of %d", name, len(got), stored, res.Sent)
		}
	}
}

// query with a peer: the same Graphite data in Sonde and the peer, the
// Graphite reads of each. The peer is Debian's VictoriaMetrics, which has
// no /render: its /render kinds must fail, with its own words, and its
// /metrics/find answer. SONDE_BENCH_PEER names another peer (a source
// build of VictoriaMetrics) that must answer every kind.
func TestQueryCompare(t *testing.T) {
	peer := os.Getenv("SONDE_BENCH_PEER")
	render := peer != ""
	if !render {
		peer = debianPeer
	}
	needPeer(t, peer)
	t.Logf("peer %s, expected to serve /render: %v", peer, render)
	r, err := QueryCompare(context.Background(), QueryCompareConfig{
		Load:  Config{Keys: 300, Conns: 2, Count: 1200, Prefix: "qc"},
		Query: QueryConfig{Conns: 2, Duration: 300 * time.Millisecond},
		Pair:  Pair{SondeBin: sondeBin, PeerBin: peer, WorkDir: t.TempDir(), Idle: fastIdle}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Servers) != 2 || r.Servers[0].Server != "sonde" || r.Servers[1].Server != "victoria-metrics" || len(r.Ratios) != 3 {
		t.Fatalf("%d servers, %d ratios", len(r.Servers), len(r.Ratios))
	}
	paths := []string{"/render?target={key}&from=-1h&format=json", "/render?target=qc.k00001*&from=-1h&format=json", "/metrics/find?query=qc.*"}
	items := []int{1, 100, 300}
	for _, s := range r.Servers {
		if s.Load.Sent != 1200 || !s.Idle || len(s.Kinds) != 3 {
			t.Fatalf("%s: loaded %d samples, idle %v, %d kinds", s.Server, s.Load.Sent, s.Idle, len(s.Kinds))
		}
		for j, q := range s.Kinds {
			if q.Path != paths[j] {
				t.Errorf("%s: kind %d is %s, want %s", s.Server, j, q.Path, paths[j])
			}
			if s.Server == "victoria-metrics" && j < 2 && !render {
				if q.Requests != 0 || q.Errors == 0 || !strings.Contains(q.FirstErr, `unsupported path requested: "/render"`) {
					t.Errorf("%s %s: %+v; want every request refused", s.Server, q.Path, q)
				}
				continue
			}
			if q.Requests == 0 || q.Errors != 0 || q.Latency.Count != q.Requests || q.Items != items[j] {
				t.Errorf("%s %s: %+v; want every request answered, %d items", s.Server, q.Path, q, items[j])
			}
		}
	}
	for j, x := range r.Ratios {
		s, p := r.Servers[0].Kinds[j], r.Servers[1].Kinds[j]
		if (p.Requests == 0 && x != 0) || (p.Requests > 0 && x != s.Rate/p.Rate) {
			t.Errorf("%s: ratio %v of %v and %v req/s", s.Path, x, s.Rate, p.Rate)
		}
	}
}
