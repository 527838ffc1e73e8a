package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// appendChunkV1 writes the version 1 chunks older Sondes wrote, to test
// that they are still read:
//
//	version 1 byte | count uvarint | first T varint | last T varint |
//	first V 8 bytes | per later point: delta-of-delta T (varint),
//	XOR of V with the previous V: 0x00 when equal, else one byte holding
//	(trailing zero bits + 1) and the shifted XOR as a uvarint.
const chunkVersion1 = 1

func appendChunkV1(dst []byte, pts []sample.Point) []byte {
	dst = append(dst, chunkVersion1)
	dst = binary.AppendUvarint(dst, uint64(len(pts)))
	dst = binary.AppendVarint(dst, pts[0].T)
	dst = binary.AppendVarint(dst, pts[len(pts)-1].T)
	prevV := math.Float64bits(pts[0].V)
	dst = binary.LittleEndian.AppendUint64(dst, prevV)
	prevT, prevD := pts[0].T, int64(0)
	for _, p := range pts[1:] {
		d := p.T - prevT
		dst = binary.AppendVarint(dst, d-prevD)
		prevT, prevD = p.T, d
		v := math.Float64bits(p.V)
		x := v ^ prevV
		prevV = v
		if x == 0 {
			dst = append(dst, 0)
			continue
		}
		tz := bits.TrailingZeros64(x)
		dst = append(dst, byte(tz+1))
		dst = binary.AppendUvarint(dst, x>>tz)
	}
	return dst
}

func TestChunkRoundTrip(t *testing.T) {
	pts := []sample.Point{{T: 1000, V: 1}, {T: 2000, V: 1}, {T: 3000, V: 1.5}, {T: 3000, V: -7},
		{T: 2500, V: math.MaxFloat64}, {T: 1 << 50, V: math.SmallestNonzeroFloat64}, {T: -3, V: 0}}
	// What is written now, and what older Sondes wrote: both are read.
	for version, enc := range map[int]func([]byte, []sample.Point) []byte{3: AppendChunk, 1: appendChunkV1} {
		for n := 1; n <= len(pts); n++ {
			b := enc(nil, pts[:n])
			if int(b[0]) != version {
				t.Fatalf("version %d chunk starts with %d", version, b[0])
			}
			got, err := DecodeChunk(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n {
				t.Fatalf("v%d: %d points back, want %d", version, len(got), n)
			}
			for i := range got {
				if got[i] != pts[i] {
					t.Fatalf("v%d: point %d = %+v, want %+v", version, i, got[i], pts[i])
				}
			}
			if c, first, last, err := chunkHeader(b); err != nil || c != uint64(n) || first != pts[0].T || last != pts[n-1].T {
				t.Fatalf("v%d header: %d %d %d %v", version, c, first, last, err)
			}
		}
	}
}

func TestCommitLoadHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st := &State{Key: "g", Kind: sample.Gauge, Value: 3, Updated: 30, Ordinal: 3, Created: 7}
	if err := s.Commit(10, []Update{{Key: "g", State: st, FirstOrdinal: 1,
		Points: []sample.Point{{T: 10, V: 1}, {T: 20, V: 2}, {T: 30, V: 3}}}}); err != nil {
		t.Fatal(err)
	}
	// A later update of the same incarnation adds to it.
	st2 := &State{Key: "g", Kind: sample.Gauge, Value: 4, Updated: 40, Ordinal: 4, Created: 7, Covers: 15}
	if err := s.Commit(12, []Update{{Key: "g", State: st2, FirstOrdinal: 4, Points: []sample.Point{{T: 40, V: 4}}}}); err != nil {
		t.Fatal(err)
	}
	// A state that names no incarnation is refused, and nothing of the
	// transaction is applied.
	bad := &State{Key: "g", Kind: sample.Gauge, Value: 9, Ordinal: 5}
	if err := s.Commit(99, []Update{{Key: "g", State: bad}}); !errors.Is(err, ErrFormat) || s.Index() != 12 {
		t.Fatalf("commit of a state without Created: %v, index %d", err, s.Index())
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Index() != 12 {
		t.Fatalf("index %d", s.Index())
	}
	var loaded []State
	s.Load(func(st *State) error { loaded = append(loaded, *st); return nil })
	if len(loaded) != 1 || loaded[0].Value != 4 || loaded[0].Created != 7 || loaded[0].Key != "g" || loaded[0].Covers != 15 {
		t.Fatalf("loaded %+v", loaded)
	}
	pts, err := s.History("g", 7, 4, 15, 100, nil, nil)
	if err != nil || len(pts) != 2 || pts[0].V != 2 || pts[1].V != 3 {
		t.Fatalf("history below ordinal 4 from t=15: %v %v", pts, err)
	}
	if pts, _ := s.History("g", 8, 100, 0, 100, nil, nil); len(pts) != 0 {
		t.Fatalf("another incarnation's history: %v", pts)
	}
	// Dropping another incarnation leaves this one; dropping it removes
	// the series and its history.
	if err := s.Commit(13, []Update{{Key: "g", Drop: 8}}); err != nil {
		t.Fatal(err)
	}
	if pts, _ := s.History("g", 7, 100, 0, 100, nil, nil); len(pts) != 4 {
		t.Fatalf("history after dropping another incarnation: %v", pts)
	}
	if err := s.Commit(13, []Update{{Key: "g", Drop: 7}}); err != nil {
		t.Fatal(err)
	}
	if pts, _ := s.History("g", 7, 100, 0, 100, nil, nil); len(pts) != 0 {
		t.Fatalf("history after wipe: %v", pts)
	}
	n := 0
	s.Load(func(*State) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d series after dropping the only one", n)
	}
}

// TestFileGrowsInSmallSteps: the file is never more than allocSize past
// the pages it holds, where bbolt's default grows it 16 MiB at a time
// once it is past 16 MiB.
func TestFileGrowsInSmallSteps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const perCommit, points = 500, 600 // random floats: about 8 bytes a point
	var ups []Update
	var states []State
	for c := 0; c < 10; c++ {
		ups, states = ups[:0], states[:0]
		for i := range perCommit {
			states = append(states, State{Key: fmt.Sprintf("k%02d.%04d", c, i), Kind: sample.Gauge, Ordinal: points, Created: 1})
		}
		for i := range states {
			pts := make([]sample.Point, points)
			for j := range pts {
				pts[j] = sample.Point{T: int64(j+1) * 1000, V: rng.Float64()}
			}
			ups = append(ups, Update{Key: states[i].Key, State: &states[i], Points: pts, FirstOrdinal: 1})
		}
		if err := s.Commit(uint64(c+1), ups); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		var used int64
		s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
		if st.Size()-used > allocSize+2*int64(os.Getpagesize()) { // bbolt counts a page or two past its last
			t.Fatalf("after commit %d: the file is %d bytes for %d bytes of pages", c, st.Size(), used)
		}
		if c == 9 && used < 24<<20 {
			t.Fatalf("the test wrote %d bytes of pages, too few to pass bbolt's 16 MiB steps", used)
		}
	}
}

func FuzzDecodeChunk(f *testing.F) {
	f.Add(AppendChunk(nil, []sample.Point{{T: 1, V: 2}, {T: 5, V: 2}, {T: 9, V: 3.25}}))
	f.Add([]byte{1, 200, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 10240 {
			return
		}
		pts, err := DecodeChunk(b, nil)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same points.
		again, err := DecodeChunk(AppendChunk(nil, pts), nil)
		if err != nil || len(again) != len(pts) {
			t.Fatalf("re-decode: %d points, %v", len(again), err)
		}
		for i := range pts {
			if again[i].T != pts[i].T || math.Float64bits(again[i].V) != math.Float64bits(pts[i].V) {
				t.Fatalf("point %d changed: %+v → %+v", i, pts[i], again[i])
			}
		}
	})
}

// BenchmarkCommit is one snapshot of n keys (a state and a 2-point chunk
// each) in the order the fold sees them: scattered.
func BenchmarkCommit(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			ups := make([]Update, n)
			for i := range ups {
				k := fmt.Sprintf("bench.k%07d", (i*7919)%n)
				ups[i] = Update{Key: k, FirstOrdinal: 1,
					State:  &State{Key: k, Kind: sample.Gauge, Value: 1, Updated: 2, Ordinal: 2, Created: uint64(i + 1)},
					Points: []sample.Point{{T: 1, V: 1}, {T: 2, V: 1}}}
			}
			for b.Loop() {
				b.StopTimer()
				s, err := Open(filepath.Join(b.TempDir(), "s.db"))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := s.Commit(uint64(n), ups); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCommitTails is the steady state of a soak: every snapshot
// stores 20 new points of each of 10k series into its tail (merging the
// tail's small pieces, moving a full tail into history). One op is one
// such snapshot.
func BenchmarkCommitTails(b *testing.B) {
	const n, per = 10_000, 20
	s, err := Open(filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench.k%07d", (i*7919)%n)
	}
	ups := make([]Update, n)
	states := make([]State, n)
	var pts []sample.Point
	round := 0
	b.ReportAllocs()
	for b.Loop() {
		var arena []byte
		first := uint64(round*per + 1)
		for i, k := range keys {
			pts = pts[:0]
			for j := range per {
				t := int64(round*per+j) * 1000
				pts = append(pts, sample.Point{T: t, V: float64((i+j+round)%200) / 100})
			}
			states[i] = State{Key: k, Kind: sample.Gauge, Value: 1, Updated: pts[per-1].T, Ordinal: first + per - 1, Created: uint64(i + 1)}
			var chunks []Chunk
			chunks, arena = s.EncodeChunks(nil, arena, pts, first)
			ups[i] = Update{Key: k, State: &states[i], Chunks: chunks}
		}
		round++
		if err := s.Commit(uint64(round*n*per), ups); err != nil {
			b.Fatal(err)
		}
	}
}
