package graphite

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		line string
		want sample.Op
	}{
		{"servers.web01.load 0.75 1700000000", sample.Op{Code: sample.Set, Key: "servers.web01.load", Value: 0.75, Time: 1700000000000}},
		{"a.b -3\t1700000000.25\r", sample.Op{Code: sample.Set, Key: "a.b", Value: -3, Time: 1700000000250}},
		{"  a.b   1e3  ", sample.Op{Code: sample.Set, Key: "a.b", Value: 1000}},
		{"a.b 1 -1", sample.Op{Code: sample.Set, Key: "a.b", Value: 1}},
		{"disk.used;host=h1;dc=eu 12 1700000000", sample.Op{Code: sample.Set, Key: "disk.used;dc=eu;host=h1", Value: 12, Time: 1700000000000}},
		{"x;a=b=c 1", sample.Op{Code: sample.Set, Key: "x;a=b=c", Value: 1}},
	} {
		op, blank, err := Parse([]byte(c.line))
		if err != nil || blank || op != c.want {
			t.Errorf("Parse(%q) = %+v, %v, %v; want %+v", c.line, op, blank, err, c.want)
		}
	}
	for _, line := range []string{"", "   ", "\r"} {
		if _, blank, err := Parse([]byte(line)); !blank || err != nil {
			t.Errorf("Parse(%q): blank %v, %v", line, blank, err)
		}
	}
}

func TestParseFailure(t *testing.T) {
	for line, want := range map[string]string{
		"a.b":                           "no value",
		"a.b 1 2 3":                     "too many fields",
		"a.b x 1700000000":              `value "x" is not a finite number`,
		"a.b NaN 1700000000":            "not a finite number",
		"a.b 1 yesterday":               "not Unix seconds",
		"a.b 1 0":                       "between 1970 and 9999",
		"a.b 1 -5":                      "between 1970 and 9999",
		"a.b 1 1e20":                    "between 1970 and 9999",
		"a\x01b 1":                      "control character 0x01",
		strings.Repeat("k", 256) + " 1": "longer than 255",
		";a=b 1":                        "has no name",
		"x;a 1":                         "not name=value",
		"x;=b 1":                        "not name=value",
		"x;a= 1":                        "empty value",
		"x;a!=b 1":                      "holds ! or ^",
		"x;a=~b 1":                      "starts with ~",
		"x;a=1;a=2 1":                   "appears twice",
		"x; 1":                          "not name=value",
	} {
		_, _, err := Parse([]byte(line))
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", line, err, want)
		}
	}
}

// TestParseInvalidUTF8: a path or tag that is not UTF-8 is refused with a
// key error, wherever the bad byte is.
func TestParseInvalidUTF8(t *testing.T) {
	for line, want := range map[string]string{
		"\xff\xfe 1":                        "syntax: key is not valid UTF-8 (byte 0xff at 0)",
		"servers.web\xfd.load 1 1700000000": "syntax: key is not valid UTF-8 (byte 0xfd at 11)",
		"disk;\xffhost=h1 1":                "syntax: key is not valid UTF-8 (byte 0xff at 5)",  // a tag name
		"disk;host=h\xc3 1":                 "syntax: key is not valid UTF-8 (byte 0xc3 at 11)", // a tag value cut short
		"disk;dc=eu;host=\xed\xa0\x80 1":    "syntax: key is not valid UTF-8 (byte 0xed at 16)", // a surrogate
	} {
		_, _, err := Parse([]byte(line))
		if !errors.Is(err, ErrSyntax) || !errors.Is(err, ErrKey) || err.Error() != want {
			t.Errorf("Parse(%q) = %v, want a key error %q", line, err, want)
		}
	}
	// Valid UTF-8 in paths and tags is taken as is.
	op, _, err := Parse([]byte("température;pièce=salon 21"))
	if err != nil || op.Key != "température;pièce=salon" {
		t.Errorf("UTF-8 path: %+v, %v", op, err)
	}
	// Tag form errors are key errors too; a bad value is not.
	if _, _, err := Parse([]byte("x;a 1")); !errors.Is(err, ErrKey) {
		t.Errorf("a malformed tag: %v, want a key error", err)
	}
	if _, _, err := Parse([]byte("x y")); !errors.Is(err, ErrSyntax) || errors.Is(err, ErrKey) {
		t.Errorf("a bad value: %v, want a syntax error that is not a key error", err)
	}
}

func BenchmarkParse(b *testing.B) {
	lines := [][]byte{[]byte("servers.web01.cpu.user 12.5 1700000000"), []byte("servers.web01.load.shortterm 0.75 1700000000"),
		[]byte("disk.used;host=web01;dc=eu 1234567 1700000000")}
	var n int64
	for _, l := range lines {
		n += int64(len(l) + 1)
	}
	b.SetBytes(n / int64(len(lines)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := Parse(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"a.b 1 1700000000", "a.b 1", "a.b 1.5 1700000000.5", "a.b 1 -1", "t;b=2;a=1 3 4",
		"", "a.b NaN 1", "x;a=~b 1", "x;;a=b 1", "a.b 1e308 253402300799", "\xff\xfe 1",
		"\xff\xfd 2", "x;\xffa=b 1", "x;a=b\xc3 1", "x\xed\xa0\x80 1", "x;a=\xe6\x97\xa5 1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) > 10240 {
			return
		}
		op, blank, err := Parse(line)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		if blank {
			return
		}
		if op.Code != sample.Set || op.Key == "" || len(op.Key) > 255 || strings.ContainsAny(op.Key, " \t\r\n\x00") || !utf8.ValidString(op.Key) {
			t.Fatalf("bad op %+v accepted from %q", op, line)
		}
		if math.IsNaN(op.Value) || math.IsInf(op.Value, 0) || op.Time < 0 {
			t.Fatalf("bad value or time %+v accepted from %q", op, line)
		}
		// Round trip: the canonical form parses to the same op.
		canon := op.Key + " " + strconv.FormatFloat(op.Value, 'g', -1, 64)
		if op.Time != 0 {
			canon += " " + strconv.FormatFloat(float64(op.Time)/1000, 'f', 3, 64)
		}
		op2, _, err := Parse([]byte(canon))
		if err != nil || op2 != op {
			t.Fatalf("%q -> %+v; canonical %q -> %+v, %v", line, op, canon, op2, err)
		}
	})
}
