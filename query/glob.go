package query

import (
	"fmt"
	"regexp/syntax"
	"unicode"
)

// Limits on client patterns (README.md, Configuration). They bound the
// state vector a match steps per key byte: at most 17 words of 64 bits.
const (
	// MaxGlobLen is the longest pattern, in bytes, of either syntax.
	MaxGlobLen = 1024
	// MaxGraphitePositions caps a Graphite pattern with its {a,b}
	// alternatives expanded into whole paths: the characters of every
	// path plus one per path. a.{b,c}.d is a.b.d and a.c.d: 12. A glob
	// of MaxGlobLen bytes takes as many.
	MaxGraphitePositions = 17 * 64
)

// Glob is a compiled key pattern: '*' matches any run of bytes (slashes
// and dots included), '?' one byte, and '\' makes the next byte literal (a
// '\' that ends the pattern matches nothing). It is safe for concurrent
// use.
type Glob struct {
	m      *nfa
	prefix string // the literal bytes before the first '*' or '?'
}

// Prefix returns the literal start every key the pattern matches has: the
// series index scans only the keys under it. A nil Glob matches every key
// and has no prefix.
func (g *Glob) Prefix() string {
	if g == nil {
		return ""
	}
	return g.prefix
}

// Func returns g.Match, or nil (every key) for a nil Glob.
func (g *Glob) Func() func(string) bool {
	if g == nil {
		return nil
	}
	return g.Match
}

// CompileGlob compiles a key pattern. Its only error is a pattern longer
// than MaxGlobLen.
func CompileGlob(pattern string) (*Glob, error) {
	if len(pattern) > MaxGlobLen {
		return nil, fmt.Errorf("match pattern is %d bytes; at most %d", len(pattern), MaxGlobLen)
	}
	// Classes: 0 any byte, 1 no byte, then the literal bytes in use.
	classes := [][]rune{{0, 255}, {}}
	var literal [256]int
	lit := func(c byte) int {
		if literal[c] == 0 {
			literal[c] = len(classes)
			classes = append(classes, []rune{rune(c), rune(c)})
		}
		return literal[c]
	}
	b := branch{begin: true, end: true}
	var prefix []byte
	fixed := true // no '*' or '?' yet: the prefix goes on
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			fixed = false
			if n := len(b.items); n == 0 || !b.items[n-1].star {
				b.items = append(b.items, item{class: 0, star: true})
			}
		case '?':
			fixed = false
			b.items = append(b.items, item{class: 0})
		case '\\':
			if i+1 == len(pattern) {
				b.items = append(b.items, item{class: 1})
				break
			}
			i++
			b.items = append(b.items, item{class: lit(pattern[i])})
			if fixed {
				prefix = append(prefix, pattern[i])
			}
		default:
			b.items = append(b.items, item{class: lit(c)})
			if fixed {
				prefix = append(prefix, c)
			}
		}
	}
	m, err := newNFA([]branch{b}, classes, false)
	if err != nil {
		return nil, fmt.Errorf("match pattern: %w", err)
	}
	return &Glob{m: m, prefix: string(prefix)}, nil
}

// Match reports whether key matches the pattern.
func (g *Glob) Match(key string) bool { return g.m.match(key, nil) }

// MatchString reports whether s matches (the Graphite patterns' method,
// named as package regexp names it).
func (m *nfa) MatchString(s string) bool { return m.match(s, nil) }

// graphiteNFA compiles a Graphite pattern translated to a regexp (see
// graphiteGlob): parsed by regexp/syntax as package regexp parses it, so
// every pattern means exactly what the regexp meant, then expanded into
// branches.
func graphiteNFA(pattern, expr string) (*nfa, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	x := expander{classID: map[string]int{}}
	branches, err := x.expand(re.Simplify())
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	m, err := newNFA(branches, x.classes, true)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	return m, nil
}

// expander turns a parsed regexp into branches: alternations become
// separate branches, concatenations their cross product.
type expander struct {
	classes [][]rune
	classID map[string]int
}

func (x *expander) class(ranges []rune) int {
	key := wordsKey(nil, ranges)
	if id, ok := x.classID[key]; ok {
		return id
	}
	x.classID[key] = len(x.classes)
	x.classes = append(x.classes, ranges)
	return len(x.classes) - 1
}

func positions(bs []branch) int {
	n := 0
	for _, b := range bs {
		n += 1 + len(b.items)
	}
	return n
}

func errPositions(n int) error {
	return fmt.Errorf("pattern expands to %d positions ({a,b} alternatives multiply the paths); at most %d", n, MaxGraphitePositions)
}

// symbolClass returns the class of a regexp that matches exactly one rune.
func (x *expander) symbolClass(re *syntax.Regexp) (int, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if len(re.Rune) == 1 {
			return x.class(literalClass(re.Rune[0], re.Flags)), true
		}
	case syntax.OpCharClass:
		return x.class(re.Rune), true
	case syntax.OpAnyChar:
		return x.class([]rune{0, unicode.MaxRune}), true
	case syntax.OpAnyCharNotNL:
		return x.class([]rune{0, '\n' - 1, '\n' + 1, unicode.MaxRune}), true
	}
	return 0, false
}

func literalClass(r rune, flags syntax.Flags) []rune {
	if flags&syntax.FoldCase == 0 {
		return []rune{r, r}
	}
	var cc []rune
	for f := r; ; {
		cc = append(cc, f, f)
		if f = unicode.SimpleFold(f); f == r {
			break
		}
	}
	return cc
}

func (x *expander) expand(re *syntax.Regexp) ([]branch, error) {
	switch re.Op {
	case syntax.OpNoMatch:
		return nil, nil
	case syntax.OpEmptyMatch:
		return []branch{{}}, nil
	case syntax.OpBeginText:
		return []branch{{begin: true}}, nil
	case syntax.OpEndText:
		return []branch{{end: true}}, nil
	case syntax.OpLiteral:
		b := branch{}
		for _, r := range re.Rune {
			b.items = append(b.items, item{class: x.class(literalClass(r, re.Flags))})
		}
		return []branch{b}, nil
	case syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		c, _ := x.symbolClass(re)
		return []branch{{items: []item{{class: c}}}}, nil
	case syntax.OpStar, syntax.OpPlus:
		c, ok := x.symbolClass(re.Sub[0])
		if !ok {
			return nil, fmt.Errorf("repetition of %s is not supported", re.Sub[0])
		}
		b := branch{items: []item{{class: c, star: true}}}
		if re.Op == syntax.OpPlus {
			b.items = []item{{class: c}, {class: c, star: true}}
		}
		return []branch{b}, nil
	case syntax.OpQuest:
		bs, err := x.expand(re.Sub[0])
		if err != nil {
			return nil, err
		}
		return x.alternate(bs, []branch{{}})
	case syntax.OpCapture:
		return x.expand(re.Sub[0])
	case syntax.OpAlternate:
		var out []branch
		for _, sub := range re.Sub {
			bs, err := x.expand(sub)
			if err != nil {
				return nil, err
			}
			if out, err = x.alternate(out, bs); err != nil {
				return nil, err
			}
		}
		return out, nil
	case syntax.OpConcat:
		out := []branch{{}}
		for _, sub := range re.Sub {
			bs, err := x.expand(sub)
			if err != nil {
				return nil, err
			}
			if out, err = x.concat(out, bs); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s is not supported", re)
}

func (x *expander) alternate(a, b []branch) ([]branch, error) {
	if n := positions(a) + positions(b); n > MaxGraphitePositions {
		return nil, errPositions(n)
	}
	return append(a, b...), nil
}

// concat returns every branch of a followed by every branch of b.
func (x *expander) concat(a, b []branch) ([]branch, error) {
	itemsA, itemsB := positions(a)-len(a), positions(b)-len(b)
	if n := len(a)*len(b) + len(b)*itemsA + len(a)*itemsB; n > MaxGraphitePositions {
		return nil, errPositions(n)
	}
	out := make([]branch, 0, len(a)*len(b))
	for _, l := range a {
		for _, r := range b {
			nb, ok := join(l, r)
			if ok {
				out = append(out, nb)
			}
		}
	}
	return out, nil
}

// join concatenates two branches; false when no key can match both in
// turn (symbols before the start of the key, or after its end).
func join(l, r branch) (branch, bool) {
	li, ri := l.items, r.items
	if r.begin && len(li) > 0 {
		if !allStars(li) {
			return branch{}, false
		}
		li = nil // the stars match nothing
	}
	if l.end && len(ri) > 0 {
		if !allStars(ri) {
			return branch{}, false
		}
		ri = nil
	}
	items := make([]item, 0, len(li)+len(ri))
	return branch{
		begin: l.begin || r.begin,
		end:   l.end || r.end,
		items: append(append(items, li...), ri...),
	}, true
}

func allStars(items []item) bool {
	for _, it := range items {
		if !it.star {
			return false
		}
	}
	return true
}
