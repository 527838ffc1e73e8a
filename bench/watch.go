package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ProcSample is one reading of a server process.
type ProcSample struct {
	T    float64 `json:"t"`     // seconds since the watch started
	CPU  float64 `json:"cpu_s"` // CPU seconds (utime+stime) since the process started
	RSS  int64   `json:"rss_bytes"`
	Disk int64   `json:"disk_bytes"` // the files under its data directory
}

// watcher reads a server's CPU time, RSS and data-directory size every
// period, from its start until Stop.
type watcher struct {
	srv   *Server
	start time.Time
	every time.Duration
	moved chan struct{} // poked after each sample
	stop  context.CancelFunc
	done  chan struct{}

	mu      sync.Mutex // guards samples and err.
	samples []ProcSample
	err     error
}

// watch takes a first sample of srv now and then one every period.
func watch(ctx context.Context, srv *Server, every time.Duration) *watcher {
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{srv: srv, start: time.Now(), every: every, moved: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	w.sample()
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.sample()
			}
		}
	}()
	return w
}

func (w *watcher) sample() {
	t := time.Since(w.start).Seconds()
	cpu, err1 := w.srv.CPU()
	rss, err2 := w.srv.RSS()
	disk, err3 := DiskBytes(w.srv.Dir)
	w.mu.Lock()
	if err := errors.Join(err1, err2, err3); err != nil {
		if w.err == nil {
			w.err = err
		}
	} else {
		w.samples = append(w.samples, ProcSample{T: t, CPU: cpu.Seconds(), RSS: rss, Disk: disk})
	}
	w.mu.Unlock()
	select {
	case w.moved <- struct{}{}:
	default:
	}
}

// since is the time t in seconds since the watch started.
func (w *watcher) since(t time.Time) float64 { return t.Sub(w.start).Seconds() }

// Stop ends the watch and returns its samples and the first error a
// sample met.
func (w *watcher) Stop() ([]ProcSample, error) {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.err
}

// waitIdle waits until the server has used less than ic.Quiet of a core
// in every step of the samples for ic.Window, counting only steps from
// from (seconds since the watch started), for at most ic.Most. It returns
// when that quiet stretch began: the end of the work the server did after
// from, to a sampling period. idle is false when ic.Most passed first;
// the time is then the last moment the server was busy.
func (w *watcher) waitIdle(ctx context.Context, from float64, ic IdleConfig) (float64, bool, error) {
	deadline := time.Now().Add(ic.Most)
	for {
		w.mu.Lock()
		quiet, long := quietSince(w.samples, from, ic.Window.Seconds(), ic.Quiet)
		err := w.err
		w.mu.Unlock()
		if err != nil {
			return 0, false, err
		}
		if long {
			return quiet, true, nil
		}
		if time.Now().After(deadline) {
			return quiet, false, nil
		}
		select {
		case <-w.moved:
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
	}
}

// quietSince finds the trailing run of samples, starting no earlier than
// from, whose every step used less than quiet of a core. It returns the
// run's start (from when there are no samples past it) and whether the
// run lasts at least window seconds.
func quietSince(s []ProcSample, from, window, quiet float64) (float64, bool) {
	j := len(s) - 1
	for j > 0 && s[j-1].T >= from && s[j].CPU-s[j-1].CPU < quiet*(s[j].T-s[j-1].T) {
		j--
	}
	if j < 0 || s[j].T < from {
		return from, false
	}
	return s[j].T, s[len(s)-1].T-s[j].T >= window
}

// WatchedRun is a load on one server, watched from before its first byte
// until the server stopped. Times are seconds from the first byte sent.
type WatchedRun struct {
	Server string   `json:"server"`
	Flags  []string `json:"flags,omitempty"`
	Result *Result  `json:"result"`
	// VisibleSeconds: until its readers saw every series and sample of
	// the load (Sonde: /api/v1/stats; VictoriaMetrics:
	// /api/v1/series/count, then sum(count_over_time(...[1d]))), and
	// CPUVisible the server's CPU seconds from its start until then.
	// Only when the run waited for it.
	VisibleSeconds float64 `json:"visible_s,omitempty"`
	CPUVisible     float64 `json:"cpu_visible_s,omitempty"`
	// BusySeconds: until the server's CPU went quiet after the load (or,
	// when Idle is false, the last busy moment of the wait). RestCPU is the
	// share of a core it used over the last Idle.Window of the wait: its
	// cost at rest, when Idle.
	BusySeconds float64 `json:"busy_s"`
	Idle        bool    `json:"idle"`
	RestCPU     float64 `json:"rest_cpu_share"`
	// CPULoad is the server's CPU seconds from the first byte until it
	// went quiet, so the work it deferred past the load counts;
	// CPUPerSample is that in µs per sample sent. CPUSeconds is over its
	// whole life: start, load, deferred work and stop.
	CPULoad      float64 `json:"cpu_load_s"`
	CPUPerSample float64 `json:"cpu_us_per_sample"`
	CPUSeconds   float64 `json:"cpu_s"`
	PeakRSS      int64   `json:"peak_rss_bytes"` // over its whole life, stop included: the kernel's, or a higher sampled RSS
	PeakDisk     int64   `json:"peak_disk_bytes"`
	// DiskBytes is its data directory after the stop.
	DiskBytes      int64   `json:"disk_bytes"`
	BytesPerSample float64 `json:"disk_bytes_per_sample"`
	StopSeconds    float64 `json:"stop_s"` // SIGTERM to exit
	// History is Sonde's own account of its stored history once it went
	// quiet, when its snapshot covered every write by then.
	History  *HistoryStats `json:"sonde_history,omitempty"`
	Timeline []ProcSample  `json:"timeline"`
}

// runWatched sends cfg's load to srv (cfg.Target is set here), watching
// the process; waits, if visible, until every sample is visible; waits
// for the server to go quiet; then stops it and reads what it used.
func runWatched(ctx context.Context, srv *Server, cfg Config, ic IdleConfig, visible bool) (*WatchedRun, error) {
	var w *watcher
	fail := func(err error) (*WatchedRun, error) {
		if w != nil {
			w.Stop()
		}
		srv.Kill()
		return nil, fmt.Errorf("%s: %w", srv.Name, err)
	}
	w = watch(ctx, srv, ic.Every)
	res, shownAt, err := loadInto(ctx, srv, cfg, visible)
	if err != nil {
		return fail(err)
	}
	p := &WatchedRun{Server: srv.Name, Result: res}
	from := res.Start.Add(time.Duration(res.IngestSeconds * float64(time.Second)))
	if visible {
		from = shownAt
		p.VisibleSeconds = shownAt.Sub(res.Start).Seconds()
		cpu, err := srv.CPU()
		if err != nil {
			return fail(err)
		}
		p.CPUVisible = cpu.Seconds()
	}
	quiet, idle, err := w.waitIdle(ctx, w.since(from), ic)
	if err != nil {
		return fail(err)
	}
	off := w.since(res.Start)
	samples, err := w.Stop()
	w = nil
	if err != nil {
		return fail(err)
	}
	if srv.Name == "sonde" {
		p.History, _ = SondeHistory(ctx, srv.Query, 0) // nil unless it covers every write
	}
	if err := srv.Stop(); err != nil {
		return nil, err
	}
	// The samples' times from the first byte; the first sample was taken
	// just before it, with the server idle.
	var sampledRSS int64
	for i := range samples {
		samples[i].T -= off
		p.PeakDisk = max(p.PeakDisk, samples[i].Disk)
		sampledRSS = max(sampledRSS, samples[i].RSS)
		if samples[i].T <= quiet-off {
			p.CPULoad = samples[i].CPU - samples[0].CPU
		}
	}
	p.Timeline, p.BusySeconds, p.Idle = samples, quiet-off, idle
	p.RestCPU = restCPU(samples, ic.Window.Seconds())
	p.StopSeconds = srv.StopTime.Seconds()
	// Linux keeps a process's high-water RSS lazily (it is brought up to
	// date on unmaps and at exit), so the peak it reports at exit may be
	// a few pages under an RSS read while it ran: the peak is the higher.
	cpu, peak, _ := srv.Usage()
	p.CPUSeconds, p.PeakRSS = cpu.Seconds(), max(peak, sampledRSS)
	if p.DiskBytes, err = DiskBytes(srv.Dir); err != nil {
		return nil, err
	}
	if res.Sent > 0 {
		p.CPUPerSample = p.CPULoad / float64(res.Sent) * 1e6
		p.BytesPerSample = float64(p.DiskBytes) / float64(res.Sent)
	}
	return p, nil
}

// loadInto sends cfg's load to srv: Sonde's command port or its Graphite
// listener, by cfg.Scenario, or the peer's Graphite listener; with no
// replies to count, until the server has counted every line. With
// visible, it then waits until the server's counts show every series and
// sample of the load, and returns when they did. The counts are read
// every cfg.Keys/10,000 ms, at least cfg.Poll.
func loadInto(ctx context.Context, srv *Server, cfg Config, visible bool) (*Result, time.Time, error) {
	sh, err := shownBy(ctx, srv, cfg.Prefix)
	if err != nil {
		return nil, time.Time{}, err
	}
	cfg.Target = srv.Ingest
	if cfg.Scenario == "graphite" {
		cfg.Taken = sh.taken
		if srv.Name == "sonde" {
			cfg.Target = srv.Graphite
		}
	}
	// Reading Sonde's counts walks its series today: at 1M keys they are
	// read every 100 ms, not every 5.
	cfg.Poll = max(cfg.Poll, time.Duration(cfg.Keys/10_000)*time.Millisecond)
	cfg.setDefaults()
	res, err := Run(ctx, cfg)
	if err != nil {
		return nil, time.Time{}, err
	}
	if res.Errors > 0 {
		return nil, time.Time{}, fmt.Errorf("%d errors in the load, the first: %s", res.Errors, res.FirstErr)
	}
	if !visible {
		return res, time.Time{}, nil
	}
	if err := waitShown(ctx, sh, int64(cfg.Keys), res.Sent, cfg.VisibleTimeout, cfg.Poll); err != nil {
		return nil, time.Time{}, err
	}
	return res, time.Now(), nil
}

// restCPU is the share of a core used from the last sample at least
// window seconds before the end to the end (over all the samples when
// they span less).
func restCPU(s []ProcSample, window float64) float64 {
	if len(s) < 2 {
		return 0
	}
	last := s[len(s)-1]
	k := len(s) - 2
	for k > 0 && last.T-s[k].T < window {
		k--
	}
	return (last.CPU - s[k].CPU) / (last.T - s[k].T)
}
