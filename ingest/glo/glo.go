// Package glo reads glo status documents (issue 14): pure, bytes in,
// values out. glo (github.com/andersroos/glo) is a JSON status format
// that processes serve over HTTP, plain or wrapped in a JSONP callback:
//
//	{"version": 1, "timestamp": <ms>,
//	 "data": [{"key": "<name>:<tag>", "value": "<string>", "desc": "…", "lvl": 0}, …]}
//
// Version 2 has the timestamp in microseconds, hierarchical names
// ("/server/request:count") and values that may be numbers. The tags say
// what a value is: count (a total that only grows), current, last,
// last-duration-us, total-duration-us (a growing total too) and max-us.
//
// Parse keeps each item whose tag it knows and whose value is a finite
// number; the rest are counted in Skipped. A name becomes dotted: a
// version 2 path loses its leading '/' and its '/' become '.'.
package glo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The tags of glo's format.
const (
	TagCount           = "count"
	TagCurrent         = "current"
	TagLast            = "last"
	TagLastDurationUs  = "last-duration-us"
	TagTotalDurationUs = "total-duration-us"
	TagMaxUs           = "max-us"
)

// Counter reports whether tag's values are a total that only grows
// (stored as a COUNTER); ok is false for a tag glo does not define.
func Counter(tag string) (counter, ok bool) {
	switch tag {
	case TagCount, TagTotalDurationUs:
		return true, true
	case TagCurrent, TagLast, TagLastDurationUs, TagMaxUs:
		return false, true
	}
	return false, false
}

// Item is one numeric value of a document.
type Item struct {
	Name    string // dotted
	Tag     string
	Value   float64
	Counter bool
}

// Doc is a parsed document.
type Doc struct {
	Version int
	// Time is the document's timestamp in ms since the epoch; 0 when it
	// has none.
	Time  int64
	Items []Item
	// Skipped counts the items left out: an unknown tag, a value that is
	// not a finite number (a status string), a bad key, past maxItems.
	Skipped int
}

// ErrFormat is returned for a body that is not a glo document.
var ErrFormat = errors.New("not a glo document")

type rawDoc struct {
	Version   json.Number `json:"version"`
	Timestamp json.Number `json:"timestamp"`
	Data      []rawItem   `json:"data"`
}

type rawItem struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// Parse reads a document, plain or as JSONP (cb({…});), keeping at most
// maxItems items (0: no bound).
func Parse(body []byte, maxItems int) (Doc, error) {
	body = unwrap(body)
	var raw rawDoc
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		return Doc{}, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	if d.More() {
		return Doc{}, fmt.Errorf("%w: more after the document", ErrFormat)
	}
	var doc Doc
	switch raw.Version {
	case "1":
		doc.Version = 1
	case "2":
		doc.Version = 2
	default:
		return Doc{}, fmt.Errorf("%w: version %q (1 and 2 are read)", ErrFormat, raw.Version.String())
	}
	if raw.Timestamp != "" {
		ts, err := strconv.ParseInt(raw.Timestamp.String(), 10, 64)
		if err != nil || ts < 0 {
			return Doc{}, fmt.Errorf("%w: timestamp %q", ErrFormat, raw.Timestamp.String())
		}
		if doc.Version == 2 {
			ts /= 1000 // µs
		}
		doc.Time = ts
	}
	for _, it := range raw.Data {
		if maxItems > 0 && len(doc.Items) >= maxItems {
			doc.Skipped++
			continue
		}
		item, ok := parseItem(&it, doc.Version)
		if !ok {
			doc.Skipped++
			continue
		}
		doc.Items = append(doc.Items, item)
	}
	return doc, nil
}

func parseItem(it *rawItem, version int) (Item, bool) {
	name, tag, ok := strings.Cut(it.Key, ":")
	if !ok {
		return Item{}, false
	}
	counter, known := Counter(tag)
	if !known {
		return Item{}, false
	}
	if version == 2 {
		name = strings.ReplaceAll(strings.TrimPrefix(name, "/"), "/", ".")
	}
	if name == "" {
		return Item{}, false
	}
	v, ok := number(it.Value)
	if !ok || counter && v < 0 {
		return Item{}, false
	}
	return Item{Name: name, Tag: tag, Value: v, Counter: counter}, true
}

// number reads a value: a JSON number, or a string holding one in JSON's
// syntax (not Go's: no "1_000", "0x10" or "Inf").
func number(raw json.RawMessage) (float64, bool) {
	s := string(bytes.TrimSpace(raw))
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false
		}
		s = strings.TrimSpace(s)
	}
	if s == "" || s[0] != '-' && (s[0] < '0' || s[0] > '9') || !json.Valid([]byte(s)) {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// unwrap returns the document inside a JSONP answer (name( … ) with an
// optional ';'), or body as it is.
func unwrap(body []byte) []byte {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || b[0] == '{' {
		return b
	}
	open := bytes.IndexByte(b, '(')
	if open <= 0 || !callbackName(b[:open]) {
		return b
	}
	b = bytes.TrimSuffix(b, []byte(";"))
	b = bytes.TrimSpace(b)
	if !bytes.HasSuffix(b, []byte(")")) {
		return body
	}
	return b[open+1 : len(b)-1]
}

// callbackName reports whether b is a JavaScript name as JSONP callbacks
// are: letters, digits, '_', '$' and '.', not starting with a digit or
// '.'. At most 128 bytes.
func callbackName(b []byte) bool {
	if len(b) == 0 || len(b) > 128 {
		return false
	}
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '$':
		case (c >= '0' && c <= '9' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}

// CallbackName reports whether name is a JSONP callback Sonde answers:
// see callbackName.
func CallbackName(name string) bool { return callbackName([]byte(name)) }
