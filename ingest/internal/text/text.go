// Package text holds the checks every line parser in ingest shares: what a
// key may hold, how a number is read, how an error quotes a client's
// bytes. It is pure and allocation-free except where it returns a string.
package text

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxKeyLen is the longest key any protocol may create (the engine's
// limit).
const MaxKeyLen = 255

// ErrSyntax is wrapped by every error of every parser; each parser
// exports it as its own ErrSyntax.
var ErrSyntax = errors.New("syntax")

// Syntaxf returns an error wrapping ErrSyntax: "syntax: <message>".
func Syntaxf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrSyntax}, args...)...)
}

// ErrKey is wrapped, besides ErrSyntax, by every error that refuses a
// line for its key (or a part of it: a tag, a statsd name, a collectd
// host): listeners count those apart. Each parser exports it as its own
// ErrKey.
var ErrKey = errors.New("bad key")

// keyError is a syntax error about a key: it wraps both the syntax error
// and ErrKey, and reads as the syntax error.
type keyError struct{ err error }

func (e keyError) Error() string   { return e.err.Error() }
func (e keyError) Unwrap() []error { return []error{e.err, ErrKey} }

// Keyf returns an error wrapping ErrSyntax and ErrKey: "syntax: <message>".
func Keyf(format string, args ...any) error {
	return keyError{Syntaxf(format, args...)}
}

// CheckKey reports (as a key error) why b cannot be a key: empty, longer
// than MaxKeyLen, not valid UTF-8, or holding a control character or DEL.
// Keys are UTF-8 so that every reader (JSON above all) sees the bytes that
// were written: invalid bytes would all read as U+FFFD, and distinct keys
// would collide.
func CheckKey(b []byte) error {
	if len(b) == 0 {
		return Keyf("empty key")
	}
	if len(b) > MaxKeyLen {
		return Keyf("key is longer than %d bytes", MaxKeyLen)
	}
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return Keyf("key holds control character 0x%02x", c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return notUTF8("key", b, i)
		}
		i += n
	}
	return nil
}

// CheckUTF8 reports (as a key error) where b, the part of a key named
// what ("name", "tags", "host"), stops being valid UTF-8.
func CheckUTF8(what string, b []byte) error {
	if i := InvalidUTF8(b); i >= 0 {
		return notUTF8(what, b, i)
	}
	return nil
}

// InvalidUTF8 returns the offset of the first byte of b that is not valid
// UTF-8, or -1 when b is valid.
func InvalidUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1 // not reached: b is not valid
}

func notUTF8(what string, b []byte, i int) error {
	return Keyf("%s is not valid UTF-8 (byte 0x%02x at %d)", what, b[i], i)
}

// Float parses a finite decimal or exponent float.
func Float(b []byte) (float64, error) {
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, Syntaxf("value %q is not a finite number", Clip(b))
	}
	return v, nil
}

// Clip keeps error messages short whatever the client sent.
func Clip(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "..."
	}
	return string(b)
}

// Fields splits line at runs of spaces and tabs into dst, at most len(dst)
// fields; ok is false when there are more.
func Fields(line []byte, dst [][]byte) (n int, ok bool) {
	for i := 0; i < len(line); {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i == len(line) {
			break
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		if n == len(dst) {
			return n, false
		}
		dst[n] = line[i:j]
		n++
		i = j
	}
	return n, true
}
