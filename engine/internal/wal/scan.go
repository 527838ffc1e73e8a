package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Scanned is a record Scan read back.
type Scanned struct {
	Index uint64
	Body  []byte
	// Continues says the record is not the last of its commit group.
	Continues bool
}

// IncompleteGroup returns how many records at the end of recs belong to a
// commit group whose last record is not there: what a process killed
// while writing it leaves, and what Open cuts off.
func IncompleteGroup(recs []Scanned) int {
	n := 0
	for i := len(recs) - 1; i >= 0 && recs[i].Continues; i-- {
		n++
	}
	return n
}

// ScanProblem is a part of the log Scan could not read.
type ScanProblem struct {
	Path   string
	Offset int64
	// First and Last are the indexes lost (Last < First when none is).
	First, Last uint64
	// Guessed says the number lost is a guess: a damaged length hid how
	// many records there were, and no later segment tells.
	Guessed bool
	What    string
	// Body is the damaged record's body when its length was intact: it may
	// still say which key it was about.
	Body []byte
}

func (p ScanProblem) String() string {
	lost := "no record lost"
	switch {
	case p.Last == p.First:
		lost = fmt.Sprintf("record %d lost", p.First)
	case p.Last > p.First:
		lost = fmt.Sprintf("records %d to %d lost", p.First, p.Last)
	}
	if p.Guessed {
		lost += " (at least; how many is not known)"
	}
	return fmt.Sprintf("%s at byte %d: %s; %s", p.Path, p.Offset, p.What, lost)
}

// Scan reads every segment of the log in dir without tidwall/wal, the way
// sonde check and sonde repair need it: every record whose frame checks
// out, with its index, and what could not be read. next is the index the
// log's next record would get (0 when there is no segment): a log that
// holds no record still says where it starts. Nothing is changed.
func Scan(dir string) (recs []Scanned, probs []ScanProblem, next uint64, err error) {
	plain, _, err := listSegments(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, 0, nil
		}
		return nil, nil, 0, err
	}
	for si, start := range plain {
		path := filepath.Join(dir, segmentName(start))
		data, err := os.ReadFile(path)
		if err != nil {
			return recs, probs, next, fmt.Errorf("read segment: %w", err)
		}
		if next != 0 && start != next {
			probs = append(probs, ScanProblem{Path: path, First: next, Last: start - 1,
				What: fmt.Sprintf("the segment starts at index %d, the one before it ended before %d", start, next)})
		}
		idx, off := start, 0
		for off < len(data) {
			if n := entryAt(data, off); n > 0 {
				size, k := binary.Uvarint(data[off:])
				recs = append(recs, Scanned{Index: idx, Body: bytes.Clone(data[off+k+headerLen : off+k+int(size)]),
					Continues: data[off+k] == frameContinues})
				idx++
				off += n
				continue
			}
			if k := lengthAt(data, off); k > 0 && (off+k == len(data) || entryAt(data, off+k) != 0) {
				var body []byte
				if _, n := binary.Uvarint(data[off:]); n+headerLen <= k {
					body = bytes.Clone(data[off+n+headerLen : off+k])
				}
				probs = append(probs, ScanProblem{Path: path, Offset: int64(off), First: idx, Last: idx,
					What: "a record whose checksum or frame is wrong", Body: body})
				idx++
				off += k
				continue
			}
			p := off + 1
			for p < len(data) && entryAt(data, p) == 0 {
				p++
			}
			if p == len(data) {
				probs = append(probs, ScanProblem{Path: path, Offset: int64(off), First: idx, Last: idx - 1,
					What: fmt.Sprintf("the last %d bytes are not a record (a torn write, or damage)", len(data)-off)})
				break
			}
			// Records resume at p: how many were lost shows only from the
			// next segment's start.
			after := 0
			for q := p; q < len(data); {
				n := entryAt(data, q)
				if n == 0 {
					break
				}
				after++
				q += n
			}
			lost, guessed := uint64(1), true
			if si+1 < len(plain) && plain[si+1] > idx+uint64(after) {
				lost, guessed = plain[si+1]-idx-uint64(after), false
			}
			probs = append(probs, ScanProblem{Path: path, Offset: int64(off), First: idx, Last: idx + lost - 1, Guessed: guessed,
				What: fmt.Sprintf("%d bytes that are not records", p-off)})
			idx += lost
			off = p
		}
		next = idx
	}
	return recs, probs, next, nil
}

// Create makes an empty log in dir, which must hold no segment, whose
// first record will get index first: sonde repair starts the log right
// after what the snapshot holds.
func Create(dir string, first uint64) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create wal directory: %w", err)
	}
	if plain, _, err := listSegments(dir); err != nil || len(plain) > 0 {
		return fmt.Errorf("create a wal in %s: it holds segments already (%v)", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, segmentName(first)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create the first segment: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create the first segment: %w", err)
	}
	return syncDir(dir)
}
