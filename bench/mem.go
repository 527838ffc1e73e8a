package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// MemConfig measures Sonde's memory at several key counts.
type MemConfig struct {
	Load     Config // Conns, Shape, Prefix; Keys and Count are set per step
	SondeBin string
	Flags    []string // more sonde flags
	WorkDir  string
	KeysList []int
	Points   int // samples per key
	Verify   bool
	Log      io.Writer
}

// MemStep is one key count's figures.
type MemStep struct {
	Keys           int     `json:"keys"`
	Points         int     `json:"points_per_key"`
	BaseRSS        int64   `json:"base_rss_bytes"`       // just after start
	RSS            int64   `json:"rss_bytes"`            // after the load
	PeakRSS        int64   `json:"peak_rss_bytes"`       // over the whole life, the final snapshot at SIGTERM included
	BytesPerSeries float64 `json:"rss_bytes_per_series"` // (RSS - BaseRSS) / Keys
	HeapInuse      int64   `json:"go_heap_inuse_bytes"`
	IngestRate     float64 `json:"ingest_rate"`
	Errors         int64   `json:"errors"`
	StopSeconds    float64 `json:"stop_s"` // SIGTERM to exit: the final snapshot
}

// Mem loads each key count into a fresh Sonde and reads its memory.
func Mem(ctx context.Context, mc MemConfig) ([]MemStep, error) {
	var out []MemStep
	for i, keys := range mc.KeysList {
		dir := filepath.Join(mc.WorkDir, fmt.Sprintf("mem-%d", i))
		// Fresh means empty: a directory left by an earlier run would be
		// loaded first and counted.
		if err := os.RemoveAll(dir); err != nil {
			return out, fmt.Errorf("clear %s: %w", dir, err)
		}
		if mc.Log != nil {
			fmt.Fprintf(mc.Log, "== %d keys x %d points\n", keys, mc.Points)
		}
		srv, err := StartSonde(ctx, mc.SondeBin, dir, mc.Flags...)
		if err != nil {
			return out, err
		}
		st := MemStep{Keys: keys, Points: mc.Points}
		st.BaseRSS, _ = srv.RSS()
		cfg := mc.Load
		cfg.Scenario, cfg.Target, cfg.API = "tcp", srv.Ingest, "sonde"
		cfg.Keys, cfg.Count = keys, int64(keys)*int64(mc.Points)
		cfg.Query = ""
		res, err := Run(ctx, cfg)
		if err != nil {
			srv.Kill()
			return out, err
		}
		st.IngestRate, st.Errors = res.IngestRate, res.Errors
		st.RSS, _ = srv.RSS()
		st.PeakRSS, _ = srv.PeakRSS()
		st.BytesPerSeries = float64(st.RSS-st.BaseRSS) / float64(keys)
		if g, err := goStats(srv.Query); err == nil {
			st.HeapInuse = g.HeapInuse
		}
		if mc.Verify {
			cfg.Query = srv.Query
			if _, _, err := readBack(ctx, cfg); err != nil {
				srv.Kill()
				return out, err
			}
		}
		t := time.Now()
		err = srv.Stop()
		st.StopSeconds = time.Since(t).Seconds()
		// The final snapshot at SIGTERM counts: the kernel's peak over the
		// whole life, read once the process has exited.
		if _, peak, ok := srv.Usage(); ok && peak > st.PeakRSS {
			st.PeakRSS = peak
		}
		out = append(out, st)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

type goMem struct {
	HeapInuse int64 `json:"heap_inuse"`
}

func goStats(addr string) (goMem, error) {
	var s struct {
		Go goMem `json:"go"`
	}
	err := getJSON(context.Background(), "http://"+addr+"/api/v1/stats", &s)
	return s.Go, err
}
