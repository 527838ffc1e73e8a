package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

// Every value Sonde writes into snapshot.db is sealed (format version 2
// and later):
//
//	+------+------------------------------------------+---------+
//	| 0xC3 | CRC32-C(bucket | 0x00 | key | payload) LE | payload |
//	| 1 B  | 4 bytes                                  |         |
//	+------+------------------------------------------+---------+
//
// bbolt checks its own pages' structure but not the bytes of a key or a
// value: a flipped byte there reads back as other data. The seal finds it
// when the value is read, and names the bucket and key. Values written by
// format version 1 have no seal and are read as they are; their first byte
// is never 0xC3 (a state or chunk version, 1 to 3, or the high byte of a
// big-endian index or time, 0).
const sealMark = 0xC3

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrDamaged is wrapped by every error about damaged data in snapshot.db:
// a seal that does not match, a value that does not decode, or a page
// bbolt could not read (its panic, caught). sonde check reports the
// damage; sonde repair rebuilds the file from what is intact.
var ErrDamaged = errors.New("snapshot.db is damaged")

// DamageError says where damaged data was found.
type DamageError struct {
	Bucket string // empty when unknown
	Key    string
	Err    error
}

func (e *DamageError) Error() string {
	var b strings.Builder
	b.WriteString("snapshot.db is damaged")
	if e.Bucket != "" {
		fmt.Fprintf(&b, ": bucket %s, key %q", e.Bucket, e.Key)
	}
	fmt.Fprintf(&b, ": %v (sonde check reports the damage, sonde repair rebuilds the file)", e.Err)
	return b.String()
}

// Unwrap lets errors.Is(err, ErrDamaged) match.
func (e *DamageError) Unwrap() []error { return []error{ErrDamaged, e.Err} }

func sealSum(bucket, key, payload []byte) uint32 {
	c := crc32.Update(0, crcTable, bucket)
	c = crc32.Update(c, crcTable, []byte{0})
	c = crc32.Update(c, crcTable, key)
	return crc32.Update(c, crcTable, payload)
}

// seal returns the value to store for payload under bucket and key. The
// result is a new slice: bbolt keeps it until the transaction commits.
func seal(bucket, key, payload []byte) []byte {
	v := make([]byte, 5, 5+len(payload))
	return sealed(bucket, key, append(v, payload...))
}

// sealed writes the seal into the first 5 bytes of v, over the payload
// that follows them, and returns v.
func sealed(bucket, key, v []byte) []byte {
	v[0] = sealMark
	binary.LittleEndian.PutUint32(v[1:], sealSum(bucket, key, v[5:]))
	return v
}

// sealState returns st encoded and sealed, the value stored for series
// key: one allocation of its size, where encoding and then sealing took
// a growing buffer and a copy (a snapshot writes one per changed series).
func sealState(key []byte, st *State) []byte {
	v := make([]byte, 5, 5+maxStateHeader+len(st.Tail))
	return sealed(bucketSeries, key, encodeState(v, st))
}

// unseal returns the payload of a stored value, checking its seal; a
// value without one (format version 1) is its own payload.
func unseal(bucket, key, v []byte) ([]byte, error) {
	if len(v) == 0 || v[0] != sealMark {
		return v, nil
	}
	if len(v) < 5 {
		return nil, &DamageError{Bucket: string(bucket), Key: string(key), Err: fmt.Errorf("a sealed value of %d bytes", len(v))}
	}
	payload := v[5:]
	if got, want := sealSum(bucket, key, payload), binary.LittleEndian.Uint32(v[1:]); got != want {
		return nil, &DamageError{Bucket: string(bucket), Key: string(key),
			Err: fmt.Errorf("checksum mismatch: computed %08x, stored %08x", got, want)}
	}
	return payload, nil
}

// peek returns the payload of a stored value without checking its seal:
// for a look at a chunk's header that decides nothing a damaged value
// could make wrong (compaction reads a chunk whole, through unseal,
// before it rewrites it).
func peek(v []byte) []byte {
	if len(v) >= 5 && v[0] == sealMark {
		return v[5:]
	}
	return v
}

// caught turns a panic of bbolt's on a damaged page into a DamageError in
// *err. bbolt's View and Update roll their transaction back on a panic,
// so the database is left as it was. Use it as defer caught(&err) in a
// function with a named error result.
func caught(err *error) {
	if r := recover(); r != nil {
		*err = &DamageError{Err: fmt.Errorf("bbolt could not read a page: %v", r)}
	}
}

// damaged wraps a decoding error of the value under bucket and key.
func damaged(bucket, key []byte, err error) error {
	return &DamageError{Bucket: string(bucket), Key: string(key), Err: err}
}
