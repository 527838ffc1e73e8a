package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// BenchmarkAppend measures acknowledged writes through the committer, by
// fsync policy, ops per Append call and concurrent callers. Compare runs
// with: go test -run '^$' -bench Append -count 6 ./engine | tee new.txt;
// benchstat old.txt new.txt
func BenchmarkAppend(b *testing.B) {
	for _, policy := range []FsyncPolicy{FsyncAlways, FsyncInterval, FsyncNever} {
		for _, callers := range []int{1, 4} {
			for _, batch := range []int{1, 16, 256, 4096} {
				if policy != FsyncAlways && batch == 1 && callers == 4 {
					continue
				}
				name := fmt.Sprintf("fsync=%s/callers=%d/batch=%d", policy, callers, batch)
				b.Run(name, func(b *testing.B) { benchAppend(b, policy, callers, batch) })
			}
		}
	}
}

func benchAppend(b *testing.B, policy FsyncPolicy, callers, batch int) {
	db, err := Open(b.TempDir(), Options{Fsync: policy, SnapshotInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ops := make([][]sample.Op, callers)
	for c := range ops {
		for i := range batch {
			ops[c] = append(ops[c], sample.Op{Code: sample.Set, Key: fmt.Sprintf("bench.c%d.k%d", c, i%1000), Value: float64(i)})
		}
	}
	b.ReportAllocs()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N/callers + 1
	for c := range callers {
		wg.Go(func() {
			errs := make([]error, batch)
			for range per {
				if err := db.Append(context.Background(), ops[c], errs); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := float64(per * callers * batch)
	b.ReportMetric(total/time.Since(start).Seconds(), "ops/s")
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/total, "ns/op-acked")
}

// BenchmarkAppendManyKeys measures the committer's CPU a write at real
// cardinality: groups of 4096 SETs over 100k keys in a shuffled order
// (as many connections interleave), no fsync, so that what is timed is
// the committer's lookups, records and hot state. ns/op is per write.
func BenchmarkAppendManyKeys(b *testing.B) {
	const keys, batch = 100_000, 4096
	db, err := Open(b.TempDir(), Options{Fsync: FsyncNever, SnapshotInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("host%05d.cpu.load", i)
	}
	order := rand.New(rand.NewPCG(1, 2)).Perm(keys)
	ops := make([]sample.Op, batch)
	errs := make([]error, batch)
	for i := 0; i < keys; i += batch { // create every series first
		n := min(batch, keys-i)
		for j := range n {
			ops[j] = sample.Op{Code: sample.Set, Key: names[i+j], Value: 1}
		}
		if err := db.Append(context.Background(), ops[:n], errs[:n]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	next := 0
	var text strings.Builder
	for b.Loop() {
		// The keys of a batch in one fresh string, as a parser leaves them:
		// the committer finds their bytes in cache, not scattered.
		text.Reset()
		for j := range ops {
			text.WriteString(names[order[(next+j)%keys]])
		}
		all, at := text.String(), 0
		for j := range ops {
			n := len(names[order[next]])
			ops[j] = sample.Op{Code: sample.Set, Key: all[at : at+n], Value: float64(next)}
			at += n
			next = (next + 1) % keys
		}
		if err := db.Append(context.Background(), ops, errs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/write")
}

// BenchmarkApply measures the in-memory half of a write: decoding a WAL
// record and applying it to the hot state (atomics and history ring). It
// is also the per-record cost of replay at startup.
func BenchmarkApply(b *testing.B) {
	for _, keys := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			db := &DB{opts: Options{RingSize: 120}.withDefaults(), committer: committer{series: make(map[string]*series)}}
			bodies := make([][]byte, keys*4)
			ordinals := make(map[string]uint64)
			for i := range bodies {
				k := fmt.Sprintf("host%d.cpu.load", i%keys)
				ordinals[k]++
				bodies[i] = record.Append(nil, &record.Record{Code: sample.Set, Time: int64(i), Key: k, Value: float64(i), Ordinal: ordinals[k]})
			}
			b.ReportAllocs()
			var r record.Record
			i := 0
			for b.Loop() {
				if i == len(bodies) { // start over with a fresh state
					b.StopTimer()
					db.series = make(map[string]*series)
					i = 0
					b.StartTimer()
				}
				key, err := record.DecodeView(bodies[i], &r)
				if err != nil {
					b.Fatal(err)
				}
				if err := db.replay(&r, key, uint64(i+1)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkHotState measures the memory of the hot state: series with a
// full ring each (120 points of a random walk in steps of 0.01), in heap
// bytes per series after a GC. No snapshot runs (its transaction would be
// in flight, and compaction after it), so the figure also holds the
// WAL's buffers, the same on both sides of a comparison. Run it on two
// commits to compare (docs/benchmarks.md).
func BenchmarkHotState(b *testing.B) {
	const keys, points = 100_000, 120
	for range b.N {
		db, err := Open(b.TempDir(), Options{SnapshotInterval: time.Hour, SnapshotRecords: 1 << 30, Fsync: FsyncInterval})
		if err != nil {
			b.Fatal(err)
		}
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		t0 := time.Now().Add(-time.Hour).UnixMilli()
		ops := make([]sample.Op, keys)
		errs := make([]error, keys)
		for i := range ops {
			ops[i] = sample.Op{Code: sample.Set, Key: fmt.Sprintf("host%05d.cpu.load", i)}
		}
		for p := range points {
			for i := range ops {
				ops[i].Value = float64((i*7+p*13)%2001-1000) / 100
				ops[i].Time = t0 + int64(p*10_000+i%7)
			}
			for lo := 0; lo < keys; lo += 1000 {
				if err := db.Append(context.Background(), ops[lo:lo+1000], errs[lo:lo+1000]); err != nil {
					b.Fatal(err)
				}
			}
		}
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/keys, "heap-bytes/series")
		runtime.KeepAlive(db)
		db.Close()
	}
}

// BenchmarkEventsVsSeries writes status events (AppendEvents) and, as
// the peer in the same run, as many GAUGE writes (Append), in batches
// from 4 callers under -fsync=interval: what an event costs against a
// point, per item written and acknowledged (ns/op-acked; the final
// snapshot at Close is not counted) (docs/benchmarks.md).
func BenchmarkEventsVsSeries(b *testing.B) {
	for _, batch := range []int{16, 256} {
		b.Run(fmt.Sprintf("events/batch=%d", batch), func(b *testing.B) {
			db, err := Open(b.TempDir(), Options{Fsync: FsyncInterval, SnapshotInterval: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				b.StopTimer() // the final snapshot is not the write path
				db.Close()
			}()
			names := [4]string{"bench.c0", "bench.c1", "bench.c2", "bench.c3"}
			b.ReportAllocs()
			start := time.Now()
			var wg sync.WaitGroup
			per := b.N/4 + 1
			for c := range 4 {
				wg.Go(func() {
					evs := make([]sample.Event, batch)
					for range per {
						for i := range evs {
							evs[i] = sample.Event{Service: names[c], Level: 1, Message: "backup finished in 4 min 12 s, 3.2 GiB"}
						}
						if err := db.AppendEvents(context.Background(), evs); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			total := float64(per * 4 * batch)
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/total, "ns/op-acked")
		})
		b.Run(fmt.Sprintf("series/batch=%d", batch), func(b *testing.B) { benchAppend(b, FsyncInterval, 4, batch) })
	}
}
