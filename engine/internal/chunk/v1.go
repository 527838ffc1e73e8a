package chunk

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Version 1 chunks, written before this package, are still read:
//
//	version 1 byte | count uvarint | first T varint | last T varint |
//	first V 8 bytes | per later point: delta-of-delta T (varint),
//	XOR of V with the previous V: 0x00 when equal, else one byte holding
//	(trailing zero bits + 1) and the shifted XOR as a uvarint.
const version1 = 1

// decodeV1 appends the n points of a version 1 chunk whose header is read
// (b is what follows it) to dst.
func decodeV1(b []byte, n uint64, first int64, dst []sample.Point) ([]sample.Point, error) {
	if len(b) < 8 || n == 0 || n > uint64(len(b)) {
		return dst, fmt.Errorf("%w: version 1 chunk of %d points in %d bytes", ErrFormat, n, len(b))
	}
	prevV := binary.LittleEndian.Uint64(b)
	b = b[8:]
	dst = append(dst, sample.Point{T: first, V: math.Float64frombits(prevV)})
	prevT, prevD := first, int64(0)
	for i := uint64(1); i < n; i++ {
		dod, k := binary.Varint(b)
		if k <= 0 || len(b) == k {
			return dst, fmt.Errorf("%w: version 1 chunk point %d", ErrFormat, i)
		}
		b = b[k:]
		prevD += dod
		prevT += prevD
		tz := int(b[0])
		b = b[1:]
		if tz > 64 {
			return dst, fmt.Errorf("%w: version 1 chunk point %d xor", ErrFormat, i)
		}
		if tz > 0 {
			x, k := binary.Uvarint(b)
			if k <= 0 {
				return dst, fmt.Errorf("%w: version 1 chunk point %d xor", ErrFormat, i)
			}
			b = b[k:]
			prevV ^= x << (tz - 1)
		}
		dst = append(dst, sample.Point{T: prevT, V: math.Float64frombits(prevV)})
	}
	return dst, nil
}
