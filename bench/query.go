package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// QueryConfig drives Sonde's read side: Conns clients, each asking as
// fast as it is answered, for Duration per kind of request.
type QueryConfig struct {
	Query    string // host:port of the HTTP API
	Prefix   string
	Keys     int // the keys Prefix.k0000000 ... exist (a load ran before)
	Conns    int
	Duration time.Duration
}

// QueryKind is the outcome of one kind of request.
type QueryKind struct {
	Path     string  `json:"path"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Bytes    int64   `json:"bytes"`
	Rate     float64 `json:"requests_per_s"`
	Latency  Summary `json:"latency"`
}

// QueryBench runs the dump (/data of every key of the run) and then
// history ranges of single keys (/api/v1/series/{key}/history, the last
// 100 points).
func QueryBench(ctx context.Context, qc QueryConfig) ([]QueryKind, error) {
	kinds := []struct {
		name string
		url  func(i int) string
	}{
		{"/data?match=" + qc.Prefix + ".*", func(int) string { return "http://" + qc.Query + "/data?match=" + qc.Prefix + ".*" }},
		{"/api/v1/series/{key}/history?limit=100", func(i int) string {
			return "http://" + qc.Query + "/api/v1/series/" + KeyName(qc.Prefix, i%qc.Keys) + "/history?limit=100"
		}},
	}
	var out []QueryKind
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: qc.Conns}}
	for _, k := range kinds {
		var h Hist
		var n, errs, bytes atomic.Int64
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
						errs.Add(1)
						continue
					}
					m, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs.Add(1)
						continue
					}
					h.Record(time.Since(t), 1)
					n.Add(1)
					bytes.Add(m)
				}
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return out, err
		}
		q := QueryKind{Path: k.name, Requests: n.Load(), Errors: errs.Load(), Bytes: bytes.Load(), Latency: h.Summary()}
		q.Rate = float64(q.Requests) / time.Since(start).Seconds()
		if q.Requests == 0 {
			return out, fmt.Errorf("query %s: no request answered (%d errors)", k.name, q.Errors)
		}
		out = append(out, q)
	}
	return out, nil
}
