package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Client logs (docs/format/snapshot.md, "Clients"):
//
//	clients  name  → sealed client: its info, state and log ring
//
// A snapshot writes the clients that changed since the last one and
// deletes those forgotten (PutClients), in one transaction. A stored
// client covers the WAL records of its name up to Covers; replay skips
// those, so a client stored by a snapshot that failed before its index
// is not logged twice.
var bucketClients = []byte("clients")

const clientVersion = 1

// ClientState is a client as stored.
type ClientState struct {
	sample.ClientInfo
	// Covers is the WAL index of its newest record; ConnIdx and DiscIdx
	// those of its last connect and disconnect.
	Covers, ConnIdx, DiscIdx uint64
	// Dropped and DroppedAt are the id and time of the last line its ring
	// dropped (0: none).
	Dropped   uint64
	DroppedAt int64
	// Log is its ring, oldest first.
	Log   []sample.ClientLine
	State []ClientKey
}

// ClientKey is one state key of a client: its value and the record that
// set it.
type ClientKey struct {
	Key  string
	ID   uint64
	Time int64
	Text string
}

// Clients is what PutClients stores: the clients to write whole, and the
// names to delete.
type Clients struct {
	Put    []ClientState
	Forget []string
}

func encodeClient(dst []byte, c *ClientState) []byte {
	var conn byte
	if c.Connected {
		conn = 1
	}
	dst = append(dst, clientVersion, conn)
	for _, v := range []int64{c.ConnectedAt, c.DisconnectedAt, c.LastLine, c.DroppedAt} {
		dst = binary.AppendVarint(dst, v)
	}
	for _, v := range []uint64{c.Lines, c.Sets, c.Covers, c.ConnIdx, c.DiscIdx, c.Dropped, uint64(len(c.Log)), uint64(len(c.State))} {
		dst = binary.AppendUvarint(dst, v)
	}
	for _, l := range c.Log {
		dst = binary.AppendUvarint(dst, l.ID)
		dst = binary.AppendVarint(dst, l.Time)
		dst = appendText(dst, l.Text)
	}
	for _, k := range c.State {
		dst = appendText(dst, k.Key)
		dst = binary.AppendUvarint(dst, k.ID)
		dst = binary.AppendVarint(dst, k.Time)
		dst = appendText(dst, k.Text)
	}
	return dst
}

func decodeClient(k, b []byte, c *ClientState) error {
	r := reader{b: b, ok: true}
	if v := r.byte(); v != clientVersion {
		return fmt.Errorf("%w: a client of version %d", ErrFormat, v)
	}
	c.Name = string(k)
	conn := r.byte()
	c.Connected = conn == 1
	c.ConnectedAt, c.DisconnectedAt, c.LastLine, c.DroppedAt = r.varint(), r.varint(), r.varint(), r.varint()
	c.Lines, c.Sets, c.Covers, c.ConnIdx, c.DiscIdx, c.Dropped = r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint()
	nlog, nstate := r.uvarint(), r.uvarint()
	// Each line and key takes 4 bytes at least: a count past what is left
	// is damage, not an allocation.
	if !r.ok || conn > 1 || nlog > uint64(len(r.b))/4 || nstate > uint64(len(r.b))/4 {
		return errors.New("a damaged client")
	}
	c.Log = make([]sample.ClientLine, nlog)
	for i := range c.Log {
		c.Log[i] = sample.ClientLine{ID: r.uvarint(), Time: r.varint(), Text: r.text()}
	}
	c.State = make([]ClientKey, nstate)
	for i := range c.State {
		c.State[i] = ClientKey{Key: r.text(), ID: r.uvarint(), Time: r.varint(), Text: r.text()}
	}
	if !r.ok || len(r.b) != 0 {
		return errors.New("a damaged client")
	}
	return nil
}

// PutClients writes cs.Put and deletes cs.Forget, in one transaction.
func (s *Store) PutClients(cs *Clients) (err error) {
	defer caught(&err)
	err = s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketClients)
		if err != nil {
			return err
		}
		for _, name := range cs.Forget {
			if err := b.Delete([]byte(name)); err != nil {
				return fmt.Errorf("delete client %q: %w", name, err)
			}
		}
		var buf []byte
		for i := range cs.Put {
			c := &cs.Put[i]
			k := []byte(c.Name)
			buf = encodeClient(buf[:0], c)
			if err := b.Put(k, seal(bucketClients, k, buf)); err != nil {
				return fmt.Errorf("put client %q: %w", c.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store clients: %w", err)
	}
	return nil
}

// LoadClients reads the stored clients.
func (s *Store) LoadClients() (cs []ClientState, err error) {
	defer caught(&err)
	err = s.db.View(func(tx *bolt.Tx) error {
		return eachSealed(tx, bucketClients, func(k, payload []byte) error {
			var c ClientState
			err := decodeClient(k, payload, &c)
			cs = append(cs, c)
			return err
		})
	})
	return cs, err
}

// clearClientCovers sets every stored client's Covers to 0, in tx.
func clearClientCovers(tx *bolt.Tx) error {
	b := tx.Bucket(bucketClients)
	if b == nil {
		return nil
	}
	var keys, vals [][]byte
	err := b.ForEach(func(k, v []byte) error {
		payload, err := unseal(bucketClients, k, v)
		if err != nil {
			return err
		}
		var c ClientState
		if err := decodeClient(k, payload, &c); err != nil {
			return damaged(bucketClients, k, err)
		}
		if c.Covers != 0 {
			c.Covers = 0
			keys = append(keys, bytes.Clone(k)) // puts may remap the file
			vals = append(vals, seal(bucketClients, k, encodeClient(nil, &c)))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, k := range keys {
		if err := b.Put(k, vals[i]); err != nil {
			return fmt.Errorf("put client %q: %w", k, err)
		}
	}
	return nil
}
