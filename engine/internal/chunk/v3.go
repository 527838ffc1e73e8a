package chunk

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Version 3 (docs/format/snapshot.md):
//
//	version 3 | count uvarint | first time varint | span uvarint (last - first) |
//	value head (mode, exp, first value: as version 2) | value k byte(s) |
//	time byte | bit stream: the times of points 2..n, then their values
//
// Each integer stream is zigzagged and Rice-coded with its own parameter
// k: a value z is z>>k in unary (that many 1s, then a 0) and its low k
// bits. A quotient of riceEscape or more is written as riceEscape 1s, 6
// bits of (bit length - 1) and the value's bits. k = kZero says every
// value of the stream is 0 and takes no bits at all.
const (
	riceEscape = 24
	kZero      = 63
	maxK       = 62
	// timeBase in the time byte: the times are deltas from the chunk's
	// base interval, span / (count-1); without it, deltas of deltas (the
	// first taken from the base interval). The low 6 bits are k.
	timeBase = 0x80
	// maxFree is how many points a chunk may hold in fewer bits than one
	// a point (streams of zeros): a bound on what a few bytes decode to.
	maxFree = 1 << 16
)

// riceBits is the length of z's code with parameter k (< kZero).
func riceBits(z uint64, k uint8) uint64 {
	if q := z >> k; q < riceEscape {
		return q + 1 + uint64(k)
	}
	return riceEscape + 6 + uint64(bits.Len64(z))
}

// riceK returns the parameter that codes zs in the fewest bits, and that
// many bits: kZero when every value is 0 and free allows it. The length
// is convex in k, so it walks down from the width of the mean.
func riceK(zs []uint64, free bool) (uint8, uint64) {
	var or uint64
	var sum float64
	for _, z := range zs {
		or |= z
		sum += float64(z)
	}
	if or == 0 && free {
		return kZero, 0
	}
	cost := func(k uint8) uint64 {
		var c uint64
		for _, z := range zs {
			c += riceBits(z, k)
		}
		return c
	}
	k := uint8(0)
	if mean := sum / float64(max(len(zs), 1)); mean >= 1<<maxK {
		k = maxK
	} else if mean >= 2 {
		k = uint8(bits.Len64(uint64(mean)) - 1)
	}
	best := cost(k)
	down := false
	for k > 0 {
		c := cost(k - 1)
		if c >= best {
			break
		}
		best, k, down = c, k-1, true
	}
	for !down && k < maxK {
		c := cost(k + 1)
		if c >= best {
			break
		}
		best, k = c, k+1
	}
	return k, best
}

func writeRice(w *bitWriter, z uint64, k uint8) {
	if k == kZero {
		return
	}
	if q := z >> k; q < riceEscape {
		w.writeBits(1<<(q+1)-2, uint8(q+1)) // q 1s and a 0
		w.writeBits(z, k)
		return
	}
	w.writeBits(1<<riceEscape-1, riceEscape)
	l := uint8(bits.Len64(z))
	w.writeBits(uint64(l-1), 6)
	w.writeBits(z, l)
}

func readRice(r *bitReader, k uint8) (uint64, bool) {
	if k == kZero {
		return 0, true
	}
	q, ok := r.readOnes(riceEscape)
	if !ok {
		return 0, false
	}
	if q == riceEscape {
		l, ok := r.readBits(6)
		if !ok {
			return 0, false
		}
		return r.readBits(uint8(l) + 1)
	}
	low, ok := r.readBits(k)
	return q<<k | low, ok
}

// encoder holds the streams of the chunk being written, reused through a
// pool: a chunk of up to 4096 points is coded without allocating.
type encoder struct {
	t, v [2][]uint64 // two candidate codings of the times, and of the values
	m, n []int64     // mantissas (sums) and counts
}

var encoders = sync.Pool{New: func() any { return new(encoder) }}

// Append encodes pts (oldest first, at least one) onto dst. Of each
// stream's codings (times: deltas from the base interval or deltas of
// deltas; decimals: deltas or deltas of deltas) the shorter is kept.
func Append(dst []byte, pts []sample.Point) []byte {
	e := encoders.Get().(*encoder)
	dst = e.append(dst, pts)
	if max(cap(e.m), cap(e.t[0]), cap(e.t[1])) <= 1<<16 {
		encoders.Put(e)
	}
	return dst
}

func (e *encoder) append(dst []byte, pts []sample.Point) []byte {
	n := len(pts)
	first, span := pts[0].T, pts[n-1].T-pts[0].T
	free := n <= maxFree
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = binary.AppendVarint(dst, first)
	dst = binary.AppendUvarint(dst, uint64(span))

	h := valueHead{mode: modeFloat, v: math.Float64bits(pts[0].V)}
	e.m, e.n = e.m[:0], e.n[:0]
	e.v[0], e.v[1] = e.v[0][:0], e.v[1][:0]
	if exp, ok := decimalExp(pts, &e.m); ok {
		h = valueHead{mode: modeDecimal, exp: exp}
		var prevD int64
		for i := 1; i < n; i++ {
			d := e.m[i] - e.m[i-1]
			e.v[0] = append(e.v[0], zigzag(d))
			e.v[1] = append(e.v[1], zigzag(d-prevD))
			prevD = d
		}
	} else if exp, ok := meanExp(pts); ok {
		h = valueHead{mode: modeMean, exp: exp}
		hint := int64(1)
		for _, p := range pts {
			m, c, _ := meanParts(p.V, exp, hint)
			e.m, e.n = append(e.m, m), append(e.n, c)
			hint = c
		}
		for i := 1; i < n; i++ {
			e.v[0] = append(e.v[0], zigzag(e.n[i]-e.n[i-1]))
			e.v[1] = append(e.v[1], zigzag(e.m[i]-e.m[i-1]))
		}
	}
	var vk [2]uint8
	switch h.mode {
	case modeDecimal:
		h.m = e.m[0]
		k0, c0 := riceK(e.v[0], free)
		k1, c1 := riceK(e.v[1], free)
		vk[0] = k0
		if c1 < c0 {
			h.mode, vk[0] = modeDecimalDoD, k1
			e.v[0], e.v[1] = e.v[1], e.v[0]
		}
		dst = append(appendValueHead(dst, h), vk[0])
	case modeMean:
		h.m, h.n = e.m[0], e.n[0]
		vk[0], _ = riceK(e.v[0], free)
		vk[1], _ = riceK(e.v[1], free)
		dst = append(appendValueHead(dst, h), vk[0], vk[1])
	default:
		dst = appendValueHead(dst, h)
	}

	e.t[0], e.t[1] = e.t[0][:0], e.t[1][:0]
	if n > 1 {
		base := span / int64(n-1)
		prevD := base
		for i := 1; i < n; i++ {
			d := pts[i].T - pts[i-1].T
			e.t[0] = append(e.t[0], zigzag(d-base))
			e.t[1] = append(e.t[1], zigzag(d-prevD))
			prevD = d
		}
	}
	tk, c0 := riceK(e.t[0], free)
	tb := timeBase | tk
	if k1, c1 := riceK(e.t[1], free); c1 < c0 {
		tb = k1
		e.t[0], e.t[1] = e.t[1], e.t[0]
	}
	dst = append(dst, tb)

	w := bitWriter{b: dst}
	for _, z := range e.t[0] {
		writeRice(&w, z, tb&0x3f)
	}
	switch h.mode {
	case modeDecimal, modeDecimalDoD:
		for _, z := range e.v[0] {
			writeRice(&w, z, vk[0])
		}
	case modeMean:
		for i := range e.v[0] {
			writeRice(&w, e.v[0][i], vk[0])
			writeRice(&w, e.v[1][i], vk[1])
		}
	default:
		x := xorWriter{prev: h.v, lead: 255}
		for _, p := range pts[1:] {
			x.write(&w, p.V)
		}
	}
	return w.b
}

// decodeV3 appends the n points of a version 3 chunk whose header is read
// (b is what follows it) to dst.
func decodeV3(b []byte, n uint64, first, last int64, dst []sample.Point) ([]sample.Point, error) {
	if n > maxFree && n > uint64(len(b))*8+1 {
		return dst, fmt.Errorf("%w: %d points in %d bytes", ErrFormat, n, len(b))
	}
	h, b, err := readValueHead(b)
	if err != nil {
		return dst, err
	}
	var vk [2]uint8
	ks := 0 // value stream parameters
	switch h.mode {
	case modeDecimal, modeDecimalDoD:
		ks = 1
	case modeMean:
		ks = 2
	}
	if len(b) < ks+1 {
		return dst, fmt.Errorf("%w: stream parameters", ErrFormat)
	}
	copy(vk[:], b[:ks])
	tb := b[ks]
	b = b[ks+1:]
	if vk[0] > kZero || vk[1] > kZero || tb&0x40 != 0 {
		return dst, fmt.Errorf("%w: stream parameters", ErrFormat)
	}
	if n > maxFree && (vk[0] == kZero || vk[1] == kZero || tb&0x3f == kZero) {
		return dst, fmt.Errorf("%w: %d points with a stream of no bits", ErrFormat, n)
	}
	if n == 1 && last != first {
		return dst, fmt.Errorf("%w: one point spanning %d ms", ErrFormat, last-first)
	}
	r := bitReader{b: b}
	start := len(dst)
	dst = append(dst, sample.Point{T: first, V: h.first()})
	if n > 1 {
		base := (last - first) / int64(n-1)
		t, d := first, base
		for i := uint64(1); i < n; i++ {
			z, ok := readRice(&r, tb&0x3f)
			if !ok {
				return dst[:start], fmt.Errorf("%w: time of point %d", ErrFormat, i)
			}
			if tb&timeBase != 0 {
				d = base + unzigzag(z)
			} else {
				d += unzigzag(z)
			}
			t += d
			dst = append(dst, sample.Point{T: t})
		}
		if t != last {
			return dst[:start], fmt.Errorf("%w: the times end at %d, not at the last time %d", ErrFormat, t, last)
		}
	}
	pts := dst[start:]
	m, c, md := h.m, h.n, int64(0)
	x := xorReader{prev: h.v, lead: 255}
	for i := uint64(1); i < n; i++ {
		switch h.mode {
		case modeDecimal, modeDecimalDoD:
			z, ok := readRice(&r, vk[0])
			if !ok {
				return dst[:start], fmt.Errorf("%w: value of point %d", ErrFormat, i)
			}
			if h.mode == modeDecimalDoD {
				md += unzigzag(z)
				m += md
			} else {
				m += unzigzag(z)
			}
			pts[i].V = float64(m) / pow10[h.exp]
		case modeMean:
			zc, ok1 := readRice(&r, vk[0])
			zm, ok2 := readRice(&r, vk[1])
			c += unzigzag(zc)
			if !ok1 || !ok2 || c < 1 || c > maxMeanN {
				return dst[:start], fmt.Errorf("%w: value of point %d", ErrFormat, i)
			}
			m += unzigzag(zm)
			pts[i].V = float64(m) / float64(c) / pow10[h.exp]
		default:
			if pts[i].V, err = x.next(&r, i); err != nil {
				return dst[:start], err
			}
		}
	}
	return dst, nil
}
