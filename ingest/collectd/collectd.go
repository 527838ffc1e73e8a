// Package collectd parses what collectd's write_http plugin posts, in both
// of its formats, into writes:
//
//   - Format "JSON": an array of value lists, each with values, dstypes,
//     dsnames, time, interval, host, plugin, plugin_instance, type and
//     type_instance;
//   - Format "Command": PUTVAL lines, whose data source names and types
//     come from a types.db (collectd's own file, or the built-in subset).
//
// # Keys
//
// Keys are named the way collectd's write_graphite names them with its
// defaults, so the same value list gets the same key over every path:
//
//	host.plugin[-plugin_instance].type[-type_instance][.dsname]
//
// The data source name is appended only when the type has more than one
// (load.shortterm, if_octets.rx), as write_graphite does. In every part,
// dots, white space and control characters become '_', and so do the
// characters Graphite forbids ( "\:!/() ) anywhere in the key. A key is
// valid UTF-8: a part that is not (raw bytes, or in JSON a lone surrogate
// escape such as \ud800, which would decode to U+FFFD) refuses the body.
//
// # Types
//
//   - GAUGE: a GAUGE write (sample.Set); NaN (null or "U") is skipped.
//   - DERIVE: an observed cumulative total (sample.CounterSet); a value
//     below the previous one is a reset.
//   - COUNTER: the same, but a value below the previous one is a wrap of
//     an unsigned 32- or 64-bit counter, counted as collectd counts it
//     (Op.Wrap).
//   - ABSOLUTE: the count since the last report (sample.Incr).
//
// Counters get a counting window of the value list's interval. Points are
// stored at the value list's time.
//
// The parsers are pure: bytes in, ops out.
package collectd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/internal/text"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = text.ErrSyntax

// ErrKey is also wrapped by the errors that refuse a body for a key (a
// host, plugin, type, instance or data source name).
var ErrKey = text.ErrKey

var syntaxf = text.Syntaxf

// DSType is a data source type.
type DSType uint8

// The data source types of collectd.
const (
	Gauge DSType = iota + 1
	Derive
	Counter
	Absolute
)

func parseDSType(s string) (DSType, bool) {
	switch strings.ToLower(s) {
	case "gauge":
		return Gauge, true
	case "derive":
		return Derive, true
	case "counter":
		return Counter, true
	case "absolute":
		return Absolute, true
	}
	return 0, false
}

// Ident names one value list.
type Ident struct {
	Host, Plugin, PluginInstance, Type, TypeInstance string
}

// graphiteForbidden are the characters write_graphite replaces anywhere
// in a key.
const graphiteForbidden = " \t\"\\:!/()\n\r"

func escapePart(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' || c <= ' ' || c == 0x7f || strings.IndexByte(graphiteForbidden, c) >= 0 {
			c = '_'
		}
		dst = append(dst, c)
	}
	return dst
}

// Key returns the key of data source ds of the value list id (ds empty:
// the type has a single data source).
func Key(id Ident, ds string) (string, error) {
	if id.Host == "" || id.Plugin == "" || id.Type == "" {
		return "", text.Keyf("value list without host, plugin or type (%q/%q/%q)", id.Host, id.Plugin, id.Type)
	}
	b := make([]byte, 0, 64)
	b = escapePart(b, id.Host)
	b = append(b, '.')
	b = escapePart(b, id.Plugin)
	if id.PluginInstance != "" {
		b = append(b, '-')
		b = escapePart(b, id.PluginInstance)
	}
	b = append(b, '.')
	b = escapePart(b, id.Type)
	if id.TypeInstance != "" {
		b = append(b, '-')
		b = escapePart(b, id.TypeInstance)
	}
	if ds != "" {
		b = append(b, '.')
		b = escapePart(b, ds)
	}
	if err := text.CheckKey(b); err != nil {
		return "", err
	}
	return string(b), nil
}

// op turns one value into a write; ok is false for an unknown value (NaN),
// which is skipped.
func op(key string, t DSType, v float64, ms, intervalMs int64) (sample.Op, bool, error) {
	if math.IsNaN(v) {
		return sample.Op{}, false, nil
	}
	if math.IsInf(v, 0) {
		return sample.Op{}, false, syntaxf("%s: value is infinite", key)
	}
	o := sample.Op{Key: key, Value: v, Time: ms}
	switch t {
	case Gauge:
		o.Code = sample.Set
		return o, true, nil
	case Derive, Counter:
		o.Code, o.Wrap = sample.CounterSet, t == Counter
	case Absolute:
		o.Code = sample.Incr
	}
	if v < 0 {
		return sample.Op{}, false, syntaxf("%s: a negative %s value (%g) cannot be stored as a COUNTER", key, dsTypeName(t), v)
	}
	o.Interval = intervalMs
	return o, true, nil
}

func dsTypeName(t DSType) string {
	return [...]string{"", "gauge", "derive", "counter", "absolute"}[t]
}

// toMs converts collectd's float seconds to ms; 0 (no time) means now.
func toMs(secs float64, what string) (int64, error) {
	if secs == 0 {
		return 0, nil
	}
	if math.IsNaN(secs) || secs < 0 || secs > 253402300799 {
		return 0, syntaxf("%s %v is not Unix seconds between 1970 and 9999", what, secs)
	}
	return max(int64(math.Round(secs*1000)), 1), nil
}

// maxInterval bounds a value list's interval (a COUNTER window): a year.
const maxInterval = 366 * 24 * 3600

type jsonList struct {
	Values         []*float64 `json:"values"`
	DSTypes        []string   `json:"dstypes"`
	DSNames        []keyPart  `json:"dsnames"`
	Time           float64    `json:"time"`
	Interval       float64    `json:"interval"`
	Host           keyPart    `json:"host"`
	Plugin         keyPart    `json:"plugin"`
	PluginInstance keyPart    `json:"plugin_instance"`
	Type           keyPart    `json:"type"`
	TypeInstance   keyPart    `json:"type_instance"`
}

// keyPart is a JSON string that goes into a key. encoding/json turns
// invalid UTF-8, and escapes of lone surrogates, into U+FFFD without a
// word, so that distinct parts would collide; keyPart keeps why its raw
// text was not valid UTF-8, for check to report.
type keyPart struct {
	s   string
	bad string // what is wrong with the raw text, or ""
}

func (p *keyPart) UnmarshalJSON(raw []byte) error {
	if err := json.Unmarshal(raw, &p.s); err != nil {
		return err
	}
	p.bad = badJSONString(raw)
	return nil
}

// check returns a key error naming the part (what) when it is not valid
// UTF-8.
func (p keyPart) check(what string) error {
	if p.bad == "" {
		return nil
	}
	return text.Keyf("%s is not valid UTF-8 (%s)", what, p.bad)
}

// badJSONString says why raw, a JSON string as the decoder found it
// (quotes included, or null), does not hold valid UTF-8: a raw byte that
// is not, or a \u escape of a surrogate outside a pair. It returns "" for
// a valid string. Offsets count in the string's JSON text.
func badJSONString(raw []byte) string {
	if i := text.InvalidUTF8(raw); i >= 0 {
		return fmt.Sprintf("byte 0x%02x at %d", raw[i], i-1) // raw[0] is the quote
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r := hex4(raw[i+1:])
		switch {
		case r >= 0xd800 && r < 0xdc00: // a high surrogate: a low one must follow
			if next := raw[i+5:]; len(next) >= 6 && next[0] == '\\' && next[1] == 'u' {
				if lo := hex4(next[2:]); lo >= 0xdc00 && lo < 0xe000 {
					i += 10
					continue
				}
			}
			return fmt.Sprintf("lone surrogate %s at %d", raw[i-1:i+5], i-2)
		case r >= 0xdc00 && r < 0xe000:
			return fmt.Sprintf("lone surrogate %s at %d", raw[i-1:i+5], i-2)
		}
		i += 4
	}
	return ""
}

// hex4 reads the 4 hex digits of a \u escape (the decoder has checked
// them); -1 if there are not 4.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	v, err := strconv.ParseUint(string(b[:4]), 16, 16)
	if err != nil {
		return -1
	}
	return rune(v)
}

// ParseJSON parses a write_http JSON body: an array of value lists. It
// appends a write per known value to dst. Any error rejects the whole
// body.
func ParseJSON(body []byte, dst []sample.Op) ([]sample.Op, error) {
	var lists []jsonList
	if err := json.Unmarshal(body, &lists); err != nil {
		return dst, syntaxf("not a JSON array of value lists: %v", err)
	}
	for i, l := range lists {
		if len(l.Values) == 0 || len(l.DSTypes) != len(l.Values) || len(l.DSNames) != len(l.Values) {
			return dst, syntaxf("value list %d: %d values, %d dstypes, %d dsnames", i, len(l.Values), len(l.DSTypes), len(l.DSNames))
		}
		ms, err := toMs(l.Time, "time")
		if err != nil {
			return dst, fmt.Errorf("value list %d: %w", i, err)
		}
		if l.Interval < 0 || l.Interval > maxInterval {
			return dst, syntaxf("value list %d: interval %v is not 0 to a year", i, l.Interval)
		}
		for _, p := range []struct {
			what string
			part keyPart
		}{{"host", l.Host}, {"plugin", l.Plugin}, {"plugin_instance", l.PluginInstance}, {"type", l.Type}, {"type_instance", l.TypeInstance}} {
			if err := p.part.check(p.what); err != nil {
				return dst, fmt.Errorf("value list %d: %w", i, err)
			}
		}
		id := Ident{l.Host.s, l.Plugin.s, l.PluginInstance.s, l.Type.s, l.TypeInstance.s}
		for j, v := range l.Values {
			t, ok := parseDSType(l.DSTypes[j])
			if !ok {
				return dst, syntaxf("value list %d: unknown dstype %q", i, text.Clip([]byte(l.DSTypes[j])))
			}
			ds := ""
			if len(l.Values) > 1 {
				if err := l.DSNames[j].check("dsname"); err != nil {
					return dst, fmt.Errorf("value list %d: %w", i, err)
				}
				ds = l.DSNames[j].s
			}
			key, err := Key(id, ds)
			if err != nil {
				return dst, fmt.Errorf("value list %d: %w", i, err)
			}
			val := math.NaN()
			if v != nil {
				val = *v
			}
			o, ok, err := op(key, t, val, ms, int64(l.Interval*1000))
			if err != nil {
				return dst, fmt.Errorf("value list %d: %w", i, err)
			}
			if ok {
				dst = append(dst, o)
			}
		}
	}
	return dst, nil
}

// ParseCommand parses PUTVAL lines (write_http Format "Command", or the
// unixsock protocol):
//
//	PUTVAL "host/plugin[-instance]/type[-instance]" [interval=<s>] <time>:<v>[:<v>...] ...
//
// time is Unix seconds or N (now); a value is a number or U (unknown).
// Data source names and types come from types. Blank lines and lines
// starting with # are skipped. Any error rejects the whole body.
func ParseCommand(body []byte, types TypesDB, dst []sample.Op) ([]sample.Op, error) {
	for n, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var err error
		if dst, err = parsePutval(line, types, dst); err != nil {
			return dst, fmt.Errorf("line %d: %w", n+1, err)
		}
	}
	return dst, nil
}

func parsePutval(line []byte, types TypesDB, dst []sample.Op) ([]sample.Op, error) {
	verb, rest, _ := bytes.Cut(line, []byte(" "))
	if !bytes.EqualFold(verb, []byte("PUTVAL")) {
		return dst, syntaxf("unknown command %q (want PUTVAL)", text.Clip(verb))
	}
	rest = bytes.TrimLeft(rest, " \t")
	var ident []byte
	if len(rest) > 0 && rest[0] == '"' {
		end := bytes.IndexByte(rest[1:], '"')
		if end < 0 {
			return dst, syntaxf("identifier without its closing quote")
		}
		ident, rest = rest[1:1+end], rest[2+end:]
	} else {
		ident, rest, _ = bytes.Cut(rest, []byte(" "))
	}
	id, err := parseIdent(ident)
	if err != nil {
		return dst, err
	}
	dss, ok := types[id.Type]
	if !ok {
		return dst, syntaxf("type %q is not in types.db", text.Clip([]byte(id.Type)))
	}
	var interval float64
	var f [64][]byte
	nf, ok := text.Fields(rest, f[:])
	if !ok {
		return dst, syntaxf("too many fields")
	}
	lists := 0
	for _, fld := range f[:nf] {
		if k, v, isOpt := bytes.Cut(fld, []byte("=")); isOpt {
			if !bytes.Equal(k, []byte("interval")) {
				continue // meta options collectd may add; they carry no values
			}
			iv, err := strconv.ParseFloat(string(v), 64)
			if err != nil || iv < 0 || iv > maxInterval {
				return dst, syntaxf("interval %q is not 0 to a year in seconds", text.Clip(v))
			}
			interval = iv
			continue
		}
		parts := bytes.Split(fld, []byte(":"))
		if len(parts) != len(dss)+1 {
			return dst, syntaxf("%q has %d values; type %q has %d data sources", text.Clip(fld), len(parts)-1, id.Type, len(dss))
		}
		var ms int64
		if !bytes.Equal(parts[0], []byte("N")) {
			secs, err := strconv.ParseFloat(string(parts[0]), 64)
			if err != nil {
				return dst, syntaxf("time %q is not Unix seconds or N", text.Clip(parts[0]))
			}
			if ms, err = toMs(secs, "time"); err != nil {
				return dst, err
			}
		}
		for j, ds := range dss {
			name := ""
			if len(dss) > 1 {
				name = ds.Name
			}
			key, err := Key(id, name)
			if err != nil {
				return dst, err
			}
			v := math.NaN()
			if !bytes.Equal(parts[j+1], []byte("U")) {
				if v, err = strconv.ParseFloat(string(parts[j+1]), 64); err != nil || math.IsNaN(v) {
					return dst, syntaxf("value %q is not a number or U", text.Clip(parts[j+1]))
				}
			}
			o, ok, err := op(key, ds.Type, v, ms, int64(interval*1000))
			if err != nil {
				return dst, err
			}
			if ok {
				dst = append(dst, o)
			}
		}
		lists++
	}
	if lists == 0 {
		return dst, syntaxf("PUTVAL without values")
	}
	return dst, nil
}

// parseIdent splits host/plugin[-instance]/type[-instance]. The host may
// hold slashes only if quoted in collectd; here it holds none.
func parseIdent(b []byte) (Ident, error) {
	if err := text.CheckUTF8("identifier", b); err != nil {
		return Ident{}, err
	}
	s := string(b)
	host, rest, ok1 := strings.Cut(s, "/")
	plugin, typ, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || host == "" || plugin == "" || typ == "" || strings.Contains(typ, "/") {
		return Ident{}, text.Keyf("identifier %q is not host/plugin[-instance]/type[-instance]", text.Clip(b))
	}
	var id Ident
	id.Host = host
	id.Plugin, id.PluginInstance, _ = strings.Cut(plugin, "-")
	id.Type, id.TypeInstance, _ = strings.Cut(typ, "-")
	return id, nil
}
