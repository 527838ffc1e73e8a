// Package sse reads a Sonde event stream (GET /events): Server-Sent Events
// whose data is one JSON object of keys and values,
//
//	id: 1234
//	event: reset
//	data: {"key":1.5,"gone":null}
//
// The object is read pair by pair as it arrives, so that a dump of a
// million keys costs no more memory than one pair. What it takes of the
// SSE format is what Sonde writes: lines end in CRLF, LF or CR; a line
// starting with ':' is a comment; an event's fields come in any order but
// `event:` comes before `data:`, and an event has one `data:` line at
// most (the SSE specification joins several with newlines, which would
// cut a JSON object in two; Sonde never sends that).
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits of what one line or token may hold. A Sonde key is at most 255
// bytes, six times that escaped.
const (
	MaxLine   = 4096 // a line other than data:
	MaxKey    = 2048 // a key, decoded
	maxNumber = 64   // a number's characters
)

// ErrSyntax marks a stream that is not a Sonde event stream.
var ErrSyntax = errors.New("sse: not a Sonde event stream")

// Event is what one event said besides its pairs.
type Event struct {
	ID    uint64
	HasID bool
	Type  string // "" for a plain message, "reset" for a reset
	Data  bool   // it had a data line (every Sonde event does)
}

// Pair is called for each key of an event's data object, in order:
// deleted for a null value. typ is the event's type. key is valid only
// during the call (the reader reuses it).
type Pair func(typ string, key []byte, value float64, deleted bool) error

// Reader reads events from a stream.
type Reader struct {
	r       *bufio.Reader
	line    []byte
	tok     []byte
	key     []byte
	started bool // a leading byte order mark was looked for
}

// NewReader reads from r; its buffer should hold a few KiB.
func NewReader(r *bufio.Reader) *Reader { return &Reader{r: r} }

func syntax(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSyntax, fmt.Sprintf(format, args...))
}

// Next reads the next event, calling pair for each key of its data, and
// returns once the blank line that ends it is read. Lines before an event
// that dispatch nothing (comments, a blank line with no field) are
// skipped. io.EOF means the stream ended between events; an error from
// pair ends Next with that error.
func (rd *Reader) Next(pair Pair) (Event, error) {
	if !rd.started {
		// The specification lets a stream begin with a UTF-8 BOM.
		rd.started = true
		if b, err := rd.r.Peek(3); err == nil && string(b) == "\ufeff" {
			rd.r.Discard(3)
		}
	}
	var ev Event
	fields := false
	for {
		name, err := rd.fieldName()
		if err != nil {
			if err == io.EOF && fields {
				return ev, syntax("the stream ended inside an event")
			}
			return ev, err
		}
		switch name {
		case "": // a blank line
			if fields {
				return ev, nil
			}
			continue
		case ":": // a comment
			if _, err := rd.rest(); err != nil {
				return ev, err
			}
			continue
		}
		fields = true
		if name == "data" {
			if ev.Data {
				return ev, syntax("an event with two data lines")
			}
			ev.Data = true
			if err := rd.object(ev.Type, pair); err != nil {
				return ev, err
			}
			continue
		}
		val, err := rd.rest()
		if err != nil {
			return ev, err
		}
		switch name {
		case "id":
			id, err := strconv.ParseUint(string(val), 10, 64)
			if err != nil {
				return ev, syntax("event id %q is not a number", val)
			}
			ev.ID, ev.HasID = id, true
		case "event":
			if ev.Data {
				return ev, syntax("event type %q after the data", val)
			}
			ev.Type = string(val)
		} // retry: and unknown fields are ignored, as the specification says
	}
}

// fieldName reads a line's field name and the colon and one space after
// it: "" for a blank line, ":" for a comment. A field line with no colon
// (an empty value, to the specification) is refused: Sonde never sends
// one.
func (rd *Reader) fieldName() (string, error) {
	rd.line = rd.line[:0]
	for {
		c, err := rd.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(rd.line) > 0 {
				return "", syntax("the stream ended inside a line")
			}
			return "", err
		}
		switch {
		case c == ':' && len(rd.line) == 0:
			return ":", nil
		case c == ':':
			if b, err := rd.r.ReadByte(); err == nil && b != ' ' {
				rd.r.UnreadByte()
			}
			return string(rd.line), nil
		case c == '\n' || c == '\r':
			if err := rd.eol(c); err != nil {
				return "", err
			}
			if len(rd.line) == 0 {
				return "", nil
			}
			return "", syntax("field %q without a colon", rd.line)
		}
		if len(rd.line) >= 64 {
			return "", syntax("a field name longer than 64 bytes")
		}
		rd.line = append(rd.line, c)
	}
}

// eol finishes a line end that began with c: a CR may be followed by LF.
func (rd *Reader) eol(c byte) error {
	if c == '\r' {
		b, err := rd.r.ReadByte()
		if err == nil && b != '\n' {
			return rd.r.UnreadByte()
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// rest reads the rest of a line, at most MaxLine bytes, and its end.
func (rd *Reader) rest() ([]byte, error) {
	rd.line = rd.line[:0]
	for {
		c, err := rd.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				return nil, syntax("the stream ended inside a line")
			}
			return nil, err
		}
		if c == '\n' || c == '\r' {
			return rd.line, rd.eol(c)
		}
		if len(rd.line) >= MaxLine {
			return nil, syntax("a line longer than %d bytes", MaxLine)
		}
		rd.line = append(rd.line, c)
	}
}

// object reads a data line's JSON object of keys and numbers or nulls,
// and the line's end.
func (rd *Reader) object(typ string, pair Pair) error {
	if err := rd.expect('{'); err != nil {
		return err
	}
	c, err := rd.nonSpace()
	if err != nil {
		return err
	}
	if c != '}' {
		rd.r.UnreadByte()
		for {
			if err := rd.expect('"'); err != nil {
				return err
			}
			if err := rd.str(); err != nil {
				return err
			}
			if err := rd.expect(':'); err != nil {
				return err
			}
			v, deleted, err := rd.value()
			if err != nil {
				return err
			}
			if err := pair(typ, rd.key, v, deleted); err != nil {
				return err
			}
			c, err := rd.nonSpace()
			if err != nil {
				return err
			}
			if c == '}' {
				break
			}
			if c != ',' {
				return syntax("%q where a comma or a closing brace goes", c)
			}
		}
	}
	for {
		c, err := rd.r.ReadByte()
		if err != nil {
			return rd.eofInside(err)
		}
		switch c {
		case ' ', '\t':
			continue
		case '\n', '\r':
			return rd.eol(c)
		}
		return syntax("%q after the data object", c)
	}
}

func (rd *Reader) eofInside(err error) error {
	if err == io.EOF {
		return syntax("the stream ended inside the data")
	}
	return err
}

func (rd *Reader) nonSpace() (byte, error) {
	for {
		c, err := rd.r.ReadByte()
		if err != nil {
			return 0, rd.eofInside(err)
		}
		if c != ' ' && c != '\t' {
			return c, nil
		}
	}
}

func (rd *Reader) expect(want byte) error {
	c, err := rd.nonSpace()
	if err != nil {
		return err
	}
	if c != want {
		return syntax("%q where %q goes", c, want)
	}
	return nil
}

// str reads a JSON string after its opening quote into rd.key.
func (rd *Reader) str() error {
	rd.key = rd.key[:0]
	for {
		c, err := rd.r.ReadByte()
		if err != nil {
			return rd.eofInside(err)
		}
		if len(rd.key) >= MaxKey && c != '"' {
			return syntax("a key longer than %d bytes", MaxKey)
		}
		switch {
		case c == '"':
			if !utf8.Valid(rd.key) {
				return syntax("a key that is not UTF-8")
			}
			return nil
		case c < 0x20:
			return syntax("a control character in a key")
		case c != '\\':
			rd.key = append(rd.key, c)
			continue
		}
		e, err := rd.r.ReadByte()
		if err != nil {
			return rd.eofInside(err)
		}
		switch e {
		case '"', '\\', '/':
			rd.key = append(rd.key, e)
		case 'b':
			rd.key = append(rd.key, '\b')
		case 'f':
			rd.key = append(rd.key, '\f')
		case 'n':
			rd.key = append(rd.key, '\n')
		case 'r':
			rd.key = append(rd.key, '\r')
		case 't':
			rd.key = append(rd.key, '\t')
		case 'u':
			r, err := rd.hex4()
			if err != nil {
				return err
			}
			if utf16.IsSurrogate(r) {
				// A high surrogate and a low one after it make one rune;
				// anything else is U+FFFD, as encoding/json reads it.
				low := rune(-1)
				if b, err := rd.r.Peek(6); err == nil && b[0] == '\\' && b[1] == 'u' {
					if v, err := strconv.ParseUint(string(b[2:]), 16, 16); err == nil {
						low = rune(v)
					}
				}
				if d := utf16.DecodeRune(r, low); d != utf8.RuneError {
					rd.r.Discard(6)
					r = d
				} else {
					r = utf8.RuneError
				}
			}
			rd.key = utf8.AppendRune(rd.key, r)
		default:
			return syntax("the escape \\%c in a key", e)
		}
	}
}

func (rd *Reader) hex4() (rune, error) {
	b, err := rd.r.Peek(4)
	if err != nil {
		return 0, rd.eofInside(err)
	}
	v, err := strconv.ParseUint(string(b), 16, 16)
	if err != nil {
		return 0, syntax("the escape \\u%s in a key", b)
	}
	rd.r.Discard(4)
	return rune(v), nil
}

// value reads a number or null.
func (rd *Reader) value() (float64, bool, error) {
	c, err := rd.nonSpace()
	if err != nil {
		return 0, false, err
	}
	if c == 'n' {
		b, err := rd.r.Peek(3)
		if err != nil || string(b) != "ull" {
			return 0, false, syntax("a value that is neither a number nor null")
		}
		rd.r.Discard(3)
		return 0, true, nil
	}
	rd.tok = append(rd.tok[:0], c)
	for {
		c, err := rd.r.ReadByte()
		if err != nil {
			return 0, false, rd.eofInside(err)
		}
		if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
			rd.r.UnreadByte()
			break
		}
		if len(rd.tok) >= maxNumber {
			return 0, false, syntax("a number longer than %d characters", maxNumber)
		}
		rd.tok = append(rd.tok, c)
	}
	if !jsonNumber(rd.tok) {
		return 0, false, syntax("%q is not a JSON number", rd.tok)
	}
	v, err := strconv.ParseFloat(string(rd.tok), 64)
	if err != nil || math.IsInf(v, 0) {
		return 0, false, syntax("%q is out of a float64's range", rd.tok)
	}
	return v, false, nil
}

// jsonNumber checks the JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func jsonNumber(b []byte) bool {
	b = bytes.TrimPrefix(b, []byte("-"))
	digits := func() int {
		n := 0
		for n < len(b) && b[n] >= '0' && b[n] <= '9' {
			n++
		}
		b = b[n:]
		return n
	}
	if len(b) > 0 && b[0] == '0' {
		b = b[1:]
	} else if digits() == 0 {
		return false
	}
	if len(b) > 0 && b[0] == '.' {
		b = b[1:]
		if digits() == 0 {
			return false
		}
	}
	if len(b) > 0 && (b[0] == 'e' || b[0] == 'E') {
		b = b[1:]
		if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
			b = b[1:]
		}
		if digits() == 0 {
			return false
		}
	}
	return len(b) == 0
}
