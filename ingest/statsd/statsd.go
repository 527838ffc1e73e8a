// Package statsd parses the etsy statsd line protocol, with DogStatsD
// tags:
//
//	name:value|type[|@rate][|#tag:value,tag2:value2]
//
// type is c (counter), g (gauge; a leading + or - makes it a delta), ms
// (timer), h (histogram, taken as a timer) or s (set; the value is any
// string). One line may carry several samples of one name
// (name:1|c:2|c), and a datagram several lines. A sample rate scales a
// counter (value/rate) and weighs a timer sample (counts 1/rate times).
//
// Names are cleaned the way etsy statsd cleans them: runs of white space
// become '_', '/' becomes '-', and anything but letters, digits, '_', '-',
// '.' is dropped. Tags are sorted by name and appended in Graphite's tag
// form (;tag=value); a tag without a value becomes tag=true. DogStatsD's
// container (|c:) and timestamp (|T) fields are ignored. A name or tags
// that are not valid UTF-8 are refused rather than cleaned: the bytes
// cleaning would drop are the client's mistake to hear about.
//
// The parser is pure: bytes in, samples out.
package statsd

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/sonde-metrics/sonde/ingest/internal/text"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = text.ErrSyntax

// ErrKey is also wrapped by the errors that refuse a line for its name or
// tags.
var ErrKey = text.ErrKey

var syntaxf = text.Syntaxf

// Type is a statsd metric type.
type Type uint8

// The metric types.
const (
	Counter Type = iota + 1
	Gauge
	Timer // ms and h
	Set
)

// Sample is one parsed sample.
type Sample struct {
	Name  string // cleaned name, with tags in Graphite form
	Type  Type
	Value float64 // counter amount (already scaled by the rate), gauge value or delta, timer value
	Delta bool    // gauge: Value is added to the current value
	Rate  float64 // sample rate in (0, 1]; 1 when not given
	Set   string  // set member
}

// MaxName is the longest cleaned name with tags accepted; the longest
// output key adds the namespace and a statistic (stats.timers. ... .upper_99).
const MaxName = text.MaxKeyLen - 32

// ParseLine parses one line (without its line feed) into samples appended
// to dst. An empty line yields nothing.
func ParseLine(line []byte, dst []Sample) ([]Sample, error) {
	line = bytes.TrimRight(line, "\r")
	if len(bytes.TrimSpace(line)) == 0 {
		return dst, nil
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return dst, syntaxf("%q has no name:value", text.Clip(line))
	}
	rawName, rest := line[:i], line[i+1:]
	if err := text.CheckUTF8("name", rawName); err != nil {
		return dst, err
	}
	name := cleanName(rawName)
	if name == "" {
		return dst, text.Keyf("name %q is empty once cleaned", text.Clip(rawName))
	}
	// Tags come last and hold ':' themselves: cut them off first.
	var tags []byte
	if j := bytes.Index(rest, []byte("|#")); j >= 0 {
		tags = rest[j+2:]
		if k := bytes.IndexByte(tags, '|'); k >= 0 { // fields after the tags
			if err := checkExtra(tags[k:]); err != nil {
				return dst, err
			}
			tags = tags[:k]
		}
		rest = rest[:j]
		if err := text.CheckUTF8("tag list", tags); err != nil {
			return dst, err
		}
	}
	key, err := withTags(name, tags)
	if err != nil {
		return dst, err
	}
	if len(key) > MaxName {
		return dst, text.Keyf("name with tags is longer than %d bytes", MaxName)
	}
	for part := range bytes.SplitSeq(rest, []byte(":")) {
		s, err := parseSample(part)
		if err != nil {
			return dst, err
		}
		s.Name = key
		dst = append(dst, s)
	}
	return dst, nil
}

// Parse parses a datagram of lines separated by '\n'. good counts the
// lines that parsed (blank lines are neither good nor bad); bad lines are
// counted in bad, with the first error, and those of them refused for
// their name or tags (ErrKey) in badKeys too. The good lines' samples are
// returned.
func Parse(datagram []byte, dst []Sample) (out []Sample, good, bad, badKeys int, first error) {
	for line := range bytes.SplitSeq(datagram, []byte("\n")) {
		n := len(dst)
		var err error
		if dst, err = ParseLine(line, dst); err != nil {
			dst = dst[:n]
			bad++
			if errors.Is(err, ErrKey) {
				badKeys++
			}
			if first == nil {
				first = err
			}
		} else if len(dst) > n {
			good++
		}
	}
	return dst, good, bad, badKeys, first
}

func parseSample(b []byte) (Sample, error) {
	fields := bytes.Split(b, []byte("|"))
	if len(fields) < 2 {
		return Sample{}, syntaxf("%q has no |type", text.Clip(b))
	}
	s := Sample{Rate: 1}
	switch string(fields[1]) {
	case "c":
		s.Type = Counter
	case "g":
		s.Type = Gauge
	case "ms", "h":
		s.Type = Timer
	case "s":
		s.Type = Set
	default:
		return Sample{}, syntaxf("unknown type %q (want c, g, ms, h or s)", text.Clip(fields[1]))
	}
	for _, f := range fields[2:] {
		switch {
		case len(f) > 1 && f[0] == '@':
			r, err := strconv.ParseFloat(string(f[1:]), 64)
			if err != nil || !(r > 0 && r <= 1) {
				return Sample{}, syntaxf("sample rate %q is not in (0, 1]", text.Clip(f))
			}
			s.Rate = r
		default:
			if err := checkExtra(append([]byte("|"), f...)); err != nil {
				return Sample{}, err
			}
		}
	}
	v := fields[0]
	if s.Type == Set {
		if len(v) == 0 {
			return Sample{}, syntaxf("empty set member")
		}
		s.Set = string(v)
		return s, nil
	}
	if s.Type == Gauge && len(v) > 0 && (v[0] == '+' || v[0] == '-') {
		s.Delta = true
	}
	f, err := text.Float(v)
	if err != nil {
		return Sample{}, err
	}
	s.Value = f
	switch s.Type {
	case Counter:
		s.Value = f / s.Rate
		if math.IsInf(s.Value, 0) {
			return Sample{}, syntaxf("counter %q over its rate overflows", text.Clip(v))
		}
	case Timer:
		if f < 0 {
			return Sample{}, syntaxf("timer value %q is negative", text.Clip(v))
		}
	}
	return s, nil
}

// checkExtra accepts DogStatsD's fields that carry nothing for Sonde:
// |c:container and |T timestamp.
func checkExtra(b []byte) error {
	for f := range bytes.SplitSeq(b[1:], []byte("|")) {
		if len(f) > 0 && (f[0] == 'T' || bytes.HasPrefix(f, []byte("c:"))) {
			continue
		}
		return syntaxf("unknown field |%s", text.Clip(f))
	}
	return nil
}

// cleanName applies etsy statsd's sanitizeKeyName.
func cleanName(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	space := false
	for _, c := range b {
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' {
			if !space {
				sb.WriteByte('_')
			}
			space = true
			continue
		}
		space = false
		switch {
		case c == '/':
			sb.WriteByte('-')
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.':
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// withTags appends DogStatsD tags (k:v,k2:v2) in Graphite's form, sorted.
func withTags(name string, raw []byte) (string, error) {
	if len(raw) == 0 {
		return name, nil
	}
	var tags []string
	for t := range bytes.SplitSeq(raw, []byte(",")) {
		k, v, ok := bytes.Cut(t, []byte(":"))
		kc, vc := cleanName(k), cleanName(v)
		if !ok {
			vc = "true"
		}
		if kc == "" || vc == "" {
			return "", text.Keyf("tag %q is not name:value", text.Clip(t))
		}
		tags = append(tags, kc+"="+vc)
	}
	slices.Sort(tags)
	tags = slices.Compact(tags)
	return name + ";" + strings.Join(tags, ";"), nil
}
