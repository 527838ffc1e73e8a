package lineproto

import (
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestParseSuccess(t *testing.T) {
	f := func(line string, cmd Command, want sample.Op) {
		t.Helper()
		gotCmd, got, err := Parse([]byte(line))
		if err != nil {
			t.Fatalf("Parse(%q): %v", line, err)
		}
		if gotCmd != cmd || got != want {
			t.Fatalf("Parse(%q) = %v %+v, want %v %+v", line, gotCmd, got, cmd, want)
		}
	}
	f("SET answer 42", Write, sample.Op{Code: sample.Set, Key: "answer", Value: 42})
	f("SET answer 42 @1796288507375", Write, sample.Op{Code: sample.Set, Key: "answer", Value: 42, Time: 1796288507375, Resend: true})
	f("set a 1\t@1\r", Write, sample.Op{Code: sample.Set, Key: "a", Value: 1, Time: 1, Resend: true})
	f("set answer 42\r", Write, sample.Op{Code: sample.Set, Key: "answer", Value: 42})
	f("  Set\tcpu.load  -1.5e-3  ", Write, sample.Op{Code: sample.Set, Key: "cpu.load", Value: -0.0015})
	f("INCR hits 1", Write, sample.Op{Code: sample.Incr, Key: "hits", Value: 1})
	f("incr hits 2.5 1000", Write, sample.Op{Code: sample.Incr, Key: "hits", Value: 2.5, Interval: 1000})
	f("DELETE answer", Write, sample.Op{Code: sample.Delete, Key: "answer"})
	f("del answer", Write, sample.Op{Code: sample.Delete, Key: "answer"})
	f("SET é/ü:x 1", Write, sample.Op{Code: sample.Set, Key: "é/ü:x", Value: 1})
	f("ping", Ping, sample.Op{})
	f("", Blank, sample.Op{})
	f(" \t\r", Blank, sample.Op{})
}

func TestParseFailure(t *testing.T) {
	f := func(line, wantMsg string) {
		t.Helper()
		_, _, err := Parse([]byte(line))
		if !errors.Is(err, ErrSyntax) {
			t.Fatalf("Parse(%q) = %v, want a syntax error", line, err)
		}
		if !strings.Contains(err.Error(), wantMsg) {
			t.Fatalf("Parse(%q) = %q, want it to say %q", line, err, wantMsg)
		}
	}
	f("GET answer", `unknown command "GET"`)
	f("SET answer", "SET takes a key, a value and an optional @time in ms")
	f("SET answer 1 2", `SET time "2" is not @ and a whole number`)
	f("SET answer 1 @", `SET time "@" is not @`)
	f("SET answer 1 @0", `SET time "@0" is not @`)
	f("SET answer 1 @-5", `SET time "@-5" is not @`)
	f("SET answer 1 @+5", `SET time "@+5" is not @`)
	f("SET answer 1 @1.5", `SET time "@1.5" is not @`)
	f("SET answer 1 @99999999999999999999", `SET time "@99999999999999999999" is not @`)
	f("SET answer 1 @5 6", "SET takes a key, a value and an optional @time in ms")
	f("SET answer forty", `value "forty" is not a finite number`)
	f("SET answer NaN", "not a finite number")
	f("SET answer +Inf", "not a finite number")
	f("SET answer 1e999", "not a finite number")
	f("INCR hits", "INCR takes")
	f("INCR hits -1", "negative")
	f("INCR hits 1 0", "INCR interval")
	f("INCR hits 1 soon", "INCR interval")
	f("DELETE", "DELETE takes one key")
	f("DELETE a b", "DELETE takes one key")
	f("PING now", "PING takes no argument")
	f("SET "+strings.Repeat("k", 256)+" 1", "longer than 255")
	f("SET a\x01b 1", "control character 0x01")
	f("a b c d e f", "too many fields")
}

// TestParseInvalidUTF8: keys that are not UTF-8 are refused (issue 10:
// \xff\xfe and \xff\xfd both read as "\ufffd\ufffd" in /data), with a
// key error the listener counts apart.
func TestParseInvalidUTF8(t *testing.T) {
	for line, want := range map[string]string{
		"SET \xff\xfe 1":    "syntax: key is not valid UTF-8 (byte 0xff at 0)",
		"SET \xff\xfd 2":    "syntax: key is not valid UTF-8 (byte 0xff at 0)",
		"INCR hits\xfe 1":   "syntax: key is not valid UTF-8 (byte 0xfe at 4)",
		"DELETE caf\xc3":    "syntax: key is not valid UTF-8 (byte 0xc3 at 3)",
		"del a\xed\xa0\x80": "syntax: key is not valid UTF-8 (byte 0xed at 1)",
		"SET \xc0\xaf 1\r":  "syntax: key is not valid UTF-8 (byte 0xc0 at 0)",
	} {
		_, _, err := Parse([]byte(line))
		if !errors.Is(err, ErrSyntax) || !errors.Is(err, ErrKey) || err.Error() != want {
			t.Errorf("Parse(%q) = %v, want a key error %q", line, err, want)
		}
	}
	// Other errors are not key errors.
	for _, line := range []string{"SET a x", "GET \xff", "INCR a -1"} {
		if _, _, err := Parse([]byte(line)); !errors.Is(err, ErrSyntax) || errors.Is(err, ErrKey) {
			t.Errorf("Parse(%q) = %v, want a syntax error that is not a key error", line, err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	lines := [][]byte{[]byte("SET cpu.host-01.load 0.75"), []byte("INCR requests.total 1 60000"), []byte("DELETE old.key")}
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
	for _, s := range []string{"SET answer 42", "INCR hits 1 60000", "DELETE k", "PING", "", "set a 1e308\r",
		"SET a NaN", "INCR x -0", "DEL \xff\xfe", "SET " + strings.Repeat("x", 300) + " 1",
		"SET \xff\xfe 1", "SET \xff\xfd 2", "INCR caf\xc3 1", "SET a\xed\xa0\x80 1", "SET \xe6\x97\xa5 1",
		"SET a 1 @1796288507375", "SET a 1 @-1", "SET a 1 @9223372036854775808"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) > 10240 {
			return
		}
		cmd, op, err := Parse(line)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		if cmd != Write {
			return
		}
		if op.Key == "" || len(op.Key) > MaxKeyLen || strings.ContainsAny(op.Key, " \t\r\n\x00") || !utf8.ValidString(op.Key) {
			t.Fatalf("bad key %q accepted from %q", op.Key, line)
		}
		if math.IsNaN(op.Value) || math.IsInf(op.Value, 0) || (op.Code == sample.Incr && op.Value < 0) {
			t.Fatalf("bad value %v accepted from %q", op.Value, line)
		}
		// Round trip: the canonical form parses to the same op.
		var canon string
		switch op.Code {
		case sample.Set:
			canon = "SET " + op.Key + " " + formatFloat(op.Value)
			if op.Time != 0 {
				canon += " @" + formatInt(op.Time)
			}
		case sample.Incr:
			canon = "INCR " + op.Key + " " + formatFloat(op.Value)
			if op.Interval != 0 {
				canon += " " + formatInt(op.Interval)
			}
		case sample.Delete:
			canon = "DELETE " + op.Key
		}
		_, op2, err := Parse([]byte(canon))
		if err != nil || op2 != op {
			t.Fatalf("round trip of %q via %q: %+v, %v", line, canon, op2, err)
		}
	})
}
