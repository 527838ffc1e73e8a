package bench

import (
	"fmt"
	"math"
	"strconv"
)

// Shape is how the values of a key move from one sample to the next.
type Shape string

// The value shapes. Mixed gives every third key each of walk, counter and
// const: the kind of data storage figures should be taken with.
const (
	Walk    Shape = "walk"    // a random walk in steps of 0.01, like a temperature or a load
	Counter Shape = "counter" // a monotonic total growing by a per-key step
	Const   Shape = "const"   // the same value every time
	Mixed   Shape = "mixed"
	Stamp   Shape = "stamp" // the send time in unix µs (for delivery lag)
)

// ParseShape reads a shape's name.
func ParseShape(s string) (Shape, error) {
	switch Shape(s) {
	case Walk, Counter, Const, Mixed, Stamp:
		return Shape(s), nil
	}
	return "", fmt.Errorf("unknown value shape %q (want walk, counter, const, mixed or stamp)", s)
}

// KeyName is the name of the i-th key of a run.
func KeyName(prefix string, i int) string { return fmt.Sprintf("%s.k%07d", prefix, i) }

// workload generates the samples of one connection. Keys are split
// between connections (key i belongs to connection i mod conns), so the
// last value of every key is known no matter how connections interleave.
type workload struct {
	keys  [][]byte
	gidx  []int
	state []float64 // the value each key holds once its last sample is taken
	sent  []int64   // samples sent per key
	shape Shape
	incr  bool // INCR deltas instead of SET values
	rng   uint64
	n     int64 // samples generated so far
	base  int64 // Graphite: the unix second of each key's first sample
}

func newWorkload(prefix string, keys, conns, conn int, shape Shape, incr bool) *workload {
	w := &workload{shape: shape, incr: incr, rng: uint64(conn)*0x9e3779b97f4a7c15 + 1}
	for i := conn; i < keys; i += conns {
		w.keys = append(w.keys, []byte(KeyName(prefix, i)))
		w.gidx = append(w.gidx, i)
	}
	w.state = make([]float64, len(w.keys))
	w.sent = make([]int64, len(w.keys))
	for k, g := range w.gidx {
		if !incr && w.shapeOf(g) != Counter {
			w.state[k] = float64(g % 1000)
		}
	}
	return w
}

func (w *workload) shapeOf(g int) Shape {
	if w.incr {
		return Counter
	}
	if w.shape == Mixed {
		return [...]Shape{Walk, Counter, Const}[g%3]
	}
	return w.shape
}

func (w *workload) rand() uint64 { // xorshift64*
	w.rng ^= w.rng >> 12
	w.rng ^= w.rng << 25
	w.rng ^= w.rng >> 27
	return w.rng * 2685821657736338717
}

// next advances to the next sample: the key's local index and the value
// to send (for INCR, the delta).
func (w *workload) next(stampUs int64) (int, float64) {
	k := int(w.n % int64(len(w.keys)))
	w.n++
	w.sent[k]++
	g := w.gidx[k]
	var v float64
	switch w.shapeOf(g) {
	case Walk:
		step := float64(int64(w.rand()%201)-100) / 100 // -1.00 .. 1.00
		v = math.Round((w.state[k]+step)*100) / 100
		w.state[k] = v
	case Counter:
		step := float64(1 + g%7)
		w.state[k] += step
		v = w.state[k]
		if w.incr {
			v = step
		}
	case Const:
		v = w.state[k]
	case Stamp:
		v = float64(stampUs)
		w.state[k] = v
	}
	return k, v
}

// Line formats for the protocols the load speaks.
const (
	lineSet      = iota // SET key value
	lineIncr            // INCR key delta
	lineGraphite        // key value unix-seconds
)

// appendLine appends the next sample as a line. Graphite timestamps go
// up by one second per sample of a key, from base.
func (w *workload) appendLine(b []byte, format int, stampUs int64) []byte {
	k, v := w.next(stampUs)
	switch format {
	case lineSet:
		b = append(b, "SET "...)
	case lineIncr:
		b = append(b, "INCR "...)
	}
	b = append(b, w.keys[k]...)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, v, 'f', -1, 64)
	if format == lineGraphite {
		b = append(b, ' ')
		b = strconv.AppendInt(b, w.base+w.sent[k]-1, 10)
	}
	return append(b, '\n')
}
