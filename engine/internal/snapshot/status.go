package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Heartbeats and the alert queue (docs/format/snapshot.md):
//
//	heartbeats  service       → sealed heartbeat state
//	alerts      id (8 BE)     → sealed alert waiting for delivery
//	checks      name          → sealed HTTP check state
//
// A snapshot that changed them writes both whole (PutStatus): they are
// small (bounded by -max-heartbeats and the alert queue's bound).
var (
	bucketHeartbeats = []byte("heartbeats")
	bucketAlerts     = []byte("alerts")
	bucketChecks     = []byte("checks")
)

const statusVersion = 1

// HeartbeatState is a heartbeat as stored.
type HeartbeatState struct {
	Service   string
	NextIn    int64 // ms
	Channel   string
	Last      int64 // the last pulse, ms
	State     uint8 // the engine's: on time, late, cancelled
	LateAlert uint64
	Changed   int64 // ms
}

// Status is what PutStatus stores.
type Status struct {
	Heartbeats []HeartbeatState
	Alerts     []sample.Alert
	Checks     []sample.Check
}

func encodeCheck(dst []byte, c *sample.Check) []byte {
	var failing byte
	if c.Failing {
		failing = 1
	}
	dst = append(dst, statusVersion, failing)
	dst = binary.AppendUvarint(dst, uint64(c.Every.Milliseconds()))
	dst = binary.AppendVarint(dst, c.Since)
	dst = appendText(dst, c.Channel)
	return appendText(dst, c.Detail)
}

func decodeCheck(k, b []byte, c *sample.Check) error {
	r := reader{b: b, ok: true}
	if v := r.byte(); v != statusVersion {
		return fmt.Errorf("%w: a check of version %d", ErrFormat, v)
	}
	c.Name = string(k)
	f := r.byte()
	every := r.uvarint()
	c.Since = r.varint()
	c.Channel = r.text()
	c.Detail = r.text()
	if !r.ok || len(r.b) != 0 || f > 1 || every > math.MaxInt64/uint64(time.Millisecond) {
		return errors.New("a damaged check")
	}
	c.Failing, c.Every = f == 1, time.Duration(every)*time.Millisecond
	return nil
}

func appendText(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func encodeHeartbeat(dst []byte, h *HeartbeatState) []byte {
	dst = append(dst, statusVersion, h.State)
	dst = binary.AppendUvarint(dst, uint64(h.NextIn))
	dst = binary.AppendVarint(dst, h.Last)
	dst = binary.AppendUvarint(dst, h.LateAlert)
	dst = binary.AppendVarint(dst, h.Changed)
	return appendText(dst, h.Channel)
}

// reader decodes a payload, noting the first failure.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) byte() byte {
	if !r.ok || len(r.b) == 0 {
		r.ok = false
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	var v uint64
	if r.ok {
		v, r.b, r.ok = uvarint(r.b)
	}
	return v
}

func (r *reader) varint() int64 {
	var v int64
	if r.ok {
		v, r.b, r.ok = varint(r.b)
	}
	return v
}

func (r *reader) text() string {
	n := r.uvarint()
	if !r.ok || n > uint64(len(r.b)) {
		r.ok = false
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func decodeHeartbeat(k, b []byte, h *HeartbeatState) error {
	r := reader{b: b, ok: true}
	if v := r.byte(); v != statusVersion {
		return fmt.Errorf("%w: a heartbeat of version %d", ErrFormat, v)
	}
	h.Service = string(k)
	h.State = r.byte()
	h.NextIn = int64(r.uvarint())
	h.Last = r.varint()
	h.LateAlert = r.uvarint()
	h.Changed = r.varint()
	h.Channel = r.text()
	if !r.ok || len(r.b) != 0 || h.State > 2 || h.NextIn < 0 {
		return errors.New("a damaged heartbeat")
	}
	return nil
}

func encodeAlert(dst []byte, a *sample.Alert) []byte {
	dst = append(dst, statusVersion, byte(a.Kind))
	dst = binary.AppendVarint(dst, a.Time)
	dst = appendText(dst, a.Service)
	dst = appendText(dst, a.Channel)
	return appendText(dst, a.Message)
}

func decodeAlert(k, b []byte, a *sample.Alert) error {
	if len(k) != 8 {
		return fmt.Errorf("an alert key of %d bytes", len(k))
	}
	r := reader{b: b, ok: true}
	if v := r.byte(); v != statusVersion {
		return fmt.Errorf("%w: an alert of version %d", ErrFormat, v)
	}
	a.ID = binary.BigEndian.Uint64(k)
	a.Kind = sample.AlertKind(r.byte())
	a.Time = r.varint()
	a.Service = r.text()
	a.Channel = r.text()
	a.Message = r.text()
	if !r.ok || len(r.b) != 0 {
		return errors.New("a damaged alert")
	}
	return nil
}

// PutStatus replaces the stored heartbeats and alerts with st, in one
// transaction.
func (s *Store) PutStatus(st *Status) (err error) {
	defer caught(&err)
	err = s.update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketHeartbeats, bucketAlerts, bucketChecks} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		hbs, err := tx.CreateBucket(bucketHeartbeats)
		if err != nil {
			return err
		}
		alerts, err := tx.CreateBucket(bucketAlerts)
		if err != nil {
			return err
		}
		checks, err := tx.CreateBucket(bucketChecks)
		if err != nil {
			return err
		}
		for i := range st.Checks {
			c := &st.Checks[i]
			k := []byte(c.Name)
			if err := checks.Put(k, seal(bucketChecks, k, encodeCheck(nil, c))); err != nil {
				return fmt.Errorf("put check %q: %w", c.Name, err)
			}
		}
		for i := range st.Heartbeats {
			h := &st.Heartbeats[i]
			k := []byte(h.Service)
			if err := hbs.Put(k, seal(bucketHeartbeats, k, encodeHeartbeat(nil, h))); err != nil {
				return fmt.Errorf("put heartbeat %q: %w", h.Service, err)
			}
		}
		for i := range st.Alerts {
			a := &st.Alerts[i]
			k := binary.BigEndian.AppendUint64(nil, a.ID)
			if err := alerts.Put(k, seal(bucketAlerts, k, encodeAlert(nil, a))); err != nil {
				return fmt.Errorf("put alert %d: %w", a.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store heartbeats: %w", err)
	}
	return nil
}

// LoadStatus reads the stored heartbeats, alerts and checks.
func (s *Store) LoadStatus() (hbs []HeartbeatState, alerts []sample.Alert, checks []sample.Check, err error) {
	defer caught(&err)
	err = s.db.View(func(tx *bolt.Tx) error {
		err := eachSealed(tx, bucketHeartbeats, func(k, payload []byte) error {
			var h HeartbeatState
			err := decodeHeartbeat(k, payload, &h)
			hbs = append(hbs, h)
			return err
		})
		if err == nil {
			err = eachSealed(tx, bucketChecks, func(k, payload []byte) error {
				var c sample.Check
				err := decodeCheck(k, payload, &c)
				checks = append(checks, c)
				return err
			})
		}
		if err == nil {
			err = eachSealed(tx, bucketAlerts, func(k, payload []byte) error {
				var a sample.Alert
				err := decodeAlert(k, payload, &a)
				alerts = append(alerts, a)
				return err
			})
		}
		return err
	})
	return hbs, alerts, checks, err
}

// eachSealed calls fn with every entry of bucket (if it exists) and its
// payload, the seal checked; an error of fn is damage to that entry.
func eachSealed(tx *bolt.Tx, bucket []byte, fn func(k, payload []byte) error) error {
	b := tx.Bucket(bucket)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		payload, err := unseal(bucket, k, v)
		if err != nil {
			return err
		}
		if err := fn(k, payload); err != nil {
			return damaged(bucket, k, err)
		}
		return nil
	})
}

// checkStatus checks a stored heartbeat or alert (CheckFile).
func checkStatus(bucket, k, payload []byte) error {
	if bytes.Equal(bucket, bucketHeartbeats) {
		var h HeartbeatState
		return decodeHeartbeat(k, payload, &h)
	}
	if bytes.Equal(bucket, bucketChecks) {
		var c sample.Check
		return decodeCheck(k, payload, &c)
	}
	var a sample.Alert
	return decodeAlert(k, payload, &a)
}

// dropAlertsAfter deletes the stored alerts with ids after index, in tx:
// the WAL records that decided them are replayed under new ids.
func dropAlertsAfter(tx *bolt.Tx, index uint64) error {
	b := tx.Bucket(bucketAlerts)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	start := binary.BigEndian.AppendUint64(nil, index+1)
	for k, _ := c.Seek(start); k != nil; k, _ = c.Seek(start) {
		if err := c.Delete(); err != nil {
			return fmt.Errorf("delete alert: %w", err)
		}
	}
	return nil
}
