package logatron

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseIAM(t *testing.T) {
	for line, want := range map[string]string{
		"IAM worker1": "worker1", "IAM \t  w_2": "w_2", "IAM\u00a0nbsp": "nbsp", "IAM\u3000x": "x",
		"IAM": "", "IAM ": "", "IAMworker": "", "IAM a b": "", "IAM a-b": "", "IAM é": "", "iam x": "", " IAM x": "", "IAM x ": "",
	} {
		got, ok := ParseIAM(line)
		if got != want || ok != (want != "") {
			t.Errorf("ParseIAM(%q) = %q, %v; want %q", line, got, ok, want)
		}
	}
}

func TestParse(t *testing.T) {
	for line, want := range map[string]Line{
		"LOG hello":               {Kind: Log, Text: "hello"},
		"LOG   spaced out  ":      {Kind: Log, Text: "spaced out"},
		"LOG ":                    {Kind: Log, Text: ""},
		"LOG\tdé\u00a0":           {Kind: Log, Text: "dé"},
		"LOG costs $5":            {Dollar: true},
		"LOGhello":                {},
		"LOG":                     {},
		"log hello":               {},
		"SET key":                 {Kind: Set, Key: "key"},
		"SET key   ":              {Kind: Set, Key: "key"},
		"SET k_1 some value here": {Kind: Set, Key: "k_1", Text: "some value here"},
		"SET  key \t v ":          {Kind: Set, Key: "key", Text: "v"},
		"SET key v$":              {Dollar: true},
		"SET key=1":               {},
		"SET key-x 1":             {},
		"SET":                     {},
		"SETkey 1":                {},
		"SET $ 1":                 {},
		"PING":                    {},
	} {
		if got := Parse(line); got != want {
			t.Errorf("Parse(%q) = %+v; want %+v", line, got, want)
		}
	}
}

func lines(t *testing.T, in string, max int) ([]string, error) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(in))
	sc.Buffer(make([]byte, 16), 1<<20)
	sc.Split(Split(max))
	var out []string
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out, sc.Err()
}

func TestSplit(t *testing.T) {
	got, err := lines(t, "IAM a\r\nLOG 1\nLOG 2\rLOG 3\vLOG 4\fLOG 5\u0085LOG 6\u2028LOG 7\u2029LOG 8\n\n\r\nLOG 9", 100)
	want := []string{"IAM a", "LOG 1", "LOG 2", "LOG 3", "LOG 4", "LOG 5", "LOG 6", "LOG 7", "LOG 8", "LOG 9"}
	if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	if got, _ := lines(t, "LOG \xff\xfe ok\n", 100); len(got) != 1 || got[0] != "LOG \uFFFD ok" {
		t.Fatalf("invalid UTF-8: %q", got)
	}
	if got, _ := lines(t, "LOG £€—\n", 100); len(got) != 1 || got[0] != "LOG £€—" { // C2 A3, E2 82 AC, E2 80 94
		t.Fatalf("a character that starts like a separator: %q", got)
	}
	if _, err := lines(t, "LOG "+strings.Repeat("x", 200)+"\n", 100); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("a long line: %v", err)
	}
	if _, err := lines(t, "LOG "+strings.Repeat("x", 200), 100); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("a long last line: %v", err)
	}
	// A line of the bound whose separator's first bytes end the data read
	// so far: more data decides, the line is not too long.
	split := Split(4)
	for _, sep := range []string{"\u2028", "\u2029", "\u0085"} {
		for cut := 1; cut < len(sep); cut++ {
			if adv, tok, err := split([]byte("abcd"+sep[:cut]), false); adv != 0 || tok != nil || err != nil {
				t.Fatalf("abcd+%q: %d %q %v, want to read more", sep[:cut], adv, tok, err)
			}
		}
		if adv, tok, err := split([]byte("abcd"+sep+"x"), false); adv != 4+len(sep) || string(tok) != "abcd" || err != nil {
			t.Fatalf("abcd+%q: %d %q %v", sep, adv, tok, err)
		}
	}
	if _, _, err := split([]byte("abcdeâ"), false); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("past the bound before a separator's first byte: %v", err)
	}
}

// FuzzParse: any stream splits into valid UTF-8 lines without separators,
// each no longer than the bound, and every line parses to something
// logatron's patterns would give.
func FuzzParse(f *testing.F) {
	f.Add([]byte("IAM worker1\nLOG hello\r\nSET key value\n"))
	f.Add([]byte("LOG a$b\u2028SET k\u0085SET k v$"))
	f.Add([]byte("\xe2\x80"))
	f.Fuzz(func(t *testing.T, in []byte) {
		sc := bufio.NewScanner(strings.NewReader(string(in)))
		sc.Split(Split(64))
		for sc.Scan() {
			line := sc.Text()
			// A byte that is not UTF-8 becomes U+FFFD, 3 bytes.
			if line == "" || len(line) > 3*64 || !utf8.ValidString(line) || strings.ContainsAny(line, "\r\n\v\f\u0085\u2028\u2029") {
				t.Fatalf("line %q of %q", line, in)
			}
			if name, ok := ParseIAM(line); ok && (name == "" || strings.TrimFunc(name, func(r rune) bool { return r < 128 && isWord(byte(r)) }) != "") {
				t.Fatalf("IAM name %q of %q", name, line)
			}
			l := Parse(line)
			switch l.Kind {
			case Log:
				if strings.Contains(l.Text, "$") || l.Text != trim(l.Text) || !strings.HasPrefix(line, "LOG") {
					t.Fatalf("LOG %+v of %q", l, line)
				}
			case Set:
				if l.Key == "" || strings.Contains(l.Text, "$") || l.Text != trim(l.Text) || !strings.HasPrefix(line, "SET") {
					t.Fatalf("SET %+v of %q", l, line)
				}
			}
		}
		if err := sc.Err(); err != nil && !errors.Is(err, ErrLineTooLong) {
			t.Fatalf("%q: %v", in, err)
		}
	})
}

// nodeScript applies logatron's three patterns, as JavaScript runs them,
// to a JSON list of lines.
const nodeScript = `let d = ''; process.stdin.on('data', (c) => d += c).on('end', () => {
  const out = JSON.parse(d).map((l) => {
    const r = {iam: null, log: null, set: null};
    let m = l.match(/^IAM\s+(\w+)$/);
    if (m) r.iam = m[1];
    if ((m = l.match(/^LOG\s+([^$]*)$/))) r.log = m[1].trim();
    else if ((m = l.match(/^SET\s+(\w+)(\s*|\s+[^$]+)$/))) r.set = [m[1], m[2].trim()];
    return r;
  });
  process.stdout.write(JSON.stringify(out));
});`

// TestAgainstJavaScript: on lines made of the pieces that matter
// (keywords, every kind of JavaScript space and some that are not, '$',
// word and non-word characters), ParseIAM and Parse agree with
// logatron's patterns run by Node.js (Debian's nodejs, which make
// test-deps installs).
func TestAgainstJavaScript(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is missing (Debian package nodejs; make test-deps installs it): %v", err)
	}
	pieces := []string{"IAM", "LOG", "SET", " ", "  ", "\t", "\u00a0", "\u1680", "\u2000", "\u200a", "\u200b", "\u180e", "\u202f",
		"\u205f", "\u3000", "\ufeff", "\u0085", "$", "a", "key", "_9", "-", "=", "é", "x y", "$5", "LOG ", "SET k "}
	rng := rand.New(rand.NewPCG(7, 13))
	var corpus []string
	for range 20000 {
		var b strings.Builder
		if rng.IntN(4) > 0 {
			b.WriteString([]string{"IAM", "LOG", "SET"}[rng.IntN(3)])
		}
		for range 1 + rng.IntN(6) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		corpus = append(corpus, b.String())
	}
	in, _ := json.Marshal(corpus)
	cmd := exec.Command(node, "-e", nodeScript)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var js []struct {
		IAM *string  `json:"iam"`
		Log *string  `json:"log"`
		Set []string `json:"set"`
	}
	if err := json.Unmarshal(out, &js); err != nil || len(js) != len(corpus) {
		t.Fatalf("node's answer: %v, %d of %d", err, len(js), len(corpus))
	}
	mismatches := 0
	for i, line := range corpus {
		name, ok := ParseIAM(line)
		if ok != (js[i].IAM != nil) || ok && name != *js[i].IAM {
			t.Errorf("ParseIAM(%q) = %q, %v; JavaScript: %v", line, name, ok, js[i].IAM)
			mismatches++
		}
		l := Parse(line)
		switch {
		case js[i].Log != nil && (l.Kind != Log || l.Text != *js[i].Log),
			js[i].Set != nil && (l.Kind != Set || l.Key != js[i].Set[0] || l.Text != js[i].Set[1]),
			js[i].Log == nil && js[i].Set == nil && l.Kind != Ignored:
			t.Errorf("Parse(%q) = %+v; JavaScript: log %v, set %q", line, l, js[i].Log, js[i].Set)
			mismatches++
		}
		if mismatches > 20 {
			t.Fatal("too many mismatches")
		}
	}
}
