package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// RestartConfig measures how long Sonde, and then the peer, take to come
// back on their own data directory after the same load: after kill -9,
// and after a clean stop (SIGTERM).
type RestartConfig struct {
	// Load is the load: Keys keys, Count samples in all, Conns, Shape,
	// Prefix. Sonde takes it as acknowledged SETs, the peer as Graphite
	// plaintext. Poll is how often a restarted server's series count is
	// read: every Keys/10,000 ms, at least 5 ms, when 0.
	Load Config
	// Pair: SondeBin, SondeFlags (for every Sonde started), WorkDir and
	// Log. With PeerBin empty only Sonde's cases run. Idle is not used.
	Pair
	// Settle is how long a restarted server's series count must stay
	// below the keys sent, unchanged, before it is taken as final: after
	// kill -9 the peer may have lost series (5 s when 0).
	Settle time.Duration
}

// The cases of a restart: kill -9 right after the load, and a clean stop.
const (
	RestartKill = "kill"
	RestartStop = "stop"
)

// RestartCase is one server brought back on its own data directory.
// Times are seconds from the exec of the restarted process.
type RestartCase struct {
	Server string   `json:"server"`
	Case   string   `json:"case"` // RestartKill or RestartStop
	Flags  []string `json:"flags,omitempty"`
	// Load is the load before the restart: acknowledged (Sonde) or
	// counted by the peer's Graphite listener.
	Load *Result `json:"load"`
	// StopSeconds is SIGTERM to exit (RestartStop).
	StopSeconds float64 `json:"stop_s,omitempty"`
	// DiskBytes is the data directory the restart found; WALBytes, of
	// that, Sonde's WAL.
	DiskBytes int64 `json:"disk_bytes"`
	WALBytes  int64 `json:"wal_bytes,omitempty"`
	// ListeningSeconds is exec to ready to serve: Sonde's "listening" log
	// line (said once the store is open: the WAL replayed), the peer's
	// /health answering 200.
	ListeningSeconds float64 `json:"listening_s"`
	// ReadySeconds is exec to the server's series count reaching the keys
	// sent (Sonde: /api/v1/stats; the peer: /api/v1/series/count), read
	// every Load.Poll from ListeningSeconds on. When the count stopped
	// short (Complete false), it is exec to the first reading of the
	// count it stayed at. CPUReady is the server's CPU seconds from exec
	// until then.
	ReadySeconds float64 `json:"ready_s"`
	CPUReady     float64 `json:"cpu_ready_s"`
	Complete     bool    `json:"complete"`
	// SeriesCount is the last series count that wait read. The peer's
	// may count a series more than once (index entries not merged yet).
	SeriesCount int64 `json:"series_count"`
	// Series and Samples are what the restarted server holds of the
	// load, read back after ReadySeconds: Sonde's keys and their points
	// over /api/v1/series, the peer's count(count_over_time(...[1d])) and
	// sum(count_over_time(...[1d])).
	Series  int64 `json:"series"`
	Samples int64 `json:"samples"`
	// Replayed is the WAL records Sonde's recovery applied (its
	// /api/v1/stats).
	Replayed int64 `json:"replayed,omitempty"`
	// Verified: every key and every sample of the load came back.
	Verified bool `json:"verified"`
}

// RestartRatio is Sonde over the peer in one case: at most 1 when Sonde
// comes back no slower.
type RestartRatio struct {
	Case string `json:"case"`
	// Ready is Sonde's ReadySeconds over the peer's: the figure compared.
	Ready float64 `json:"ready"`
	// Listening is Sonde's exec to listening over the peer's exec to
	// /health.
	Listening float64 `json:"listening"`
	// PeerComplete is false when the peer came back without every series
	// (kill -9): its ReadySeconds is then to the series it had.
	PeerComplete bool `json:"peer_complete"`
}

// RestartResult is every case, Sonde's then the peer's, and the ratios.
// Keys to Verified are Sonde's kill -9 case, as the tool reported it
// before it restarted the peer.
type RestartResult struct {
	Keys      int     `json:"keys"`
	Records   int64   `json:"wal_records"`
	WALBytes  int64   `json:"wal_bytes"`
	AfterKill float64 `json:"after_kill_s"` // exec to listening, replaying the whole WAL
	Verified  bool    `json:"verified"`     // every key and sample read back after it

	Machine Machine        `json:"machine"`
	Cases   []RestartCase  `json:"cases"`
	Ratios  []RestartRatio `json:"sonde_over_peer,omitempty"`
}

// neverSnapshot keeps every record in Sonde's WAL: its snapshots never run.
var neverSnapshot = []string{"-snapshot-interval", "1000h", "-snapshot-records", "1000000000000", "-snapshot-quiet", "0"}

// Restart runs the cases: Sonde after kill -9 with every record in its WAL
// (its snapshots never run), Sonde after a clean stop (default snapshot
// flags), then the peer after kill -9 and after a clean stop; each on a
// fresh data directory, the same load. Each server is restarted on its
// directory and timed until it serves every series, then read back.
func Restart(ctx context.Context, rc RestartConfig) (*RestartResult, error) {
	cfg := rc.Load
	cfg.Query = ""
	cfg.Poll = max(cfg.Poll, time.Duration(cfg.Keys/10_000)*time.Millisecond)
	cfg.setDefaults()
	if rc.Settle <= 0 {
		rc.Settle = 5 * time.Second
	}
	out := &RestartResult{Machine: ThisMachine(), Keys: cfg.Keys, Records: cfg.Count}
	servers := []string{"sonde"}
	if rc.PeerBin != "" {
		servers = append(servers, "victoria-metrics")
	}
	for _, server := range servers {
		for _, kase := range []string{RestartKill, RestartStop} {
			c, err := rc.run(ctx, server, kase, cfg)
			if err != nil {
				return out, fmt.Errorf("restart, %s after %s: %w", server, kase, err)
			}
			out.Cases = append(out.Cases, *c)
		}
	}
	k := out.Cases[0]
	out.WALBytes, out.AfterKill, out.Verified = k.WALBytes, k.ListeningSeconds, k.Verified
	if len(out.Cases) == 4 {
		for i, kase := range []string{RestartKill, RestartStop} {
			s, p := out.Cases[i], out.Cases[2+i]
			out.Ratios = append(out.Ratios, RestartRatio{Case: kase, Ready: s.ReadySeconds / p.ReadySeconds,
				Listening: s.ListeningSeconds / p.ListeningSeconds, PeerComplete: p.Complete})
		}
	}
	return out, nil
}

// run is one case: server on a fresh directory takes the load, is killed
// or stopped, and is started again on the directory.
func (rc RestartConfig) run(ctx context.Context, server, kase string, cfg Config) (*RestartCase, error) {
	name := "restart-" + server + "-" + kase
	dir := filepath.Join(rc.WorkDir, name)
	// Fresh means empty: a directory left by an earlier run would be
	// loaded too.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clear %s: %w", dir, err)
	}
	start := func() (*Server, []string, error) {
		if server != "sonde" {
			return rc.start(ctx, server, name, cfg.Keys)
		}
		flags := slices.Clone(rc.SondeFlags)
		if kase == RestartKill {
			flags = append(flags, neverSnapshot...) // last: they win
		}
		srv, err := StartSonde(ctx, rc.SondeBin, dir, flags...)
		return srv, flags, err
	}
	cfg.Scenario, cfg.API = "graphite", "prometheus"
	if server == "sonde" {
		cfg.Scenario, cfg.API = "tcp", "sonde"
	}
	rc.logf("== restart: %s, %d samples over %d keys (%s), then %s", server, cfg.Count, cfg.Keys, cfg.Scenario,
		map[string]string{RestartKill: "kill -9", RestartStop: "SIGTERM"}[kase])
	srv, flags, err := start()
	if err != nil {
		return nil, err
	}
	c := &RestartCase{Server: server, Case: kase, Flags: flags}
	// Sonde: every SET acknowledged, so in its WAL; the peer: every line
	// counted by its Graphite listener.
	if c.Load, _, err = loadInto(ctx, srv, cfg, false); err != nil {
		srv.Kill()
		return nil, err
	}
	if kase == RestartKill {
		srv.Kill()
	} else {
		if err := srv.Stop(); err != nil {
			return nil, err
		}
		c.StopSeconds = srv.StopTime.Seconds()
	}
	if c.DiskBytes, err = DiskBytes(dir); err != nil {
		return nil, err
	}
	if server == "sonde" {
		if c.WALBytes, err = DiskBytes(filepath.Join(dir, "wal")); err != nil {
			return nil, err
		}
	}
	rc.logf("== restart: %s on %.1f MiB", server, float64(c.DiskBytes)/(1<<20))
	if srv, _, err = start(); err != nil {
		return nil, err
	}
	// What is measured ends with the read-back: a clean stop of Sonde
	// would fold the whole WAL first.
	defer srv.Kill()
	c.ListeningSeconds = srv.Ready.Seconds()
	if err := waitSeries(ctx, srv, c, int64(cfg.Keys), cfg.Poll, rc.Settle); err != nil {
		return nil, err
	}
	return c, readAfterRestart(ctx, srv, c, cfg)
}

// waitSeries reads the restarted srv's series count every poll until it
// reaches keys, or stays below it, unchanged, for settle; and fills c's
// ReadySeconds, CPUReady and Complete.
func waitSeries(ctx context.Context, srv *Server, c *RestartCase, keys int64, poll, settle time.Duration) error {
	last := int64(-1)
	var lastAt time.Time
	for {
		n, err := seriesCount(ctx, srv)
		if err != nil {
			return err
		}
		now := time.Now()
		if n != last {
			last, lastAt, c.SeriesCount = n, now, n
			c.ReadySeconds = now.Sub(srv.Started).Seconds()
			cpu, err := srv.CPU()
			if err != nil {
				return err
			}
			c.CPUReady = cpu.Seconds()
		}
		if n >= keys {
			c.Complete = true
			return nil
		}
		if now.Sub(lastAt) >= settle {
			return nil
		}
		if err := pause(ctx, poll); err != nil {
			return err
		}
	}
}

// seriesCount is how many series srv serves: Sonde's engine count in
// /api/v1/stats, the peer's /api/v1/series/count.
func seriesCount(ctx context.Context, srv *Server) (int64, error) {
	if srv.Name == "sonde" {
		var st struct {
			Engine struct {
				Series int64 `json:"series"`
			} `json:"engine"`
		}
		err := getJSON(ctx, "http://"+srv.Query+"/api/v1/stats", &st)
		return st.Engine.Series, err
	}
	var resp struct {
		Status string  `json:"status"`
		Data   []int64 `json:"data"`
	}
	if err := getJSON(ctx, "http://"+srv.Query+"/api/v1/series/count", &resp); err != nil {
		return 0, err
	}
	if resp.Status != "success" || len(resp.Data) != 1 {
		return 0, fmt.Errorf("series count of %s: status %q, data %v", srv.Name, resp.Status, resp.Data)
	}
	return resp.Data[0], nil
}

// readAfterRestart reads back what the restarted srv holds of the load
// into c: Sonde, every key and its points (and what its recovery
// replayed); the peer, a count of the series and one of the samples.
func readAfterRestart(ctx context.Context, srv *Server, c *RestartCase, cfg Config) error {
	sent := c.Load.Sent
	if srv.Name == "sonde" {
		cfg.Query = srv.Query
		got, stored, err := readBack(ctx, cfg)
		if err != nil {
			return err
		}
		c.Series, c.Samples = int64(len(got)), stored
		c.Verified = len(got) == min(cfg.Keys, int(sent)) && stored == sent
		var st struct {
			Engine struct {
				Recovery struct {
					Replayed int64 `json:"replayed"`
				} `json:"recovery"`
			} `json:"engine"`
		}
		if err := getJSON(ctx, "http://"+srv.Query+"/api/v1/stats", &st); err != nil {
			return err
		}
		c.Replayed = st.Engine.Recovery.Replayed
		return nil
	}
	sel := fmt.Sprintf(`{__name__=~"%s\\..*"}`, regexpQuote(cfg.Prefix))
	var err error
	if c.Series, err = promCount(ctx, srv.Query, "count(count_over_time("+sel+"[1d]))"); err != nil {
		return err
	}
	if c.Samples, err = promCount(ctx, srv.Query, "sum(count_over_time("+sel+"[1d]))"); err != nil {
		return err
	}
	c.Verified = c.Series == int64(min(cfg.Keys, int(sent))) && c.Samples == sent
	return nil
}

// promCount is the value of a query that answers one number (none: 0).
func promCount(ctx context.Context, addr, q string) (int64, error) {
	vals, err := promQuery(ctx, addr, q)
	var n int64
	for _, v := range vals {
		n += int64(v.v)
	}
	return n, err
}
