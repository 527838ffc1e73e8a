package remotewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// A destination's journal, <data>/remote_write/<name>.journal, is its
// durable position: an append-only file of fixed entries
// (docs/format/remote-write.md):
//
//	kind  1 byte      'S': a chunk [first, last] is about to be sent
//	                  'D': every record up to last is done (first: 0)
//	first uint64 LE
//	last  uint64 LE
//	crc   uint32 LE   CRC-32C of the 17 bytes before
//
// An S entry is fsynced before any of its chunk is sent, so a restart
// knows which chunks may have reached the receiver and cuts them the same
// way again. D entries are written as chunks finish and fsynced with the
// next S entry, a minute at most later, or when the destination closes:
// a crash may lose the newest, and resends are the cost.

const (
	entryLen       = 21
	kindSent       = 'S'
	kindDone       = 'D'
	journalRewrite = 1 << 20 // rewrite the journal once it is this large
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// span is a chunk's range of WAL indexes.
type span struct{ first, last uint64 }

type journal struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	size    int64
	fresh   bool   // no journal existed: the destination is new
	through uint64 // newest D
	pending []span // S entries after through, oldest first
	dirty   bool   // D entries written since the last fsync
	buf     []byte
}

// readJournal reads the journal at path (none: a new destination). A bad
// or short entry ends what is read: open cuts the file there (a torn
// write of the last entry; anything after it is lost, which costs
// resends).
func readJournal(path string, logger *slog.Logger) (*journal, error) {
	j := &journal{path: path}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		j.fresh = true
	case err != nil:
		return nil, fmt.Errorf("read remote_write journal: %w", err)
	}
	good := 0
read:
	for off := 0; off+entryLen <= len(data); off += entryLen {
		e := data[off : off+entryLen]
		if crc32.Checksum(e[:17], castagnoli) != binary.LittleEndian.Uint32(e[17:]) {
			break read
		}
		first, last := binary.LittleEndian.Uint64(e[1:]), binary.LittleEndian.Uint64(e[9:])
		switch e[0] {
		case kindSent:
			j.pending = append(j.pending, span{first, last})
		case kindDone:
			j.doneThrough(last)
		default:
			break read
		}
		good = off + entryLen
	}
	if good < len(data) {
		logger.Warn("remote_write journal ends in a damaged entry: cut there (chunks may be sent again)",
			"journal", path, "kept_bytes", good, "dropped_bytes", len(data)-good)
	}
	j.size = int64(good)
	return j, nil
}

// open opens the file for writing, cutting a damaged end off. It is
// called once the data directory is locked (the DB is open): another
// process may be writing to the journal until then.
func (j *journal) open() error {
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open remote_write journal: %w", err)
	}
	if err := f.Truncate(j.size); err != nil {
		f.Close()
		return fmt.Errorf("cut remote_write journal: %w", err)
	}
	if _, err := f.Seek(j.size, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("seek remote_write journal: %w", err)
	}
	j.f = f
	return nil
}

// doneThrough records that everything up to last is done.
func (j *journal) doneThrough(last uint64) {
	j.through = max(j.through, last)
	k := 0
	for _, s := range j.pending {
		if s.last > j.through {
			j.pending[k] = s
			k++
		}
	}
	j.pending = j.pending[:k]
}

func (j *journal) append(kind byte, first, last uint64) error {
	j.buf = append(j.buf[:0], kind)
	j.buf = binary.LittleEndian.AppendUint64(j.buf, first)
	j.buf = binary.LittleEndian.AppendUint64(j.buf, last)
	j.buf = binary.LittleEndian.AppendUint32(j.buf, crc32.Checksum(j.buf, castagnoli))
	if _, err := j.f.Write(j.buf); err != nil {
		// Cut what part of the entry went, so later entries stay aligned.
		if terr := j.f.Truncate(j.size); terr == nil {
			j.f.Seek(j.size, io.SeekStart)
		}
		return fmt.Errorf("write remote_write journal: %w", err)
	}
	j.size += entryLen
	return nil
}

// beyond reports whether the journal names records past idx.
func (j *journal) beyond(idx uint64) bool {
	if j.through > idx {
		return true
	}
	for _, s := range j.pending {
		if s.last > idx {
			return true
		}
	}
	return false
}

// cutBack makes the journal end at idx: the position at most idx, the
// chunks to send again cut at idx (those starting past it dropped), and
// rewrites it so.
func (j *journal) cutBack(idx uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.through = min(j.through, idx)
	k := 0
	for _, s := range j.pending {
		if s.first <= idx {
			s.last = min(s.last, idx)
			j.pending[k] = s
			k++
		}
	}
	j.pending = j.pending[:k]
	return j.rewrite()
}

// sent records, durably, that the chunk [first, last] is about to be sent.
func (j *journal) sent(first, last uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.append(kindSent, first, last); err != nil {
		return err
	}
	if err := j.f.Sync(); err != nil {
		// Not known to be durable: take it back, so that the next try
		// does not record the chunk twice.
		j.size -= entryLen
		if terr := j.f.Truncate(j.size); terr == nil {
			j.f.Seek(j.size, io.SeekStart)
		}
		return fmt.Errorf("fsync remote_write journal: %w", err)
	}
	j.dirty = false
	j.pending = append(j.pending, span{first, last})
	return nil
}

// done records that every record up to through is done, without an
// fsync (see sync).
func (j *journal) done(through uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if through <= j.through && !j.fresh {
		return nil
	}
	j.fresh = false
	j.doneThrough(through)
	if j.size >= journalRewrite {
		return j.rewrite()
	}
	if err := j.append(kindDone, 0, through); err != nil {
		return err
	}
	j.dirty = true
	return nil
}

// sync fsyncs D entries written since the last fsync.
func (j *journal) sync() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.dirty {
		return nil
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("fsync remote_write journal: %w", err)
	}
	j.dirty = false
	return nil
}

// rewrite replaces the journal with one holding its state only: a D entry
// and the pending S entries, written to a new file, fsynced and renamed
// over the old one.
func (j *journal) rewrite() error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("make remote_write journal: %w", err)
	}
	old := j.f
	j.f, j.size = f, 0
	err = j.append(kindDone, 0, j.through)
	for _, s := range j.pending {
		if err == nil {
			err = j.append(kindSent, s.first, s.last)
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(j.path))
	}
	if err != nil {
		f.Close()
		j.f = old // the old journal still says everything, if less briefly
		st, _ := old.Stat()
		if st != nil {
			j.size = st.Size()
		}
		return fmt.Errorf("rewrite remote_write journal: %w", err)
	}
	old.Close()
	j.dirty = false
	return nil
}

func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.sync()
	if cerr := j.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close remote_write journal: %w", cerr)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory to fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	return nil
}
