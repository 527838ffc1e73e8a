package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"
)

// The forward scenario: does remote_write keep up with flat-out ingest?
// Both rates are measured in the same run, on the same machine, so the
// ratio holds however fast the machine is that day.
//
//  1. Steady: Sonde forwards to VictoriaMetrics while the load is sent
//     flat out. Over the load's middle (its first and last second left
//     out), the WAL records the forwarder finished (its position) are set
//     against the records written: a ratio of 1.0 means the backlog did
//     not grow.
//  2. Capacity: a second Sonde takes the same load while its receiver is
//     down, then the receiver starts: how fast the forwarder drains the
//     backlog, against how fast the load went in.

// ForwardConfig configures the forward scenario.
type ForwardConfig struct {
	Load Config
	Pair Pair
	// Options are more fields of the -remote-write value, e.g.
	// ",shards=8".
	Options string
	// Receivers are the receivers measured, in order; default null, then
	// victoria-metrics.
	Receivers []string
}

// ForwardResult is what the forward scenario measured, once per receiver.
type ForwardResult struct {
	Machine   Machine        `json:"machine"`
	Receivers []ForwardPhase `json:"receivers"`
}

// ForwardPhase is what the scenario measured with one receiver:
// "victoria-metrics", or "null" (a server in sonde-bench that reads each
// request and answers 204: what forwarding costs Sonde alone).
type ForwardPhase struct {
	Receiver string `json:"receiver"`
	// Steady phase.
	Ingest         *Result `json:"ingest"`
	WindowSeconds  float64 `json:"window_s"`
	WrittenRecords int64   `json:"written_records"` // WAL records written in the window
	SentRecords    int64   `json:"sent_records"`    // WAL records the forwarder finished in the window
	SteadyRatio    float64 `json:"steady_ratio"`    // SentRecords / WrittenRecords
	BacklogMax     uint64  `json:"backlog_max"`
	BacklogEnd     uint64  `json:"backlog_at_load_end"`
	CatchUpSeconds float64 `json:"catch_up_s"` // from the load's end to an empty backlog
	// Backlog is the destination's backlog (records) every 100 ms of the
	// steady load: [seconds since the start, records].
	Backlog [][2]float64 `json:"backlog"`
	// Capacity phase.
	Drained       int64   `json:"drained_records"`
	IngestRate    float64 `json:"capacity_ingest_rate"` // records per second the load went in at
	DrainRate     float64 `json:"drain_rate"`           // records per second the forwarder drained
	CapacityRatio float64 `json:"capacity_ratio"`       // DrainRate / IngestRate
}

type forwardSample struct {
	at      time.Time
	index   uint64 // WAL records written
	through uint64 // WAL records the forwarder finished
	backlog uint64
	sent    int64
}

// sondeForward reads the engine's index and the destination's figures.
func sondeForward(ctx context.Context, addr, dest string) (forwardSample, error) {
	var st map[string]json.RawMessage
	s := forwardSample{at: time.Now()}
	if err := getJSON(ctx, "http://"+addr+"/api/v1/stats", &st); err != nil {
		return s, err
	}
	var e struct {
		Index uint64 `json:"wal_index"`
	}
	var d struct {
		Through uint64 `json:"through"`
		Backlog uint64 `json:"backlog"`
		Sent    int64  `json:"sent"`
	}
	if err := json.Unmarshal(st["engine"], &e); err != nil {
		return s, fmt.Errorf("read engine stats: %w", err)
	}
	if err := json.Unmarshal(st["remote_write."+dest], &d); err != nil {
		return s, fmt.Errorf("read remote_write stats: %w", err)
	}
	s.index, s.through, s.backlog, s.sent = e.Index, d.Through, d.Backlog, d.Sent
	return s, nil
}

// Forward runs the forward scenario with each receiver.
func Forward(ctx context.Context, fc ForwardConfig) (*ForwardResult, error) {
	out := &ForwardResult{Machine: ThisMachine()}
	receivers := fc.Receivers
	if len(receivers) == 0 {
		receivers = []string{"null", "victoria-metrics"}
	}
	for _, r := range receivers {
		if r != "null" && r != "victoria-metrics" {
			return nil, fmt.Errorf("unknown receiver %q (null, victoria-metrics)", r)
		}
		p, err := forwardPhases(ctx, fc, r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		out.Receivers = append(out.Receivers, *p)
	}
	return out, nil
}

// receiver is a remote_write receiver the scenario starts and stops.
type receiver interface {
	Stop() error
	Kill()
}

// startReceiver starts kind on addr.
func startReceiver(ctx context.Context, fc ForwardConfig, kind, addr, dir string) (receiver, error) {
	if kind == "victoria-metrics" {
		return StartVictoriaMetricsAt(ctx, fc.Pair.PeerBin, dir, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("start the null receiver: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(ln)
	return nullReceiver{srv}, nil
}

type nullReceiver struct{ srv *http.Server }

func (n nullReceiver) Stop() error { return n.srv.Close() }
func (n nullReceiver) Kill()       { n.srv.Close() }

func forwardPhases(ctx context.Context, fc ForwardConfig, kind string) (*ForwardPhase, error) {
	out := &ForwardPhase{Receiver: kind}
	vmAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	dest := func(addr string) []string {
		return append([]string{"-remote-write", "http://" + addr + "/api/v1/write,name=vm" + fc.Options}, fc.Pair.SondeFlags...)
	}

	// 1. Steady.
	logf := fc.Pair.logf
	logf("== %s, steady: flat-out load while forwarding", kind)
	vm, err := startReceiver(ctx, fc, kind, vmAddr, filepath.Join(fc.Pair.WorkDir, kind+"-steady"))
	if err != nil {
		return nil, err
	}
	defer vm.Kill()
	sonde, err := StartSonde(ctx, fc.Pair.SondeBin, filepath.Join(fc.Pair.WorkDir, kind+"-sonde-steady"), dest(vmAddr)...)
	if err != nil {
		return nil, err
	}
	defer sonde.Kill()
	cfg := fc.Load
	cfg.Target, cfg.Query = sonde.Ingest, ""
	var mu sync.Mutex
	var samples []forwardSample
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for pollCtx.Err() == nil {
			if s, err := sondeForward(pollCtx, sonde.Query, "vm"); err == nil {
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
			_ = pause(pollCtx, 100*time.Millisecond)
		}
	}()
	res, err := Run(ctx, cfg)
	stopPoll()
	<-polled
	if err != nil {
		return nil, err
	}
	out.Ingest = res
	end := res.Start.Add(time.Duration(res.IngestSeconds * float64(time.Second)))
	var first, last *forwardSample
	for i := range samples {
		s := &samples[i]
		out.Backlog = append(out.Backlog, [2]float64{s.at.Sub(res.Start).Seconds(), float64(s.backlog)})
		if s.at.Before(res.Start.Add(time.Second)) || s.at.After(end.Add(-time.Second)) {
			continue
		}
		if first == nil {
			first = s
		}
		last = s
		out.BacklogMax = max(out.BacklogMax, s.backlog)
	}
	if first == nil || last == first {
		return nil, fmt.Errorf("the load took %.1f s: too short to measure a window (send more with -count)", res.IngestSeconds)
	}
	out.WindowSeconds = last.at.Sub(first.at).Seconds()
	out.WrittenRecords = int64(last.index - first.index)
	out.SentRecords = int64(last.through - first.through)
	out.SteadyRatio = float64(out.SentRecords) / float64(out.WrittenRecords)
	s, err := sondeForward(ctx, sonde.Query, "vm")
	if err != nil {
		return nil, err
	}
	out.BacklogEnd = s.backlog
	for s.backlog > 0 {
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
		if s, err = sondeForward(ctx, sonde.Query, "vm"); err != nil {
			return nil, err
		}
	}
	out.CatchUpSeconds = time.Since(end).Seconds()
	sonde.Stop()
	vm.Stop()

	// 2. Capacity: the load goes in while the receiver is down.
	logf("== %s, capacity: the same load with the receiver down, then the backlog drained", kind)
	vmAddr, err = freePort()
	if err != nil {
		return nil, err
	}
	sonde, err = StartSonde(ctx, fc.Pair.SondeBin, filepath.Join(fc.Pair.WorkDir, kind+"-sonde-capacity"), dest(vmAddr)...)
	if err != nil {
		return nil, err
	}
	defer sonde.Kill()
	cfg.Target, cfg.Prefix = sonde.Ingest, cfg.Prefix+"c"
	res, err = Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	before, err := sondeForward(ctx, sonde.Query, "vm")
	if err != nil {
		return nil, err
	}
	out.IngestRate = float64(res.Acked) / res.IngestSeconds
	vm, err = startReceiver(ctx, fc, kind, vmAddr, filepath.Join(fc.Pair.WorkDir, kind+"-capacity"))
	if err != nil {
		return nil, err
	}
	defer vm.Kill()
	// The drain runs from the first acknowledged request (the forwarder's
	// retry backoff is not its speed) to an empty backlog.
	var start forwardSample
	for {
		s, err := sondeForward(ctx, sonde.Query, "vm")
		if err != nil {
			return nil, err
		}
		if start.at.IsZero() && s.through > before.through {
			start = s
		}
		if !start.at.IsZero() && s.backlog == 0 {
			out.Drained = int64(s.through - start.through)
			out.DrainRate = float64(out.Drained) / s.at.Sub(start.at).Seconds()
			break
		}
		if err := pause(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	out.CapacityRatio = out.DrainRate / out.IngestRate
	sonde.Stop()
	vm.Stop()
	return out, nil
}
