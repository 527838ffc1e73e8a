package chunk

import (
	"encoding/binary"
	"math"

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
	exp, decimal := decimalExp(pts, nil)
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
	h := valueHead{mode: mode, exp: exp, v: math.Float64bits(pts[0].V)}
	switch mode {
	case modeMean:
		h.m, h.n, _ = meanParts(pts[0].V, exp, 1)
	case modeDecimal, modeDecimalDoD:
		h.m, _ = mantissa(pts[0].V, exp)
	}
	w := bitWriter{b: appendValueHead(dst, h)}
	prevM, prevMD, prevN := h.m, int64(0), h.n
	prevT, prevD := pts[0].T, int64(0)
	x := xorWriter{prev: h.v, lead: 255}
	for _, p := range pts[1:] {
		d := p.T - prevT
		writeVarBits(&w, zigzag(d-prevD), timeWidths)
		prevT, prevD = p.T, d
		switch mode {
		case modeDecimal:
			m, _ := mantissa(p.V, exp)
			writeVarBits(&w, zigzag(m-prevM), deltaWidths)
			prevM = m
		case modeDecimalDoD:
			m, _ := mantissa(p.V, exp)
			md := m - prevM
			writeVarBits(&w, zigzag(md-prevMD), deltaWidths)
			prevM, prevMD = m, md
		case modeMean:
			m, n, _ := meanParts(p.V, exp, prevN)
			writeVarBits(&w, zigzag(n-prevN), deltaWidths)
			writeVarBits(&w, zigzag(m-prevM), deltaWidths)
			prevM, prevN = m, n
		default:
			x.write(&w, p.V)
		}
	}
	return w.b
}
