package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Status events (docs/format/snapshot.md, "Events"):
//
//	events    orderedTime(time) | id (8 BE) → sealed event
//	eventids  id (8 BE)                     → sealed orderedTime(time)
//	meta "events"                           → sealed count, bytes (uvarints)
//
// events holds each event once, by time and then by id (its WAL index),
// so a listing newest first is one reverse cursor walk and putting an
// event again is idempotent. eventids finds an event by id: a stream
// resumed after id reads on from there. The totals count both buckets'
// keys and values, which is what -event-max-bytes bounds.
var (
	bucketEvents   = []byte("events")
	bucketEventIDs = []byte("eventids")
	keyEventTotals = []byte("events")
)

// eventVersion is the first byte of a stored event's payload.
const eventVersion = 1

// EventTotals are the stored events' count and bytes (keys and values of
// both buckets).
type EventTotals struct {
	Count, Bytes int64
}

// eventKey is the events bucket's key of an event.
func eventKey(dst []byte, t int64, id uint64) []byte {
	return binary.BigEndian.AppendUint64(orderedTime(dst, t), id)
}

func encodeEvent(dst []byte, ev *sample.Event) []byte {
	dst = append(dst, eventVersion)
	dst = binary.AppendVarint(dst, ev.Level)
	var flags byte
	if ev.Alert {
		flags = 1
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(ev.Service)))
	dst = append(dst, ev.Service...)
	dst = binary.AppendUvarint(dst, uint64(len(ev.Message)))
	return append(dst, ev.Message...)
}

// decodeEvent reads the event stored under key k with payload b. Its
// strings are copies.
func decodeEvent(k, b []byte, ev *sample.Event) error {
	if err := viewEvent(k, b, ev); err != nil {
		return err
	}
	ev.Service, ev.Message = strings.Clone(ev.Service), strings.Clone(ev.Message)
	return nil
}

// viewEvent is decodeEvent with strings that view b: valid as long as b
// is (in a transaction, until it ends).
func viewEvent(k, b []byte, ev *sample.Event) error {
	if len(k) != 16 {
		return fmt.Errorf("an event key of %d bytes", len(k))
	}
	ev.Time = int64(binary.BigEndian.Uint64(k) ^ 1<<63)
	ev.ID = binary.BigEndian.Uint64(k[8:])
	if len(b) == 0 || b[0] != eventVersion {
		return fmt.Errorf("%w: an event of version %v", ErrFormat, b[:min(len(b), 1)])
	}
	b = b[1:]
	level, b, ok := varint(b)
	if !ok || len(b) == 0 || b[0] > 1 {
		return errors.New("a damaged event header")
	}
	ev.Level, ev.Alert = level, b[0] == 1
	b = b[1:]
	var n uint64
	if n, b, ok = uvarint(b); !ok || n > uint64(len(b)) {
		return errors.New("a damaged event service")
	}
	ev.Service, b = unsafe.String(unsafe.SliceData(b), int(n)), b[n:]
	if n, b, ok = uvarint(b); !ok || n != uint64(len(b)) {
		return errors.New("a damaged event message")
	}
	ev.Message = unsafe.String(unsafe.SliceData(b), len(b))
	return nil
}

func (s *Store) eventTotals() EventTotals {
	if t := s.evTotals.Load(); t != nil {
		return *t
	}
	return EventTotals{}
}

// EventTotals returns the stored events' count and size as of the last
// transaction that changed them.
func (s *Store) EventTotals() EventTotals { return s.eventTotals() }

func (s *Store) saveEventTotals(tx *bolt.Tx, t EventTotals) error {
	v := binary.AppendUvarint(nil, uint64(t.Count))
	v = binary.AppendUvarint(v, uint64(t.Bytes))
	if err := tx.Bucket(bucketMeta).Put(keyEventTotals, seal(bucketMeta, keyEventTotals, v)); err != nil {
		return fmt.Errorf("put event totals: %w", err)
	}
	return nil
}

// loadEvents makes the event buckets and reads the totals in tx. A file
// without totals (new, or salvaged) gets them counted, and its id index
// rebuilt from the events: a salvage copies the events only.
func (s *Store) loadEvents(tx *bolt.Tx) error {
	evs, err := tx.CreateBucketIfNotExists(bucketEvents)
	if err != nil {
		return err
	}
	if v := tx.Bucket(bucketMeta).Get(keyEventTotals); v != nil && tx.Bucket(bucketEventIDs) != nil {
		v, err := unseal(bucketMeta, keyEventTotals, v)
		if err != nil {
			return err
		}
		count, v, ok1 := uvarint(v)
		size, v, ok2 := uvarint(v)
		if !ok1 || !ok2 || len(v) != 0 {
			return damaged(bucketMeta, keyEventTotals, errors.New("damaged event totals"))
		}
		s.evTotals.Store(&EventTotals{Count: int64(count), Bytes: int64(size)})
		return nil
	}
	if tx.Bucket(bucketEventIDs) != nil {
		if err := tx.DeleteBucket(bucketEventIDs); err != nil {
			return err
		}
	}
	ids, err := tx.CreateBucket(bucketEventIDs)
	if err != nil {
		return err
	}
	var t EventTotals
	err = evs.ForEach(func(k, v []byte) error {
		if len(k) != 16 {
			return damaged(bucketEvents, k, fmt.Errorf("an event key of %d bytes", len(k)))
		}
		idk, idv := k[8:], seal(bucketEventIDs, k[8:], k[:8])
		if err := ids.Put(idk, idv); err != nil {
			return err
		}
		t.Count++
		t.Bytes += int64(len(k) + len(v) + len(idk) + len(idv))
		return nil
	})
	if err != nil {
		return err
	}
	s.evTotals.Store(&t)
	return s.saveEventTotals(tx, t)
}

// PutEvents stores evs (each with its ID and Time set) in one
// transaction. An event stored already (same id) is left as it is: a
// snapshot that failed after storing some events stores them again.
func (s *Store) PutEvents(evs []sample.Event) (err error) {
	defer caught(&err)
	if len(evs) == 0 {
		return nil
	}
	var total EventTotals
	err = s.update(func(tx *bolt.Tx) error {
		t := s.eventTotals()
		b, ids := tx.Bucket(bucketEvents), tx.Bucket(bucketEventIDs)
		b.FillPercent, ids.FillPercent = historyFill, historyFill
		var payload []byte
		for i := range evs {
			ev := &evs[i]
			idk := binary.BigEndian.AppendUint64(nil, ev.ID)
			if ids.Get(idk) != nil {
				continue
			}
			k := eventKey(nil, ev.Time, ev.ID)
			payload = encodeEvent(payload[:0], ev)
			v := seal(bucketEvents, k, payload)
			idv := seal(bucketEventIDs, idk, k[:8])
			if err := b.Put(k, v); err != nil {
				return fmt.Errorf("put event %d: %w", ev.ID, err)
			}
			if err := ids.Put(idk, idv); err != nil {
				return fmt.Errorf("put event id %d: %w", ev.ID, err)
			}
			t.Count++
			t.Bytes += int64(len(k) + len(v) + len(idk) + len(idv))
		}
		total = t
		return s.saveEventTotals(tx, t)
	})
	if err != nil {
		return fmt.Errorf("store %d events: %w", len(evs), err)
	}
	s.evTotals.Store(&total)
	return nil
}

// EventsBefore calls fn with the stored events whose (time, id) is before
// (beforeT, beforeID), newest first, down to time from, until fn returns
// false. The strings of the events it gives view the database's pages:
// valid until fn returns (clone what is kept). Looking at an event thus
// copies nothing.
func (s *Store) EventsBefore(beforeT int64, beforeID uint64, from int64, fn func(*sample.Event) bool) (err error) {
	defer caught(&err)
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		end := eventKey(nil, beforeT, beforeID)
		k, v := c.Seek(end)
		if k == nil {
			k, v = c.Last()
		}
		low := orderedTime(nil, from)
		var ev sample.Event
		for ; k != nil; k, v = c.Prev() {
			if bytes.Compare(k, end) >= 0 {
				continue
			}
			if bytes.Compare(k[:min(len(k), 8)], low) < 0 {
				return nil
			}
			payload, err := unseal(bucketEvents, k, v)
			if err != nil {
				return err
			}
			if err := viewEvent(k, payload, &ev); err != nil {
				return damaged(bucketEvents, k, err)
			}
			if !fn(&ev) {
				return nil
			}
		}
		return nil
	})
}

// EventsAfter calls fn with the stored events whose id is after id, in id
// order, until fn returns false. Their strings view the database's pages,
// as EventsBefore's do.
func (s *Store) EventsAfter(id uint64, fn func(*sample.Event) bool) (err error) {
	defer caught(&err)
	return s.db.View(func(tx *bolt.Tx) error {
		ids, evs := tx.Bucket(bucketEventIDs).Cursor(), tx.Bucket(bucketEvents)
		var ev sample.Event
		var key [16]byte
		for k, v := ids.Seek(binary.BigEndian.AppendUint64(nil, id+1)); k != nil; k, v = ids.Next() {
			tk, err := unseal(bucketEventIDs, k, v)
			if err != nil {
				return err
			}
			if len(k) != 8 || len(tk) != 8 {
				return damaged(bucketEventIDs, k, errors.New("a damaged event id entry"))
			}
			copy(key[:8], tk)
			copy(key[8:], k)
			if err := readEvent(evs, key[:], &ev); err != nil {
				return err
			}
			if !fn(&ev) {
				return nil
			}
		}
		return nil
	})
}

// readEvent reads the event under key k of the events bucket b.
func readEvent(b *bolt.Bucket, k []byte, ev *sample.Event) error {
	v := b.Get(k)
	if v == nil {
		return damaged(bucketEvents, k, errors.New("an event its id entry names is missing"))
	}
	payload, err := unseal(bucketEvents, k, v)
	if err != nil {
		return err
	}
	if err := viewEvent(k, payload, ev); err != nil {
		return damaged(bucketEvents, k, err)
	}
	return nil
}

// RetainEvents deletes, in one transaction of at most budget deletions,
// the oldest stored events while their time is before cutoff or the
// stored events take more than maxBytes (0: no bound). more says the
// budget ran out first.
func (s *Store) RetainEvents(cutoff, maxBytes int64, budget int) (deleted int, more bool, err error) {
	defer caught(&err)
	t := s.eventTotals()
	due := func(k []byte) bool {
		return bytes.Compare(k[:min(len(k), 8)], orderedTime(nil, cutoff)) < 0 || maxBytes > 0 && t.Bytes > maxBytes
	}
	// A look first: a store with nothing to expire takes no write
	// transaction (and no fsync).
	err = s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketEvents).Cursor().First()
		more = k != nil && due(k)
		return nil
	})
	if err != nil || !more {
		return 0, false, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		t = s.eventTotals()
		deleted, more = 0, false
		b, ids := tx.Bucket(bucketEvents), tx.Bucket(bucketEventIDs)
		c := b.Cursor()
		for k, v := c.First(); k != nil && due(k); k, v = c.First() {
			if deleted == budget {
				more = true
				break
			}
			idk := bytes.Clone(k[8:min(len(k), 16)])
			idv := ids.Get(idk)
			t.Count--
			t.Bytes -= int64(len(k) + len(v) + len(idk) + len(idv))
			if err := c.Delete(); err != nil {
				return fmt.Errorf("delete event: %w", err)
			}
			if idv != nil {
				if err := ids.Delete(idk); err != nil {
					return fmt.Errorf("delete event id: %w", err)
				}
			}
			deleted++
		}
		return s.saveEventTotals(tx, t)
	})
	if err != nil {
		return 0, false, fmt.Errorf("expire events: %w", err)
	}
	s.evTotals.Store(&t)
	return deleted, more, nil
}

// dropEventsAfter deletes the stored events with ids after index, in tx,
// and returns the totals left, for the caller to install once tx has
// committed.
func (s *Store) dropEventsAfter(tx *bolt.Tx, index uint64) (EventTotals, error) {
	t := s.eventTotals()
	b, ids := tx.Bucket(bucketEvents), tx.Bucket(bucketEventIDs)
	c := ids.Cursor()
	for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, index+1)); k != nil; k, v = c.Seek(binary.BigEndian.AppendUint64(nil, index+1)) {
		tk, err := unseal(bucketEventIDs, k, v)
		if err != nil {
			return t, err
		}
		if len(k) != 8 || len(tk) != 8 {
			return t, damaged(bucketEventIDs, k, errors.New("a damaged event id entry"))
		}
		ek := append(bytes.Clone(tk), k...)
		ev := b.Get(ek)
		t.Count--
		t.Bytes -= int64(len(k) + len(v) + len(ek) + len(ev))
		if err := b.Delete(ek); err != nil {
			return t, fmt.Errorf("delete event: %w", err)
		}
		if err := c.Delete(); err != nil {
			return t, fmt.Errorf("delete event id: %w", err)
		}
	}
	return t, s.saveEventTotals(tx, t)
}
