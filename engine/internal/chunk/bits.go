package chunk

import "math/bits"

// bitWriter appends bits, most significant first.
type bitWriter struct {
	b    []byte
	free uint8 // unused low bits in the last byte
}

func (w *bitWriter) writeBit(bit bool) {
	if w.free == 0 {
		w.b = append(w.b, 0)
		w.free = 8
	}
	w.free--
	if bit {
		w.b[len(w.b)-1] |= 1 << w.free
	}
}

// writeBits writes the low n bits of v (n <= 64).
func (w *bitWriter) writeBits(v uint64, n uint8) {
	for n > 0 {
		if w.free == 0 {
			w.b = append(w.b, 0)
			w.free = 8
		}
		k := min(n, w.free)
		n -= k
		w.free -= k
		w.b[len(w.b)-1] |= byte((v>>n)&(1<<k-1)) << w.free
	}
}

// bitReader reads what a bitWriter wrote.
type bitReader struct {
	b   []byte
	pos uint64 // bit position
}

func (r *bitReader) readBit() (bool, bool) {
	if r.pos >= uint64(len(r.b))*8 {
		return false, false
	}
	bit := r.b[r.pos/8]&(0x80>>(r.pos%8)) != 0
	r.pos++
	return bit, true
}

func (r *bitReader) readBits(n uint8) (uint64, bool) {
	if r.pos+uint64(n) > uint64(len(r.b))*8 {
		return 0, false
	}
	var v uint64
	for n > 0 {
		off := uint8(r.pos % 8)
		avail := 8 - off
		k := min(n, avail)
		bits := (r.b[r.pos/8] >> (avail - k)) & (1<<k - 1)
		v = v<<k | uint64(bits)
		n -= k
		r.pos += uint64(k)
	}
	return v, true
}

// readOnes reads 1 bits up to the first 0, which it consumes too, or up
// to max 1s (then no 0 follows), and returns how many 1s it read.
func (r *bitReader) readOnes(max uint64) (uint64, bool) {
	var q uint64
	for {
		if r.pos >= uint64(len(r.b))*8 {
			return 0, false
		}
		off := r.pos % 8
		ones := uint64(bits.LeadingZeros8(^(r.b[r.pos/8] << off))) // the shift fills with 0s
		if q+ones >= max {
			r.pos += max - q
			return max, true
		}
		q += ones
		r.pos += ones
		if off+ones < 8 {
			r.pos++ // the 0
			return q, true
		}
	}
}
