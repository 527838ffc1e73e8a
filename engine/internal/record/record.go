// Package record encodes and decodes the body of one WAL record: a
// post-image of one series after one operation. Because a record carries
// the state after the change (the total after an INCR, not the delta),
// applying it twice yields the same state, which makes replay idempotent.
//
// # Format
//
// All integers are varints (zigzag for signed) unless noted:
//
//	code      1 byte   sample.Code
//	time      varint   ms since the epoch
//	key       uvarint length, then the bytes
//	Set:        value float64 (8 bytes little endian), ordinal uvarint
//	Incr, CounterSet, Window:
//	            total, running, shown float64 (8 bytes each),
//	            winStart varint, interval uvarint, ordinal uvarint
//	Delete:     nothing more
//	Event:      the key is the service; level varint, alert 1 byte (0 or 1),
//	            message uvarint length, then the bytes
//	Pulse:      the key is the service; nextIn uvarint (ms), channel
//	            uvarint length, then the bytes
//	Cancel:     nothing more
//	Alert:      the key is the service; kind uvarint, channel and message
//	            (uvarint length, then the bytes each)
//	Delivered:  the key is the service; alert id uvarint
//	Check:      the key is the check's name; failing 1 byte (0 or 1), every
//	            uvarint (ms), channel and message (uvarint length, then
//	            the bytes each)
//	Client:     the key is the client's name; what uvarint (0 disconnected,
//	            1 connected, 2 forgotten)
//	Log:        the key is the client's name; message (uvarint length,
//	            then the bytes)
//	State:      the key is the client's name; the state key and its value
//	            (uvarint length, then the bytes each)
//
// These layouts are part of the on-disk format; docs/format/wal.md mirrors
// them. Change them only with a new frame version.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// MaxKeyLen is the longest key a record can hold.
const MaxKeyLen = 1024

// Event is the code of a status event's record: Time is when it
// happened, Key its service, and Level, Alert and Message the rest. It
// changes no series.
const Event sample.Code = 6

// Heartbeat records (issue 13). Their key is the service.
const (
	// Pulse: the service pulsed at Time and will again within Interval
	// ms; Channel names the alert channel told when it does not.
	Pulse sample.Code = 7
	// Cancel: the service's heartbeat is cancelled at Time.
	Cancel sample.Code = 8
	// Alert: an alert was decided at Time: Level is its kind, Channel
	// where it goes, Message what it says. Its WAL index is its id.
	Alert sample.Code = 9
	// Delivered: the alert whose id is Ordinal is done with (delivered,
	// or dropped): it leaves the queue.
	Delivered sample.Code = 10
	// Check: the HTTP check named Key is failing (Level 1) or passing
	// (Level 0) since Time, as Message says; it runs every Interval ms
	// and alerts Channel.
	Check sample.Code = 11
)

// Client log records (issue 14, the logatron listener). Their key is the
// client's name.
const (
	// Client: the client connected (Level ClientConnected), disconnected
	// (ClientDisconnected) or was forgotten (ClientForgotten) at Time.
	Client sample.Code = 12
	// Log: the client logged Message at Time.
	Log sample.Code = 13
	// State: the client set its state key Channel to Message at Time.
	State sample.Code = 14
)

// The Levels of a Client record.
const (
	ClientDisconnected = 0
	ClientConnected    = 1
	ClientForgotten    = 2
)

// MaxChannelLen is the longest channel name a record can hold.
const MaxChannelLen = 255

// MaxMessageLen is the longest event message a record can hold.
const MaxMessageLen = 16 << 10

// ErrMalformed is returned by Decode for a body that is not a valid record.
var ErrMalformed = errors.New("record: malformed")

// Record is one decoded WAL record.
type Record struct {
	Code sample.Code
	Time int64 // ms since the epoch
	Key  string
	// Value is the GAUGE value (Set) or the COUNTER cumulative total.
	Value float64
	// Running is the count of the open window, Shown the count of the last
	// closed window (counters only).
	Running, Shown float64
	// WinStart is when the open window started (ms); Interval its length.
	WinStart int64
	Interval int64
	// Ordinal numbers the history points of one incarnation of a key from 1;
	// a record with Ordinal 1 created the key.
	Ordinal uint64
	// Level, Alert and Message are an Event's; Level and Message an
	// Alert's too (its kind and text).
	Level   int64
	Alert   bool
	Message string
	// Channel is a Pulse's or an Alert's alert channel.
	Channel string
}

// IsCounter reports whether the record carries counter fields.
func IsCounter(c sample.Code) bool {
	return c == sample.Incr || c == sample.CounterSet || c == sample.Window
}

// AddsPoint reports whether applying the record appends a history point.
func (r *Record) AddsPoint() bool {
	return r.Code == sample.Set || r.Code == sample.Incr || r.Code == sample.CounterSet
}

// Append encodes r onto dst and returns the extended slice.
func Append(dst []byte, r *Record) []byte {
	dst = append(dst, byte(r.Code))
	dst = binary.AppendVarint(dst, r.Time)
	dst = binary.AppendUvarint(dst, uint64(len(r.Key)))
	dst = append(dst, r.Key...)
	switch {
	case r.Code == sample.Set:
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Value))
		dst = binary.AppendUvarint(dst, r.Ordinal)
	case IsCounter(r.Code):
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Value))
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Running))
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Shown))
		dst = binary.AppendVarint(dst, r.WinStart)
		dst = binary.AppendUvarint(dst, uint64(r.Interval))
		dst = binary.AppendUvarint(dst, r.Ordinal)
	case r.Code == Event:
		dst = binary.AppendVarint(dst, r.Level)
		var alert byte
		if r.Alert {
			alert = 1
		}
		dst = append(dst, alert)
		dst = binary.AppendUvarint(dst, uint64(len(r.Message)))
		dst = append(dst, r.Message...)
	case r.Code == Pulse:
		dst = binary.AppendUvarint(dst, uint64(r.Interval))
		dst = binary.AppendUvarint(dst, uint64(len(r.Channel)))
		dst = append(dst, r.Channel...)
	case r.Code == Alert:
		dst = binary.AppendUvarint(dst, uint64(r.Level))
		dst = binary.AppendUvarint(dst, uint64(len(r.Channel)))
		dst = append(dst, r.Channel...)
		dst = binary.AppendUvarint(dst, uint64(len(r.Message)))
		dst = append(dst, r.Message...)
	case r.Code == Delivered:
		dst = binary.AppendUvarint(dst, r.Ordinal)
	case r.Code == Check:
		dst = append(dst, byte(r.Level&1))
		dst = binary.AppendUvarint(dst, uint64(r.Interval))
		dst = binary.AppendUvarint(dst, uint64(len(r.Channel)))
		dst = append(dst, r.Channel...)
		dst = binary.AppendUvarint(dst, uint64(len(r.Message)))
		dst = append(dst, r.Message...)
	case r.Code == Client:
		dst = binary.AppendUvarint(dst, uint64(r.Level))
	case r.Code == Log:
		dst = binary.AppendUvarint(dst, uint64(len(r.Message)))
		dst = append(dst, r.Message...)
	case r.Code == State:
		dst = binary.AppendUvarint(dst, uint64(len(r.Channel)))
		dst = append(dst, r.Channel...)
		dst = binary.AppendUvarint(dst, uint64(len(r.Message)))
		dst = append(dst, r.Message...)
	}
	return dst
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad uvarint", ErrMalformed)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrMalformed)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) float() float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = fmt.Errorf("%w: short float", ErrMalformed)
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

// text reads a uvarint length and that many bytes, at most max.
func (d *decoder) text(max uint64, what string) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > max || n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: %s length %d", ErrMalformed, what, n)
		return ""
	}
	v := string(d.b[:n])
	d.b = d.b[n:]
	return v
}

// Decode parses body into r. The key is copied, so body may be reused.
func Decode(body []byte, r *Record) error {
	key, err := DecodeView(body, r)
	if err != nil {
		return err
	}
	r.Key = string(key)
	return nil
}

// DecodeView parses body into r but for the key, which it returns as a
// slice of body: a caller that already holds the key as a string (a map
// lookup) copies nothing. r.Key is left empty.
func DecodeView(body []byte, r *Record) ([]byte, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	*r = Record{Code: sample.Code(body[0])}
	d := decoder{b: body[1:]}
	r.Time = d.varint()
	n := d.uvarint()
	if d.err == nil && (n > MaxKeyLen || n > uint64(len(d.b))) {
		d.err = fmt.Errorf("%w: key length %d", ErrMalformed, n)
	}
	if d.err != nil {
		return nil, d.err
	}
	key := d.b[:n]
	d.b = d.b[n:]
	switch {
	case r.Code == sample.Set:
		r.Value = d.float()
		r.Ordinal = d.uvarint()
	case IsCounter(r.Code):
		r.Value = d.float()
		r.Running = d.float()
		r.Shown = d.float()
		r.WinStart = d.varint()
		iv := d.uvarint()
		if iv > math.MaxInt64 {
			d.err = fmt.Errorf("%w: interval %d", ErrMalformed, iv)
		}
		r.Interval = int64(iv)
		r.Ordinal = d.uvarint()
	case r.Code == sample.Delete:
	case r.Code == Event:
		r.Level = d.varint()
		if d.err == nil && (len(d.b) == 0 || d.b[0] > 1) {
			d.err = fmt.Errorf("%w: bad alert flag", ErrMalformed)
		}
		if d.err == nil {
			r.Alert = d.b[0] == 1
			d.b = d.b[1:]
		}
		r.Message = d.text(MaxMessageLen, "message")
	case r.Code == Pulse:
		iv := d.uvarint()
		if iv > math.MaxInt64 {
			d.err = fmt.Errorf("%w: nextIn %d", ErrMalformed, iv)
		}
		r.Interval = int64(iv)
		r.Channel = d.text(MaxChannelLen, "channel")
	case r.Code == Cancel:
	case r.Code == Alert:
		kind := d.uvarint()
		if kind > 255 {
			d.err = fmt.Errorf("%w: alert kind %d", ErrMalformed, kind)
		}
		r.Level = int64(kind)
		r.Channel = d.text(MaxChannelLen, "channel")
		r.Message = d.text(MaxMessageLen, "message")
	case r.Code == Delivered:
		r.Ordinal = d.uvarint()
	case r.Code == Check:
		if len(d.b) == 0 || d.b[0] > 1 {
			d.err = fmt.Errorf("%w: bad failing flag", ErrMalformed)
		} else {
			r.Level = int64(d.b[0])
			d.b = d.b[1:]
		}
		iv := d.uvarint()
		if iv > math.MaxInt64 {
			d.err = fmt.Errorf("%w: every %d", ErrMalformed, iv)
		}
		r.Interval = int64(iv)
		r.Channel = d.text(MaxChannelLen, "channel")
		r.Message = d.text(MaxMessageLen, "message")
	case r.Code == Client:
		what := d.uvarint()
		if what > ClientForgotten {
			d.err = fmt.Errorf("%w: client record of kind %d", ErrMalformed, what)
		}
		r.Level = int64(what)
	case r.Code == Log:
		r.Message = d.text(MaxMessageLen, "message")
	case r.Code == State:
		r.Channel = d.text(MaxChannelLen, "state key")
		r.Message = d.text(MaxMessageLen, "message")
	default:
		return nil, fmt.Errorf("%w: unknown code %d", ErrMalformed, r.Code)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: empty key", ErrMalformed)
	}
	return key, nil
}
