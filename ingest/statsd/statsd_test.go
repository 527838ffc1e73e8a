package statsd

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	dgram := "hits:1|c\nhits:3|c|@0.5\ntemp:21.5|g\ntemp:-1.5|g\ntemp:+2|g\nrt:320|ms|@0.1\nrt:12|h\n" +
		"users:alice|s\nmulti:1|c:2|c\n" +
		"web req/s:1|c|#env:prod,host:a,env:prod\n" +
		"dd:5|g|#region|c:abc|T1700000000\n\n"
	got, good, bad, _, err := Parse([]byte(dgram), nil)
	if bad != 0 || err != nil || good != 11 {
		t.Fatalf("good %d, bad %d: %v; want 11 good lines", good, bad, err)
	}
	want := []Sample{
		{Name: "hits", Type: Counter, Value: 1, Rate: 1},
		{Name: "hits", Type: Counter, Value: 6, Rate: 0.5},
		{Name: "temp", Type: Gauge, Value: 21.5, Rate: 1},
		{Name: "temp", Type: Gauge, Value: -1.5, Delta: true, Rate: 1},
		{Name: "temp", Type: Gauge, Value: 2, Delta: true, Rate: 1},
		{Name: "rt", Type: Timer, Value: 320, Rate: 0.1},
		{Name: "rt", Type: Timer, Value: 12, Rate: 1},
		{Name: "users", Type: Set, Set: "alice", Rate: 1},
		{Name: "multi", Type: Counter, Value: 1, Rate: 1},
		{Name: "multi", Type: Counter, Value: 2, Rate: 1},
		{Name: "web_req-s;env=prod;host=a", Type: Counter, Value: 1, Rate: 1},
		{Name: "dd;region=true", Type: Gauge, Value: 5, Rate: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d samples %+v", len(got), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("sample %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseErrors(t *testing.T) {
	for line, want := range map[string]string{
		"nocolon":                         "no name:value",
		":1|c":                            "no name:value",
		"!!!:1|c":                         "empty once cleaned",
		"x:1":                             "no |type",
		"x:1|q":                           `unknown type "q"`,
		"x:abc|c":                         "not a finite number",
		"x:1|c|@0":                        "not in (0, 1]",
		"x:1|c|@2":                        "not in (0, 1]",
		"x:-1|ms":                         "negative",
		"x:1|c|zz":                        "unknown field",
		"x:|s":                            "empty set member",
		"x:1|c|#:v":                       "not name:value",
		"x:1e308|c|@1e-10":                "overflows",
		strings.Repeat("k", 300) + ":1|c": "longer than",
	} {
		_, err := ParseLine([]byte(line), nil)
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseLine(%q) = %v, want %q", line, err, want)
		}
	}
	// A bad line does not spoil the others of its datagram.
	got, good, bad, _, err := Parse([]byte("a:1|c\nbad\n\nb:2|g"), nil)
	if len(got) != 2 || good != 2 || bad != 1 || err == nil {
		t.Fatalf("got %+v, good %d, bad %d, %v", got, good, bad, err)
	}
}

// TestParseInvalidUTF8: a name or tag list that is not UTF-8 is refused,
// not cleaned: cleaning drops non-ASCII bytes, so a\xffb and a\xfeb would
// both have become "ab".
func TestParseInvalidUTF8(t *testing.T) {
	for line, want := range map[string]string{
		"\xff\xfe:1|c":               "syntax: name is not valid UTF-8 (byte 0xff at 0)",
		"a\xffb:1|c":                 "syntax: name is not valid UTF-8 (byte 0xff at 1)",
		"rt\xc3:12|ms":               "syntax: name is not valid UTF-8 (byte 0xc3 at 2)",
		"x:1|c|#env:a\xfdb":          "syntax: tag list is not valid UTF-8 (byte 0xfd at 5)",
		"x:1|g|#\xed\xa0\x80,a:b|T1": "syntax: tag list is not valid UTF-8 (byte 0xed at 0)",
	} {
		_, err := ParseLine([]byte(line), nil)
		if !errors.Is(err, ErrSyntax) || !errors.Is(err, ErrKey) || err.Error() != want {
			t.Errorf("ParseLine(%q) = %v, want a key error %q", line, err, want)
		}
	}
	// Valid UTF-8 is cleaned as etsy statsd cleans it.
	if got, err := ParseLine([]byte("café:1|c|#pièce:salon"), nil); err != nil || len(got) != 1 || got[0].Name != "caf;pice=salon" {
		t.Errorf("a UTF-8 name: %+v, %v", got, err)
	}
	// Parse counts the key errors among the bad lines.
	got, good, bad, badKeys, err := Parse([]byte("ok:1|c\na\xffb:1|c\nx:1|c|#env:\xfe\nx:zz|c\n!!!:1|c"), nil)
	if len(got) != 1 || good != 1 || bad != 4 || badKeys != 3 || !errors.Is(err, ErrKey) {
		t.Errorf("Parse: %d samples, good %d, bad %d, bad keys %d, %v; want 1 good, 4 bad of which 3 for their key", len(got), good, bad, badKeys, err)
	}
}

func BenchmarkParse(b *testing.B) {
	// 20 lines, counters, timers, gauges and sets mixed.
	dgram := []byte(strings.Repeat("api.requests:1|c\napi.latency:12.5|ms|@0.5\nqueue.depth:42|g\nusers.seen:u123|s\n", 5))
	b.SetBytes(int64(len(dgram)))
	b.ReportAllocs()
	var out []Sample
	for b.Loop() {
		var bad int
		out, _, bad, _, _ = Parse(dgram, out[:0])
		if bad != 0 {
			b.Fatal("bad lines")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20, "ns/line")
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"hits:1|c", "a:1|c|@0.1\nb:-2|g", "t:1|ms:2|ms", "s:x|s|#a:b,c", "x:1|c|#t|T1|c:z", "", "::|", "a:NaN|g",
		"\xff\xfe:1|c", "a\xffb:1|c\nok:1|c", "x:1|c|#env:a\xfdb", "caf\xc3:1|g", "x:\xff|s", "\xe6\x97\xa5:1|ms"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, dgram []byte) {
		got, good, bad, badKeys, err := Parse(dgram, nil)
		if (bad == 0) != (err == nil) || good > len(got) || badKeys > bad {
			t.Fatalf("good %d, bad %d (%d for keys), %d samples, error %v", good, bad, badKeys, len(got), err)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Fatalf("error %v does not wrap ErrSyntax", err)
		}
		for _, s := range got {
			if s.Name == "" || len(s.Name) > MaxName || strings.ContainsAny(s.Name, " \t\r\n\x00/:|") {
				t.Fatalf("bad name %q from %q", s.Name, dgram)
			}
			if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) || !(s.Rate > 0 && s.Rate <= 1) {
				t.Fatalf("bad sample %+v from %q", s, dgram)
			}
			if (s.Type == Set) != (s.Set != "") || (s.Type == Timer && s.Value < 0) {
				t.Fatalf("bad sample %+v from %q", s, dgram)
			}
		}
	})
}
