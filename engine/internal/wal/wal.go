// Package wal is Sonde's write-ahead log: github.com/tidwall/wal for
// segments and dense indexes, plus what it lacks. tidwall/wal frames an
// entry with a bare uvarint length, has no checksum and refuses to open a
// log whose last entry is cut short; a zero-filled tail even reads back as
// empty entries. So every entry here is framed again:
//
//	+---------+-----------------------+----------------+
//	| version | CRC32-Castagnoli(body)| body           |
//	| 1 byte  | 4 bytes little endian | record bytes   |
//	+---------+-----------------------+----------------+
//
// The version byte also marks the end of a commit group: 1 on the last
// record of a Commit, 2 on the others. A Commit is written by one or more
// write calls (tidwall/wal writes a batch that crosses a segment roll in
// two, and a kill can cut one write short), so a process killed during a
// Commit can leave part of its group in the files. Open cuts such a
// trailing run of records without their end off the log: a group is
// replayed whole or not at all, which is what lets a writer put a change
// and the cursor that says it was made in one group (chaining does).
//
// Open repairs a torn tail before tidwall/wal sees it: the last segment is
// cut at the first bad entry when no valid entry follows it, and refuses to
// start (a *CorruptionError) when one does. The directory is fsynced after
// a segment roll and after a front truncation, which tidwall/wal does not do.
//
// # When a write fails
//
// An acknowledged record must stay, and a refused one must never come back.
// So when a batch write fails (ENOSPC, EDQUOT, EIO, a short write), Commit
// cuts the log back to the last record of the last successful Commit: the
// segment holding it is truncated after that record, segments created since
// are removed, the file and the directory are fsynced, and tidwall/wal is
// opened again on what is left. The error then wraps ErrRolledBack: nothing
// of the batch is in the log, and the log takes writes again.
//
// A failed fsync is different. After one, the kernel may have dropped the
// dirty pages and marked them clean, so a second fsync can succeed without
// the data on disk (PostgreSQL's "fsyncgate"). The batch whose fsync failed
// is cut off as above, and the log then refuses every write (ErrSyncFailed)
// until it is reopened, where recovery reads what the disk really holds.
// A failed periodic Sync (fsync=interval) cuts nothing, since those records
// were already acknowledged; the log refuses writes from then on.
//
// If the cut itself fails, the outcome of the batch is unknown: the error
// wraps ErrBroken and not ErrRolledBack, and the log refuses every write.
//
// A Log has one writer: Add, Commit and Sync must be called from a single
// goroutine. Read, FirstIndex, LastIndex and TruncateFront may be called
// concurrently with it.
package wal

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
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	twal "github.com/tidwall/wal"
)

// These constants are part of the on-disk format and must not be changed.
const (
	// frameEnd frames the last record of a commit group (and every record
	// written before groups were marked); frameContinues the others.
	frameEnd       = 1
	frameContinues = 2
	headerLen      = 5 // version + CRC
	// MaxBody is the largest record body a frame may carry.
	MaxBody = 64 << 10
)

// DefaultSegmentSize is the segment size used when Options leaves it zero.
const DefaultSegmentSize = 8 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// ErrCorrupt marks a record whose frame or checksum is wrong; errors
	// carrying it are *CorruptionError values.
	ErrCorrupt = errors.New("wal: corrupt record")
	// ErrNotFound is returned by Read for an index the log no longer (or
	// not yet) holds.
	ErrNotFound = errors.New("wal: index not found")
	// ErrBroken is returned when a failed write could not be cut off, and
	// by every write after that: what reached the disk is unknown, so the
	// log refuses more until it is reopened.
	ErrBroken = errors.New("wal: log failed, reopen to recover")
	// ErrRolledBack wraps the error of a Commit whose batch failed and was
	// cut off the log: none of its records is in the log, and none will be
	// replayed. The log takes writes again (unless the error also wraps
	// ErrSyncFailed).
	ErrRolledBack = errors.New("wal: write failed and was cut off the log")
	// ErrSyncFailed is returned by writes after an fsync of the log
	// failed: an fsync is never retried (see the package documentation).
	ErrSyncFailed = errors.New("wal: fsync failed, writes are refused until restart")
)

// Hooks let tests make the log's I/O fail the way a full or failing disk
// does, in the spirit of Pebble's errorfs: each wraps one call the log
// makes (into tidwall/wal or the file system) and may fail it before or
// after letting it run. A nil member calls through.
type Hooks struct {
	// Write wraps the write of one batch.
	Write func(write func() error) error
	// Sync wraps the fsync of the tail segment, SyncDir the fsync of the
	// log's directory after a segment roll.
	Sync    func(sync func() error) error
	SyncDir func(sync func() error) error
	// Cut wraps the truncation that takes a failed batch off the log.
	Cut func(cut func() error) error
}

func call(h func(func() error) error, f func() error) error {
	if h == nil {
		return f()
	}
	return h(f)
}

// writeBatch writes the batch, through the Write hook when there is one
// (without one, no closure is made: this runs for every group).
func (l *Log) writeBatch() error {
	if l.hooks.Write == nil {
		return l.tw.WriteBatch(&l.batch)
	}
	return l.hooks.Write(func() error { return l.tw.WriteBatch(&l.batch) })
}

// CorruptionError says where a corrupt record was found.
type CorruptionError struct {
	Path   string // segment file, when known
	Offset int64  // byte offset in the segment, when known (-1 otherwise)
	Index  uint64 // WAL index, when known (0 otherwise)
	Err    error
}

func (e *CorruptionError) Error() string {
	var b strings.Builder
	b.WriteString("wal: corrupt record")
	if e.Index != 0 {
		fmt.Fprintf(&b, " at index %d", e.Index)
	}
	if e.Path != "" {
		fmt.Fprintf(&b, " in %s", e.Path)
	}
	if e.Offset >= 0 {
		fmt.Fprintf(&b, " at byte %d", e.Offset)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap lets errors.Is(err, ErrCorrupt) match.
func (e *CorruptionError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// Options configure a Log. The zero value means defaults.
type Options struct {
	// SegmentSize is the target size of one segment file.
	SegmentSize int
	// Logger receives repair and roll messages; nil discards them.
	Logger *slog.Logger
	// Hooks inject I/O faults in tests; nil in production.
	Hooks *Hooks
	// Covered is the last index a snapshot already holds: a damaged record
	// at or below it is not needed, so Open skips it (with a warning)
	// instead of refusing to start, as long as its length is intact.
	Covered uint64
}

// Log is a framed, checksummed write-ahead log.
type Log struct {
	dir    string
	logger *slog.Logger
	hooks  Hooks

	// twMu guards the tw pointer: the writer replaces it when it cuts a
	// failed batch off; every other goroutine reads it under RLock. The
	// writer's own calls need no lock (it is the only one that replaces it).
	twMu sync.RWMutex
	tw   *twal.Log

	// Writer-owned (one goroutine):
	batch    twal.Batch
	frame    []byte
	next     uint64 // index the next Add gets
	acked    uint64 // last index of the last successful Commit
	pending  int    // entries added since the last Commit
	segSize  int
	segBytes int  // bytes in tidwall's tail segment, mirrored to see rolls
	dirDirty bool // a segment was created and the directory not yet fsynced
	rolled   bool // the next batch creates a segment (Commit clears tidwall's cache)
	broken   error
	// tail is a file of tidwall/wal's tail segment, which syncTail fsyncs
	// itself: tidwall/wal's Sync holds its lock through the fsync, and
	// every Read (a forwarder's, a stream's catch-up) would wait on it.
	// tidwall/wal fsyncs a segment itself when it rolls past it.
	tail      *os.File
	tailFirst uint64

	truncMu sync.Mutex // serialises TruncateFront callers.
	// first is the first index the log holds. TruncateFront removes whole
	// segment files itself (see there), and tidwall/wal, which still lists
	// them, is not asked about indexes below first. dropped counts the
	// segments removed since tidwall/wal last read the directory; the
	// writer opens it again after a roll while any are (a cheap moment:
	// the new tail segment holds one batch), so its list stays short.
	first   atomic.Uint64
	dropped atomic.Int64
	// readMu serialises Reads: tidwall/wal loads and evicts cached
	// segments while holding only its read lock, so concurrent Reads can
	// find a segment emptied under them and panic (tidwall/wal issue #34).
	readMu sync.Mutex
}

// Open opens or creates the log in dir, repairing a torn tail first.
func Open(dir string, opts Options) (*Log, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create wal directory: %w", err)
	}
	if err := repairTail(dir, opts.Covered, logger); err != nil {
		return nil, err
	}
	if err := dropPartialGroup(dir, opts.Covered, logger); err != nil {
		return nil, err
	}
	tw, err := openTidwall(dir, opts.SegmentSize)
	if err != nil {
		return nil, err
	}
	last, err := tw.LastIndex()
	if err != nil {
		tw.Close()
		return nil, fmt.Errorf("read last wal index: %w", err)
	}
	first, err := tw.FirstIndex()
	if err != nil {
		tw.Close()
		return nil, fmt.Errorf("read first wal index: %w", err)
	}
	l := &Log{dir: dir, tw: tw, logger: logger, next: last + 1, acked: last, segSize: opts.SegmentSize}
	l.first.Store(first)
	if opts.Hooks != nil {
		l.hooks = *opts.Hooks
	}
	segs, err := l.segments()
	if err != nil {
		tw.Close()
		return nil, err
	}
	if len(segs) > 0 {
		fi, err := os.Stat(filepath.Join(dir, segmentName(segs[len(segs)-1])))
		if err != nil {
			tw.Close()
			return nil, fmt.Errorf("stat tail segment: %w", err)
		}
		l.segBytes = int(fi.Size())
	}
	// Everything the log holds counts as on disk from here (the engine
	// starts its synced index at last): a process killed between a write
	// and its fsync leaves records in the page cache only, and a resend
	// acknowledged against one of them must not wait on nothing. Rolled
	// segments were fsynced by tidwall/wal when it closed them; the tail
	// may not have been.
	if err := call(l.hooks.Sync, tw.Sync); err != nil {
		tw.Close()
		return nil, fmt.Errorf("fsync tail segment at open: %w", err)
	}
	if err := syncDir(dir); err != nil {
		tw.Close()
		return nil, err
	}
	return l, nil
}

func openTidwall(dir string, segSize int) (*twal.Log, error) {
	tw, err := twal.Open(dir, &twal.Options{
		NoSync:           true, // Commit and Sync decide when to fsync.
		SegmentSize:      segSize,
		LogFormat:        twal.Binary,
		SegmentCacheSize: 2,
		NoCopy:           true,
		// A log cut back to a segment with no records (or one written by
		// sonde repair) starts after the snapshot: it may hold nothing.
		AllowEmpty: true,
	})
	if err != nil {
		if errors.Is(err, twal.ErrCorrupt) {
			return nil, &CorruptionError{Offset: -1, Err: fmt.Errorf("open segments in %s: %w", dir, err)}
		}
		return nil, fmt.Errorf("open wal segments: %w", err)
	}
	return tw, nil
}

// Dir returns the directory the log lives in.
func (l *Log) Dir() string { return l.dir }

// Bytes returns the size of the files in the log's directory: what the
// WAL holds on disk. It reads only the directory, so it may be called
// from any goroutine.
func (l *Log) Bytes() (int64, error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return 0, fmt.Errorf("list wal directory: %w", err)
	}
	var n int64
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // truncated away since the listing
		}
		if err != nil {
			return 0, fmt.Errorf("stat wal file: %w", err)
		}
		n += info.Size()
	}
	return n, nil
}

// Segment is one segment file: the index of its first record and its
// size in bytes.
type Segment struct {
	First uint64
	Bytes int64
}

// Segments lists the segment files, oldest first. It reads only the
// directory, so it may be called from any goroutine.
func (l *Log) Segments() ([]Segment, error) {
	firsts, err := l.segments()
	if err != nil {
		return nil, err
	}
	out := make([]Segment, 0, len(firsts))
	for _, f := range firsts {
		info, err := os.Stat(filepath.Join(l.dir, segmentName(f)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // truncated away since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("stat wal segment: %w", err)
		}
		out = append(out, Segment{First: f, Bytes: info.Size()})
	}
	return out, nil
}

// Add frames body and queues it for the next Commit. It returns the index
// the record will have. body is copied. The newest record is held back
// until the next Add or Commit, which know whether it ends the group.
func (l *Log) Add(body []byte) uint64 {
	if l.pending > 0 {
		l.frame[0] = frameContinues
		l.batch.Write(l.next-1, l.frame)
	}
	l.frame = append(l.frame[:0], frameEnd, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(l.frame[1:], crc32.Checksum(body, castagnoli))
	l.frame = append(l.frame, body...)
	// Mirror tidwall/wal's writeBatch: it cycles before a batch when the tail
	// is over the size, and after any entry that brings it to the size.
	if l.pending == 0 && l.segBytes > l.segSize {
		l.segBytes = 0
		l.dirDirty, l.rolled = true, true
	}
	l.segBytes += uvarintLen(uint64(len(l.frame))) + len(l.frame)
	if l.segBytes >= l.segSize {
		l.segBytes = 0
		l.dirDirty, l.rolled = true, true
	}
	idx := l.next
	l.next++
	l.pending++
	return idx
}

// Next returns the index the next Add will get.
func (l *Log) Next() uint64 { return l.next }

// Commit writes the queued records in one write and, when sync is true,
// fsyncs the segment (and the directory after a roll). Once it returns nil
// the records are acknowledged. When it fails, the batch is cut off the
// log (the error wraps ErrRolledBack) or, if that fails too, the log is
// broken (ErrBroken); see the package documentation.
func (l *Log) Commit(sync bool) error {
	if l.broken != nil {
		l.discard()
		return l.broken
	}
	if l.pending == 0 {
		if sync {
			return l.Sync()
		}
		return nil
	}
	l.batch.Write(l.next-1, l.frame) // the group's end (frameEnd)
	l.pending = 0
	if err := l.writeBatch(); err != nil {
		return l.rollback(fmt.Errorf("write batch: %w", err), false)
	}
	rolled := l.rolled
	if rolled {
		// tidwall/wal keeps the segments a roll closes in its read cache,
		// each with its whole content and 16 bytes of position per record
		// (up to twice the segment size, as the buffer grew by doubling).
		// Nothing reads them while the engine runs (a snapshot never
		// rereads the WAL), so they are let go. It fails only on a closed
		// or corrupt log, which the next write reports.
		l.rolled = false
		_ = l.tw.ClearCache()
	}
	if sync {
		if err := l.syncTail(); err != nil {
			return l.rollback(err, true)
		}
	}
	l.acked = l.next - 1
	if rolled && l.dropped.Load() > 0 {
		if err := l.reopen(); err != nil {
			// The batch is in the log (and synced as asked): it stands.
			// The log does not know its own state now, so it takes no more
			// writes; a restart reads what the files hold.
			l.broken = fmt.Errorf("%w: reopen after dropping segments: %w", ErrBroken, err)
			l.logger.Error("wal reopen failed; refusing further writes", "err", err)
		}
	}
	return nil
}

// reopen opens tidwall/wal again on the files, so that it forgets the
// segments TruncateFront removed. Writer only.
func (l *Log) reopen() error {
	l.twMu.Lock()
	defer l.twMu.Unlock()
	n := l.dropped.Load()
	if err := l.tw.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	tw, err := openTidwall(l.dir, l.segSize)
	if err != nil {
		return err
	}
	if got, err := tw.LastIndex(); err != nil || got != l.acked {
		tw.Close()
		return fmt.Errorf("last index %d (%v), want %d", got, err, l.acked)
	}
	l.tw = tw
	l.dropped.Add(-n)
	return nil
}

// Sync fsyncs the tail segment, and the directory when a segment was
// created since the last Sync. A failure is never retried: the log
// refuses writes from then on (ErrSyncFailed).
func (l *Log) Sync() error {
	if l.broken != nil {
		return l.broken
	}
	if err := l.syncTail(); err != nil {
		l.broken = fmt.Errorf("%w: %w", ErrSyncFailed, err)
		return l.broken
	}
	return nil
}

func (l *Log) syncTail() error {
	if err := l.findTail(); err != nil {
		return err
	}
	var err error
	if l.hooks.Sync != nil {
		err = l.hooks.Sync(l.tail.Sync)
	} else {
		err = l.tail.Sync() // no method value: this runs for every group
	}
	if err != nil {
		return fmt.Errorf("fsync segment: %w", err)
	}
	if l.dirDirty {
		if err := call(l.hooks.SyncDir, func() error { return syncDir(l.dir) }); err != nil {
			return err
		}
		l.dirDirty = false
	}
	return nil
}

// findTail makes l.tail the newest segment file. The size of the file it
// holds tells whether tidwall/wal still writes there: it matches the
// mirror (segBytes) until a roll, and a roll resets the mirror; on any
// difference the directory says which file is newest.
func (l *Log) findTail() error {
	if l.tail != nil {
		if fi, err := l.tail.Stat(); err == nil && fi.Size() == int64(l.segBytes) {
			return nil
		}
	}
	segs, _, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		return fmt.Errorf("find the tail segment: none in %s", l.dir)
	}
	newest := segs[len(segs)-1]
	if l.tail != nil && l.tailFirst == newest {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(l.dir, segmentName(newest)), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open the tail segment to fsync it: %w", err)
	}
	if l.tail != nil {
		l.tail.Close()
	}
	l.tail, l.tailFirst = f, newest
	return nil
}

// discard drops the records added since the last Commit.
func (l *Log) discard() {
	l.batch.Clear()
	l.pending = 0
	l.next = l.acked + 1
}

// rollback takes the failed batch off the log: everything after the last
// acknowledged record goes. permanent marks an fsync failure, after which
// the log takes no more writes.
func (l *Log) rollback(cause error, permanent bool) error {
	l.batch.Clear()
	if err := l.cutBack(l.acked); err != nil {
		l.broken = fmt.Errorf("%w: %w; cutting the failed batch off failed too, so it may or may not be replayed: %w", ErrBroken, cause, err)
		return l.broken
	}
	l.next = l.acked + 1
	if permanent {
		l.broken = fmt.Errorf("%w: %w", ErrSyncFailed, cause)
		return fmt.Errorf("%w: %w", ErrRolledBack, l.broken)
	}
	l.logger.Warn("cut a failed write off the wal", "last_index", l.acked, "err", cause)
	return fmt.Errorf("%w: %w", ErrRolledBack, cause)
}

// cutBack truncates the log after index last: the segment that holds it
// (or would hold last+1) is cut after its record, later segments are
// removed, and tidwall/wal is opened again on what is left.
func (l *Log) cutBack(last uint64) error {
	l.twMu.Lock()
	defer l.twMu.Unlock()
	l.tw.Close() // its state is that of the failed write; the files say what is left
	if l.tail != nil {
		l.tail.Close() // it may be a segment removed below: found again at the next sync
		l.tail = nil
	}
	plain, _, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	var keep uint64
	for _, s := range plain {
		if s <= last+1 {
			keep = s
		}
	}
	if keep == 0 {
		return fmt.Errorf("no wal segment holds index %d", last)
	}
	for _, s := range plain {
		if s > keep {
			if err := os.Remove(filepath.Join(l.dir, segmentName(s))); err != nil {
				return fmt.Errorf("remove segment of the failed write: %w", err)
			}
		}
	}
	path := filepath.Join(l.dir, segmentName(keep))
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read tail segment: %w", err)
	}
	off, err := offsetAfter(data, int(last+1-keep))
	if err != nil {
		return fmt.Errorf("segment %s before acknowledged index %d: %w", path, last, err)
	}
	err = call(l.hooks.Cut, func() error { return truncateSync(path, int64(off)) })
	if err != nil {
		return fmt.Errorf("truncate %s after index %d: %w", path, last, err)
	}
	if err := syncDir(l.dir); err != nil {
		return err
	}
	tw, err := openTidwall(l.dir, l.segSize)
	if err != nil {
		return fmt.Errorf("reopen after the cut: %w", err)
	}
	if got, err := tw.LastIndex(); err != nil || got != last {
		tw.Close()
		return fmt.Errorf("reopen after the cut: last index %d (%v), want %d", got, err, last)
	}
	l.tw = tw
	l.dropped.Store(0)
	l.segBytes = off
	l.dirDirty = false
	return nil
}

// Failed returns the error that makes the log refuse writes, nil while it
// takes them.
func (l *Log) Failed() error { return l.broken }

// ReadMany appends to dst the bodies of the records from index first on,
// at most n of them and none past the last written, taking the log's
// locks once; they alias the log's cache like Read's. An error comes with
// the bodies read before it.
func (l *Log) ReadMany(first uint64, n int, dst [][]byte) ([][]byte, error) {
	l.twMu.RLock()
	l.readMu.Lock()
	start := len(dst)
	var err error
	for i := first; len(dst)-start < n; i++ {
		if i < l.first.Load() { // TruncateFront removes files under readMu
			err = fmt.Errorf("read index %d: %w", i, ErrNotFound)
			break
		}
		var frame []byte
		frame, err = l.tw.Read(i)
		if err != nil {
			err = readError(i, err)
			break
		}
		var body []byte
		if body, err = checkFrame(frame); err != nil {
			err = &CorruptionError{Index: i, Offset: -1, Err: err}
			break
		}
		dst = append(dst, body)
	}
	l.readMu.Unlock()
	l.twMu.RUnlock()
	return dst, err
}

// readError maps tidwall/wal's error reading index.
func readError(index uint64, err error) error {
	if errors.Is(err, twal.ErrNotFound) {
		return fmt.Errorf("read index %d: %w", index, ErrNotFound)
	}
	if errors.Is(err, twal.ErrCorrupt) {
		return &CorruptionError{Index: index, Offset: -1, Err: err}
	}
	return fmt.Errorf("read index %d: %w", index, err)
}

// Read returns the body of the record at index. The slice aliases the
// log's cache: the caller must not modify it, and may keep it.
func (l *Log) Read(index uint64) ([]byte, error) {
	l.twMu.RLock()
	l.readMu.Lock()
	var frame []byte
	err := twal.ErrNotFound
	if index >= l.first.Load() { // TruncateFront removes files under readMu
		frame, err = l.tw.Read(index)
	}
	l.readMu.Unlock()
	l.twMu.RUnlock()
	if err != nil {
		return nil, readError(index, err)
	}
	body, err := checkFrame(frame)
	if err != nil {
		return nil, &CorruptionError{Index: index, Offset: -1, Err: err}
	}
	return body, nil
}

// FirstIndex returns the first index the log holds (LastIndex()+1 when
// it holds none).
func (l *Log) FirstIndex() (uint64, error) {
	l.twMu.RLock()
	defer l.twMu.RUnlock()
	first, err := l.tw.FirstIndex()
	return max(first, l.first.Load()), err
}

// LastIndex returns the last index written, 0 when none ever was.
func (l *Log) LastIndex() (uint64, error) {
	l.twMu.RLock()
	defer l.twMu.RUnlock()
	return l.tw.LastIndex()
}

// TruncateFront drops whole segments that hold only indexes below keep.
// It never cuts inside a segment, so the log may keep some records below
// keep. It returns the new first index.
//
// It removes the segment files itself rather than through tidwall/wal's
// TruncateFront, which rewrites the segment keep falls in (up to the whole
// segment, with an fsync) and reloads it while holding the lock every
// write takes: at 200k acknowledged writes a second that stalled the
// committer 84–95 ms after each snapshot (docs/benchmarks.md). Only closed
// segments go, never the tail, so tidwall/wal never writes to a removed
// file; it only still lists them until Commit opens it again (see reopen).
func (l *Log) TruncateFront(keep uint64) (uint64, error) {
	l.truncMu.Lock()
	defer l.truncMu.Unlock()
	l.twMu.RLock()
	defer l.twMu.RUnlock()
	first := l.first.Load()
	last, err := l.tw.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("read last index: %w", err)
	}
	segs, err := l.segments()
	if err != nil {
		return 0, err
	}
	// The start of the segment holding keep; a segment must still hold at
	// least one record, so never pass the last index.
	var cut uint64
	for _, s := range segs {
		if s <= keep && s <= last {
			cut = s
		}
	}
	if cut <= first {
		return first, nil
	}
	// Reads below the new first index stop before the files go, and the
	// ones under way finish first.
	l.readMu.Lock()
	l.first.Store(cut)
	l.readMu.Unlock()
	for _, s := range segs {
		if s >= cut {
			break
		}
		if err := os.Remove(filepath.Join(l.dir, segmentName(s))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("remove wal segment %s: %w", segmentName(s), err)
		}
		l.dropped.Add(1)
	}
	if err := syncDir(l.dir); err != nil {
		return 0, err
	}
	return cut, nil
}

// Close syncs and closes the log.
func (l *Log) Close() error {
	l.twMu.Lock()
	defer l.twMu.Unlock()
	if l.tail != nil {
		l.tail.Close()
		l.tail = nil
	}
	if err := l.tw.Close(); err != nil {
		return fmt.Errorf("close wal: %w", err)
	}
	return nil
}

// segments lists the first indexes of the segment files, ascending.
func (l *Log) segments() ([]uint64, error) {
	segs, _, err := listSegments(l.dir)
	return segs, err
}

func segmentName(index uint64) string { return fmt.Sprintf("%020d", index) }

// listSegments returns the plain segment starts and the highest start of a
// pending ".START" file (0 when none).
func listSegments(dir string) (plain []uint64, start uint64, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("list wal directory: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || len(name) < 20 {
			continue
		}
		idx, err := strconv.ParseUint(name[:20], 10, 64)
		if err != nil || idx == 0 {
			continue
		}
		switch {
		case len(name) == 20:
			plain = append(plain, idx)
		case name[20:] == ".START":
			start = max(start, idx)
		}
	}
	sort.Slice(plain, func(i, j int) bool { return plain[i] < plain[j] })
	return plain, start, nil
}

func checkFrame(frame []byte) ([]byte, error) {
	if len(frame) <= headerLen {
		return nil, fmt.Errorf("frame of %d bytes is too short", len(frame))
	}
	if frame[0] != frameEnd && frame[0] != frameContinues {
		return nil, fmt.Errorf("unknown frame version %d", frame[0])
	}
	body := frame[headerLen:]
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(frame[1:]); got != want {
		return nil, fmt.Errorf("checksum mismatch: computed %08x, stored %08x", got, want)
	}
	return body, nil
}

// entryAt returns the length of the valid entry (tidwall length prefix and
// our frame) at off, or 0 when there is none.
func entryAt(data []byte, off int) int {
	size, n := binary.Uvarint(data[off:])
	if n <= 0 || size <= headerLen || size > MaxBody+headerLen {
		return 0
	}
	end := off + n + int(size)
	if end > len(data) {
		return 0
	}
	if _, err := checkFrame(data[off+n : end]); err != nil {
		return 0
	}
	return end - off
}

// repairTail cuts a torn tail off the last segment. A bad entry is a torn
// tail when no valid entry follows it anywhere in the segment: a crash can
// only tear the last write. A valid entry after a bad one means the middle
// of the log is damaged, and Open refuses to guess, unless the snapshot
// already covers the damaged entry (index <= covered) and its length is
// intact: then it is skipped.
func repairTail(dir string, covered uint64, logger *slog.Logger) error {
	plain, start, err := listSegments(dir)
	if err != nil {
		return err
	}
	if len(plain) == 0 || start >= plain[len(plain)-1] {
		// No log yet, or a completed front truncation that tidwall/wal will
		// finish: its START file was written atomically.
		return nil
	}
	path := filepath.Join(dir, segmentName(plain[len(plain)-1]))
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read tail segment: %w", err)
	}
	off, records := 0, 0
	first := plain[len(plain)-1]
	for off < len(data) {
		n := entryAt(data, off)
		if n == 0 {
			// Skipped by its length only when a valid entry (or the end)
			// follows right there: a damaged length would misnumber the rest.
			idx := first + uint64(records)
			if k := lengthAt(data, off); k > 0 && idx <= covered && (off+k == len(data) || entryAt(data, off+k) != 0) {
				logger.Warn("a damaged wal record is skipped: the snapshot already holds it", "segment", path,
					"index", idx, "offset", off, "snapshot_index", covered)
				off += k
				records++
				continue
			}
			break
		}
		off += n
		records++
	}
	if off == len(data) {
		return nil
	}
	for p := off + 1; p < len(data); p++ {
		if entryAt(data, p) != 0 {
			return &CorruptionError{Path: path, Offset: int64(off), Index: first + uint64(records),
				Err: fmt.Errorf("valid records follow the bad one at byte %d; refusing to drop them (sonde repair keeps every readable record and says what it drops)", p)}
		}
	}
	if err := truncateSync(path, int64(off)); err != nil {
		return fmt.Errorf("truncate torn tail: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	logger.Warn("cut torn wal tail", "segment", path, "kept_bytes", off, "dropped_bytes", len(data)-off,
		"kept_records", records)
	return nil
}

// lengthAt returns the length of the entry at off by its tidwall length
// prefix alone, whatever its frame holds, or 0 when the prefix itself is
// not a possible length.
func lengthAt(data []byte, off int) int {
	size, n := binary.Uvarint(data[off:])
	if n <= 0 || size > MaxBody+headerLen || off+n+int(size) > len(data) {
		return 0
	}
	return n + int(size)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}
