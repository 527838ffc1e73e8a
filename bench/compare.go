package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// CompareConfig runs the same load against Sonde and a peer, one after
// the other, each on a fresh data directory.
type CompareConfig struct {
	Load  Config // Keys, Conns, Count, Shape...; targets are filled in
	Crash bool   // also kill -9 each right after the load and count what survived
	// Cardinality, when above 0, adds the cardinality phase: that many
	// keys, 4 samples each, over Graphite to each server (Cardinality),
	// which waits Pair.Idle for each server to go quiet.
	Cardinality int
	// Pair's SondeFlags are more flags for every Sonde the comparison
	// starts.
	Pair
}

// Phase is one server run of a comparison.
type Phase struct {
	// HistoryBytesPerPoint is what Sonde itself reports of its stored
	// history (raw and archive points, database pages in use), once a
	// snapshot and a compaction pass have run after the load.
	HistoryBytesPerPoint float64  `json:"history_bytes_per_point,omitempty"`
	Name                 string   `json:"name"`
	Server               string   `json:"server"`
	Flags                []string `json:"flags,omitempty"`
	Result               *Result  `json:"result"`
	PeakRSS              int64    `json:"peak_rss_bytes"`
	DiskBytes            int64    `json:"disk_bytes"`
	BytesPerSample       float64  `json:"disk_bytes_per_sample"`
}

// CrashResult is what survived a kill -9 right after the load.
type CrashResult struct {
	Server      string  `json:"server"`
	Sent        int64   `json:"sent"`
	Acked       int64   `json:"acked,omitempty"` // acknowledged before the kill (sonde)
	Survived    int64   `json:"survived"`        // samples read back after the restart
	LostPct     float64 `json:"lost_pct"`        // of those sent
	KilledAfter float64 `json:"killed_after_s"`  // seconds from the first byte to the kill
}

// CompareResult is the outcome of a comparison.
type CompareResult struct {
	Machine Machine       `json:"machine"`
	Phases  []Phase       `json:"phases"`
	Crash   []CrashResult `json:"crash,omitempty"`
	// EndToEnd is the peer's time until every sample was visible over
	// Sonde's (fsync=always), and IngestRatio Sonde's ingest rate with
	// fsync=interval over the peer's.
	EndToEnd    float64 `json:"end_to_end_ratio"`
	IngestRatio float64 `json:"ingest_ratio"`
	// GraphiteEndToEnd is EndToEnd with Sonde taking the peer's protocol,
	// Graphite plaintext, instead of its own commands.
	GraphiteEndToEnd float64 `json:"graphite_end_to_end_ratio"`
	// Cardinality is the cardinality phase, Sonde then the peer.
	Cardinality []WatchedRun `json:"cardinality,omitempty"`
}

// Machine describes where a run happened.
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Memory string `json:"memory"`
	Go     string `json:"go"`
	Date   string `json:"date"`
}

// ThisMachine reads the CPU model and memory size from /proc.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			m.Memory = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
		}
	}
	return m
}

// Compare runs the comparison.
func Compare(ctx context.Context, cc CompareConfig) (*CompareResult, error) {
	cc.Load.setDefaults()
	out := &CompareResult{Machine: ThisMachine()}
	logf := cc.logf
	n := 0
	dir := func(name string) string {
		n++
		return filepath.Join(cc.WorkDir, fmt.Sprintf("%d-%s", n, name))
	}
	sonde := func(name string, flags ...string) (*Phase, error) {
		logf("== %s: sonde %s", name, strings.Join(flags, " "))
		srv, err := StartSonde(ctx, cc.SondeBin, dir(name), append(flags, cc.SondeFlags...)...)
		if err != nil {
			return nil, err
		}
		cfg := cc.Load
		cfg.Scenario, cfg.Target, cfg.Query, cfg.API = "tcp", srv.Ingest, srv.Query, "sonde"
		return runPhase(ctx, name, srv, flags, cfg)
	}
	p, err := sonde("sonde-fsync-always", "-fsync", "always")
	if err != nil {
		return nil, err
	}
	out.Phases = append(out.Phases, *p)
	p, err = sonde("sonde-fsync-interval", "-fsync", "interval")
	if err != nil {
		return nil, err
	}
	out.Phases = append(out.Phases, *p)

	logf("== victoria-metrics: graphite plaintext")
	vm, err := StartVictoriaMetrics(ctx, cc.PeerBin, dir("victoria-metrics"))
	if err != nil {
		return nil, err
	}
	cfg := cc.Load
	cfg.Scenario, cfg.Target, cfg.Query, cfg.API = "graphite", vm.Ingest, vm.Query, "prometheus"
	cfg.Taken = vmTaken(vm.Query)
	p, err = runPhase(ctx, "victoria-metrics", vm, nil, cfg)
	if err != nil {
		return nil, err
	}
	out.Phases = append(out.Phases, *p)

	// The peer's own protocol into Sonde: the same lines, no replies.
	logf("== sonde-graphite: sonde -fsync always, graphite plaintext")
	srv, err := StartSonde(ctx, cc.SondeBin, dir("sonde-graphite"), append([]string{"-fsync", "always"}, cc.SondeFlags...)...)
	if err != nil {
		return nil, err
	}
	cfg = cc.Load
	cfg.Scenario, cfg.Target, cfg.Query, cfg.API = "graphite", srv.Graphite, srv.Query, "sonde"
	cfg.Taken = SondeTaken(srv.Query, "graphite")
	if p, err = runPhase(ctx, "sonde-graphite", srv, []string{"-fsync", "always"}, cfg); err != nil {
		return nil, err
	}
	out.Phases = append(out.Phases, *p)

	always, interval, peer, graphite := out.Phases[0].Result, out.Phases[1].Result, out.Phases[2].Result, out.Phases[3].Result
	if always.VisibleSeconds > 0 && peer.VisibleSeconds > 0 {
		out.EndToEnd = peer.VisibleSeconds / always.VisibleSeconds
	}
	if graphite.VisibleSeconds > 0 && peer.VisibleSeconds > 0 {
		out.GraphiteEndToEnd = peer.VisibleSeconds / graphite.VisibleSeconds
	}
	if peer.IngestRate > 0 {
		out.IngestRatio = interval.IngestRate / peer.IngestRate
	}
	if cc.Crash {
		c, err := crashSonde(ctx, cc, dir("crash-sonde"))
		if err != nil {
			return nil, err
		}
		out.Crash = append(out.Crash, *c)
		c, err = crashVM(ctx, cc, dir("crash-victoria-metrics"))
		if err != nil {
			return nil, err
		}
		out.Crash = append(out.Crash, *c)
	}
	if cc.Cardinality > 0 {
		logf("== cardinality: %d keys x 4 samples over graphite, sonde then victoria-metrics", cc.Cardinality)
		pair := cc.Pair
		pair.WorkDir = dir("cardinality")
		runs, err := Cardinality(ctx, CardinalityConfig{Load: cc.Load, Keys: cc.Cardinality, Pair: pair})
		if err != nil {
			return nil, err
		}
		out.Cardinality = runs
	}
	return out, nil
}

// HistoryStats is what Sonde reports of its stored history
// (/api/v1/stats, engine.history).
type HistoryStats struct {
	Points            int64   `json:"points"`
	ArchivePoints     int64   `json:"archive_points"`
	UsedBytes         int64   `json:"used_bytes"`
	UsedBytesPerPoint float64 `json:"used_bytes_per_point"`
	FileBytesPerPoint float64 `json:"file_bytes_per_point"`
}

// SondeHistory waits up to wait for the Sonde at addr to report its
// stored history covering every point it holds, and returns it.
func SondeHistory(ctx context.Context, addr string, wait time.Duration) (*HistoryStats, error) {
	deadline := time.Now().Add(wait)
	for {
		var st struct {
			Engine struct {
				Index   uint64        `json:"wal_index"`
				Snap    uint64        `json:"snapshot_index"`
				History *HistoryStats `json:"history"`
			} `json:"engine"`
		}
		if err := getJSON(ctx, "http://"+addr+"/api/v1/stats", &st); err != nil {
			return nil, fmt.Errorf("read sonde stats: %w", err)
		}
		if h := st.Engine.History; h != nil && st.Engine.Snap == st.Engine.Index {
			return h, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sonde reported no history covering its writes within %s", wait)
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// SondeTaken reads how many lines the named listener of the Sonde at addr
// has taken in (its "commands" counter in /api/v1/stats).
func SondeTaken(addr, listener string) func() (int64, error) {
	return func() (int64, error) {
		var st map[string]json.RawMessage
		if err := getJSON(context.Background(), "http://"+addr+"/api/v1/stats", &st); err != nil {
			return 0, fmt.Errorf("read sonde stats: %w", err)
		}
		var l struct {
			Commands *int64 `json:"commands"`
		}
		if err := json.Unmarshal(st[listener], &l); err != nil || l.Commands == nil {
			return 0, fmt.Errorf("read sonde stats: no %q listener with a commands count", listener)
		}
		return *l.Commands, nil
	}
}

func vmTaken(addr string) func() (int64, error) {
	return func() (int64, error) { return MetricSum(addr, `vm_rows_inserted_total{type="graphite"}`) }
}

// runPhase sends the load to srv, reads it back, stops srv and measures
// its peak memory and disk use.
func runPhase(ctx context.Context, name string, srv *Server, flags []string, cfg Config) (*Phase, error) {
	res, err := Run(ctx, cfg)
	if err != nil {
		srv.Kill()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &Phase{Name: name, Server: srv.Name, Flags: flags, Result: res}
	if srv.Name == "sonde" {
		// The first snapshot comes within -snapshot-interval (30 s).
		if h, err := SondeHistory(ctx, srv.Query, 40*time.Second); err == nil {
			p.HistoryBytesPerPoint = h.UsedBytesPerPoint
		}
	}
	p.PeakRSS, _ = srv.PeakRSS()
	if err := srv.Stop(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if p.DiskBytes, err = DiskBytes(srv.Dir); err != nil {
		return nil, err
	}
	if res.Sent > 0 {
		p.BytesPerSample = float64(p.DiskBytes) / float64(res.Sent)
	}
	return p, nil
}

// crashSonde and crashVM run a crash round on Sonde (over its command
// protocol) and on VictoriaMetrics (Graphite plaintext).
func crashSonde(ctx context.Context, cc CompareConfig, dir string) (*CrashResult, error) {
	cfg := cc.Load
	cfg.Scenario, cfg.API = "tcp", "sonde"
	start := func() (*Server, error) { return StartSonde(ctx, cc.SondeBin, dir) }
	return crashRound(ctx, start, cfg, 1)
}

func crashVM(ctx context.Context, cc CompareConfig, dir string) (*CrashResult, error) {
	cfg := cc.Load
	cfg.Scenario, cfg.API = "graphite", "prometheus"
	start := func() (*Server, error) { return StartVictoriaMetrics(ctx, cc.PeerBin, dir) }
	// Whatever reached its disk shows once it is up; read twice, a second
	// apart, and keep the larger.
	return crashRound(ctx, start, cfg, 2)
}

// crashRound sends the load to the server start gives, kills it the moment
// the load is in (the last reply, or the server's own count when there are
// no replies), starts it again on the same directory and counts the
// samples that came back, reading reads times.
func crashRound(ctx context.Context, start func() (*Server, error), cfg Config, reads int) (*CrashResult, error) {
	srv, err := start()
	if err != nil {
		return nil, err
	}
	cfg.Target, cfg.Query = srv.Ingest, ""
	if cfg.API == "prometheus" {
		cfg.Taken = vmTaken(srv.Query)
	}
	res, err := Run(ctx, cfg)
	srv.Kill()
	if err != nil {
		return nil, err
	}
	if srv, err = start(); err != nil {
		return nil, err
	}
	defer srv.Stop()
	cfg.Query = srv.Query
	var stored int64
	for i := range reads {
		if i > 0 {
			if err := pause(ctx, time.Second); err != nil {
				return nil, err
			}
		}
		_, n, err := readBack(ctx, cfg)
		if err != nil {
			return nil, err
		}
		stored = max(stored, n)
	}
	return crashResult(srv.Name, res, stored), nil
}

func crashResult(server string, res *Result, stored int64) *CrashResult {
	c := &CrashResult{Server: server, Sent: res.Sent, Acked: res.Acked, Survived: stored, KilledAfter: res.IngestSeconds}
	if res.Sent > 0 {
		c.LostPct = 100 * float64(max(res.Sent-stored, 0)) / float64(res.Sent)
	}
	return c
}
