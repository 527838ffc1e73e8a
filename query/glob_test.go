package query

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// oldGlobMatch is the matcher Glob had before it was compiled (greedy,
// one backtrack point): the reference for the differential tests and the
// peer in the benchmarks. With ops non-nil it counts its loop's turns.
func oldGlobMatch(p, key string, ops *int) bool {
	var starP, starK = -1, 0
	i, k := 0, 0
	for k < len(key) {
		if ops != nil {
			*ops++
		}
		if i < len(p) {
			switch c := p[i]; c {
			case '*':
				starP, starK = i, k
				i++
				continue
			case '?':
				i++
				k++
				continue
			case '\\':
				if i+1 < len(p) && p[i+1] == key[k] {
					i += 2
					k++
					continue
				}
			default:
				if c == key[k] {
					i++
					k++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starK++
		i, k = starP+1, starK
	}
	for i < len(p) && p[i] == '*' {
		i++
	}
	return i == len(p)
}

// oldGraphiteGlob is graphiteGlob as it was: the pattern translated to a
// regexp and compiled by package regexp. The reference and the peer.
func oldGraphiteGlob(pattern string) (*regexp.Regexp, error) {
	if !utf8.ValidString(pattern) {
		return nil, fmt.Errorf("pattern %q is not UTF-8", pattern)
	}
	var b strings.Builder
	b.WriteString("^")
	depth := 0
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			b.WriteString(`[^.]*`)
		case '?':
			b.WriteString(`[^.]`)
		case '[':
			j := strings.IndexByte(pattern[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("pattern %q: [ without ]", pattern)
			}
			b.WriteString(pattern[i : i+j+1])
			i += j
		case '{':
			depth++
			b.WriteString("(?:")
		case '}':
			if depth == 0 {
				return nil, fmt.Errorf("pattern %q: } without {", pattern)
			}
			depth--
			b.WriteString(")")
		case ',':
			if depth > 0 {
				b.WriteString("|")
			} else {
				b.WriteString(",")
			}
		default:
			b.WriteString(regexp.QuoteMeta(pattern[i : i+1]))
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("pattern %q: { without }", pattern)
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	return re, nil
}

// strs lists every string of up to n symbols from alphabet.
func strs(alphabet []string, n int) []string {
	out := []string{""}
	last := []string{""}
	for range n {
		var next []string
		for _, s := range last {
			for _, a := range alphabet {
				next = append(next, s+a)
			}
		}
		out = append(out, next...)
		last = next
	}
	return out
}

// checkGlob compares Glob with the old matcher on one pattern and keys.
func checkGlob(t *testing.T, pattern string, keys ...string) {
	t.Helper()
	g, err := CompileGlob(pattern)
	if len(pattern) > MaxGlobLen {
		if err == nil {
			t.Fatalf("CompileGlob: a %d-byte pattern compiled", len(pattern))
		}
		return
	}
	if err != nil {
		t.Fatalf("CompileGlob(%q): %v", pattern, err)
	}
	for _, key := range keys {
		if got, want := g.Match(key), oldGlobMatch(pattern, key, nil); got != want {
			t.Fatalf("Glob(%q).Match(%q) = %v; the old matcher says %v", pattern, key, got, want)
		}
	}
}

// pads puts patterns past the first word of the state vector, and across
// its boundary: after wildcards, and after a literal prefix.
var pads = []struct{ pattern, key string }{
	{"", ""},
	{strings.Repeat("?", 61), strings.Repeat("x", 61)},
	{strings.Repeat("x", 62), strings.Repeat("x", 62)},
}

func padded(pattern string, keys []string, pad int) (string, []string) {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = pads[pad].key + k
	}
	return pads[pad].pattern + pattern, out
}

// Every pattern of up to 5 symbols against every key of up to 5 bytes
// from a small alphabet that holds all the special bytes; padded, up to 4.
func TestGlobMatchesOldExhaustively(t *testing.T) {
	for pad := range pads {
		n := 5
		if pad > 0 {
			n = 4
		}
		keys := strs([]string{"a", "b", `\`, "*"}, n)
		for _, p := range strs([]string{"a", "*", "?", `\`, "b"}, n) {
			pp, pk := padded(p, keys, pad)
			checkGlob(t, pp, pk...)
		}
	}
}

// checkGraphite compares graphiteGlob with the regexp it replaced on one
// pattern and keys.
func checkGraphite(t *testing.T, pattern string, keys ...string) {
	t.Helper()
	re, oldErr := oldGraphiteGlob(pattern)
	m, err := graphiteGlob(pattern)
	switch {
	case len(pattern) > MaxGlobLen:
		if err == nil {
			t.Fatalf("graphiteGlob: a %d-byte pattern compiled", len(pattern))
		}
	case oldErr != nil && err == nil:
		t.Fatalf("graphiteGlob(%q) compiled; the regexp did not: %v", pattern, oldErr)
	case oldErr != nil:
		if err.Error() != oldErr.Error() {
			t.Fatalf("graphiteGlob(%q): error %q, the regexp's %q", pattern, err, oldErr)
		}
	case err != nil:
		// The only new refusal is the cap on positions.
		if !strings.Contains(err.Error(), "positions") {
			t.Fatalf("graphiteGlob(%q): %v; the regexp compiled", pattern, err)
		}
	default:
		for _, key := range keys {
			if got, want := m.MatchString(key), re.MatchString(key); got != want {
				t.Fatalf("graphiteGlob(%q).MatchString(%q) = %v; the regexp (%s) says %v", pattern, key, got, re, want)
			}
		}
	}
}

// Every pattern of up to 3 symbols from Graphite's metacharacters and a
// few runes against keys of up to 4 symbols (3 when padded) that include a
// two-byte rune and a byte that is not UTF-8; every pattern of 4
// metacharacters against keys of up to 3.
func TestGraphiteGlobMatchesRegexpExhaustively(t *testing.T) {
	for pad := range pads {
		keys := strs([]string{"a", ".", "é", "\xff", "]"}, 4-min(pad, 1))
		for _, p := range strs([]string{"a", ".", "*", "?", "[", "]", "{", "}", ",", "^", "é"}, 3) {
			pp, pk := padded(p, keys, pad)
			checkGraphite(t, pp, pk...)
		}
	}
	keys := strs([]string{"a", ".", "é", "\xff", "]"}, 3)
	for _, p := range strs([]string{"a", "*", "?", "[", "]", "{", "}", ","}, 4) {
		if len(p) == 4 {
			checkGraphite(t, p, keys...)
		}
	}
}

// Patterns whose regexp is stranger than the glob reads: a class that
// runs past its ']' into the rest of the translation, classes of the
// regexp syntax, an alternation that escapes its braces (branches
// anchored at one end only), stars of two classes in a row (blocks of
// stars that span words).
func TestGraphiteGlobOddPatterns(t *testing.T) {
	keys := []string{"", "a", "b", "ab", "a.b", "é", "\xff", "[", "^", ".", ")", "(", "|", "x.y.z", "ab.cd", "]", ":", "A", "1", "\n", "\ufffd"}
	for i := range len(keys) {
		keys = append(keys, keys[i]+keys[i], keys[i]+"a", strings.Repeat(keys[i], 80)+"a")
	}
	for pad := range pads {
		for _, p := range []string{
			"[]{?,[]}?", "[]*", "*[]*", "[]x[y]", "[[:alpha:]]", "[[:alpha:]?", "[^a]", "[\\d]", "[\\pL]*", "[a-]",
			"{a,}", "{,a}", "{}", "{a,{b,c}}.{d,e}", "[]?*", "[^\\x00-\\x{10FFFF}]", "a{b,c}d{e,f}", "*.{a*,b?}.*",
			"[\\x{FFFD}]", "[^.]", "[é-ü]*", "[^é]", "{*,?}{?,*}", "x[]{?,[]}?y", strings.Repeat("*[]*", 70) + "a",
		} {
			pp, pk := padded(p, keys, pad)
			checkGraphite(t, pp, pk...)
		}
	}
}

func TestPatternLimits(t *testing.T) {
	long := strings.Repeat("a", MaxGlobLen+1)
	if _, err := CompileGlob(long); err == nil || !strings.Contains(err.Error(), "at most 1024") {
		t.Errorf("CompileGlob of %d bytes: %v", len(long), err)
	}
	if g, err := CompileGlob(long[1:]); err != nil || !g.Match(long[1:]) {
		t.Errorf("CompileGlob of %d bytes: %v", MaxGlobLen, err)
	}
	if _, err := graphiteGlob(long); err == nil {
		t.Errorf("graphiteGlob of %d bytes compiled", len(long))
	}
	if m, err := graphiteGlob(long[1:]); err != nil || !m.MatchString(long[1:]) {
		t.Errorf("graphiteGlob of %d bytes: %v", MaxGlobLen, err)
	}
	// Each alternative takes its own copy of what follows: 1 + 2 + 96
	// positions each, ten of them fit, eleven do not.
	alts := []string{"ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st", "uv"}
	tail := strings.Repeat("x", 96)
	if _, err := graphiteGlob("{" + strings.Join(alts, ",") + "}" + tail); err == nil || !strings.Contains(err.Error(), "1089 positions") {
		t.Errorf("1089 positions: %v", err)
	}
	if m, err := graphiteGlob("{" + strings.Join(alts[:10], ",") + "}" + tail); err != nil || !m.MatchString("st"+tail) {
		t.Errorf("990 positions: %v", err)
	}
	// Alternatives multiply: 2^10 paths of 20 characters.
	if _, err := graphiteGlob(strings.Repeat("{ab,cd}", 10)); err == nil || !strings.Contains(err.Error(), "positions") {
		t.Errorf("2^10 paths: %v", err)
	}
}

// The hostile patterns of issue 10.
var (
	// The one-backtrack matcher rescans the 120 escaped bytes from every
	// offset: about 16,000 steps per 255-byte key.
	hostileGlob = "*" + strings.Repeat(`\a`, 120)
	// Go's regexp steps every thread of [^.]*[^.] x100 at every byte.
	hostileGraphite = strings.Repeat("*?", 100) + "z"
)

// TestMatchIsLinear counts the state-vector words a match steps: at most
// one vector per key symbol, whatever the pattern, where the old matcher's
// count grows with the key times the pattern.
func TestMatchIsLinear(t *testing.T) {
	for _, c := range []struct {
		pattern  string
		graphite bool
		key      string
		want     bool
	}{
		// Keys that pass the patterns' literal suffix, so the state
		// vector steps through them.
		{hostileGlob, false, strings.Repeat("a", 255), true},
		{hostileGlob, false, strings.Repeat("b", 135) + strings.Repeat("a", 120), true},
		{hostileGlob, false, strings.Repeat("a", 134) + "b" + strings.Repeat("a", 120), true},
		{hostileGraphite, false, strings.Repeat("a", 254) + "z", true},
		{hostileGraphite, false, strings.Repeat("a", 99) + "z", false},
		{hostileGraphite, true, strings.Repeat("a", 254) + "z", true},
		{hostileGraphite, true, strings.Repeat("a", 99) + "z", false},
		{"*" + strings.Repeat("a", 240), true, strings.Repeat("a", 255), true},
		{"*" + strings.Repeat("a", 240), true, "b" + strings.Repeat("a", 239), false},
		// A branch per alternative: 31 branches, 93 or 123 positions.
		{"{" + strings.Repeat("*a,", 30) + "b}", true, strings.Repeat("a", 255), true},
		{"{" + strings.Repeat("*a?,", 30) + "b}", true, strings.Repeat("a", 254) + ".", false},
		// A regexp whose alternation escaped the braces: two branches
		// anchored at one end only (TestGraphiteGlobOddPatterns).
		{"[]{?,[]}?", true, strings.Repeat("a", 254) + "]", true},
		{"[]{?,[]}?", true, strings.Repeat("a", 255), false},
	} {
		var m *nfa
		var err error
		if c.graphite {
			m, err = graphiteGlob(c.pattern)
		} else {
			var g *Glob
			g, err = CompileGlob(c.pattern)
			if g != nil {
				m = g.m
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		ops := 0
		if got := m.match(c.key, &ops); got != c.want {
			t.Errorf("%.20q... ~ %.20q...: %v, want %v", c.pattern, c.key, got, c.want)
		}
		bound := len(c.key) * m.n
		if ops > bound {
			t.Errorf("%.20q... (%d words): %d word steps over a %d-byte key; at most %d", c.pattern, m.n, ops, len(c.key), bound)
		}
		if !c.graphite {
			// The old matcher on the same input, to show the bound bites.
			old := 0
			oldGlobMatch(c.pattern, c.key, &old)
			t.Logf("%.20q...: %d word steps; the old matcher %d", c.pattern, ops, old)
		}
	}
	// The widest glob: 17 words, but each key byte matches one
	// position, so after i bytes no bit above 2i+1 is live and the pass
	// stops there: a 255-byte key never steps more than 9 words at once
	// (after a first pass over all 17).
	wide, err := CompileGlob(strings.Repeat("*?", MaxGlobLen/2))
	if err != nil {
		t.Fatal(err)
	}
	ops := 0
	if wide.m.match(strings.Repeat("a", 255), &ops) || wide.m.n != 17 || ops > 17+254*9 {
		t.Errorf("*? x512 over 255 bytes: %d words of %d stepped; at most %d", ops, wide.m.n, 17+254*9)
	}

	// The control: the old matcher's count is quadratic on hostileGlob.
	old := 0
	oldGlobMatch(hostileGlob, strings.Repeat("a", 255), &old)
	g, _ := CompileGlob(hostileGlob)
	if bound := 255 * g.m.n; old <= 8*bound {
		t.Errorf("the old matcher took %d steps, not over 8x the bound %d: the hostile pattern is not hostile", old, bound)
	}
}

// The state is copied per match: one compiled pattern serves concurrent
// matches (the /events hub shares one per pattern).
func TestGlobConcurrent(t *testing.T) {
	g, err := CompileGlob("h*.cpu.?")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	for i := range 4 {
		go func() {
			ok := true
			for j := range 2000 {
				key := fmt.Sprintf("h%d.cpu.%d", i*j, j%10)
				ok = ok && g.Match(key) && !g.Match(key+"x")
			}
			done <- ok
		}()
	}
	for range 4 {
		if !<-done {
			t.Fatal("a concurrent match went wrong")
		}
	}
}

// FuzzGlobMatch: the compiled Glob agrees with the old matcher on any
// pattern and key.
func FuzzGlobMatch(f *testing.F) {
	for _, s := range [][2]string{{"a*b?c", "axxbyc"}, {`a\*`, "a*"}, {`\`, ""}, {"**?", "x"}, {hostileGlob, strings.Repeat("a", 200)}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, key string) {
		checkGlob(t, pattern, key, key+key)
	})
}

// FuzzGraphiteMatch: graphiteGlob agrees with the regexp it replaced on
// any pattern and key: the same errors, the same matches.
func FuzzGraphiteMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"a.*.c", "a.b.c"}, {"{a,b}.[0-9]?", "b.5x"}, {"[]{?,[]}?", "x]"}, {"a.{b,{c,d}}", "a.d"},
		{"[\\pL]*", "éa"}, {"*?*?z", "abz"}, {"[^é]", "\xff"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, key string) {
		checkGraphite(t, pattern, key, key+key, pattern)
	})
}

// benchKeys are 20,000 keys as one /data or /render walks: 255 bytes of
// 'a' after a numbered prefix, every other one ending in 'z' (the hostile
// cases: half the keys pass each pattern's literal suffix and are
// stepped through), or short host.metric names.
func benchKeys(long bool) []string {
	keys := make([]string, 20_000)
	for i := range keys {
		if !long {
			keys[i] = fmt.Sprintf("host%05d.%s", i, [...]string{"cpu.user", "cpu.system", "mem.free", "disk.used"}[i%4])
			continue
		}
		k := []byte(fmt.Sprintf("k%05d-%s", i, strings.Repeat("a", 255)))[:255]
		if i%2 == 1 {
			k[254] = 'z'
		}
		keys[i] = string(k)
	}
	return keys
}

var benchCases = []struct {
	name, glob, graphite string
	long                 bool
}{
	// The 241-byte patterns: for a glob, 120 escaped bytes after a star;
	// for Graphite, 240 literal bytes after a star.
	{"hostile241", hostileGlob, "*" + strings.Repeat("a", 240), true},
	{"starq100z", hostileGraphite, hostileGraphite, true},
	{"ordinary", "host00*.cpu.*", "host00*.cpu.*", false},
}

// BenchmarkGlob: one /data?match= filter, compiling the pattern and
// matching 20,000 keys, with the old matcher as the peer.
func BenchmarkGlob(b *testing.B) {
	for _, c := range benchCases {
		keys := benchKeys(c.long)
		b.Run(c.name+"/old", func(b *testing.B) {
			for b.Loop() {
				n := 0
				for _, k := range keys {
					if oldGlobMatch(c.glob, k, nil) {
						n++
					}
				}
				benchSink = n
			}
		})
		b.Run(c.name+"/new", func(b *testing.B) {
			for b.Loop() {
				g, err := CompileGlob(c.glob)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for _, k := range keys {
					if g.Match(k) {
						n++
					}
				}
				benchSink = n
			}
		})
	}
}

// BenchmarkGraphiteGlob: one /render target, compiling the pattern and
// matching 20,000 keys, with the regexp as the peer.
func BenchmarkGraphiteGlob(b *testing.B) {
	for _, c := range benchCases {
		keys := benchKeys(c.long)
		b.Run(c.name+"/regexp", func(b *testing.B) {
			for b.Loop() {
				re, err := oldGraphiteGlob(c.graphite)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for _, k := range keys {
					if re.MatchString(k) {
						n++
					}
				}
				benchSink = n
			}
		})
		b.Run(c.name+"/new", func(b *testing.B) {
			for b.Loop() {
				m, err := graphiteGlob(c.graphite)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for _, k := range keys {
					if m.MatchString(k) {
						n++
					}
				}
				benchSink = n
			}
		})
	}
}

var benchSink int
