package chunk

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func roundTrip(t *testing.T, pts []sample.Point) []byte {
	t.Helper()
	b := Append(nil, pts)
	got, err := Decode(b, nil)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(got) != len(pts) {
		t.Fatalf("%d points back, want %d", len(got), len(pts))
	}
	for i := range pts {
		if got[i].T != pts[i].T || math.Float64bits(got[i].V) != math.Float64bits(pts[i].V) {
			t.Fatalf("point %d = %v, want %v", i, got[i], pts[i])
		}
	}
	n, first, last, _, err := Header(b)
	if err != nil || n != uint64(len(pts)) || first != pts[0].T || last != pts[len(pts)-1].T {
		t.Fatalf("header %d %d %d %v", n, first, last, err)
	}
	return b
}

// The shapes of realistic metrics, at 10 s with a little jitter, and what
// each costs per point.
func shapes(n int, rng *rand.Rand) map[string][]sample.Point {
	out := map[string][]sample.Point{}
	mk := func(name string, v func(i int) float64, jitter bool) {
		pts := make([]sample.Point, n)
		t := int64(1_700_000_000_000)
		for i := range pts {
			t += 10_000
			if jitter {
				t += rng.Int64N(5) - 2
			}
			pts[i] = sample.Point{T: t, V: v(i)}
		}
		out[name] = pts
	}
	walk := 20.0
	mk("constant", func(int) float64 { return 42 }, false)
	mk("walk-0.01", func(int) float64 { walk = math.Round((walk+float64(rng.IntN(3)-1)*0.01)*100) / 100; return walk }, false)
	total := 0.0
	mk("counter", func(int) float64 { total += float64(rng.IntN(200)); return total }, false)
	mk("jittered-walk", func(int) float64 { walk = math.Round((walk+float64(rng.IntN(3)-1)*0.01)*100) / 100; return walk }, true)
	mk("float-noise", func(int) float64 { return rng.Float64() }, false)
	mk("load-avg", func(i int) float64 { return math.Round((1+math.Sin(float64(i)/50))*100) / 100 }, false)
	// What sonde-bench's soak sends (bench/gen.go) as a SET's receive
	// time stamps it: every 500 ms, off by a few ms.
	soak := func(name string, v func() float64) {
		pts := make([]sample.Point, n)
		t := int64(1_700_000_000_000)
		for i := range pts {
			t += 500 + rng.Int64N(7) - 3
			pts[i] = sample.Point{T: t, V: v()}
		}
		out[name] = pts
	}
	sw, sc := 500.0, 0.0
	soak("soak-walk", func() float64 { sw = math.Round((sw+float64(rng.IntN(201)-100)/100)*100) / 100; return sw })
	soak("soak-counter", func() float64 { sc += 3; return sc })
	soak("soak-constant", func() float64 { return 17 })
	return out
}

func TestRoundTripShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	limits := map[string]float64{ // bytes per point, with the header spread over 1000 points
		"constant": 0.03, "walk-0.01": 0.3, "counter": 1.1, "jittered-walk": 0.7, "float-noise": 7.5, "load-avg": 0.25,
		"soak-walk": 1.5, "soak-counter": 0.6, "soak-constant": 0.5,
	}
	for name, pts := range shapes(1000, rng) {
		b := roundTrip(t, pts)
		per := float64(len(b)) / float64(len(pts))
		v2 := float64(len(appendV2(nil, pts))) / float64(len(pts))
		t.Logf("%-14s %5.2f bytes/point (version 2: %5.2f)", name, per, v2)
		if per > limits[name] {
			t.Errorf("%s: %.2f bytes/point, want at most %.2f", name, per, limits[name])
		}
		if per > v2 {
			t.Errorf("%s: %.2f bytes/point, more than version 2's %.2f", name, per, v2)
		}
	}
}

// Version 2 chunks, as Sondes before version 3 wrote them, still decode.
func TestDecodesVersion2(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for name, pts := range shapes(300, rng) {
		b := appendV2(nil, pts)
		if b[0] != version2 {
			t.Fatalf("%s: version %d", name, b[0])
		}
		got, err := Decode(b, nil)
		if err != nil || len(got) != len(pts) {
			t.Fatalf("%s: %d points, %v", name, len(got), err)
		}
		for i := range pts {
			if got[i].T != pts[i].T || math.Float64bits(got[i].V) != math.Float64bits(pts[i].V) {
				t.Fatalf("%s: point %d = %v, want %v", name, i, got[i], pts[i])
			}
		}
		if n, first, last, _, err := Header(b); err != nil || n != uint64(len(pts)) || first != pts[0].T || last != pts[len(pts)-1].T {
			t.Fatalf("%s: header %d %d %d %v", name, n, first, last, err)
		}
	}
}

func TestRoundTripEdges(t *testing.T) {
	for _, pts := range [][]sample.Point{
		{{T: 5, V: 1}},
		{{T: -5, V: math.Copysign(0, -1)}, {T: -5, V: 0}},
		{{T: 0, V: math.MaxFloat64}, {T: math.MaxInt64, V: -math.MaxFloat64}, {T: math.MinInt64, V: math.SmallestNonzeroFloat64}},
		{{T: 1, V: 0.1}, {T: 2, V: 0.2}, {T: 3, V: 0.30000000000000004}}, // not decimal: floats
		{{T: 1, V: 123456789.123456789}, {T: 2, V: 1e-9}, {T: 3, V: 1 << 60}},
		{{T: 1, V: 1}, {T: 1, V: 2}, {T: 1, V: 1}},
	} {
		roundTrip(t, pts)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Append(nil, []sample.Point{{T: 1, V: 1.5}, {T: 2, V: 2.5}, {T: 3, V: 7}})
	// A constant at a regular interval: both streams are zeros, no bits.
	free := Append(nil, []sample.Point{{T: 10, V: 1}, {T: 20, V: 1}, {T: 30, V: 1}})
	// The same, all at one time: more of them would decode to one time.
	same := Append(nil, []sample.Point{{T: 10, V: 1}, {T: 10, V: 1}, {T: 10, V: 1}})
	if got := free[len(free)-1]; got != timeBase|kZero {
		t.Fatalf("time byte %#x, want zeros", got)
	}
	for name, b := range map[string][]byte{
		"empty":             nil,
		"old version":       {1, 1, 2, 2, 0},
		"unknown version":   withByte(good, 0, Version+1),
		"zero count":        {Version, 0, 2, 2, 0},
		"truncated":         good[:len(good)-1],
		"bad mode":          withByte(good, 4, 7), // version, count, first, span, then the mode
		"huge count":        binary.AppendUvarint([]byte{Version}, 1<<40),
		"free beyond bound": append(binary.AppendUvarint([]byte{Version}, maxFree+1), free[2:]...),
		"bad value k":       withByte(free, len(free)-2, kZero+1),
		"bad time byte":     withByte(free, len(free)-1, 0x40|kZero),
		"times miss last":   withByte(free, 3, 21), // span 21, not 20
		"one point, a span": {Version, 1, 0, 5, modeFloat, 0, 0, 0, 0, 0, 0, 0, 0, 0xBF},
		"many points, free": append(binary.AppendUvarint([]byte{Version}, maxFree+1), append(same[2:], make([]byte, maxFree/8)...)...),
	} {
		if _, err := Decode(b, nil); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
	}
}

// A value exact as a decimal at a smaller exp can be too large for the
// exp a later value needs: the chunk is then not decimal. (Found by
// FuzzRoundTrip: the first value came back 0.)
func TestDecimalExpChecksEveryValue(t *testing.T) {
	pts := []sample.Point{{T: 1, V: 576741472.384222}, {T: 2, V: 1060912.188235294}}
	ms := []int64{7}
	if exp, ok := decimalExp(pts, &ms); ok || len(ms) != 1 {
		t.Fatalf("decimal at exp %d (%v), mantissas %v; 576741472.384222e9 is past 2^53", exp, ok, ms)
	}
	// Failing on a later value leaves no mantissa of the earlier ones.
	if exp, ok := decimalExp(append([]sample.Point{{V: 0.5}}, pts...), &ms); ok || len(ms) != 1 {
		t.Fatalf("decimal at exp %d (%v), mantissas %v", exp, ok, ms)
	}
	roundTrip(t, pts)
	if m, want := Mean(pts), (pts[0].V+pts[1].V)/2; m != want {
		t.Fatalf("Mean = %v, want %v", m, want)
	}
}

// A sum of mantissas that would overflow int64 falls back to floats.
func TestMeanDoesNotOverflow(t *testing.T) {
	pts := make([]sample.Point, 2048)
	for i := range pts {
		pts[i].V = 1<<53 - 1 // the sum is 2^64 - 2048
	}
	if m := Mean(pts); m != 1<<53-1 {
		t.Fatalf("Mean = %v, want %v", m, float64(1<<53-1))
	}
}

func withByte(b []byte, i int, v byte) []byte {
	b = append([]byte(nil), b...)
	b[i] = v
	return b
}

// A counter at a steady rate costs less as deltas of deltas.
func TestSteadyCounterUsesDoD(t *testing.T) {
	var pts []sample.Point
	total := 0.0
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 1000 {
		total += 1000 + float64(rng.IntN(3))
		pts = append(pts, sample.Point{T: int64(i) * 10_000, V: total})
	}
	b := roundTrip(t, pts)
	_, _, _, rest, err := Header(b)
	if err != nil || rest[0] != modeDecimalDoD {
		t.Fatalf("mode %d, %v; want deltas of deltas", rest[0], err)
	}
	if per := float64(len(b)) / 1000; per > 0.45 {
		t.Fatalf("%.2f bytes/point", per)
	}
}

func BenchmarkDecodeDay(b *testing.B) {
	pts := shapes(8640, rand.New(rand.NewPCG(1, 2)))["jittered-walk"] // a day at 10 s
	enc := Append(nil, pts)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	dst := make([]sample.Point, 0, len(pts))
	for b.Loop() {
		var err error
		if dst, err = Decode(enc, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendDay(b *testing.B) {
	pts := shapes(8640, rand.New(rand.NewPCG(1, 2)))["jittered-walk"]
	b.ReportAllocs()
	var dst []byte
	for b.Loop() {
		dst = Append(dst[:0], pts)
	}
	b.ReportMetric(float64(len(dst))/float64(len(pts)), "bytes/point")
}

// Any bytes: Decode returns points or ErrFormat, never panics.
func FuzzDecode(f *testing.F) {
	f.Add(Append(nil, []sample.Point{{T: 1, V: 1.5}, {T: 2, V: 2.5}}))
	f.Add(Append(nil, []sample.Point{{T: 1, V: 0.1}, {T: 5, V: math.Pi}, {T: 9, V: -1e300}}))
	f.Add([]byte{Version, 3, 0, 0, 0})
	f.Add(appendV2(nil, []sample.Point{{T: 1, V: 1.5}, {T: 2, V: 2.5}}))
	f.Add(Append(nil, []sample.Point{{T: 10, V: 1}, {T: 20, V: 1}, {T: 30, V: 1}}))
	f.Add(Append(nil, []sample.Point{{T: 10, V: 0.5}, {T: 20, V: 0.25}, {T: 31, V: Mean([]sample.Point{{V: 0.1}, {V: 0.2}, {V: 0.4}})}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Decode(b, nil); err != nil && !errors.Is(err, ErrFormat) {
			t.Fatalf("error %v is not ErrFormat", err)
		}
	})
}

// Points made from any bytes survive a round trip.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, true)
	f.Add([]byte("0123456789abcdef0123456789abcdef"), false)
	f.Fuzz(func(t *testing.T, raw []byte, decimal bool) {
		var pts []sample.Point
		for len(raw) >= 16 {
			tt := int64(binary.LittleEndian.Uint64(raw))
			v := math.Float64frombits(binary.LittleEndian.Uint64(raw[8:]))
			if decimal {
				v = float64(int64(binary.LittleEndian.Uint64(raw[8:]))%1_000_000) / 100
			}
			if math.IsNaN(v) {
				v = 0
			}
			pts = append(pts, sample.Point{T: tt, V: v})
			raw = raw[16:]
		}
		if len(pts) == 0 {
			return
		}
		roundTrip(t, pts)
	})
}

// Means of decimals (what an avg archive holds) are stored as sums over
// counts in a few bits, and decode bit for bit.
func TestMeansOfDecimals(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	raw := shapes(6000, rng)["jittered-walk"]
	var means []sample.Point
	for i := 0; i < len(raw); i += 6 { // 1 m means of 10 s points
		n := 6 - rng.IntN(2) // a step now and then misses a point
		means = append(means, sample.Point{T: raw[i].T, V: Mean(raw[i : i+n])})
	}
	b := roundTrip(t, means)
	if _, _, _, rest, _ := Header(b); rest[0] != modeMean {
		t.Fatalf("mode %d, want %d", rest[0], modeMean)
	}
	if per := float64(len(b)) / float64(len(means)); per > 3.5 { // floats would take 7 or more
		t.Fatalf("%.2f bytes a mean", per)
	}
	if m := Mean([]sample.Point{{V: 0.1}, {V: 0.2}}); m != 0.15 {
		t.Fatalf("Mean(0.1, 0.2) = %v", m)
	}
	if m := Mean([]sample.Point{{V: math.Pi}, {V: 1}}); m != (math.Pi+1)/2 {
		t.Fatalf("Mean of non-decimals = %v", m)
	}
}

// Means of decimals made from any bytes survive a round trip.
func FuzzMeanRoundTrip(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint8(2))
	f.Fuzz(func(t *testing.T, raw []byte, exp uint8) {
		var pts []sample.Point
		for i := 0; i+4 <= len(raw); i += 4 {
			n := int(raw[i]%8) + 1
			var group []sample.Point
			for j := range n {
				m := int64(binary.LittleEndian.Uint16(raw[i+1:])) - 30000 + int64(j*int(raw[i+3]))
				group = append(group, sample.Point{V: float64(m) / pow10[exp%4]})
			}
			pts = append(pts, sample.Point{T: int64(i) * 1000, V: Mean(group)})
		}
		if len(pts) == 0 {
			return
		}
		roundTrip(t, pts)
	})
}
