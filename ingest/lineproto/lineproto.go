// Package lineproto parses the mesures command protocol: one command per
// line, verbs case-insensitive, fields separated by spaces or tabs.
//
//	SET key value              make key a GAUGE holding value
//	SET key value @ms          the same, as a point at ms since 1970; a
//	                           repeat of the key's newest point (same time
//	                           and value) is taken as a resend: no-op
//	INCR key n [interval_ms]   add n (>= 0) to the COUNTER key; its mesures
//	                           view counts per window of interval_ms
//	DELETE key                 remove key and its history (DEL works too)
//	PING                       answered +PONG, touches nothing
//
// Values are decimal or exponent floats ("42", "-1.5", "2e3"); NaN and
// infinities are refused. Keys are 1 to 255 bytes of valid UTF-8 without
// spaces, control characters or DEL. The parser is pure: bytes in, an Op
// out; it copies the key, so the line buffer may be reused.
package lineproto

import (
	"bytes"
	"strconv"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/internal/text"
)

// MaxKeyLen is the longest key accepted.
const MaxKeyLen = text.MaxKeyLen

// Command is what one line asks for.
type Command uint8

const (
	// Blank is an empty line: nothing to do, nothing to answer.
	Blank Command = iota
	// Write is a SET, INCR or DELETE, carried in the Op.
	Write
	// Ping asks for +PONG.
	Ping
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = text.ErrSyntax

// ErrKey is also wrapped by the errors that refuse a line for its key.
var ErrKey = text.ErrKey

var syntaxf = text.Syntaxf

// Parse parses one line, without its line feed; a trailing carriage
// return is ignored. The error text is meant for the client.
func Parse(line []byte) (Command, sample.Op, error) {
	line = bytes.TrimRight(line, "\r")
	var f [5][]byte
	n, ok := text.Fields(line, f[:])
	if !ok {
		return 0, sample.Op{}, syntaxf("too many fields")
	}
	if n == 0 {
		return Blank, sample.Op{}, nil
	}
	verb := f[0]
	switch {
	case equalFold(verb, "SET"):
		if n != 3 && n != 4 {
			return 0, sample.Op{}, syntaxf("SET takes a key, a value and an optional @time in ms")
		}
		key, v, err := parseKeyValue(f[1], f[2])
		if err != nil {
			return 0, sample.Op{}, err
		}
		op := sample.Op{Code: sample.Set, Key: key, Value: v}
		if n == 4 {
			ms, ok := bytes.CutPrefix(f[3], []byte("@"))
			t, err := strconv.ParseInt(string(ms), 10, 64)
			// An empty ms fails ParseInt; a sign it would take ("+5") is refused.
			if !ok || err != nil || t <= 0 || ms[0] < '0' || ms[0] > '9' {
				return 0, sample.Op{}, syntaxf("SET time %q is not @ and a whole number of milliseconds since 1970", text.Clip(f[3]))
			}
			op.Time, op.Resend = t, true
		}
		return Write, op, nil
	case equalFold(verb, "INCR"):
		if n != 3 && n != 4 {
			return 0, sample.Op{}, syntaxf("INCR takes a key, an amount and an optional interval in ms")
		}
		key, v, err := parseKeyValue(f[1], f[2])
		if err != nil {
			return 0, sample.Op{}, err
		}
		if v < 0 {
			return 0, sample.Op{}, syntaxf("INCR amount %q is negative: a COUNTER only goes up", f[2])
		}
		op := sample.Op{Code: sample.Incr, Key: key, Value: v}
		if n == 4 {
			iv, err := strconv.ParseInt(string(f[3]), 10, 64)
			if err != nil || iv <= 0 || iv > 366*24*3600*1000 {
				return 0, sample.Op{}, syntaxf("INCR interval %q is not a whole number of milliseconds from 1 to one year", f[3])
			}
			op.Interval = iv
		}
		return Write, op, nil
	case equalFold(verb, "DELETE"), equalFold(verb, "DEL"):
		if n != 2 {
			return 0, sample.Op{}, syntaxf("DELETE takes one key")
		}
		key, err := parseKey(f[1])
		if err != nil {
			return 0, sample.Op{}, err
		}
		return Write, sample.Op{Code: sample.Delete, Key: key}, nil
	case equalFold(verb, "PING"):
		if n != 1 {
			return 0, sample.Op{}, syntaxf("PING takes no argument")
		}
		return Ping, sample.Op{}, nil
	}
	return 0, sample.Op{}, syntaxf("unknown command %q (want SET, INCR, DELETE or PING)", text.Clip(verb))
}

func equalFold(b []byte, upper string) bool {
	if len(b) != len(upper) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != upper[i] {
			return false
		}
	}
	return true
}

func parseKey(b []byte) (string, error) {
	if err := text.CheckKey(b); err != nil {
		return "", err
	}
	return string(b), nil
}

func parseKeyValue(k, v []byte) (string, float64, error) {
	key, err := parseKey(k)
	if err != nil {
		return "", 0, err
	}
	val, err := text.Float(v)
	if err != nil {
		return "", 0, err
	}
	return key, val, nil
}
