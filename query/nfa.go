package query

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"unicode/utf8"
)

// The matcher behind both pattern syntaxes (the package comment describes
// the algorithm). A pattern compiles to branches; a branch is a sequence
// of items, each one symbol of a class, or a star: any run of symbols of a
// class. Every branch takes one start bit and one bit per item in the
// state vector, the branches one after the other.

// item is one position of a branch.
type item struct {
	class int  // index into the pattern's classes
	star  bool // zero or more symbols of the class; else exactly one
}

// branch is one alternative of a pattern.
type branch struct {
	begin bool // anchored at the start of the key; else it may start at any symbol
	end   bool // anchored at the end of the key; else it matches once its items are through
	items []item
}

// maxWords is the most 64-bit words a state vector may take: the position
// caps (MaxGlobLen, MaxGraphitePositions) keep patterns within it.
const maxWords = 32

// nfa is a compiled pattern: the masks that step its state vector, one bit
// per position, over a key, one symbol (byte or rune) at a time.
type nfa struct {
	n     int  // words per vector
	runes bool // symbols are UTF-8 runes (Graphite); else bytes (mesures)
	// table[c*n:(c+1)*n] holds the positions whose class takes the symbol
	// c: every byte, or in runes mode the ASCII runes.
	table []uint64
	// Runes mode, for runes >= 0x80 and invalid bytes (as utf8.RuneError,
	// the way package regexp reads them): the runes from bounds[k] up to
	// bounds[k+1] take the positions in rows[row[k]*n:].
	bounds []rune
	row    []uint32
	rows   []uint64
	// star: positions that repeat (a self-loop on their class) and may be
	// skipped. A run of consecutive stars is a block; blockInit holds the
	// bit before each block and blockFinal each block's last bit.
	star, blockInit, blockFinal []uint64
	init                        []uint64 // the state before any symbol
	restart                     []uint64 // start bits of branches not anchored at the start
	acceptEnd                   []uint64 // last bits of branches anchored at the end
	acceptAny                   []uint64 // last bits of branches that are not
	hasAcceptAny                bool
	// words holds the masks above word by word, as the match loop reads
	// them.
	words []wordMasks
	// reach[w]: the highest word a step can set when words above w are
	// zero (a shift carries one word up, a block of stars may span more,
	// unanchored branches restart at their start bits).
	reach []int
	// A pattern of one anchored branch whose first items are single
	// symbols checks them as bytes: a key without prefix does not match,
	// one with it starts in afterPrefix after it. Likewise a key without
	// suffix, the single symbols that end a branch anchored at the end.
	prefix, suffix string
	afterPrefix    []uint64
}

type wordMasks struct {
	star, blockInit, blockFinal, restart, acceptAny uint64
}

func newNFA(branches []branch, classes [][]rune, runes bool) (*nfa, error) {
	positions := 0
	for _, b := range branches {
		positions += 1 + len(b.items)
	}
	n := max((positions+63)/64, 1)
	if n > maxWords {
		return nil, fmt.Errorf("pattern has %d positions; at most %d", positions, maxWords*64)
	}
	m := &nfa{n: n, runes: runes}
	vec := func() []uint64 { return make([]uint64, n) }
	m.star, m.blockInit, m.blockFinal = vec(), vec(), vec()
	m.init, m.restart, m.acceptEnd, m.acceptAny = vec(), vec(), vec(), vec()
	set := func(v []uint64, p int) { v[p/64] |= 1 << (p % 64) }
	m.reach = make([]int, n)
	for w := range m.reach {
		m.reach[w] = min(w+1, n-1)
	}
	classPos := make([][]uint64, len(classes)) // positions of each class
	for i := range classPos {
		classPos[i] = vec()
	}
	p, blockInit := 0, 0
	for _, b := range branches {
		set(m.init, p) // the start bit
		if !b.begin {
			set(m.restart, p)
			for w := range m.reach {
				m.reach[w] = max(m.reach[w], p/64)
			}
		}
		for i, it := range b.items {
			p++
			set(classPos[it.class], p)
			if it.star {
				set(m.star, p)
				if i == 0 || !b.items[i-1].star {
					set(m.blockInit, p-1)
					blockInit = p - 1
				}
				if i == len(b.items)-1 || !b.items[i+1].star {
					set(m.blockFinal, p)
					// A bit in the block's words, or a shift into
					// them, may close up to its last star.
					for w := max(blockInit/64-1, 0); w < n; w++ {
						m.reach[w] = max(m.reach[w], p/64)
					}
				}
			}
		}
		if b.end {
			set(m.acceptEnd, p)
		} else {
			set(m.acceptAny, p)
			m.hasAcceptAny = true
		}
		p++
	}
	m.closure(m.init)
	m.words = make([]wordMasks, n)
	for w := range m.words {
		m.words[w] = wordMasks{m.star[w], m.blockInit[w], m.blockFinal[w], m.restart[w], m.acceptAny[w]}
	}
	if len(branches) == 1 && branches[0].begin {
		m.affixes(branches[0], classes)
	}

	// Deduplicate classes by their ranges: positions of equal classes
	// share one mask.
	type cls struct {
		ranges []rune
		pos    []uint64
	}
	var uniq []cls
	seen := map[string]int{}
	for i, c := range classes {
		key := wordsKey(nil, c)
		if j, ok := seen[key]; ok {
			for w := range uniq[j].pos {
				uniq[j].pos[w] |= classPos[i][w]
			}
			continue
		}
		seen[key] = len(uniq)
		uniq = append(uniq, cls{c, classPos[i]})
	}
	symbols := 256
	if runes {
		symbols = utf8.RuneSelf
	}
	m.table = make([]uint64, symbols*n)
	for _, c := range uniq {
		for k := 0; k+1 < len(c.ranges); k += 2 {
			for r := max(c.ranges[k], 0); r <= min(c.ranges[k+1], rune(symbols-1)); r++ {
				orInto(m.table[int(r)*n:int(r+1)*n], c.pos)
			}
		}
	}
	if runes {
		ranges, pos := make([][]rune, len(uniq)), make([][]uint64, len(uniq))
		for i, c := range uniq {
			ranges[i], pos[i] = c.ranges, c.pos
		}
		m.partition(ranges, pos)
	}
	return m, nil
}

// partition cuts the runes from 0x80 up into intervals on which every
// class is constant, and gives each interval its row of positions (equal
// rows shared).
func (m *nfa) partition(ranges [][]rune, pos [][]uint64) {
	cuts := []rune{utf8.RuneSelf}
	for _, rs := range ranges {
		for k := 0; k+1 < len(rs); k += 2 {
			if rs[k+1] < utf8.RuneSelf {
				continue
			}
			cuts = append(cuts, max(rs[k], utf8.RuneSelf), rs[k+1]+1)
		}
	}
	slices.Sort(cuts)
	m.bounds = slices.Compact(cuts)
	masks := make([]uint64, len(m.bounds)*m.n)
	for c, rs := range ranges {
		for k := 0; k+1 < len(rs); k += 2 {
			if rs[k+1] < utf8.RuneSelf {
				continue
			}
			i, _ := slices.BinarySearch(m.bounds, max(rs[k], utf8.RuneSelf))
			for ; i < len(m.bounds) && m.bounds[i] <= rs[k+1]; i++ {
				orInto(masks[i*m.n:(i+1)*m.n], pos[c])
			}
		}
	}
	rowOf := map[string]uint32{}
	m.row = make([]uint32, len(m.bounds))
	for i := range m.bounds {
		mask := masks[i*m.n : (i+1)*m.n]
		key := wordsKey(mask, nil)
		r, ok := rowOf[key]
		if !ok {
			r = uint32(len(m.rows) / m.n)
			rowOf[key] = r
			m.rows = append(m.rows, mask...)
		}
		m.row[i] = r
	}
}

// wordsKey is a map key for a mask or a list of rune ranges.
func wordsKey(mask []uint64, ranges []rune) string {
	b := make([]byte, 0, 8*len(mask)+4*len(ranges))
	for _, w := range mask {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	for _, r := range ranges {
		b = binary.LittleEndian.AppendUint32(b, uint32(r))
	}
	return string(b)
}

// affixes sets the literal prefix and suffix of a pattern of one branch.
func (m *nfa) affixes(b branch, classes [][]rune) {
	// literal reports whether an item takes one symbol that a key holds
	// as its bytes: one byte, or a rune other than RuneError (which an
	// invalid byte also reads as).
	literal := func(it item) bool {
		c := classes[it.class]
		return !it.star && len(c) == 2 && c[0] == c[1] &&
			(!m.runes || utf8.ValidRune(c[0]) && c[0] != utf8.RuneError)
	}
	bytes := func(items []item) string {
		var b []byte
		for _, it := range items {
			if m.runes {
				b = utf8.AppendRune(b, classes[it.class][0])
			} else {
				b = append(b, byte(classes[it.class][0]))
			}
		}
		return string(b)
	}
	k := 0
	for k < len(b.items) && literal(b.items[k]) {
		k++
	}
	if k > 0 {
		m.prefix = bytes(b.items[:k])
		m.afterPrefix = make([]uint64, m.n)
		m.afterPrefix[k/64] |= 1 << (k % 64)
		m.closure(m.afterPrefix)
	}
	if b.end {
		// The suffix is only a filter: the match still runs to the
		// end. It may overlap the prefix.
		j := len(b.items)
		for j > 0 && literal(b.items[j-1]) {
			j--
		}
		m.suffix = bytes(b.items[j:])
	}
}

func orInto(dst, src []uint64) {
	for i := range dst {
		dst[i] |= src[i]
	}
}

// closure adds to d every star position reachable from its bits by
// skipping stars: within each block, every star above the block's
// initial bit or above a set star. The subtraction does all blocks at
// once: borrowing from the block's initial bit runs up to its lowest set
// bit (the block's final bit stops it), and the bits it flips are those
// not reached.
func (m *nfa) closure(d []uint64) {
	var borrow uint64
	for w := range d {
		df := d[w] | m.blockFinal[w]
		var diff uint64
		diff, borrow = bits.Sub64(df, m.blockInit[w], borrow)
		d[w] |= m.star[w] &^ (diff ^ df)
	}
}

// symbol returns the positions whose class takes the rune at key[i]
// (runes mode, key[i] >= 0x80), and the rune's width.
func (m *nfa) symbol(key string, i int) ([]uint64, int) {
	r, w := utf8.DecodeRuneInString(key[i:])
	// The last interval starting at or below r.
	lo, hi := 0, len(m.bounds)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if m.bounds[mid] <= r {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	k := int(m.row[lo-1]) * m.n
	return m.rows[k : k+m.n], w
}

// match reports whether key matches. With ops non-nil, it adds the number
// of state-vector words it stepped (the tests' measure of work).
func (m *nfa) match(key string, ops *int) bool {
	if !strings.HasPrefix(key, m.prefix) || !strings.HasSuffix(key, m.suffix) {
		return false
	}
	start := m.init
	if m.prefix != "" {
		key, start = key[len(m.prefix):], m.afterPrefix
	}
	if m.n == 1 {
		return m.match1(key, start[0], ops)
	}
	var buf [maxWords]uint64
	n := m.n
	d := buf[:n]
	copy(d, start)
	if m.hasAcceptAny && anyAnd(d, m.acceptAny) {
		return true
	}
	hi := n - 1 // the highest word that may be non-zero
	work := 0
	for i := 0; i < len(key); {
		var b []uint64
		if c := key[i]; !m.runes || c < utf8.RuneSelf {
			b = m.table[int(c)*n : int(c)*n+n]
			i++
		} else {
			var width int
			b, width = m.symbol(key, i)
			i += width
		}
		// One pass from the low word up: shift every bit to the next
		// position (the carry crosses words), keep the stars' own bits,
		// keep what the symbol's class allows, restart the unanchored
		// branches, then close over skipped stars (the borrow crosses
		// words). Words above reach[hi] are zero and stay zero.
		words := m.words[:m.reach[hi]+1]
		dw, bw := d[:len(words)], b[:len(words)]
		work += len(words)
		var carry, borrow, hit uint64
		hi = -1
		for w := range words {
			mw := &words[w]
			x := dw[w]
			y := (x<<1|carry|x&mw.star)&bw[w] | mw.restart
			carry = x >> 63
			df := y | mw.blockFinal
			var diff uint64
			diff, borrow = bits.Sub64(df, mw.blockInit, borrow)
			y |= mw.star &^ (diff ^ df)
			dw[w] = y
			if y != 0 {
				hi = w
			}
			hit |= y & mw.acceptAny
		}
		if hit != 0 || hi < 0 {
			if ops != nil {
				*ops += work
			}
			return hit != 0
		}
	}
	if ops != nil {
		*ops += work
	}
	return anyAnd(d, m.acceptEnd)
}

// match1 is match for a state of one word.
func (m *nfa) match1(key string, d uint64, ops *int) bool {
	star, init, final := m.star[0], m.blockInit[0], m.blockFinal[0]
	restart, acceptAny := m.restart[0], m.acceptAny[0]
	if d&acceptAny != 0 {
		return true
	}
	steps := 0
	for i := 0; i < len(key); {
		var b uint64
		if c := key[i]; !m.runes || c < utf8.RuneSelf {
			b = m.table[c]
			i++
		} else {
			bs, width := m.symbol(key, i)
			b = bs[0]
			i += width
		}
		steps++
		y := (d<<1|d&star)&b | restart
		df := y | final
		y |= star &^ ((df - init) ^ df)
		d = y
		if y&acceptAny != 0 || y == 0 {
			if ops != nil {
				*ops += steps
			}
			return y != 0
		}
	}
	if ops != nil {
		*ops += steps
	}
	return d&m.acceptEnd[0] != 0
}
func anyAnd(a, b []uint64) bool {
	for i := range a {
		if a[i]&b[i] != 0 {
			return true
		}
	}
	return false
}
