package chunk

import (
	"fmt"
	"math"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Version 2 chunks, written from issue 10 until chunk version 3, are still
// read (docs/format/snapshot.md): times as deltas of deltas and decimal
// values as deltas (or deltas of deltas), each zigzagged into one of a
// few fixed-width buckets, interleaved point by point.
const version2 = 2

// Buckets for a zigzagged integer: a prefix of 1s ended by a 0 picks the
// width; the last bucket has no terminating 0.
var (
	// A regular interval is 0; a clock that jitters by a few ms fits 4 bits.
	timeWidths = []uint8{0, 4, 8, 14, 24, 64}
	// A 0.01 random walk steps by -1, 0 or +1.
	deltaWidths = []uint8{0, 2, 7, 14, 24, 64}
)

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

// decodeV2 appends the n points of a version 2 chunk whose header is read
// (b is what follows it) to dst.
func decodeV2(b []byte, n uint64, first int64, dst []sample.Point) ([]sample.Point, error) {
	if n > uint64(len(b))*8+1 { // every later point takes at least one bit
		return dst, fmt.Errorf("%w: %d points in %d bytes", ErrFormat, n, len(b))
	}
	h, b, err := readValueHead(b)
	if err != nil {
		return dst, err
	}
	prevM, prevMD, prevN := h.m, int64(0), h.n
	dst = append(dst, sample.Point{T: first, V: h.first()})
	r := bitReader{b: b}
	prevT, prevD := first, int64(0)
	x := xorReader{prev: math.Float64bits(h.first()), lead: 255}
	for i := uint64(1); i < n; i++ {
		u, ok := readVarBits(&r, timeWidths)
		if !ok {
			return dst, fmt.Errorf("%w: time of point %d", ErrFormat, i)
		}
		prevD += unzigzag(u)
		prevT += prevD
		var v float64
		switch h.mode {
		case modeMean:
			un, ok1 := readVarBits(&r, deltaWidths)
			um, ok2 := readVarBits(&r, deltaWidths)
			prevN += unzigzag(un)
			if !ok1 || !ok2 || prevN < 1 || prevN > maxMeanN {
				return dst, fmt.Errorf("%w: value of point %d", ErrFormat, i)
			}
			prevM += unzigzag(um)
			v = float64(prevM) / float64(prevN) / pow10[h.exp]
		case modeDecimal, modeDecimalDoD:
			if u, ok = readVarBits(&r, deltaWidths); !ok {
				return dst, fmt.Errorf("%w: value of point %d", ErrFormat, i)
			}
			if h.mode == modeDecimalDoD {
				prevMD += unzigzag(u)
				prevM += prevMD
			} else {
				prevM += unzigzag(u)
			}
			v = float64(prevM) / pow10[h.exp]
		default:
			if v, err = x.next(&r, i); err != nil {
				return dst, err
			}
		}
		dst = append(dst, sample.Point{T: prevT, V: v})
	}
	return dst, nil
}
