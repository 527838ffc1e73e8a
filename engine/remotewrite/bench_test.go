package remotewrite

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// BenchmarkDrain: how fast a forwarder drains a backlog of 1M records
// into a receiver that only reads the requests: Sonde's own side of
// forwarding (reading the WAL, cutting, encoding, compressing, sending).
// records/s is the figure.
func BenchmarkDrain(b *testing.B) {
	const n = 1_000_000
	for range b.N {
		b.StopTimer()
		var up atomic.Bool
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if !up.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		dir := b.TempDir()
		f, err := Prepare(dir+"/remote_write", Config{URL: srv.URL, Name: "b", MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		db, err := engine.Open(dir, engine.Options{Holds: []*engine.Hold{f.Hold()}, Fsync: engine.FsyncNever})
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Start(db); err != nil {
			b.Fatal(err)
		}
		ops := make([]sample.Op, 10000)
		errs := make([]error, len(ops))
		base := time.Now().Add(-time.Hour).UnixMilli()
		for i := range n / len(ops) {
			for j := range ops {
				ops[j] = sample.Op{Code: sample.Set, Key: fmt.Sprintf("bench.k%d", j), Value: float64(i), Time: base + int64(i)}
			}
			if err := db.Append(context.Background(), ops, errs); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		up.Store(true)
		for f.Stats().Backlog > 0 {
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
		b.StopTimer()
		f.Close()
		db.Close()
		srv.Close()
	}
}
