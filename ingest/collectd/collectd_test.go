package collectd

import (
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// A body as write_http posts it with Format "JSON" (collectd 5.12).
const jsonBody = `[
 {"values":[1901474177],"dstypes":["derive"],"dsnames":["value"],"time":1280959128.000,"interval":10.000,"host":"leeloo.octo.it","plugin":"cpu","plugin_instance":"0","type":"cpu","type_instance":"idle"},
 {"values":[0.5,0.75,null],"dstypes":["gauge","gauge","gauge"],"dsnames":["shortterm","midterm","longterm"],"time":1280959128.250,"interval":10.000,"host":"leeloo.octo.it","plugin":"load","plugin_instance":"","type":"load","type_instance":""},
 {"values":[4294967000],"dstypes":["counter"],"dsnames":["value"],"time":1280959128,"interval":1,"host":"h","plugin":"x","plugin_instance":"a b","type":"counter","type_instance":"c/d"},
 {"values":[3],"dstypes":["absolute"],"dsnames":["value"],"time":0,"interval":0,"host":"h","plugin":"x","plugin_instance":"","type":"absolute","type_instance":""}
]`

func TestParseJSON(t *testing.T) {
	ops, err := ParseJSON([]byte(jsonBody), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []sample.Op{
		{Code: sample.CounterSet, Key: "leeloo_octo_it.cpu-0.cpu-idle", Value: 1901474177, Time: 1280959128000, Interval: 10000},
		{Code: sample.Set, Key: "leeloo_octo_it.load.load.shortterm", Value: 0.5, Time: 1280959128250},
		{Code: sample.Set, Key: "leeloo_octo_it.load.load.midterm", Value: 0.75, Time: 1280959128250},
		// longterm is null (NaN): skipped
		{Code: sample.CounterSet, Wrap: true, Key: "h.x-a_b.counter-c_d", Value: 4294967000, Time: 1280959128000, Interval: 1000},
		{Code: sample.Incr, Key: "h.x.absolute", Value: 3},
	}
	if len(ops) != len(want) {
		t.Fatalf("got %d ops %+v, want %d", len(ops), ops, len(want))
	}
	for i := range want {
		if ops[i] != want[i] {
			t.Errorf("op %d = %+v, want %+v", i, ops[i], want[i])
		}
	}
}

func TestParseCommand(t *testing.T) {
	body := "PUTVAL \"leeloo.octo.it/cpu-0/cpu-idle\" interval=10.000 1280959128.000:1901474177\r\n" +
		"# a comment\n\n" +
		"PUTVAL leeloo/load/load interval=10 1280959128:0.5:0.75:U N:1:2:3\n" +
		"putval h/interface-eth0/if_octets 1280959130:100:200\n"
	ops, err := ParseCommand([]byte(body), Builtin(), nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(ops))
	for i, o := range ops {
		keys[i] = o.Key
	}
	wantKeys := "leeloo_octo_it.cpu-0.cpu-idle leeloo.load.load.shortterm leeloo.load.load.midterm " +
		"leeloo.load.load.shortterm leeloo.load.load.midterm leeloo.load.load.longterm " +
		"h.interface-eth0.if_octets.rx h.interface-eth0.if_octets.tx"
	if got := strings.Join(keys, " "); got != wantKeys {
		t.Fatalf("keys %s\nwant %s", got, wantKeys)
	}
	if o := ops[0]; o.Code != sample.CounterSet || o.Value != 1901474177 || o.Time != 1280959128000 || o.Interval != 10000 {
		t.Errorf("cpu op %+v", o)
	}
	if o := ops[3]; o.Code != sample.Set || o.Value != 1 || o.Time != 0 {
		t.Errorf("N: op %+v, want time 0 (now)", o)
	}
	if o := ops[7]; o.Code != sample.CounterSet || o.Value != 200 || o.Time != 1280959130000 || o.Interval != 0 {
		t.Errorf("if_octets tx %+v", o)
	}
}

func TestParseErrors(t *testing.T) {
	for body, want := range map[string]string{
		`{}`: "not a JSON array",
		`[{"values":[1],"dstypes":["gauge"],"dsnames":[]}]`:                                                                      "1 values, 1 dstypes, 0 dsnames",
		`[{"values":[1],"dstypes":["weird"],"dsnames":["v"],"host":"h","plugin":"p","type":"t"}]`:                                `unknown dstype "weird"`,
		`[{"values":[1],"dstypes":["gauge"],"dsnames":["v"],"host":"","plugin":"p","type":"t"}]`:                                 "without host",
		`[{"values":[-1],"dstypes":["derive"],"dsnames":["v"],"host":"h","plugin":"p","type":"t"}]`:                              "negative derive",
		`[{"values":[1],"dstypes":["gauge"],"dsnames":["v"],"host":"h","plugin":"p","type":"t","time":-5}]`:                      "between 1970 and 9999",
		`[{"values":[1],"dstypes":["gauge"],"dsnames":["v"],"host":"h","plugin":"p","type":"t","interval":1e12}]`:                "interval",
		`[{"values":[1],"dstypes":["gauge"],"dsnames":["v"],"host":"` + strings.Repeat("h", 300) + `","plugin":"p","type":"t"}]`: "longer than 255",
	} {
		if _, err := ParseJSON([]byte(body), nil); !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseJSON(%.60s) = %v, want %q", body, err, want)
		}
	}
	for body, want := range map[string]string{
		"GETVAL h/p/gauge":                   "want PUTVAL",
		"PUTVAL h/p/nosuchtype N:1":          "not in types.db",
		"PUTVAL h/p N:1":                     "not host/plugin",
		"PUTVAL \"h/p/gauge N:1":             "closing quote",
		"PUTVAL h/p/load N:1":                "has 1 values; type \"load\" has 3",
		"PUTVAL h/p/gauge yesterday:1":       "not Unix seconds",
		"PUTVAL h/p/gauge N:x":               "not a number or U",
		"PUTVAL h/p/gauge interval=-1 N:1":   "interval",
		"PUTVAL h/p/gauge":                   "without values",
		"PUTVAL h/p/gauge N:1\nPUTVAL x N:1": "line 2",
	} {
		if _, err := ParseCommand([]byte(body), Builtin(), nil); !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCommand(%q) = %v, want %q", body, err, want)
		}
	}
}

// TestParseInvalidUTF8: a key part that is not UTF-8 refuses the body.
// encoding/json alone would turn raw invalid bytes and lone surrogate
// escapes into U+FFFD without an error, and distinct hosts would collide.
func TestParseInvalidUTF8(t *testing.T) {
	list := func(field, value string) string {
		l := map[string]string{"host": `"h"`, "plugin": `"p"`, "plugin_instance": `""`, "type": `"t"`, "type_instance": `""`}
		l[field] = value
		return `[{"values":[1,2],"dstypes":["gauge","gauge"],"dsnames":["rx","tx"],"host":` + l["host"] + `,"plugin":` + l["plugin"] +
			`,"plugin_instance":` + l["plugin_instance"] + `,"type":` + l["type"] + `,"type_instance":` + l["type_instance"] + `}]`
	}
	for body, want := range map[string]string{
		list("host", "\"\xff\xfe\""):                                  "value list 0: syntax: host is not valid UTF-8 (byte 0xff at 0)",
		list("plugin", "\"cpu\xc3\""):                                 "value list 0: syntax: plugin is not valid UTF-8 (byte 0xc3 at 3)",
		list("plugin_instance", "\"a\xed\xa0\x80\""):                  "value list 0: syntax: plugin_instance is not valid UTF-8 (byte 0xed at 1)",
		list("type", "\"t\\u00e9\xfd\""):                              "value list 0: syntax: type is not valid UTF-8 (byte 0xfd at 7)",
		list("type_instance", `"x\ud800"`):                            `value list 0: syntax: type_instance is not valid UTF-8 (lone surrogate \ud800 at 1)`,
		list("type_instance", `"\uDC00y"`):                            `value list 0: syntax: type_instance is not valid UTF-8 (lone surrogate \uDC00 at 0)`,
		list("host", `"\ud800\u0041"`):                                `value list 0: syntax: host is not valid UTF-8 (lone surrogate \ud800 at 0)`,
		strings.Replace(list("host", `"h"`), `"tx"`, "\"t\xffx\"", 1): "value list 0: syntax: dsname is not valid UTF-8 (byte 0xff at 1)",
	} {
		_, err := ParseJSON([]byte(body), nil)
		if !errors.Is(err, ErrSyntax) || !errors.Is(err, ErrKey) || err.Error() != want {
			t.Errorf("ParseJSON(%q) = %v, want a key error %q", body, err, want)
		}
	}
	// Valid UTF-8, raw or escaped, surrogate pairs included, is taken; so
	// is an escaped backslash before a u.
	for body, key := range map[string]string{
		list("host", `"h\u00e9\ud83d\ude00"`): "hé😀.p.t.rx",
		list("host", `"hé"`):                  "hé.p.t.rx",
		list("host", `"h\\ud800"`):            "h_ud800.p.t.rx",
		list("type_instance", `"\ufffd"`):     "h.p.t-\ufffd.rx",
	} {
		ops, err := ParseJSON([]byte(body), nil)
		if err != nil || len(ops) != 2 || ops[0].Key != key {
			t.Errorf("ParseJSON(%q) = %+v, %v; want key %q", body, ops, err, key)
		}
	}
	// A data source name left out of the key (one value) is not checked.
	if _, err := ParseJSON([]byte("[{\"values\":[1],\"dstypes\":[\"gauge\"],\"dsnames\":[\"\xff\"],\"host\":\"h\",\"plugin\":\"p\",\"type\":\"t\"}]"), nil); err != nil {
		t.Errorf("an unused dsname: %v", err)
	}
	for body, want := range map[string]string{
		"PUTVAL h\xff/p/gauge N:1":                            "line 1: syntax: identifier is not valid UTF-8 (byte 0xff at 1)",
		"PUTVAL h/p/gauge N:1\nPUTVAL \"h/p-\xc3/gauge\" N:1": "line 2: syntax: identifier is not valid UTF-8 (byte 0xc3 at 4)",
		"PUTVAL h/p/gauge-\xed\xa0\x80 N:1":                   "line 1: syntax: identifier is not valid UTF-8 (byte 0xed at 10)",
	} {
		_, err := ParseCommand([]byte(body), Builtin(), nil)
		if !errors.Is(err, ErrSyntax) || !errors.Is(err, ErrKey) || err.Error() != want {
			t.Errorf("ParseCommand(%q) = %v, want a key error %q", body, err, want)
		}
	}
	// A data source name from types.db is checked with the key.
	if _, err := ParseCommand([]byte("PUTVAL h/p/x N:1:2"), TypesDB{"x": {{"a\xff", Gauge}, {"b", Gauge}}}, nil); !errors.Is(err, ErrKey) ||
		!strings.Contains(err.Error(), "key is not valid UTF-8") {
		t.Errorf("a types.db name that is not UTF-8: %v", err)
	}
}

func TestParseTypesDB(t *testing.T) {
	db, err := ParseTypesDB([]byte("# c\nload  shortterm:GAUGE:0:5000, midterm:GAUGE:0:5000\ncpu value:DERIVE:0:U\nib  rx:DERIVE:0:U tx:DERIVE:0:U\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l := db["load"]; len(l) != 2 || l[1] != (DataSource{"midterm", Gauge}) || db["cpu"][0].Type != Derive || len(db["ib"]) != 2 {
		t.Fatalf("parsed %+v", db)
	}
	for _, bad := range []string{"lonely", "x a:GAUGE:0", "x a:WEIRD:0:U", "x :GAUGE:0:U"} {
		if _, err := ParseTypesDB([]byte(bad)); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseTypesDB(%q) = %v", bad, err)
		}
	}
	if b := Builtin(); len(b) < 50 || len(b["if_octets"]) != 2 {
		t.Fatalf("builtin types.db: %d types", len(b))
	}
}

func BenchmarkParseJSON(b *testing.B) {
	body := []byte(jsonBody)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var ops []sample.Op
	for b.Loop() {
		var err error
		if ops, err = ParseJSON(body, ops[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/5, "ns/value")
}

func BenchmarkParseCommand(b *testing.B) {
	body := []byte(strings.Repeat("PUTVAL \"host.example.com/cpu-0/cpu-idle\" interval=10.000 1280959128.000:1901474177\r\n"+
		"PUTVAL \"host.example.com/load/load\" interval=10.000 1280959128.000:0.5:0.75:1.25\r\n", 10))
	types := Builtin()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var ops []sample.Op
	for b.Loop() {
		var err error
		if ops, err = ParseCommand(body, types, ops[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/40, "ns/value")
}

func checkOps(t *testing.T, ops []sample.Op, input []byte) {
	for _, o := range ops {
		if o.Key == "" || len(o.Key) > 255 || strings.ContainsAny(o.Key, " \t\r\n\x00/") || !utf8.ValidString(o.Key) {
			t.Fatalf("bad key %q from %q", o.Key, input)
		}
		if math.IsNaN(o.Value) || math.IsInf(o.Value, 0) || o.Time < 0 || o.Interval < 0 {
			t.Fatalf("bad op %+v from %q", o, input)
		}
		if o.Code != sample.Set && o.Value < 0 {
			t.Fatalf("negative counter %+v from %q", o, input)
		}
	}
}

func FuzzParseJSON(f *testing.F) {
	f.Add([]byte(jsonBody))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"values":[1e308],"dstypes":["gauge"],"dsnames":["v"],"host":"h.i","plugin":"p(x)","type":"t:u"}]`))
	f.Add([]byte("[{\"values\":[1],\"dstypes\":[\"gauge\"],\"dsnames\":[\"v\"],\"host\":\"\xff\xfe\",\"plugin\":\"p\",\"type\":\"t\"}]"))
	f.Add([]byte(`[{"values":[1,2],"dstypes":["gauge","gauge"],"dsnames":["a","\udc00"],"host":"h\ud83d\ude00","plugin":"p","type":"t\\u"}]`))
	f.Add([]byte(`[{"values":[1],"dstypes":["gauge"],"dsnames":["v"],"host":"h","plugin":"p","type":"t","type_instance":"\ud800\ud800"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ops, err := ParseJSON(body, nil)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		checkOps(t, ops, body)
	})
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"PUTVAL \"h.x/cpu-0/cpu-idle\" interval=10 1280959128.5:12\n", "PUTVAL h/load/load N:1:2:U",
		"PUTVAL h/p-i/if_octets 1:2:3 4:5:6", "# x\n\nPUTVAL h/p/gauge N:-1e300", "PUTVAL \"\" N:1",
		"PUTVAL h\xff/p/gauge N:1", "PUTVAL \"h/p-\xc3/gauge\" N:1", "PUTVAL h/p/gauge-\xed\xa0\x80 N:1"} {
		f.Add([]byte(s))
	}
	types := Builtin()
	f.Fuzz(func(t *testing.T, body []byte) {
		ops, err := ParseCommand(body, types, nil)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		checkOps(t, ops, body)
	})
}
