package status

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/ingest/internal/text"
)

// encoding/json is lenient where a store must not be: it turns invalid
// UTF-8 and lone surrogate escapes into U+FFFD (two different names
// would read as one), matches field names in any case, and lets the last
// of two equal fields win. The checks here refuse all of that first.

// checkText refuses a body that is not valid UTF-8, or whose strings
// hold an escaped surrogate that is not half of a pair.
func checkText(body []byte) error {
	if !utf8.Valid(body) {
		return text.Syntaxf("the body is not valid UTF-8")
	}
	inString := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString && i+1 < len(body):
			i++
			if body[i] != 'u' || i+4 >= len(body) {
				continue
			}
			r, ok := hex4(body[i+1 : i+5])
			i += 4
			switch {
			case !ok:
			case r >= 0xDC00 && r <= 0xDFFF:
				return text.Syntaxf(`a string holds \u%04x, half of a surrogate pair alone`, r)
			case r >= 0xD800 && r <= 0xDBFF:
				lo, ok := rune(0), false
				if i+6 < len(body) && body[i+1] == '\\' && body[i+2] == 'u' {
					lo, ok = hex4(body[i+3 : i+7])
				}
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return text.Syntaxf(`a string holds \u%04x, half of a surrogate pair alone`, r)
				}
				i += 6
			}
		}
	}
	return nil
}

func hex4(b []byte) (rune, bool) {
	n, err := strconv.ParseUint(string(b), 16, 32)
	return rune(n), err == nil
}

// checkFields refuses an object whose field names are not exactly among
// allowed, or that names one twice. Anything but an object is left to
// the typed decoding to refuse.
func checkFields(obj []byte, allowed ...string) error {
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var seen []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil // malformed: the typed decoding says where
		}
		k, _ := t.(string)
		switch {
		case !slices.Contains(allowed, k):
			return text.Syntaxf("unknown field %q", text.Clip([]byte(k)))
		case slices.Contains(seen, k):
			return text.Syntaxf("field %q given twice", k)
		}
		seen = append(seen, k)
		if err := skipValue(dec); err != nil {
			return nil
		}
	}
	return nil
}

// skipValue reads one value, nested or not.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// looseFields decodes an object into its fields, by exact name, the last
// of two equal ones winning: Python's json, which watchtower's server
// reads with.
func looseFields(body []byte) (map[string]json.RawMessage, error) {
	if err := checkText(body); err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		return nil, decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, text.Syntaxf("data after the JSON value")
	}
	if m == nil {
		return nil, text.Syntaxf("want a JSON object, not null")
	}
	return m, nil
}

// decodeError says what was wrong in words, not Go's type names.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return text.Syntaxf("want %s, not a JSON %s", typeWords(te.Type), te.Value)
		}
		return text.Syntaxf("%s: want %s, not a JSON %s", te.Field, typeWords(te.Type), te.Value)
	}
	if errors.Is(err, io.EOF) {
		return text.Syntaxf("an empty body: want a JSON object")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return text.Syntaxf("the JSON ends too soon")
	}
	return text.Syntaxf("%v", err)
}

func typeWords(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[json.Number]():
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		return "a JSON object"
	case t.Kind() == reflect.Slice:
		return "a list"
	}
	return "a " + t.Kind().String()
}
