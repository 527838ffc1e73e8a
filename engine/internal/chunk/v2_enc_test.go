package chunk

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/sonde-metrics/sonde/engine/sample"
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

// appendV2 is the version 2 encoder, kept to test that version 2 chunks
// still decode.
func appendV2(dst []byte, pts []sample.Point) []byte {
	exp, decimal := decimalExp(pts)
	if !decimal {
		if exp, ok := meanExp(pts); ok {
			return appendModeV2(dst, pts, modeMean, exp)
		}
		return appendModeV2(dst, pts, modeFloat, 0)
	}
	n := len(dst)
	dst = appendModeV2(dst, pts, modeDecimal, exp)
	alt := appendModeV2(nil, pts, modeDecimalDoD, exp)
	if len(alt) < len(dst)-n {
		dst = append(dst[:n], alt...)
	}
	return dst
}

func appendModeV2(dst []byte, pts []sample.Point, mode byte, exp int) []byte {
	dst = append(dst, version2)
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
