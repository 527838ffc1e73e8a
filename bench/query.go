package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// QueryConfig drives a server's read side: Conns clients, each asking as
// fast as it is answered, for Duration per kind of request.
type QueryConfig struct {
	Query    string // host:port of the HTTP API
	Prefix   string
	Keys     int // the keys Prefix.k0000000 ... exist (a load ran before)
	Conns    int
	Duration time.Duration
	// GraphiteOnly asks only the Graphite kinds, which a peer answers too.
	GraphiteOnly bool
	// Glob is the /render target that matches many series: Prefix.k00001*
	// when empty, the 100 keys k0000100 to k0000199.
	Glob string
	// Find is the /metrics/find query: Prefix.* when empty, one level
	// down from the prefix (every key of the run).
	Find string
}

func (qc *QueryConfig) setDefaults() {
	if qc.Prefix == "" {
		qc.Prefix = "bench"
	}
	if qc.Glob == "" {
		qc.Glob = qc.Prefix + ".k00001*"
	}
	if qc.Find == "" {
		qc.Find = qc.Prefix + ".*"
	}
}

// QueryKind is the outcome of one kind of request.
type QueryKind struct {
	Path     string  `json:"path"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
	Bytes    int64   `json:"bytes"`
	Rate     float64 `json:"requests_per_s"`
	Latency  Summary `json:"latency"`
	// Items is how many entries (series, nodes) the first answer of a
	// Graphite kind listed.
	Items int `json:"items,omitempty"`
}

type queryKind struct {
	name  string
	url   func(i int) string
	items bool // the answer is a JSON array to count
}

// queryKinds lists the kinds qc asks: unless GraphiteOnly, the dump (/data
// of every key of the run) and history ranges of single keys
// (/api/v1/series/{key}/history, the last 100 points); then Graphite's
// /render of one exact key and of Glob, the last hour, and /metrics/find
// of Find.
func queryKinds(qc QueryConfig) []queryKind {
	base := "http://" + qc.Query
	var kinds []queryKind
	if !qc.GraphiteOnly {
		kinds = append(kinds,
			queryKind{name: "/data?match=" + qc.Prefix + ".*", url: func(int) string { return base + "/data?match=" + qc.Prefix + ".*" }},
			queryKind{name: "/api/v1/series/{key}/history?limit=100", url: func(i int) string {
				return base + "/api/v1/series/" + KeyName(qc.Prefix, i%qc.Keys) + "/history?limit=100"
			}})
	}
	return append(kinds,
		queryKind{name: "/render?target={key}&from=-1h&format=json", items: true, url: func(i int) string {
			return base + "/render?target=" + KeyName(qc.Prefix, i%qc.Keys) + "&from=-1h&format=json"
		}},
		queryKind{name: "/render?target=" + qc.Glob + "&from=-1h&format=json", items: true, url: func(int) string {
			return base + "/render?target=" + url.QueryEscape(qc.Glob) + "&from=-1h&format=json"
		}},
		queryKind{name: "/metrics/find?query=" + qc.Find, items: true, url: func(int) string {
			return base + "/metrics/find?query=" + url.QueryEscape(qc.Find)
		}})
}

// QueryBench asks each kind of queryKinds in turn. A kind that no request
// of got an answer to is an error, after every kind has run.
func QueryBench(ctx context.Context, qc QueryConfig) ([]QueryKind, error) {
	qc.setDefaults()
	var out []QueryKind
	var errs []error
	for _, k := range queryKinds(qc) {
		q, err := askKind(ctx, qc, k)
		if err != nil {
			return out, err
		}
		if q.Requests == 0 {
			errs = append(errs, fmt.Errorf("query %s: no request answered (%d errors, the first: %s)", q.Path, q.Errors, q.FirstErr))
		}
		out = append(out, q)
	}
	return out, errors.Join(errs...)
}

// askKind sends k's requests from qc.Conns clients for qc.Duration.
func askKind(ctx context.Context, qc QueryConfig, k queryKind) (QueryKind, error) {
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: qc.Conns}}
	defer client.CloseIdleConnections()
	var h Hist
	var n, errs, bytes atomic.Int64
	var firstErr atomic.Pointer[string]
	fail := func(msg string) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, &msg)
	}
	items := atomic.Int64{}
	items.Store(-1)
	var counting atomic.Bool // one answer's entries are counted
	end := time.Now().Add(qc.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range qc.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c * 7919; time.Now().Before(end) && ctx.Err() == nil; i += 104729 {
				t := time.Now()
				resp, err := client.Get(k.url(i))
				if err != nil {
					fail(err.Error())
					continue
				}
				if resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					resp.Body.Close()
					fail(resp.Status + ": " + string(b))
					continue
				}
				var m int64
				var body []byte
				count := k.items && counting.CompareAndSwap(false, true)
				if count {
					body, err = io.ReadAll(resp.Body)
					m = int64(len(body))
				} else {
					m, err = io.Copy(io.Discard, resp.Body)
				}
				resp.Body.Close()
				if err != nil {
					fail(err.Error())
					continue
				}
				h.Record(time.Since(t), 1)
				n.Add(1)
				bytes.Add(m)
				if count {
					var list []json.RawMessage
					if err := json.Unmarshal(body, &list); err != nil {
						fail(fmt.Sprintf("the answer is not a JSON list: %v", err))
					}
					items.Store(int64(len(list)))
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return QueryKind{}, err
	}
	q := QueryKind{Path: k.name, Requests: n.Load(), Errors: errs.Load(), Bytes: bytes.Load(), Latency: h.Summary(), Items: int(max(items.Load(), 0))}
	if p := firstErr.Load(); p != nil {
		q.FirstErr = *p
	}
	q.Rate = float64(q.Requests) / time.Since(start).Seconds()
	return q, nil
}

// QueryCompareConfig loads the same data into Sonde and into the peer,
// both running, and asks each the Graphite kinds.
type QueryCompareConfig struct {
	// Load is the data: Keys, Count, Conns, Shape, Prefix; it goes to
	// each server's Graphite listener.
	Load  Config
	Query QueryConfig // Conns, Duration, Glob, Find
	// Pair's Idle is the wait, after both loads, for both servers to go
	// quiet, so that neither's deferred work runs under the other's
	// queries.
	Pair
}

// QueryServer is one server's answers.
type QueryServer struct {
	Server string      `json:"server"`
	Load   *Result     `json:"load"`
	Idle   bool        `json:"idle"` // quiet before the queries began
	Kinds  []QueryKind `json:"kinds"`
}

// QueryCompareResult is Sonde's and the peer's answers to the same kinds,
// over the same data.
type QueryCompareResult struct {
	Machine Machine       `json:"machine"`
	Servers []QueryServer `json:"servers"`
	// Ratios is Sonde's requests per second over the peer's, per kind (0
	// when the peer answered none).
	Ratios []float64 `json:"sonde_over_peer"`
}

// QueryCompare loads both servers, waits until each shows every sample
// and both have gone quiet, then asks each kind of Sonde and then of the
// peer, one kind after the other.
func QueryCompare(ctx context.Context, qq QueryCompareConfig) (*QueryCompareResult, error) {
	cfg := qq.Load
	cfg.Scenario, cfg.Query = "graphite", ""
	cfg.setDefaults()
	qq.Idle.setDefaults()
	qc := qq.Query
	qc.Prefix, qc.Keys, qc.GraphiteOnly = cfg.Prefix, cfg.Keys, true
	qc.setDefaults()
	out := &QueryCompareResult{Machine: ThisMachine()}
	var servers []*Server
	defer func() {
		for _, s := range servers {
			s.Stop()
		}
	}()
	var watchers []*watcher
	for _, name := range []string{"sonde", "victoria-metrics"} {
		qq.logf("== query: %d samples over %d keys into %s over graphite", cfg.Count, cfg.Keys, name)
		srv, _, err := qq.start(ctx, name, "query-"+name, cfg.Keys)
		if err != nil {
			return nil, err
		}
		servers = append(servers, srv)
		res, _, err := loadInto(ctx, srv, cfg, true)
		if err != nil {
			return nil, fmt.Errorf("query: load %s: %w", name, err)
		}
		out.Servers = append(out.Servers, QueryServer{Server: name, Load: res})
		w := watch(ctx, srv, qq.Idle.Every)
		defer w.Stop()
		watchers = append(watchers, w)
	}
	for i, w := range watchers {
		_, idle, err := w.waitIdle(ctx, w.since(time.Now()), qq.Idle)
		if err != nil {
			return nil, err
		}
		out.Servers[i].Idle = idle
	}
	kinds := make([][]queryKind, len(servers))
	for i, s := range servers {
		sq := qc
		sq.Query = s.Query
		kinds[i] = queryKinds(sq)
	}
	for j := range kinds[0] {
		for i := range servers {
			qq.logf("== query %s: %s", out.Servers[i].Server, kinds[i][j].name)
			q, err := askKind(ctx, qc, kinds[i][j])
			if err != nil {
				return nil, err
			}
			out.Servers[i].Kinds = append(out.Servers[i].Kinds, q)
		}
		ratio := 0.0
		if sonde, peer := out.Servers[0].Kinds[j], out.Servers[1].Kinds[j]; peer.Requests > 0 {
			ratio = sonde.Rate / peer.Rate
		}
		out.Ratios = append(out.Ratios, ratio)
	}
	return out, nil
}
