// Package graphite parses Graphite's plaintext protocol, one metric per
// line:
//
//	path value [timestamp]
//
// Fields are separated by spaces or tabs. value is a finite float;
// timestamp is Unix seconds, whole or fractional, and may be left out or
// be -1 (carbon's "now"), which both mean the time the server takes the
// line. Every line becomes a GAUGE write (sample.Set) at its own time.
//
// Tagged paths (name;tag=value;...) are accepted and put in the form
// Graphite's tag database uses: the name, then the tags sorted by tag
// name, so a.b;y=2;x=1 and a.b;x=1;y=2 are the same key. As in Graphite,
// a tag's name may not be empty or hold '!', '^' or '='; its value may not
// be empty or start with '~'. A tag may appear once. The path, tags
// included, is 1 to 255 bytes of valid UTF-8 without control characters.
//
// The parser is pure: bytes in, an Op out; it copies the key, so the line
// buffer may be reused.
package graphite

import (
	"bytes"
	"math"
	"slices"
	"strconv"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/internal/text"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = text.ErrSyntax

// ErrKey is also wrapped by the errors that refuse a line for its path or
// tags.
var ErrKey = text.ErrKey

var syntaxf = text.Syntaxf

// maxSeconds is the largest timestamp accepted: the year 9999.
const maxSeconds = 253402300799

// Parse parses one line without its line feed; a trailing carriage return
// is ignored. blank is true for an empty line, which carries nothing.
func Parse(line []byte) (op sample.Op, blank bool, err error) {
	line = bytes.TrimRight(line, "\r")
	var f [3][]byte
	n, ok := text.Fields(line, f[:])
	switch {
	case n == 0:
		return sample.Op{}, true, nil
	case !ok:
		return sample.Op{}, false, syntaxf("too many fields (want: path value [timestamp])")
	case n == 1:
		return sample.Op{}, false, syntaxf("no value after the path %q", text.Clip(f[0]))
	}
	key, err := parseKey(f[0])
	if err != nil {
		return sample.Op{}, false, err
	}
	v, err := text.Float(f[1])
	if err != nil {
		return sample.Op{}, false, err
	}
	op = sample.Op{Code: sample.Set, Key: key, Value: v}
	if n == 3 {
		if op.Time, err = parseTime(f[2]); err != nil {
			return sample.Op{}, false, err
		}
	}
	return op, false, nil
}

// parseTime returns ms since the epoch, or 0 for "now" (-1).
func parseTime(b []byte) (int64, error) {
	if len(b) == 2 && b[0] == '-' && b[1] == '1' {
		return 0, nil
	}
	var secs float64
	if i, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		secs = float64(i)
	} else if secs, err = strconv.ParseFloat(string(b), 64); err != nil || math.IsNaN(secs) {
		return 0, syntaxf("timestamp %q is not Unix seconds", text.Clip(b))
	}
	if secs <= 0 || secs > maxSeconds {
		return 0, syntaxf("timestamp %q is not between 1970 and 9999", text.Clip(b))
	}
	return max(int64(math.Round(secs*1000)), 1), nil
}

func parseKey(b []byte) (string, error) {
	if err := text.CheckKey(b); err != nil {
		return "", err
	}
	i := bytes.IndexByte(b, ';')
	if i < 0 {
		return string(b), nil
	}
	if i == 0 {
		return "", text.Keyf("tagged path %q has no name", text.Clip(b))
	}
	var tags [][]byte
	for rest := b[i+1:]; ; {
		j := bytes.IndexByte(rest, ';')
		t := rest
		if j >= 0 {
			t = rest[:j]
		}
		eq := bytes.IndexByte(t, '=')
		switch {
		case eq <= 0:
			return "", text.Keyf("tag %q is not name=value", text.Clip(t))
		case bytes.ContainsAny(t[:eq], "!^"):
			return "", text.Keyf("tag name %q holds ! or ^", text.Clip(t[:eq]))
		case eq == len(t)-1:
			return "", text.Keyf("tag %q has an empty value", text.Clip(t))
		case t[eq+1] == '~':
			return "", text.Keyf("tag value %q starts with ~", text.Clip(t[eq+1:]))
		}
		tags = append(tags, t)
		if j < 0 {
			break
		}
		rest = rest[j+1:]
	}
	slices.SortStableFunc(tags, func(x, y []byte) int { return bytes.Compare(tagName(x), tagName(y)) })
	key := make([]byte, 0, len(b))
	key = append(key, b[:i]...)
	for k, t := range tags {
		if k > 0 && bytes.Equal(tagName(t), tagName(tags[k-1])) {
			return "", text.Keyf("tag %q appears twice", text.Clip(tagName(t)))
		}
		key = append(append(key, ';'), t...)
	}
	return string(key), nil
}

func tagName(t []byte) []byte { return t[:bytes.IndexByte(t, '=')] }
