package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DiskConfig measures the floor that a disk puts under acknowledged
// latency with -fsync=always: what an ideal group-commit log, doing no
// other work at all, would achieve.
type DiskConfig struct {
	Dir         string        // a directory on the disk under test (the data directory's filesystem)
	Rate        float64       // samples arriving per second
	Duration    time.Duration // how long to run
	RecordBytes int           // bytes a sample adds to the log (Sonde's WAL: about 40)
	SegmentSize int           // the log starts a new file past this size (tidwall/wal: 8 MiB)
}

// DiskResult is the latency an ideal group commit gives each sample.
type DiskResult struct {
	Dir      string  `json:"dir"`
	Rate     float64 `json:"rate"`
	Seconds  float64 `json:"seconds"`
	Groups   int64   `json:"groups"` // write+fsync rounds
	Bytes    int64   `json:"bytes"`
	Fsync    Summary `json:"fsync"`   // each fsync call
	Latency  Summary `json:"latency"` // each sample: arrival to the end of the fsync that covers it
	Segments int     `json:"segments"`
}

// Disk runs a group-commit loop on dc.Dir: samples arrive at dc.Rate,
// evenly spaced; each round writes every sample that arrived since the
// previous round, fsyncs, and starts a new file past dc.SegmentSize, the
// way Sonde's WAL does. A sample's latency runs from its arrival to the
// end of that fsync. The loop spends no CPU on the samples themselves, so
// no server that acknowledges after fsync can do better on this disk
// under the same conditions (run a load next to it to see the effect of a
// busy CPU).
func Disk(ctx context.Context, dc DiskConfig) (DiskResult, error) {
	if dc.Rate <= 0 {
		return DiskResult{}, fmt.Errorf("disk floor: the rate must be positive")
	}
	if dc.RecordBytes <= 0 {
		dc.RecordBytes = 40
	}
	if dc.SegmentSize <= 0 {
		dc.SegmentSize = 8 << 20
	}
	dir, err := os.MkdirTemp(dc.Dir, "sonde-disk-floor-")
	if err != nil {
		return DiskResult{}, fmt.Errorf("disk floor: make the log directory: %w", err)
	}
	defer os.RemoveAll(dir)
	res := DiskResult{Dir: dc.Dir, Rate: dc.Rate}
	var lat, fs Hist
	var f *os.File
	written := 0
	open := func() error {
		if f != nil {
			if err := f.Close(); err != nil {
				return fmt.Errorf("disk floor: close a segment: %w", err)
			}
		}
		f, err = os.Create(filepath.Join(dir, fmt.Sprintf("%020d", res.Segments)))
		if err != nil {
			return fmt.Errorf("disk floor: create a segment: %w", err)
		}
		res.Segments++
		written = 0
		return nil
	}
	if err := open(); err != nil {
		return res, err
	}
	defer func() { f.Close() }()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	perSample := time.Duration(float64(time.Second) / dc.Rate)
	start := time.Now()
	var arrived int64 // samples that arrived and are in the log
	for ctx.Err() == nil {
		now := time.Now()
		if now.Sub(start) >= dc.Duration {
			break
		}
		due := int64(now.Sub(start) / perSample) // samples arrived so far
		n := due - arrived
		if n == 0 {
			time.Sleep(perSample) // nothing has arrived yet
			continue
		}
		for left := n * int64(dc.RecordBytes); left > 0; {
			w := min(left, int64(len(buf)))
			if _, err := f.Write(buf[:w]); err != nil {
				return res, fmt.Errorf("disk floor: write: %w", err)
			}
			left -= w
			written += int(w)
			res.Bytes += w
		}
		t := time.Now()
		if err := f.Sync(); err != nil {
			return res, fmt.Errorf("disk floor: fsync: %w", err)
		}
		done := time.Now()
		fs.Record(done.Sub(t), 1)
		// The n samples arrived evenly between the arrival of sample
		// arrived+1 and that of sample due; record them in up to 16 slices.
		slices := min(n, 16)
		for s := range slices {
			k := arrived + (n*s+n/2)/slices // a sample in the middle of the slice
			cnt := n*(s+1)/slices - n*s/slices
			lat.Record(done.Sub(start.Add(time.Duration(k)*perSample)), cnt)
		}
		arrived = due
		res.Groups++
		if written >= dc.SegmentSize {
			if err := open(); err != nil {
				return res, err
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.Fsync, res.Latency = fs.Summary(), lat.Summary()
	return res, ctx.Err()
}

// DiskFloor is the disk floor measured twice: on an idle machine, then
// while a Sonde whose data lives in memory (tmpfs) takes Load, so the
// CPU is as busy as in a real run but the disk carries the floor loop
// alone.
type DiskFloor struct {
	Idle     DiskResult `json:"idle"`
	Loaded   DiskResult `json:"loaded"`
	Load     *Result    `json:"load"`
	LoadDir  string     `json:"load_dir"`
	SondeBin string     `json:"-"`
}

// DiskUnderLoad runs Disk idle, then next to load sent to a Sonde started
// from sondeBin with its data in memDir (a tmpfs such as /dev/shm).
func DiskUnderLoad(ctx context.Context, dc DiskConfig, sondeBin, memDir string, load Config) (DiskFloor, error) {
	out := DiskFloor{LoadDir: memDir}
	var err error
	if out.Idle, err = Disk(ctx, dc); err != nil {
		return out, err
	}
	dir, err := os.MkdirTemp(memDir, "sonde-disk-load-")
	if err != nil {
		return out, fmt.Errorf("disk floor: make the in-memory data directory: %w", err)
	}
	defer os.RemoveAll(dir)
	srv, err := StartSonde(ctx, sondeBin, dir)
	if err != nil {
		return out, err
	}
	defer srv.Kill()
	load.Scenario, load.Target, load.Query, load.API = "tcp", srv.Ingest, "", "sonde"
	load.Count, load.Duration = 0, dc.Duration+time.Second
	type loadOut struct {
		res *Result
		err error
	}
	done := make(chan loadOut, 1)
	go func() {
		res, err := Run(ctx, load)
		done <- loadOut{res, err}
	}()
	out.Loaded, err = Disk(ctx, dc)
	lo := <-done
	out.Load = lo.res
	if err != nil {
		return out, err
	}
	if lo.err != nil {
		return out, fmt.Errorf("disk floor: the load beside it: %w", lo.err)
	}
	return out, nil
}
