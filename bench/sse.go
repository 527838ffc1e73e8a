package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// SSEConfig runs a paced load twice, without and then with subscribers on
// Sonde's /events, and measures what the subscribers see.
type SSEConfig struct {
	Load        Config // tcp load; its Shape is forced to Stamp
	Subscribers int
}

// SSEResult is the outcome of an SSE run.
type SSEResult struct {
	Subscribers int     `json:"subscribers"`
	Baseline    *Result `json:"baseline"`    // the load alone
	Loaded      *Result `json:"with_events"` // the same load with the subscribers
	// RateDrop is how much lower the ingest rate was with subscribers, in %.
	RateDrop float64 `json:"ingest_rate_drop_pct"`
	// Lag is from the send of an update to its arrival at a subscriber;
	// one event in 16 is timed and stands for the 15 after it.
	Lag       Summary `json:"delivery_lag"`
	Delivered int64   `json:"delivered"` // change events in all subscribers
	Expected  int64   `json:"expected"`  // acknowledged updates times subscribers
	MissedMax int64   `json:"missed_max"`
	CutOff    int     `json:"cut_off"` // subscribers whose stream ended before the end
}

type subscriber struct {
	got    atomic.Int64  // change events after the dump
	last   atomic.Uint64 // newest event id seen
	ended  atomic.Pointer[error]
	ready  chan struct{} // closed after the dump
	moved  chan struct{} // poked after each read
	closed chan struct{}
}

// SSE runs the scenario.
func SSE(ctx context.Context, sc SSEConfig) (*SSEResult, error) {
	load := sc.Load
	load.Scenario, load.Shape = "tcp", Stamp
	load.setDefaults()
	out := &SSEResult{Subscribers: sc.Subscribers}
	var err error
	if out.Baseline, err = Run(ctx, load); err != nil {
		return nil, err
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lag Hist
	subs := make([]*subscriber, sc.Subscribers)
	u := "http://" + load.Query + "/events?match=" + url.QueryEscape(load.Prefix+".*")
	for i := range subs {
		s := &subscriber{ready: make(chan struct{}), moved: make(chan struct{}, 1), closed: make(chan struct{})}
		subs[i] = s
		go s.run(subCtx, u, &lag)
	}
	for _, s := range subs {
		select {
		case <-s.ready:
		case <-s.closed:
			return nil, fmt.Errorf("subscribe to %s: %v", u, *s.ended.Load())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if out.Loaded, err = Run(ctx, load); err != nil {
		return nil, err
	}
	var st struct {
		Index uint64 `json:"index"`
	}
	if err := getJSON(ctx, "http://"+load.Query+"/api/v1/stats", &st); err != nil {
		return nil, err
	}
	// Let every subscriber catch up with the last update, or give up after 30 s.
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
wait:
	for _, s := range subs {
		for s.last.Load() < st.Index {
			select {
			case <-s.moved:
			case <-s.closed:
				continue wait
			case <-deadline.C:
				break wait
			}
		}
	}
	cancel()
	out.Expected = out.Loaded.Acked * int64(len(subs))
	for _, s := range subs {
		<-s.closed
		n := s.got.Load()
		out.Delivered += n
		out.MissedMax = max(out.MissedMax, out.Loaded.Acked-n)
		if p := s.ended.Load(); p != nil && !errors.Is(*p, context.Canceled) {
			out.CutOff++
		}
	}
	out.Lag = lag.Summary()
	if out.Baseline.IngestRate > 0 {
		out.RateDrop = 100 * (1 - out.Loaded.IngestRate/out.Baseline.IngestRate)
	}
	return out, nil
}

var (
	sepEvent = []byte("\r\n\r\n")
	sepData  = []byte("data: ")
	sepID    = []byte("id: ")
)

func (s *subscriber) run(ctx context.Context, u string, lag *Hist) {
	defer close(s.closed)
	err := s.read(ctx, u, lag)
	s.ended.Store(&err)
}

func (s *subscriber) read(ctx context.Context, u string, lag *Hist) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req) // no timeout: the stream is long-lived
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("subscribe: %s", resp.Status)
	}
	buf := make([]byte, 0, 256<<10)
	dumped := false
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // a frame longer than the buffer: grow
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		now := time.Now().UnixMicro()
		end := bytes.LastIndex(buf, sepEvent)
		if end >= 0 {
			done := buf[:end+len(sepEvent)]
			if !dumped {
				// The first data frame is the dump of every key.
				i := bytes.Index(done, sepEvent)
				if bytes.Contains(done[:i], sepData) {
					dumped = true
					s.last.Store(eventID(done[:i]))
					close(s.ready)
				}
				done = done[i+len(sepEvent):]
			}
			if dumped && len(done) > 0 {
				if c := s.account(done, now, lag); c > 0 {
					last := bytes.LastIndex(done[:len(done)-len(sepEvent)], sepEvent)
					s.last.Store(eventID(done[last+1:]))
				}
			}
			buf = append(buf[:0], buf[end+len(sepEvent):]...)
			select {
			case s.moved <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return err
		}
	}
}

// lagEvery is how often a change event's lag is read: one in lagEvery,
// standing for itself and the lagEvery-1 after it. Reading every event's
// value would cost the tool more CPU than the server spends sending it.
const lagEvery = 16

// account counts the change events in evs and records their lag.
func (s *subscriber) account(evs []byte, now int64, lag *Hist) int64 {
	total := int64(bytes.Count(evs, sepData))
	for k := int64(0); k < total; k++ {
		i := bytes.Index(evs, sepData)
		evs = evs[i+len(sepData):]
		if k%lagEvery == 0 {
			if v, ok := firstValue(evs); ok {
				lag.Record(time.Duration(now-v)*time.Microsecond, min(lagEvery, total-k))
			}
		}
	}
	s.got.Add(total)
	return total
}

// eventID reads the "id: N" line at the start of an event (0 if none).
func eventID(ev []byte) uint64 {
	i := bytes.Index(ev, sepID)
	if i < 0 {
		return 0
	}
	ev = ev[i+len(sepID):]
	j := bytes.IndexByte(ev, '\r')
	if j < 0 {
		return 0
	}
	id, _ := strconv.ParseUint(string(ev[:j]), 10, 64)
	return id
}

// firstValue reads the value of the change event ev starts with:
// {"key":value}.
func firstValue(ev []byte) (int64, bool) {
	j := bytes.IndexByte(ev, '}')
	if j < 0 {
		return 0, false
	}
	k := bytes.LastIndexByte(ev[:j], ':')
	if k < 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(ev[k+1:j]), 64)
	return int64(v), err == nil
}
