package ring

import (
	"encoding/binary"
	"errors"
	"math"
	"math/bits"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// A block's bytes (in memory only; nothing here is stored on disk):
//
//	varint(t0) | then each point: header | [varint(dod)] | value
//
// with the first point's time t0 + dod and its value a change from 0.
//
// The header's bit 7 says a delta of delta of the time follows (else it
// is 0: the interval did not change); bits 6-5 say how the value is
// written:
//
//	0  the value did not change: nothing follows
//	1  a decimal with e = bits 3-0 digits after the point (0..9):
//	   varint(m - m'), m = value×10^e and m' the same of the previous
//	   value; decoded as float64(m)/10^e, which the encoder checked
//	   gives the value back bit for bit
//	2  a byte lz<<4 | n, then the n bytes of the XOR of the float64
//	   bits with the previous value's that follow lz zero bytes
//	   (Gorilla's XOR, in whole bytes)
//
// Varints are zig-zag (encoding/binary's Varint). A steady gauge costs
// one byte a point, a random walk in steps of 0.01 about three or four.

const maxPointBytes = 1 + binary.MaxVarintLen64 + 1 + binary.MaxVarintLen64

const (
	hasDoD      = 0x80
	modeSame    = 0 << 5
	modeDecimal = 1 << 5
	modeXOR     = 2 << 5
	modeMask    = 3 << 5
	maxExp      = 9
)

var pow10 = [maxExp + 1]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

var errFormat = errors.New("malformed block")

// encoder is the state the next point's encoding depends on.
type encoder struct {
	t, delta int64
	v        float64
	exp      int8 // digits after the point of the last decimal delta; -1 after an XOR
}

// mantissa returns round(v×10^e), false when it is not an exact integer
// below 2^53.
func mantissa(v float64, e int) (int64, bool) {
	f := math.Round(v * pow10[e])
	if math.IsNaN(f) || math.Abs(f) >= 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// decimal returns digits e after the point with which v is
// float64(m)/10^e, and the delta of m from prev's m at e, when prev is one
// too; false when there is none. It tries the digits the last point took
// first (a series keeps its precision; none when last < 0), then the
// fewest that serve.
func decimal(v, prev float64, last int) (e int, delta int64, ok bool) {
	if last >= 0 {
		m, ok := exactAt(v, last)
		if pm, pok := exactAt(prev, last); ok && pok {
			return last, m - pm, true
		}
	}
	for e = 0; e <= maxExp; e++ {
		if m, ok := exactAt(v, e); ok {
			pm, ok := exactAt(prev, e)
			return e, m - pm, ok // !ok: prev has more digits than v, or none
		}
	}
	return 0, 0, false
}

// exactAt returns m with float64(m)/10^e == v bit for bit, if there is one.
func exactAt(v float64, e int) (int64, bool) {
	m, ok := mantissa(v, e)
	return m, ok && math.Float64bits(float64(m)/pow10[e]) == math.Float64bits(v)
}

// append encodes p after the encoder's state (as a block's first point
// when first) and advances the state.
func (e *encoder) append(dst []byte, p sample.Point, first bool) []byte {
	if first {
		dst = binary.AppendVarint(dst, p.T)
		*e = encoder{t: p.T} // the value is written as a change from 0
	}
	delta := p.T - e.t
	dod := delta - e.delta
	at := len(dst)
	dst = append(dst, 0)
	var h byte
	if dod != 0 {
		h |= hasDoD
		dst = binary.AppendVarint(dst, dod)
	}
	x := math.Float64bits(p.V) ^ math.Float64bits(e.v)
	exp, dm, ok := 0, int64(0), false
	if x != 0 {
		exp, dm, ok = decimal(p.V, e.v, int(e.exp))
	}
	switch {
	case x == 0:
		h |= modeSame
	case ok && varintLen(dm) <= 8:
		h |= modeDecimal | byte(exp)
		dst = binary.AppendVarint(dst, dm)
		e.exp = int8(exp)
	default:
		h |= modeXOR
		e.exp = -1
		lz := bits.LeadingZeros64(x) / 8
		n := 8 - lz - bits.TrailingZeros64(x)/8
		dst = append(dst, byte(lz<<4|n))
		for i := range n {
			dst = append(dst, byte(x>>(8*(7-lz-i))))
		}
	}
	dst[at] = h
	e.t, e.delta, e.v = p.T, delta, p.V
	return dst
}

func varintLen(v int64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutVarint(b[:], v)
}

// decode appends the n points in buf to dst.
func decode(dst []sample.Point, buf []byte, n int) ([]sample.Point, error) {
	if n == 0 {
		return dst, nil
	}
	t, k := binary.Varint(buf)
	if k <= 0 {
		return dst, errFormat
	}
	buf = buf[k:]
	var delta int64
	var v float64 // the first value is written as a change from 0
	for range n {
		if len(buf) == 0 {
			return dst, errFormat
		}
		h := buf[0]
		buf = buf[1:]
		var dod int64
		if h&hasDoD != 0 {
			if dod, k = binary.Varint(buf); k <= 0 {
				return dst, errFormat
			}
			buf = buf[k:]
		}
		delta += dod
		t += delta
		switch h & modeMask {
		case modeSame:
		case modeDecimal:
			exp := int(h & 0x0f)
			dm, k := binary.Varint(buf)
			if k <= 0 || exp > maxExp {
				return dst, errFormat
			}
			buf = buf[k:]
			pm, _ := mantissa(v, exp)
			v = float64(pm+dm) / pow10[exp]
		case modeXOR:
			if len(buf) == 0 {
				return dst, errFormat
			}
			lz, nb := int(buf[0]>>4), int(buf[0]&0x0f)
			buf = buf[1:]
			if lz+nb > 8 || len(buf) < nb {
				return dst, errFormat
			}
			var x uint64
			for i := range nb {
				x |= uint64(buf[i]) << (8 * (7 - lz - i))
			}
			buf = buf[nb:]
			v = math.Float64frombits(math.Float64bits(v) ^ x)
		default:
			return dst, errFormat
		}
		dst = append(dst, sample.Point{T: t, V: v})
	}
	return dst, nil
}
