package wal

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// groupEnds walks the entries of one segment by their length prefixes and
// returns how many there are (total), and how many come up to and
// including the last one that ends a commit group (ends; 0 when none
// does). It stops at the first entry whose length is not possible: Open
// has cut a torn tail already, and damage inside an older segment is for
// replay to report.
func groupEnds(data []byte) (ends, total int) {
	for off := 0; off < len(data); {
		k := lengthAt(data, off)
		if k == 0 {
			break
		}
		_, n := binary.Uvarint(data[off:])
		total++
		if n < k && data[off+n] == frameEnd {
			ends = total
		}
		off += k
	}
	return ends, total
}

// offsetAfter returns the byte offset in data right after its first n
// entries.
func offsetAfter(data []byte, n int) (int, error) {
	off := 0
	for ; n > 0; n-- {
		k := lengthAt(data, off)
		if k == 0 {
			return 0, fmt.Errorf("the segment ends %d records early", n)
		}
		off += k
	}
	return off, nil
}

// dropPartialGroup cuts off the end of the log the records of a commit
// group whose last record never reached the files: a process killed
// during Commit (between tidwall/wal's writes of a batch that crossed a
// segment roll, or in the middle of one write). None of them was
// acknowledged, and a group is replayed whole or not at all. Records the
// snapshot holds (index <= covered) stay whatever their marks: a snapshot
// only ever stores whole groups, so that would mean a damaged mark.
func dropPartialGroup(dir string, covered uint64, logger *slog.Logger) error {
	plain, start, err := listSegments(dir)
	if err != nil {
		return err
	}
	if len(plain) == 0 || start >= plain[len(plain)-1] {
		return nil // see repairTail
	}
	// The first index to drop: right after the newest group end, looking
	// back from the tail segment (a group can span segments).
	var drop, last uint64
	for i := len(plain) - 1; i >= 0; i-- {
		data, err := os.ReadFile(filepath.Join(dir, segmentName(plain[i])))
		if err != nil {
			return fmt.Errorf("read wal segment to find the last group end: %w", err)
		}
		ends, total := groupEnds(data)
		if i == len(plain)-1 {
			last = plain[i] + uint64(total) - 1
		}
		if ends > 0 || i == 0 {
			drop = plain[i] + uint64(ends)
			break
		}
	}
	drop = max(drop, covered+1)
	if drop > last {
		return nil // the log ends with a whole group
	}
	// The segment holding drop, and where in it drop's entry starts.
	at := 0
	for i, s := range plain {
		if s <= drop {
			at = i
		}
	}
	path := filepath.Join(dir, segmentName(plain[at]))
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read wal segment to cut an incomplete group: %w", err)
	}
	off, err := offsetAfter(data, int(drop-plain[at]))
	if err != nil {
		return fmt.Errorf("find index %d in %s: %w", drop, path, err)
	}
	// Later segments go first, newest first, so that a crash part way
	// leaves a log that still ends in the same incomplete group.
	for i := len(plain) - 1; i > at; i-- {
		if err := os.Remove(filepath.Join(dir, segmentName(plain[i]))); err != nil {
			return fmt.Errorf("remove wal segment of an incomplete group: %w", err)
		}
	}
	if off == 0 && at > 0 {
		// The group began this segment: it goes, and the one before,
		// which ends with a whole group, is the tail again.
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove wal segment of an incomplete group: %w", err)
		}
	} else if err := truncateSync(path, int64(off)); err != nil {
		return fmt.Errorf("cut an incomplete group off the wal: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	logger.Warn("cut an incomplete commit group off the wal's end: a write cut short by a crash, never acknowledged",
		"first_index", drop, "records", last-drop+1, "segment", path, "kept_bytes", off)
	return nil
}

// truncateSync cuts the file at size and fsyncs it.
func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}
