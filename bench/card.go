package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"
)

// Pair is what a run against Sonde and then the peer needs: the binaries,
// Sonde's extra flags, where the data directories go, the wait for each
// server to go idle after a load, and where progress is logged.
type Pair struct {
	SondeBin   string
	PeerBin    string // VictoriaMetrics' single-node binary
	SondeFlags []string
	WorkDir    string // data directories go under it
	Idle       IdleConfig
	Log        io.Writer
}

func (p Pair) logf(format string, a ...any) {
	if p.Log != nil {
		fmt.Fprintf(p.Log, format+"\n", a...)
	}
}

// start starts Sonde (server "sonde", with SondeFlags) or the peer on a
// fresh directory dir under WorkDir, and returns it and the flags it was
// given beyond the addresses. keys is the run's key count: the peer may
// touch twice that many series in a query (its default cap, 300k in 1.79,
// is below what the tool reads back at 1M keys).
func (p Pair) start(ctx context.Context, server, dir string, keys int) (*Server, []string, error) {
	path := filepath.Join(p.WorkDir, dir)
	if server == "sonde" {
		srv, err := StartSonde(ctx, p.SondeBin, path, p.SondeFlags...)
		return srv, p.SondeFlags, err
	}
	flags := []string{"-search.maxUniqueTimeseries", strconv.Itoa(2 * keys)}
	srv, err := StartVictoriaMetrics(ctx, p.PeerBin, path, flags...)
	return srv, flags, err
}

// watchEach runs the load cfg on a fresh Sonde, over sondeScenario, and
// then on a fresh peer, over Graphite, each watched (runWatched).
func (p Pair) watchEach(ctx context.Context, name string, cfg Config, sondeScenario string, visible bool) ([]WatchedRun, error) {
	p.Idle.setDefaults()
	var out []WatchedRun
	for _, server := range []string{"sonde", "victoria-metrics"} {
		c := cfg
		c.Scenario = "graphite"
		if server == "sonde" {
			c.Scenario = sondeScenario
		}
		p.logf("== %s: %s over %s", name, server, c.Scenario)
		r, err := p.watchOne(ctx, name+"-"+server, server, c, visible)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, *r)
	}
	return out, nil
}

// watchOne runs the load cfg on a fresh server (Sonde or the peer) in
// dir under WorkDir, watched (runWatched).
func (p Pair) watchOne(ctx context.Context, dir, server string, cfg Config, visible bool) (*WatchedRun, error) {
	srv, flags, err := p.start(ctx, server, dir, cfg.Keys)
	if err != nil {
		return nil, err
	}
	r, err := runWatched(ctx, srv, cfg, p.Idle, visible)
	if err != nil {
		return nil, err
	}
	r.Flags = flags
	return r, nil
}

// CardinalityConfig is the cardinality phase of a comparison: Keys keys
// with PerKey samples each, over Graphite plaintext, to Sonde and then to
// the peer, each on a fresh data directory.
type CardinalityConfig struct {
	Load   Config // Conns, Shape, Prefix, VisibleTimeout; Keys and Count are set from Keys and PerKey
	Keys   int
	PerKey int // samples per key (4 when 0)
	Pair
}

// IdleConfig says how the tool waits, after a load, for a server to finish
// the work it deferred (snapshots, merges): until its CPU stays under
// Quiet of a core for Window, sampled every Every, for at most Most.
type IdleConfig struct {
	Every time.Duration // 1 s when 0
	// Window is 15 s when 0. Sonde stores a load's records 1-2 s after it
	// ends (-snapshot-quiet) when 64k or more wait; fewer wait for its
	// 30 s -snapshot-interval, which may come after the window: a few ms of
	// work left out.
	Window time.Duration
	Most   time.Duration // 5 min when 0
	// Quiet is the share of one core under which a server counts as
	// idle: what it spends on timers and flushes with nothing to do (3 %
	// when 0). A server whose cost at rest is higher never goes quiet, and
	// the wait runs to Most.
	Quiet float64
}

func (c *IdleConfig) setDefaults() {
	if c.Every <= 0 {
		c.Every = time.Second
	}
	if c.Window <= 0 {
		c.Window = 15 * time.Second
	}
	if c.Most <= 0 {
		c.Most = 5 * time.Minute
	}
	if c.Quiet <= 0 {
		c.Quiet = 0.03
	}
}

// Cardinality runs the phase on Sonde and then on the peer.
func Cardinality(ctx context.Context, cc CardinalityConfig) ([]WatchedRun, error) {
	if cc.PerKey <= 0 {
		cc.PerKey = 4
	}
	cfg := cc.Load
	cfg.Keys, cfg.Count, cfg.Query = cc.Keys, int64(cc.Keys)*int64(cc.PerKey), ""
	cfg.setDefaults()
	return cc.watchEach(ctx, "cardinality", cfg, "graphite", true)
}

// shown reads what a server has taken in and what it shows its readers
// of a run whose keys start with a prefix.
type shown struct {
	taken func() (int64, error) // lines counted by the Graphite listener
	// counts reads how many series and samples of the run readers see.
	counts func(context.Context) (series, samples int64, err error)
	// check, when set, counts the samples of the run with a query, once
	// counts shows every one: the peer's counts are of its internals.
	check func(context.Context) (int64, error)
}

// shownBy reads srv's counters now, so that a fresh Sonde counts only
// what comes after.
func shownBy(ctx context.Context, srv *Server, prefix string) (shown, error) {
	if srv.Name != "sonde" {
		sel := fmt.Sprintf(`{__name__=~"%s\\..*"}`, regexpQuote(prefix))
		return shown{
			taken: vmTaken(srv.Query),
			// The peer's own counts: rows in parts of its storage (vm_rows),
			// none pending, and series created, none of their index rows
			// pending. They are cheap reads of /metrics; but a query sees the
			// rows only some time later, and a query that finds nothing keeps
			// finding nothing for seconds (a cache), so check runs only once
			// these show every row.
			counts: func(ctx context.Context) (int64, int64, error) {
				rows, err1 := MetricSum(srv.Query, `vm_rows{type="storage/`)
				series, err2 := MetricSum(srv.Query, "vm_new_timeseries_created_total")
				pending, err3 := MetricSum(srv.Query, "vm_pending_rows{")
				if pending > 0 {
					series, rows = 0, 0
				}
				return series, rows, errors.Join(err1, err2, err3)
			},
			check: func(ctx context.Context) (int64, error) {
				vals, err := promQuery(ctx, srv.Query, "sum(count_over_time("+sel+"[1d]))")
				var n int64
				for _, v := range vals {
					n += int64(v.v)
				}
				return n, err
			},
		}, nil
	}
	// Every Graphite line and SET is one record, published to readers
	// once applied: the published index (/api/v1/stats "index") counts
	// the samples readers see. (Today each read of the stats walks every
	// series: Poll bounds how often it runs.)
	type stats struct {
		Index  int64 `json:"index"`
		Engine struct {
			Series int64 `json:"series"`
		} `json:"engine"`
	}
	var st0 stats
	if err := getJSON(ctx, "http://"+srv.Query+"/api/v1/stats", &st0); err != nil {
		return shown{}, err
	}
	return shown{
		taken: SondeTaken(srv.Query, "graphite"),
		counts: func(ctx context.Context) (int64, int64, error) {
			var st stats
			err := getJSON(ctx, "http://"+srv.Query+"/api/v1/stats", &st)
			return st.Engine.Series - st0.Engine.Series, st.Index - st0.Index, err
		},
	}, nil
}

// waitShown polls, every poll, until the server shows at least keys
// series and samples samples, and then, where it has a check, until a
// query sees them, for at most timeout.
func waitShown(ctx context.Context, sh shown, keys, samples int64, timeout, poll time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		series, n, err := sh.counts(ctx)
		if err == nil && series >= keys && n >= samples {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s the server showed %d of %d series and %d of %d samples (last error: %v)", timeout, series, keys, n, samples, err)
		}
		if err := pause(ctx, poll); err != nil {
			return err
		}
	}
	for sh.check != nil {
		n, err := sh.check(ctx)
		if err == nil && n >= samples {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s the server's counts showed every sample, but a query sees %d of %d (last error: %v)", timeout, n, samples, err)
		}
		if err := pause(ctx, poll); err != nil {
			return err
		}
	}
	return nil
}
