// Package logatron parses logatron's client protocol (issue 14): pure,
// bytes in, values out. A client's first line is `IAM <name>`; after it,
// `LOG <message>` and `SET <key> [value]` lines. The server never writes
// a byte back.
//
// The rules are logatron's own (a Node.js server: byline splits the
// stream, JavaScript regular expressions read the lines):
//
//	IAM:  ^IAM\s+(\w+)$
//	LOG:  ^LOG\s+([^$]*)$              message: the capture, trimmed
//	SET:  ^SET\s+(\w+)(\s*|\s+[^$]+)$  value: the second capture, trimmed
//
// where \w is [A-Za-z0-9_] and \s, like trim, is JavaScript's white
// space (ASCII space, tab, line ends, NBSP, the Unicode space
// separators, BOM). Lines split on \r\n, \n, \v, \f, \r, U+0085, U+2028
// and U+2029; empty lines are skipped. A LOG or SET line holding '$' does
// not match, and is dropped as logatron drops it; so is any other line
// after IAM. Any line before IAM other than a valid IAM ends the
// connection (the caller's to do).
package logatron

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"
)

// ErrLineTooLong is returned by the split function for a line longer than
// its bound.
var ErrLineTooLong = errors.New("logatron: line too long")

// Kind says what a line after IAM is.
type Kind uint8

// The kinds of line.
const (
	Ignored Kind = iota // neither LOG nor SET: dropped, as logatron drops it
	Log                 // LOG <message>
	Set                 // SET <key> [value]
)

// Line is a parsed line after IAM.
type Line struct {
	Kind Kind
	// Dollar says the line was LOG or SET but held '$', which logatron's
	// patterns refuse: it is Ignored.
	Dollar bool
	// Key is a SET's key; Text a LOG's message or a SET's value, trimmed.
	Key, Text string
}

// isWord reports whether c is in \w.
func isWord(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// isSpace reports whether r is in JavaScript's \s (and what trim strips).
func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// trim is JavaScript's String.prototype.trim.
func trim(s string) string { return strings.TrimFunc(s, isSpace) }

// spaceAt returns the length of the JavaScript space at s's start, 0 if
// there is none.
func spaceAt(s string) int {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 || r == utf8.RuneError && n == 1 || !isSpace(r) {
		return 0
	}
	return n
}

// skipSpace returns s without its leading JavaScript spaces.
func skipSpace(s string) string {
	for n := spaceAt(s); n > 0; n = spaceAt(s) {
		s = s[n:]
	}
	return s
}

// ParseIAM reads the first line: the client's name, or false when the
// line is not `IAM <name>` (the connection is then closed).
func ParseIAM(line string) (string, bool) {
	rest, ok := strings.CutPrefix(line, "IAM")
	if !ok || spaceAt(rest) == 0 {
		return "", false
	}
	name := skipSpace(rest)
	if name == "" {
		return "", false
	}
	for i := 0; i < len(name); i++ {
		if !isWord(name[i]) {
			return "", false
		}
	}
	return name, true
}

// Parse reads a line after IAM.
func Parse(line string) Line {
	if rest, ok := strings.CutPrefix(line, "LOG"); ok && spaceAt(rest) > 0 {
		if strings.IndexByte(rest, '$') >= 0 {
			return Line{Dollar: true}
		}
		return Line{Kind: Log, Text: trim(rest)}
	}
	rest, ok := strings.CutPrefix(line, "SET")
	if !ok || spaceAt(rest) == 0 {
		return Line{}
	}
	rest = skipSpace(rest)
	n := 0
	for n < len(rest) && isWord(rest[n]) {
		n++
	}
	if n == 0 {
		return Line{}
	}
	key, tail := rest[:n], rest[n:]
	switch {
	case skipSpace(tail) == "": // (\s*)
		return Line{Kind: Set, Key: key}
	case spaceAt(tail) > 0 && strings.IndexByte(tail, '$') < 0: // (\s+[^$]+)
		return Line{Kind: Set, Key: key, Text: trim(tail)}
	case spaceAt(tail) > 0:
		return Line{Dollar: true}
	}
	return Line{}
}

// Split returns a bufio.SplitFunc that splits as logatron's reader
// (byline) does, skipping empty lines, and fails with ErrLineTooLong for
// a line of more than max bytes. Bytes that are not UTF-8 become U+FFFD,
// as Node.js decodes them.
func Split(max int) bufio.SplitFunc {
	return func(data []byte, atEOF bool) (int, []byte, error) {
		skipped := 0
		for {
			i, n := separator(data)
			switch {
			case i < 0 && !atEOF: // no end yet, or a separator's first n bytes end data
				if len(data)-n > max {
					return 0, nil, ErrLineTooLong
				}
				return skipped, nil, nil
			case i < 0: // at EOF: the rest is the last line
				if len(data) == 0 {
					return skipped, nil, nil
				}
				if len(data) > max {
					return 0, nil, ErrLineTooLong
				}
				return skipped + len(data), valid(data), nil
			case i == 0: // an empty line: skipped
				data = data[n:]
				skipped += n
				continue
			case i > max:
				return 0, nil, ErrLineTooLong
			}
			return skipped + i + n, valid(data[:i]), nil
		}
	}
}

// separator finds the first line separator in data: its index and
// length; -1 when there is none, or when data ends with the first bytes
// of one (more data decides).
func separator(data []byte) (int, int) {
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case '\n', '\v', '\f':
			return i, 1
		case '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				return i, 2
			}
			return i, 1
		case 0xc2: // U+0085
			if i+1 == len(data) {
				return -1, 1
			}
			if data[i+1] == 0x85 {
				return i, 2
			}
		case 0xe2: // U+2028, U+2029
			rest := data[i+1:]
			if len(rest) < 2 {
				if len(rest) == 0 || rest[0] == 0x80 {
					return -1, 1 + len(rest)
				}
				continue
			}
			if rest[0] == 0x80 && (rest[1] == 0xa8 || rest[1] == 0xa9) {
				return i, 3
			}
		}
	}
	return -1, 0
}

// valid returns b, its invalid bytes replaced by U+FFFD.
func valid(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	return bytes.ToValidUTF8(b, []byte("\uFFFD"))
}
