package sse

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

type got struct {
	ev    Event
	pairs []string
}

func readAll(stream string) ([]got, error) {
	rd := NewReader(bufio.NewReaderSize(strings.NewReader(stream), 16))
	var out []got
	for {
		var g got
		ev, err := rd.Next(func(typ string, key []byte, v float64, deleted bool) error {
			if deleted {
				g.pairs = append(g.pairs, fmt.Sprintf("%s %q=null", typ, key))
			} else {
				g.pairs = append(g.pairs, fmt.Sprintf("%s %q=%g", typ, key, v))
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		g.ev = ev
		out = append(out, g)
	}
}

func TestReader(t *testing.T) {
	stream := "id: 7\r\ndata: {\"a\":1,\"b.c\":-2.5e-7}\r\n\r\n" +
		": ping\r\n\r\n" +
		": resumed\n\n" +
		"id: 9\r\nevent: reset\r\ndata: {}\r\n\r\n" +
		"id:10\rdata:{ \"d\\\"\\u00e9\\ud83d\\ude00\" : null }\r\r" +
		"retry: 5\nid: 11\ndata: {\"x\":0}\n\n"
	evs, err := readAll(stream)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
	want := []string{
		`{7 true  true} [ "a"=1  "b.c"=-2.5e-07]`,
		`{9 true reset true} []`,
		`{10 true  true} [ "d\"é😀"=null]`,
		`{11 true  true} [ "x"=0]`,
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events %v, want %d", len(evs), evs, len(want))
	}
	for i, g := range evs {
		if s := fmt.Sprintf("%v %v", g.ev, g.pairs); s != want[i] {
			t.Errorf("event %d: %s, want %s", i, s, want[i])
		}
	}
}

// TestReaderRefuses: what is not a Sonde event stream ends with ErrSyntax
// and a reason, never a panic or a wrong pair.
// TestReaderKeys: keys as encoding/json reads them, up to MaxKey bytes.
func TestReaderKeys(t *testing.T) {
	long := strings.Repeat("k", MaxKey)
	for _, c := range []struct{ stream, key string }{
		{"\ufeffdata: {\"a\":1}\n\n", "a"}, // a byte order mark first
		{`data: {"x\ud800\u0041y":1}` + "\n\n", "x\ufffdAy"},
		{`data: {"\ud83d\ude00\udc00":1}` + "\n\n", "😀\ufffd"},
		{`data: {"` + long + `":1}` + "\n\n", long},
	} {
		evs, err := readAll(c.stream)
		if !errors.Is(err, io.EOF) || len(evs) != 1 || len(evs[0].pairs) != 1 || evs[0].pairs[0] != fmt.Sprintf(" %q=1", c.key) {
			t.Errorf("%q: %v %v, want key %q", c.stream, evs, err, c.key)
		}
	}
	if _, err := readAll(`data: {"` + long + `k":1}` + "\n\n"); !errors.Is(err, ErrSyntax) {
		t.Errorf("a key of MaxKey+1 bytes: %v", err)
	}
}

func TestReaderRefuses(t *testing.T) {
	for _, c := range []struct{ stream, why string }{
		{"data: {\"a\":1}\r\ndata: {\"b\":2}\r\n\r\n", "two data lines"},
		{"data: {\"a\":1}\r\nevent: reset\r\n\r\n", "after the data"},
		{"id: x\r\n\r\n", "not a number"},
		{"data: [1]\r\n\r\n", "where '{' goes"},
		{"data: {\"a\":\"1\"}\r\n\r\n", "not a JSON number"},
		{"data: {\"a\":01}\r\n\r\n", "not a JSON number"},
		{"data: {\"a\":1e999}\r\n\r\n", "out of a float64's range"},
		{"data: {\"a\":NaN}\r\n\r\n", "not a JSON number"},
		{"data: {\"a\":1 \"b\":2}\r\n\r\n", "comma or a closing brace"},
		{"data: {\"a\":1}x\r\n\r\n", "after the data object"},
		{"data: {\"\\x\":1}\r\n\r\n", "escape"},
		{"data: {\"\xff\":1}\r\n\r\n", "not UTF-8"},
		{"data: {\"a\":1", "ended inside the data"},
		{"id: 1\r\n", "ended inside an event"},
		{"data\r\n\r\n", "without a colon"},
		{"id: " + strings.Repeat("1", MaxLine+1) + "\r\n", "longer than"},
		{"data: {\"" + strings.Repeat("k", MaxKey+2) + "\":1}\r\n\r\n", "key longer"},
		{"data: {\"a\":" + strings.Repeat("1", 100) + "}\r\n\r\n", "number longer"},
	} {
		_, err := readAll(c.stream)
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%q: %v, want a syntax error saying %q", c.stream, err, c.why)
		}
	}
}

// FuzzReader: arbitrary bytes never panic, and an event written the way
// Sonde writes it (query.appendFrame, JSON-escaped keys, shortest floats)
// reads back exactly, whatever the key and value.
func FuzzReader(f *testing.F) {
	f.Add([]byte("id: 1\r\ndata: {\"a\":1}\r\n\r\n"), "a.b", 1.5, uint64(3))
	f.Add([]byte(": ping\r\n\r\nid: 2\r\nevent: reset\r\ndata: {}\r\n\r\n"), "é\"<\x01", -1e-300, uint64(1<<60))
	f.Add([]byte(`x\ud800\u0041y\ud83d\ude00\n\"`), "k", 0.0, uint64(0))
	f.Fuzz(func(t *testing.T, raw []byte, key string, v float64, id uint64) {
		readAll(string(raw))
		// raw as the inside of a JSON string: where encoding/json reads a
		// key of it, the reader reads the same key.
		obj := append(append([]byte(`{"`), raw...), `":1}`...)
		var m map[string]float64
		if utf8.Valid(raw) && json.Unmarshal(obj, &m) == nil && len(m) == 1 { // (encoding/json makes bad UTF-8 U+FFFD; the reader refuses it)
			for want := range m {
				if !utf8.ValidString(want) || len(want) > MaxKey {
					break
				}
				var got string
				rd := NewReader(bufio.NewReader(strings.NewReader("data: " + string(obj) + "\n\n")))
				if _, err := rd.Next(func(_ string, k []byte, _ float64, _ bool) error { got = string(k); return nil }); err != nil || got != want {
					t.Fatalf("%q: read %q (%v), encoding/json reads %q", obj, got, err, want)
				}
			}
		}
		if !utf8.ValidString(key) || len(key) > 255 || math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		k, _ := json.Marshal(key)
		num := strconv.FormatFloat(v, 'f', -1, 64)
		if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
			num = strconv.FormatFloat(v, 'e', -1, 64)
		}
		stream := fmt.Sprintf("id: %d\r\ndata: {%s:%s,%s:null}\r\n\r\n", id, k, num, k)
		rd := NewReader(bufio.NewReader(strings.NewReader(stream)))
		var keys []string
		var vals []float64
		ev, err := rd.Next(func(_ string, gk []byte, gv float64, deleted bool) error {
			keys = append(keys, string(gk))
			if !deleted {
				vals = append(vals, gv)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%q: %v", stream, err)
		}
		if ev.ID != id || !ev.HasID || len(keys) != 2 || keys[0] != key || keys[1] != key || len(vals) != 1 ||
			math.Float64bits(vals[0]) != math.Float64bits(v) && !(v == 0 && vals[0] == 0) {
			t.Fatalf("%q read as %+v %q %v", stream, ev, keys, vals)
		}
	})
}
