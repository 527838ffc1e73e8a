// Package status parses the JSON bodies of Sonde's status routes: events
// (POST /api/v1/events) and heartbeat pulses (POST /api/v1/heartbeats).
// It is pure: bytes in, values out, every limit checked, with an error
// that says which field of which item is wrong.
//
// An event is one object, or a list of up to MaxEvents of them:
//
//	{"service":"backup","level":2,"message":"done in 4 min","time":1790000000000,"alert":false}
//
// service is required; level (an integer, default 0), message (default
// ""), time (ms since the epoch, default: when the server takes it) and
// alert (default false) are not. A pulse is one object:
//
//	{"service":"backup","nextIn":3600,"alert":"ops"}
//
// nextIn is in seconds (at least MinNextIn, at most MaxNextIn, fractions
// allowed); alert names a channel the operator configured (optional).
// Unknown fields are refused, so that a misspelt one is not silently
// ignored. A number may come quoted ("level":"2"), as scripts often send
// it.
package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/internal/text"
)

// Limits of one body. A service becomes part of a key
// (heartbeat.<service>.late), so it stays well under a key's 255 bytes.
const (
	MaxService = sample.MaxService
	MaxMessage = sample.MaxMessage
	MaxEvents  = 1000
	MaxLevel   = math.MaxInt32
	MinLevel   = math.MinInt32
	MinNextIn  = time.Second
	MaxNextIn  = 366 * 24 * time.Hour
	MaxChannel = 64
)

// ErrSyntax is wrapped by every error of the parsers.
var ErrSyntax = text.ErrSyntax

// Pulse is a heartbeat: service is alive, and will pulse again within
// NextIn; Alert names the channel told when it does not.
type Pulse struct {
	Service string
	NextIn  time.Duration
	Alert   string
}

// eventFields are the fields of an event, exactly as they are spelt.
var eventFields = []string{"service", "level", "message", "time", "alert"}

type eventJSON struct {
	Service *string      `json:"service"`
	Level   *json.Number `json:"level"`
	Message string       `json:"message"`
	Time    *json.Number `json:"time"`
	Alert   bool         `json:"alert"`
}

// ParseEvents parses a body of one event or a list of them.
func ParseEvents(body []byte) ([]sample.Event, error) {
	if err := checkText(body); err != nil {
		return nil, err
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	var raws []eventJSON
	if len(trimmed) > 0 && trimmed[0] == '[' {
		// Item by item, so that a long list stops at the bound.
		dec := newDecoder(trimmed)
		dec.Token() // [
		for dec.More() {
			if len(raws) == MaxEvents {
				return nil, text.Syntaxf("more than %d events in one request", MaxEvents)
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, decodeError(err)
			}
			var e eventJSON
			if err := checkFields(raw, eventFields...); err != nil {
				return nil, fmt.Errorf("event %d: %w", len(raws), err)
			}
			if err := decodeStrict(raw, &e); err != nil {
				return nil, fmt.Errorf("event %d: %w", len(raws), err)
			}
			raws = append(raws, e)
		}
		if _, err := dec.Token(); err != nil { // ]
			return nil, decodeError(err)
		}
		if err := atEnd(dec); err != nil {
			return nil, err
		}
		if len(raws) == 0 {
			return nil, text.Syntaxf("an empty list of events")
		}
	} else {
		var one eventJSON
		if err := checkFields(trimmed, eventFields...); err != nil {
			return nil, err
		}
		if err := decodeStrict(trimmed, &one); err != nil {
			return nil, err
		}
		raws = []eventJSON{one}
	}
	out := make([]sample.Event, len(raws))
	for i, r := range raws {
		ev, err := r.event()
		if err != nil {
			if len(raws) > 1 {
				return nil, fmt.Errorf("event %d: %w", i, err)
			}
			return nil, err
		}
		out[i] = ev
	}
	return out, nil
}

func (r *eventJSON) event() (sample.Event, error) {
	var ev sample.Event
	if r.Service == nil {
		return ev, text.Syntaxf("no service")
	}
	if err := checkService(*r.Service); err != nil {
		return ev, err
	}
	ev.Service = *r.Service
	if r.Level != nil {
		l, err := integer("level", *r.Level, MinLevel, MaxLevel)
		if err != nil {
			return ev, err
		}
		ev.Level = l
	}
	if err := checkMessage(r.Message); err != nil {
		return ev, err
	}
	ev.Message = r.Message
	if r.Time != nil {
		t, err := integer("time", *r.Time, 1, math.MaxInt64)
		if err != nil {
			return ev, err
		}
		ev.Time = t
	}
	ev.Alert = r.Alert
	return ev, nil
}

type pulseJSON struct {
	Service *string      `json:"service"`
	NextIn  *json.Number `json:"nextIn"`
	Alert   string       `json:"alert"`
}

// ParsePulse parses a heartbeat pulse.
func ParsePulse(body []byte) (Pulse, error) {
	var r pulseJSON
	if err := checkText(body); err != nil {
		return Pulse{}, err
	}
	if err := checkFields(body, "service", "nextIn", "alert"); err != nil {
		return Pulse{}, err
	}
	if err := decodeStrict(body, &r); err != nil {
		return Pulse{}, err
	}
	if r.Service == nil {
		return Pulse{}, text.Syntaxf("no service")
	}
	if err := checkService(*r.Service); err != nil {
		return Pulse{}, err
	}
	if r.NextIn == nil {
		return Pulse{}, text.Syntaxf("no nextIn")
	}
	s, err := strconv.ParseFloat(r.NextIn.String(), 64)
	if err != nil || math.IsNaN(s) || s < MinNextIn.Seconds() || s > MaxNextIn.Seconds() {
		return Pulse{}, nextInError(r.NextIn.String())
	}
	if len(r.Alert) > MaxChannel || !utf8.ValidString(r.Alert) {
		return Pulse{}, text.Syntaxf("alert channel %q: want a name of at most %d bytes", text.Clip([]byte(r.Alert)), MaxChannel)
	}
	return Pulse{Service: *r.Service, NextIn: time.Duration(s * float64(time.Second)), Alert: r.Alert}, nil
}

func nextInError(got string) error {
	return text.Syntaxf("nextIn %s: want seconds from %d to %d (366 days)", text.Clip([]byte(got)), int64(MinNextIn.Seconds()), int64(MaxNextIn.Seconds()))
}

// decodeStrict decodes one JSON value into v: unknown fields, trailing
// data and a wrong type are errors.
func decodeStrict(body []byte, v any) error {
	dec := newDecoder(body)
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	return atEnd(dec)
}

func newDecoder(body []byte) *json.Decoder {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	return dec
}

func atEnd(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return text.Syntaxf("data after the JSON value")
	}
	return nil
}

// CheckService checks a service name as the bodies' service is checked:
// a key's rules, at most MaxService bytes.
func CheckService(s string) error { return checkService(s) }

func checkService(s string) error {
	if len(s) > MaxService {
		return text.Keyf("service is longer than %d bytes", MaxService)
	}
	return text.CheckKey([]byte(s))
}

// checkMessage allows line ends (LF, CR) and tabs, not other control
// characters.
func checkMessage(m string) error {
	if len(m) > MaxMessage {
		return text.Syntaxf("message is longer than %d bytes", MaxMessage)
	}
	if !utf8.ValidString(m) {
		return text.Syntaxf("message is not valid UTF-8")
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; (c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7f {
			return text.Syntaxf("message holds control character 0x%02x", c)
		}
	}
	return nil
}

// integer reads a JSON number that must be an integer in [lo, hi].
func integer(what string, n json.Number, lo, hi int64) (int64, error) {
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, text.Syntaxf("%s %s: want an integer from %d to %d", what, text.Clip([]byte(n.String())), lo, hi)
	}
	return v, nil
}
