// Package chunk encodes a run of history points compactly, in the spirit
// of the Gorilla paper, with two additions for the data metrics carry:
//
//   - decimal values: when every value of the chunk is a decimal with at
//     most 9 digits after the point (21.5, 0.01, 1200), the integers
//     value×10^exp are coded as deltas, or as deltas of deltas when that
//     is shorter (a counter at a steady rate); otherwise the float64 bits
//     are XORed with the previous value, Gorilla-style;
//   - Rice codes fitted to each chunk: every integer stream (times as
//     deltas from the chunk's mean interval or as deltas of deltas,
//     decimal deltas) is zigzagged and Rice-coded with the parameter that
//     makes that chunk's stream shortest, so a clock jittering by a few
//     ms costs about 3 bits a point and a random walk in steps of up to
//     ±1.00 about 8; a stream that is all zeros (a regular interval, a
//     constant, a counter at a steady rate) costs nothing.
//
// Chunks of versions 1 and 2 (v1.go, v2.go), written by earlier Sondes,
// are still read. docs/format/snapshot.md describes the bytes. The
// package is pure.
package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Version is the first byte of every chunk this package writes.
const Version = 3

// ErrFormat is returned for bytes that are not a chunk.
var ErrFormat = errors.New("chunk: malformed")

const (
	modeFloat      = 0 // Gorilla XOR of the float64 bits
	modeDecimal    = 1 // deltas of the integers value×10^exp
	modeDecimalDoD = 2 // deltas of those deltas: counters at a steady rate
	modeMean       = 3 // means of decimals: value = float64(m)/float64(n)/10^exp
	maxExp         = 9
	maxMeanN       = 4096
)

// Mean returns the mean of pts' values. When they are all decimals of at
// most maxExp digits it is computed as float64(sum of value×10^exp) /
// float64(n) / 10^exp, which a chunk stores in a few bits (mode 3); else
// as the float sum over n.
func Mean(pts []sample.Point) float64 {
	if exp, ok := decimalExp(pts, nil); ok && len(pts) <= maxMeanN {
		var sum int64
		exact := true
		for _, p := range pts {
			m, _ := mantissa(p.V, exp)
			if sum += m; sum >= 1<<53 || sum <= -1<<53 { // |m| < 2^53: no overflow
				exact = false
				break
			}
		}
		if exact {
			return float64(sum) / float64(len(pts)) / pow10[exp]
		}
	}
	var s float64
	for _, p := range pts {
		s += p.V
	}
	return s / float64(len(pts))
}

// meanParts finds m and n (n <= maxMeanN) with float64(m)/float64(n)/10^exp
// equal to v, trying n near hint first.
func meanParts(v float64, exp int, hint int64) (m, n int64, ok bool) {
	try := func(n int64) (int64, bool) {
		f := math.Round(v * pow10[exp] * float64(n))
		if math.IsNaN(f) || math.Abs(f) >= 1<<53 {
			return 0, false
		}
		m := int64(f)
		return m, math.Float64bits(float64(m)/float64(n)/pow10[exp]) == math.Float64bits(v)
	}
	if hint >= 1 && hint <= maxMeanN {
		if m, ok := try(hint); ok {
			return m, hint, true
		}
	}
	for n := int64(1); n <= maxMeanN; n++ {
		if m, ok := try(n); ok {
			return m, n, true
		}
	}
	return 0, 0, false
}

// meanExp returns the smallest exp at which every value has mean parts,
// giving up at the first value none fits.
func meanExp(pts []sample.Point) (int, bool) {
	for exp := 0; exp <= 6; exp++ {
		hint, ok := int64(1), true
		for _, p := range pts {
			var n int64
			if _, n, ok = meanParts(p.V, exp, hint); !ok {
				break
			}
			hint = n
		}
		if ok {
			return exp, true
		}
	}
	return 0, false
}

var pow10 = [maxExp + 1]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

// decimalExp returns the smallest exp such that every value is exactly
// float64(m)/10^exp for an integer m of at most 53 bits. When ms is not
// nil, the mantissas m are appended to it (a chunk's encoder uses them);
// nothing is when it fails.
func decimalExp(pts []sample.Point, ms *[]int64) (int, bool) {
	exp := 0
	for _, p := range pts {
		for ; exp <= maxExp; exp++ {
			if _, ok := mantissa(p.V, exp); ok {
				break
			}
		}
		if exp > maxExp {
			return 0, false
		}
	}
	// A value found exact at a smaller exp may be too large at the final
	// one (its mantissa past 2^53): check them all again.
	for i, p := range pts {
		m, ok := mantissa(p.V, exp)
		if !ok {
			if ms != nil {
				*ms = (*ms)[:len(*ms)-i] // none of them on failure
			}
			return 0, false
		}
		if ms != nil {
			*ms = append(*ms, m)
		}
	}
	return exp, true
}

func mantissa(v float64, exp int) (int64, bool) {
	f := math.Round(v * pow10[exp])
	if math.IsNaN(f) || math.Abs(f) >= 1<<53 {
		return 0, false
	}
	m := int64(f)
	return m, math.Float64bits(float64(m)/pow10[exp]) == math.Float64bits(v)
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// valueHead is what a chunk of version 2 or 3 says of its values before
// the bit stream: the mode and the first value.
type valueHead struct {
	mode byte
	exp  int
	m, n int64  // first mantissa (or sum) and, mode 3, first count
	v    uint64 // mode 0: the first value's bits
}

func (h valueHead) first() float64 {
	switch h.mode {
	case modeFloat:
		return math.Float64frombits(h.v)
	case modeMean:
		return float64(h.m) / float64(h.n) / pow10[h.exp]
	}
	return float64(h.m) / pow10[h.exp]
}

func appendValueHead(dst []byte, h valueHead) []byte {
	if h.mode == modeFloat {
		return binary.LittleEndian.AppendUint64(append(dst, modeFloat), h.v)
	}
	dst = binary.AppendVarint(append(dst, h.mode, byte(h.exp)), h.m)
	if h.mode == modeMean {
		dst = binary.AppendUvarint(dst, uint64(h.n))
	}
	return dst
}

func readValueHead(b []byte) (valueHead, []byte, error) {
	var h valueHead
	if len(b) < 1 {
		return h, nil, fmt.Errorf("%w: value mode", ErrFormat)
	}
	h.mode = b[0]
	b = b[1:]
	switch h.mode {
	case modeDecimal, modeDecimalDoD, modeMean:
		if len(b) < 1 || b[0] > maxExp {
			return h, nil, fmt.Errorf("%w: decimal exponent", ErrFormat)
		}
		h.exp = int(b[0])
		var k int
		if h.m, k = binary.Varint(b[1:]); k <= 0 {
			return h, nil, fmt.Errorf("%w: first value", ErrFormat)
		}
		b = b[1+k:]
		if h.mode == modeMean {
			n, k := binary.Uvarint(b)
			if k <= 0 || n == 0 || n > maxMeanN {
				return h, nil, fmt.Errorf("%w: first count", ErrFormat)
			}
			b = b[k:]
			h.n = int64(n)
		}
	case modeFloat:
		if len(b) < 8 {
			return h, nil, fmt.Errorf("%w: first value", ErrFormat)
		}
		h.v = binary.LittleEndian.Uint64(b)
		b = b[8:]
	default:
		return h, nil, fmt.Errorf("%w: value mode %d", ErrFormat, h.mode)
	}
	return h, b, nil
}

// xorWriter codes float64 values as the XOR of their bits with the
// previous value's (Gorilla): 0 for the same value; 10 and the XOR's
// bits inside the previous window; 11, 6 bits of leading zeros, 6 bits
// of length-1, and the bits.
type xorWriter struct {
	prev        uint64
	lead, trail uint8 // the window in use; lead 255: none yet
}

func (x *xorWriter) write(w *bitWriter, v float64) {
	b := math.Float64bits(v)
	d := b ^ x.prev
	x.prev = b
	if d == 0 {
		w.writeBit(false)
		return
	}
	w.writeBit(true)
	l, t := uint8(bits.LeadingZeros64(d)), uint8(bits.TrailingZeros64(d))
	if x.lead != 255 && l >= x.lead && t >= x.trail {
		w.writeBit(false) // inside the previous window
		w.writeBits(d>>x.trail, 64-x.lead-x.trail)
		return
	}
	w.writeBit(true)
	x.lead, x.trail = l, t
	w.writeBits(uint64(l), 6)
	w.writeBits(uint64(64-l-t-1), 6)
	w.writeBits(d>>t, 64-l-t)
}

// xorReader reads what an xorWriter wrote.
type xorReader xorWriter

func (x *xorReader) next(r *bitReader, i uint64) (float64, error) {
	changed, ok := r.readBit()
	if !ok {
		return 0, fmt.Errorf("%w: value of point %d", ErrFormat, i)
	}
	if changed {
		fresh, ok := r.readBit()
		if !ok {
			return 0, fmt.Errorf("%w: value of point %d", ErrFormat, i)
		}
		if fresh {
			l, ok1 := r.readBits(6)
			size, ok2 := r.readBits(6)
			if !ok1 || !ok2 || l+size+1 > 64 {
				return 0, fmt.Errorf("%w: value window of point %d", ErrFormat, i)
			}
			x.lead, x.trail = uint8(l), uint8(64-l-size-1)
		} else if x.lead == 255 {
			return 0, fmt.Errorf("%w: value of point %d reuses no window", ErrFormat, i)
		}
		d, ok := r.readBits(64 - x.lead - x.trail)
		if !ok {
			return 0, fmt.Errorf("%w: value of point %d", ErrFormat, i)
		}
		x.prev ^= d << x.trail
	}
	return math.Float64frombits(x.prev), nil
}

// Header returns a chunk's point count and its first and last times, of
// any version, and what follows them (the value mode first).
func Header(b []byte) (n uint64, first, last int64, rest []byte, err error) {
	if len(b) < 1 || b[0] < version1 || b[0] > Version {
		return 0, 0, 0, nil, fmt.Errorf("%w: version", ErrFormat)
	}
	v := b[0]
	b = b[1:]
	var k int
	if n, k = binary.Uvarint(b); k <= 0 || n == 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: count", ErrFormat)
	}
	b = b[k:]
	if first, k = binary.Varint(b); k <= 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: first time", ErrFormat)
	}
	b = b[k:]
	if v >= 3 {
		span, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, 0, 0, nil, fmt.Errorf("%w: time span", ErrFormat)
		}
		return n, first, first + int64(span), b[k:], nil
	}
	if last, k = binary.Varint(b); k <= 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: last time", ErrFormat)
	}
	return n, first, last, b[k:], nil
}

// Decode appends the points of chunk b, of any version, to dst.
func Decode(b []byte, dst []sample.Point) ([]sample.Point, error) {
	n, first, last, rest, err := Header(b)
	if err != nil {
		return dst, err
	}
	switch b[0] {
	case version1:
		return decodeV1(rest, n, first, dst)
	case version2:
		return decodeV2(rest, n, first, dst)
	}
	return decodeV3(rest, n, first, last, dst)
}
