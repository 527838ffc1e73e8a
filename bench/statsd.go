package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// StatsdConfig drives the statsd scenario: Load.Count lines over
// Load.Conns UDP sockets at Load.Rate lines/s (0: flat out), PerDatagram
// lines in each datagram, counters, gauges and timers in turn over
// Load.Keys names.
type StatsdConfig struct {
	Load        Config
	PerDatagram int
	// Settle is how long the server's count may stand still before the
	// lines it has not counted are taken as lost; default 2 s.
	Settle time.Duration
}

// StatsdResult is what a statsd run sent and what the server took.
type StatsdResult struct {
	Target      string  `json:"target"`
	Rate        float64 `json:"paced_rate,omitempty"`
	PerDatagram int     `json:"lines_per_datagram"`
	Sent        int64   `json:"sent_lines"`
	Datagrams   int64   `json:"sent_datagrams"`
	SendSeconds float64 `json:"send_s"`
	SendRate    float64 `json:"send_rate"`
	Counted     int64   `json:"counted_lines"` // the server's count, good and bad lines
	Written     int64   `json:"written"`       // raw samples durable in the WAL
	// DurableSeconds is from the first datagram until every counted line's
	// raw sample was durable (each line of this load writes one).
	DurableSeconds float64 `json:"durable_s"`
	KernelDrops    int64   `json:"kernel_drops"` // datagrams the kernel dropped on the server's socket
	Lost           int64   `json:"lost_lines"`
	LossPct        float64 `json:"loss_pct"`
}

type statsdCounts struct {
	Lines       int64 `json:"lines"`
	BadLines    int64 `json:"bad_lines"`
	Written     int64 `json:"written"`
	KernelDrops int64 `json:"kernel_drops"`
}

func readStatsdCounts(ctx context.Context, httpAddr string) (statsdCounts, error) {
	var all map[string]json.RawMessage
	if err := getJSON(ctx, "http://"+httpAddr+"/api/v1/stats", &all); err != nil {
		return statsdCounts{}, fmt.Errorf("read sonde stats: %w", err)
	}
	var c statsdCounts
	if err := json.Unmarshal(all["statsd"], &c); err != nil {
		return statsdCounts{}, fmt.Errorf("read sonde stats: no statsd listener: %w", err)
	}
	return c, nil
}

// Statsd sends the load to sc.Load.Target and counts what the Sonde whose
// HTTP API is sc.Load.Query took in: loss is lines sent minus lines the
// server counted once its count stops moving.
func Statsd(ctx context.Context, sc StatsdConfig) (*StatsdResult, error) {
	cfg := sc.Load
	cfg.setDefaults()
	if sc.PerDatagram <= 0 {
		sc.PerDatagram = 20
	}
	if sc.Settle <= 0 {
		sc.Settle = 2 * time.Second
	}
	if cfg.Count <= 0 {
		return nil, fmt.Errorf("statsd: set a line count")
	}
	before, err := readStatsdCounts(ctx, cfg.Query)
	if err != nil {
		return nil, err
	}
	res := &StatsdResult{Target: cfg.Target, Rate: cfg.Rate, PerDatagram: sc.PerDatagram}
	var sent, datagrams atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, cfg.Conns)
	for c := range cfg.Conns {
		wg.Go(func() {
			conn, err := net.Dial("udp", cfg.Target)
			if err != nil {
				errc <- fmt.Errorf("statsd: dial %s: %w", cfg.Target, err)
				return
			}
			defer conn.Close()
			share := cfg.Count / int64(cfg.Conns)
			if int64(c) < cfg.Count%int64(cfg.Conns) {
				share++
			}
			p := pacer{start: start, per: cfg.Rate / float64(cfg.Conns)}
			buf := make([]byte, 0, 2048)
			key := c
			for n := int64(0); n < share; {
				if err := p.wait(ctx, n); err != nil {
					errc <- err
					return
				}
				buf = buf[:0]
				k := min(int64(sc.PerDatagram), share-n)
				for i := range k {
					if i > 0 {
						buf = append(buf, '\n')
					}
					buf = append(buf, cfg.Prefix...)
					buf = append(buf, ".k"...)
					buf = strconv.AppendInt(buf, int64(key%cfg.Keys), 10)
					switch (n + i) % 3 {
					case 0:
						buf = append(buf, ":1|c"...)
					case 1:
						buf = append(buf, ':')
						buf = strconv.AppendInt(buf, (n+i)%1000, 10)
						buf = append(buf, "|g"...)
					default:
						buf = append(buf, ':')
						buf = strconv.AppendInt(buf, (n+i)%250, 10)
						buf = append(buf, "|ms"...)
					}
					key += cfg.Conns
				}
				// A send error (ECONNREFUSED from an earlier datagram, a full
				// buffer) loses the datagram, which the count shows.
				conn.Write(buf)
				n += k
				sent.Add(k)
				datagrams.Add(1)
			}
		})
	}
	wg.Wait()
	res.SendSeconds = time.Since(start).Seconds()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	res.Sent, res.Datagrams = sent.Load(), datagrams.Load()
	res.SendRate = float64(res.Sent) / res.SendSeconds
	// Wait until the server has counted everything and written a raw
	// sample for each, or its counts stand still for Settle.
	var now statsdCounts
	last, lastMove := int64(-1), time.Now()
	for {
		if now, err = readStatsdCounts(ctx, cfg.Query); err != nil {
			return nil, err
		}
		counted := now.Lines + now.BadLines - before.Lines - before.BadLines
		written := now.Written - before.Written
		if counted >= res.Sent && written >= counted {
			break
		}
		if counted+written != last {
			last, lastMove = counted+written, time.Now()
		} else if time.Since(lastMove) > sc.Settle {
			break
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	res.Counted = now.Lines + now.BadLines - before.Lines - before.BadLines
	res.Written = now.Written - before.Written
	res.DurableSeconds = time.Since(start).Seconds()
	res.KernelDrops = now.KernelDrops - before.KernelDrops
	res.Lost = res.Sent - res.Counted
	res.LossPct = 100 * float64(res.Lost) / float64(res.Sent)
	return res, nil
}
