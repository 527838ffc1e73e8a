// Package chunk encodes a run of history points compactly, in the spirit
// of the Gorilla paper, with one addition for the decimal values metrics
// mostly carry:
//
//   - times: delta-of-delta, bit-packed; a regular interval costs one bit
//     a point;
//   - values: when every value of the chunk is a decimal with at most 9
//     digits after the point (21.5, 0.01, 1200), the integers
//     value×10^exp are bit-packed as deltas, or as deltas of deltas when
//     that is shorter (a counter at a steady rate): a constant costs one
//     bit a point, a random walk in steps of 0.01 three on average;
//     otherwise the float64 bits are XORed with the previous value,
//     Gorilla-style.
//
// docs/format/snapshot.md describes the bytes. The package is pure.
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
const Version = 2

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
	if exp, ok := decimalExp(pts); ok && len(pts) <= maxMeanN {
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
// float64(m)/10^exp for an integer m of at most 53 bits.
func decimalExp(pts []sample.Point) (int, bool) {
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
	for _, p := range pts {
		if _, ok := mantissa(p.V, exp); !ok {
			return 0, false
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

// Buckets for a zigzagged integer: a prefix of 1s ended by a 0 picks the
// width; the last bucket has no terminating 0.
var (
	// A regular interval is 0; a clock that jitters by a few ms fits 4 bits.
	timeWidths = []uint8{0, 4, 8, 14, 24, 64}
	// A 0.01 random walk steps by -1, 0 or +1.
	deltaWidths = []uint8{0, 2, 7, 14, 24, 64}
)

func writeVarBits(w *bitWriter, u uint64, widths []uint8) {
	for i, width := range widths {
		last := i == len(widths)-1
		if last || (width == 0 && u == 0) || (width > 0 && width < 64 && u < 1<<width) {
			for range i {
				w.writeBit(true)
			}
			if !last {
				w.writeBit(false)
			}
			w.writeBits(u, width)
			return
		}
	}
}

func readVarBits(r *bitReader, widths []uint8) (uint64, bool) {
	i := 0
	for i < len(widths)-1 {
		bit, ok := r.readBit()
		if !ok {
			return 0, false
		}
		if !bit {
			break
		}
		i++
	}
	return r.readBits(widths[i])
}

// Append encodes pts (oldest first, at least one) onto dst. Decimal
// values are tried as deltas and as deltas of deltas; the shorter wins.
func Append(dst []byte, pts []sample.Point) []byte {
	exp, decimal := decimalExp(pts)
	if !decimal {
		if exp, ok := meanExp(pts); ok {
			return appendMode(dst, pts, modeMean, exp)
		}
		return appendMode(dst, pts, modeFloat, 0)
	}
	n := len(dst)
	dst = appendMode(dst, pts, modeDecimal, exp)
	alt := appendMode(nil, pts, modeDecimalDoD, exp)
	if len(alt) < len(dst)-n {
		dst = append(dst[:n], alt...)
	}
	return dst
}

func appendMode(dst []byte, pts []sample.Point, mode byte, exp int) []byte {
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, uint64(len(pts)))
	dst = binary.AppendVarint(dst, pts[0].T)
	dst = binary.AppendVarint(dst, pts[len(pts)-1].T)
	var prevM, prevMD, prevN int64
	prevV := math.Float64bits(pts[0].V)
	switch mode {
	case modeFloat:
		dst = append(dst, modeFloat)
		dst = binary.LittleEndian.AppendUint64(dst, prevV)
	case modeMean:
		dst = append(dst, mode, byte(exp))
		prevM, prevN, _ = meanParts(pts[0].V, exp, 1)
		dst = binary.AppendVarint(dst, prevM)
		dst = binary.AppendUvarint(dst, uint64(prevN))
	default:
		dst = append(dst, mode, byte(exp))
		prevM, _ = mantissa(pts[0].V, exp)
		dst = binary.AppendVarint(dst, prevM)
	}
	w := bitWriter{b: dst}
	prevT, prevD := pts[0].T, int64(0)
	lead, trail := uint8(255), uint8(0) // the XOR window in use; 255: none yet
	for _, p := range pts[1:] {
		d := p.T - prevT
		writeVarBits(&w, zigzag(d-prevD), timeWidths)
		prevT, prevD = p.T, d
		switch mode {
		case modeDecimal:
			m, _ := mantissa(p.V, exp)
			writeVarBits(&w, zigzag(m-prevM), deltaWidths)
			prevM = m
			continue
		case modeDecimalDoD:
			m, _ := mantissa(p.V, exp)
			md := m - prevM
			writeVarBits(&w, zigzag(md-prevMD), deltaWidths)
			prevM, prevMD = m, md
			continue
		case modeMean:
			m, n, _ := meanParts(p.V, exp, prevN)
			writeVarBits(&w, zigzag(n-prevN), deltaWidths)
			writeVarBits(&w, zigzag(m-prevM), deltaWidths)
			prevM, prevN = m, n
			continue
		}
		v := math.Float64bits(p.V)
		x := v ^ prevV
		prevV = v
		if x == 0 {
			w.writeBit(false)
			continue
		}
		w.writeBit(true)
		l, t := uint8(bits.LeadingZeros64(x)), uint8(bits.TrailingZeros64(x))
		if lead != 255 && l >= lead && t >= trail {
			w.writeBit(false) // inside the previous window
			w.writeBits(x>>trail, 64-lead-trail)
			continue
		}
		w.writeBit(true)
		lead, trail = l, t
		w.writeBits(uint64(lead), 6)
		w.writeBits(uint64(64-lead-trail-1), 6)
		w.writeBits(x>>trail, 64-lead-trail)
	}
	return w.b
}

// Header returns a chunk's point count and its first and last times, of
// either version (v1.go).
func Header(b []byte) (n uint64, first, last int64, rest []byte, err error) {
	if len(b) < 1 || (b[0] != Version && b[0] != version1) {
		return 0, 0, 0, nil, fmt.Errorf("%w: version", ErrFormat)
	}
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
	if last, k = binary.Varint(b); k <= 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: last time", ErrFormat)
	}
	return n, first, last, b[k:], nil
}

// Decode appends the points of chunk b, of either version, to dst.
func Decode(b []byte, dst []sample.Point) ([]sample.Point, error) {
	n, first, _, rest, err := Header(b)
	if err != nil {
		return dst, err
	}
	if b[0] == version1 {
		return decodeV1(rest, n, first, dst)
	}
	b = rest
	if n > uint64(len(b))*8+1 { // every later point takes at least one bit
		return dst, fmt.Errorf("%w: %d points in %d bytes", ErrFormat, n, len(b))
	}
	if len(b) < 1 {
		return dst, fmt.Errorf("%w: value mode", ErrFormat)
	}
	mode := b[0]
	b = b[1:]
	var exp int
	var prevM, prevMD, prevN int64
	var prevV uint64
	switch mode {
	case modeDecimal, modeDecimalDoD, modeMean:
		if len(b) < 1 || b[0] > maxExp {
			return dst, fmt.Errorf("%w: decimal exponent", ErrFormat)
		}
		exp = int(b[0])
		var k int
		if prevM, k = binary.Varint(b[1:]); k <= 0 {
			return dst, fmt.Errorf("%w: first value", ErrFormat)
		}
		b = b[1+k:]
		prevV = math.Float64bits(float64(prevM) / pow10[exp])
		if mode == modeMean {
			n, k := binary.Uvarint(b)
			if k <= 0 || n == 0 || n > maxMeanN {
				return dst, fmt.Errorf("%w: first count", ErrFormat)
			}
			b = b[k:]
			prevN = int64(n)
			prevV = math.Float64bits(float64(prevM) / float64(prevN) / pow10[exp])
		}
	case modeFloat:
		if len(b) < 8 {
			return dst, fmt.Errorf("%w: first value", ErrFormat)
		}
		prevV = binary.LittleEndian.Uint64(b)
		b = b[8:]
	default:
		return dst, fmt.Errorf("%w: value mode %d", ErrFormat, mode)
	}
	dst = append(dst, sample.Point{T: first, V: math.Float64frombits(prevV)})
	r := bitReader{b: b}
	prevT, prevD := first, int64(0)
	lead, trail := uint8(255), uint8(0)
	for i := uint64(1); i < n; i++ {
		u, ok := readVarBits(&r, timeWidths)
		if !ok {
			return dst, fmt.Errorf("%w: time of point %d", ErrFormat, i)
		}
		prevD += unzigzag(u)
		prevT += prevD
		if mode == modeMean {
			un, ok1 := readVarBits(&r, deltaWidths)
			um, ok2 := readVarBits(&r, deltaWidths)
			prevN += unzigzag(un)
			if !ok1 || !ok2 || prevN < 1 || prevN > maxMeanN {
				return dst, fmt.Errorf("%w: value of point %d", ErrFormat, i)
			}
			prevM += unzigzag(um)
			dst = append(dst, sample.Point{T: prevT, V: float64(prevM) / float64(prevN) / pow10[exp]})
			continue
		}
		if mode != modeFloat {
			if u, ok = readVarBits(&r, deltaWidths); !ok {
				return dst, fmt.Errorf("%w: value of point %d", ErrFormat, i)
			}
			if mode == modeDecimalDoD {
				prevMD += unzigzag(u)
				prevM += prevMD
			} else {
				prevM += unzigzag(u)
			}
			dst = append(dst, sample.Point{T: prevT, V: float64(prevM) / pow10[exp]})
			continue
		}
		changed, ok := r.readBit()
		if !ok {
			return dst, fmt.Errorf("%w: value of point %d", ErrFormat, i)
		}
		if changed {
			fresh, ok := r.readBit()
			if !ok {
				return dst, fmt.Errorf("%w: value of point %d", ErrFormat, i)
			}
			if fresh {
				l, ok1 := r.readBits(6)
				size, ok2 := r.readBits(6)
				if !ok1 || !ok2 || l+size+1 > 64 {
					return dst, fmt.Errorf("%w: value window of point %d", ErrFormat, i)
				}
				lead, trail = uint8(l), uint8(64-l-size-1)
			} else if lead == 255 {
				return dst, fmt.Errorf("%w: value of point %d reuses no window", ErrFormat, i)
			}
			x, ok := r.readBits(64 - lead - trail)
			if !ok {
				return dst, fmt.Errorf("%w: value of point %d", ErrFormat, i)
			}
			prevV ^= x << trail
		}
		dst = append(dst, sample.Point{T: prevT, V: math.Float64frombits(prevV)})
	}
	return dst, nil
}
