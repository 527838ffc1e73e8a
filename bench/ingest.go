package bench

import (
	"context"
	"fmt"
	"slices"
)

// IngestConfig is the raw ingest comparison of issue 11: Count samples
// over Keys keys, as fast as the connections take them, to a fresh Sonde
// over acknowledged SETs, a fresh Sonde over Graphite plaintext and a
// fresh peer over Graphite plaintext, Runs times. Each server is watched
// from the first byte until its CPU goes quiet, so the work it defers
// past the last reply (snapshots, merges) counts in its CPU and its rate.
type IngestConfig struct {
	Load Config // Keys, Count, Conns, Shape, Prefix; Rate and Duration do not apply
	Runs int    // 3 when 0
	Pair
}

// IngestCase is one server and protocol of the comparison.
type IngestCase struct {
	Server   string `json:"server"`
	Protocol string `json:"protocol"`
}

// IngestCases are the comparison's cases, in the order each run takes them.
var IngestCases = []IngestCase{{"sonde", "tcp"}, {"sonde", "graphite"}, {"victoria-metrics", "graphite"}}

// IngestRun is one case of one run (the case's server is WatchedRun's).
type IngestRun struct {
	Protocol string `json:"protocol"`
	Run      int    `json:"run"`
	WatchedRun
	// Rate is the samples sent over BusySeconds: from the first byte until
	// the server's CPU went quiet.
	Rate float64 `json:"rate_to_idle"`
}

// Ingest runs the comparison; the runs of each case are in run order.
func Ingest(ctx context.Context, ic IngestConfig) ([]IngestRun, error) {
	if ic.Runs <= 0 {
		ic.Runs = 3
	}
	cfg := ic.Load
	if cfg.Count <= 0 || cfg.Keys <= 0 {
		return nil, fmt.Errorf("ingest: want a sample count and a key count, got %d samples over %d keys", cfg.Count, cfg.Keys)
	}
	cfg.Rate, cfg.Duration, cfg.Query = 0, 0, ""
	cfg.setDefaults()
	ic.Idle.setDefaults()
	var out []IngestRun
	for run := 1; run <= ic.Runs; run++ {
		for _, c := range IngestCases {
			lc := cfg
			lc.Scenario = c.Protocol
			ic.logf("== ingest run %d of %d: %s over %s", run, ic.Runs, c.Server, c.Protocol)
			r, err := ic.watchOne(ctx, fmt.Sprintf("ingest%d-%s-%s", run, c.Server, c.Protocol), c.Server, lc, false)
			if err != nil {
				return out, fmt.Errorf("ingest run %d: %w", run, err)
			}
			ir := IngestRun{Protocol: c.Protocol, Run: run, WatchedRun: *r}
			if r.BusySeconds > 0 {
				ir.Rate = float64(r.Result.Sent) / r.BusySeconds
			}
			out = append(out, ir)
		}
	}
	return out, nil
}

// IngestMedian is a case's median over the runs.
type IngestMedian struct {
	IngestCase
	CPUPerSample float64 // µs of server CPU per sample
	Rate         float64 // samples per second until the CPU went quiet
	Idle         bool    // every run went quiet within the wait
}

// IngestMedians returns each case's medians, in IngestCases' order.
func IngestMedians(runs []IngestRun) []IngestMedian {
	var out []IngestMedian
	for _, c := range IngestCases {
		var cpu, rate []float64
		idle := true
		for _, r := range runs {
			if r.Server == c.Server && r.Protocol == c.Protocol {
				cpu, rate = append(cpu, r.CPUPerSample), append(rate, r.Rate)
				idle = idle && r.Idle
			}
		}
		if len(cpu) > 0 {
			out = append(out, IngestMedian{IngestCase: c, CPUPerSample: medianOf(cpu), Rate: medianOf(rate), Idle: idle})
		}
	}
	return out
}

// medianOf returns the median of v (the mean of the middle two for an
// even count); v is sorted in place.
func medianOf(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
