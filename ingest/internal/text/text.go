// Package text holds the checks every line parser in ingest shares: what a
// key may hold, how a number is read, how an error quotes a client's
// bytes. It is pure and allocation-free except where it returns a string.
package text

import (
	"errors"
	"fmt"
	"math"
	"strconv"
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

// CheckKey reports (as a syntax error) why b cannot be a key: empty, longer than MaxKeyLen,
// or holding a control character or DEL.
func CheckKey(b []byte) error {
	if len(b) == 0 {
		return Syntaxf("empty key")
	}
	if len(b) > MaxKeyLen {
		return Syntaxf("key is longer than %d bytes", MaxKeyLen)
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return Syntaxf("key holds control character 0x%02x", c)
		}
	}
	return nil
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
