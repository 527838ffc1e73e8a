// Package snapshot keeps Sonde's durable state in bbolt: the current state
// of every series, its history points in compressed chunks, and the WAL
// index the stored state covers. It is the only importer of bbolt.
//
// The engine writes a snapshot as several Commits, each one bbolt
// transaction holding the states and new chunks of a run of changed
// series in key order; the last one also records the WAL index the
// snapshot covers. A state may cover records past the index stored with
// it (State.Covers). On restart the engine loads the states and replays
// the WAL after the index, skipping what each state covers.
// docs/format/snapshot.md describes the buckets, keys and encodings.
//
// A Store may be used from several goroutines: Commit is called by one
// writer, History and Index by any number of readers.
package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/sonde-metrics/sonde/engine/internal/chunk"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// These names and versions are part of the on-disk format.
var (
	bucketMeta    = []byte("meta")
	bucketSeries  = []byte("series")
	bucketHistory = []byte("history")
	keyIndex      = []byte("index")
	keyVersion    = []byte("version")
)

const (
	// formatVersion 2 seals every value (seal.go); version 1 files are
	// read as they are. Version 3 may hold chunks of chunk version 3,
	// which a Sonde from before cannot read: it refuses the file instead
	// of taking its history for damage. Older files become version 3 at
	// open.
	formatVersion = 3
	// stateVersion 2 adds Covers; version 1 states are read with Covers 0.
	// Version 3 adds the tail (tail.go); earlier states have none.
	stateVersion = 3
)

// ErrFormat is returned for stored data this version cannot read.
var ErrFormat = errors.New("snapshot: unreadable stored data")

// State is the stored state of one series.
type State struct {
	Key            string
	Kind           sample.Kind
	Value          float64 // GAUGE value or COUNTER total
	Running, Shown float64 // COUNTER window counts
	WinStart       int64
	Interval       int64
	Updated        int64
	Ordinal        uint64 // ordinal of the newest point (0: none yet)
	Created        uint64 // WAL index of the record that created this incarnation
	// Covers is the WAL index of the newest record of this series the
	// state holds. It may be past the store's Index: a snapshot writes
	// series in several transactions and captures each as it is then, so
	// replay skips this series' records up to Covers. 0: up to Index.
	Covers uint64
	// Tail holds the newest stored points of the incarnation that are not
	// in history chunks (tail.go), from ordinal TailFirst to Ordinal.
	// Commit sets it; what is given to Commit is ignored. A state read
	// from the store aliases the stored bytes: Tail is valid only as long
	// as they are (for Load, until fn returns).
	Tail      []byte
	TailFirst uint64
}

// Update is what one snapshot changes for one key.
type Update struct {
	Key string
	// Drop, when not 0, deletes the incarnation of the key created at WAL
	// index Drop first: its state (if the stored state is that
	// incarnation's), history, archives and watermarks.
	Drop uint64
	// State is the state to store; nil stores none.
	State *State
	// Points are new history points with ordinals FirstOrdinal, +1, ...
	Points       []sample.Point
	FirstOrdinal uint64
	// Chunks, when not nil, are the new history points already encoded
	// (EncodeChunks), and Points is ignored.
	Chunks []Chunk
}

// Chunk is an encoded run of a series' history points.
type Chunk struct {
	First  uint64 // ordinal of its first point
	Points int
	Data   []byte // AppendChunk's encoding
}

// EncodeChunks encodes pts, with ordinals first, +1, ..., as chunks of at
// most the store's chunk size, appending their bytes to arena. The chunks
// refer to arena's bytes; arena is returned grown.
func (s *Store) EncodeChunks(dst []Chunk, arena []byte, pts []sample.Point, first uint64) ([]Chunk, []byte) {
	for off := 0; off < len(pts); off += s.maxChunk {
		part := pts[off:min(off+s.maxChunk, len(pts))]
		at := len(arena)
		arena = AppendChunk(arena, part)
		dst = append(dst, Chunk{First: first + uint64(off), Points: len(part), Data: arena[at:len(arena):len(arena)]})
	}
	return dst, arena
}

// Store is an open snapshot database.
type Store struct {
	db     *bolt.DB
	index  atomic.Uint64                 // WAL index covered by the stored state
	totals atomic.Pointer[HistoryTotals] // as of the last commit (totals.go)
	// maxChunk caps the points of a chunk Commit writes (SetChunkPoints).
	maxChunk int
	// maxSpan caps the time (ms) a tail of key may cover (SetMaxSpan).
	maxSpan func(key string) int64
	// commitHook wraps each Commit's transaction, for fault injection.
	commitHook func(commit func() error) error
	// scratch holds decoded points while a write transaction merges a
	// tail; write transactions run one at a time (bbolt's writer lock).
	scratch []sample.Point
	// afterUpdates, in tests, runs inside Commit's transaction once every
	// update is in, before it commits, and inside Compact's once its walk
	// is over.
	afterUpdates func()
	// evTotals are the stored events' totals as of the last commit
	// (events.go).
	evTotals atomic.Pointer[EventTotals]
}

// SetMaxSpan caps the time (ms) the points of one series' tail may cover
// before they move into a history chunk: expiry deletes whole chunks, so
// a chunk must not outlast the raw keep by much. Call it before the first
// Commit.
func (s *Store) SetMaxSpan(fn func(key string) int64) { s.maxSpan = fn }

// SetCommitHook wraps every Commit's bbolt transaction in hook, which may
// fail it before or after letting it run: tests make snapshots fail the
// way a full or failing disk does. Call it before the first Commit.
func (s *Store) SetCommitHook(hook func(commit func() error) error) { s.commitHook = hook }

// SetChunkPoints caps the points of one chunk that Commit writes; a
// snapshot's points for one series beyond it go into more chunks. Call it
// before the first Commit.
func (s *Store) SetChunkPoints(n int) {
	if n > 0 {
		s.maxChunk = n
	}
}

// allocSize is how much bbolt grows the file by past what its pages
// need (its default is 16 MiB). The file never shrinks, and the slack
// counts in its size: 16 MiB was a sixth of the file after five minutes
// of the soak (docs/benchmarks.md). Each step costs a truncate and an
// fsync; 1 MiB steps are a few a second at the soak's 200k samples/s.
const allocSize = 1 << 20

// createTop returns the top-level bucket name, made when missing. A
// top-level entry that is a plain value, not a bucket (a flag bit
// flipped on disk), is damage, not bbolt's "incompatible value".
func createTop(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	b, err := tx.CreateBucketIfNotExists(name)
	if errors.Is(err, berrors.ErrIncompatibleValue) {
		return nil, fmt.Errorf("%w: the top-level entry %s is not a bucket", ErrDamaged, name)
	}
	return b, err
}

// Open opens or creates the store at path.
func Open(path string) (s *Store, err error) {
	defer caught(&err)
	// bbolt walks every page at open, in a goroutine whose panic on a
	// damaged page cannot be caught: check the file first.
	if err := verifyFile(path); err != nil {
		return nil, fmt.Errorf("open snapshot database %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o640, &bolt.Options{
		Timeout:        2 * time.Second,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if err != nil {
		return nil, fmt.Errorf("open snapshot database: %w", err)
	}
	db.AllocSize = allocSize
	s = &Store{db: db, maxChunk: math.MaxInt32}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := createTop(tx, bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keyVersion); v == nil || (len(v) == 1 && v[0] < formatVersion) {
			if err := meta.Put(keyVersion, []byte{formatVersion}); err != nil {
				return err
			}
		} else if len(v) != 1 || v[0] != formatVersion {
			return fmt.Errorf("%w: format version %v", ErrFormat, v)
		}
		if _, err := createTop(tx, bucketSeries); err != nil {
			return err
		}
		if _, err := createTop(tx, bucketHistory); err != nil {
			return err
		}
		if v := meta.Get(keyIndex); v != nil {
			v, err := unseal(bucketMeta, keyIndex, v)
			if err != nil {
				return err
			}
			if len(v) != 8 {
				return damaged(bucketMeta, keyIndex, fmt.Errorf("an index of %d bytes", len(v)))
			}
			s.index.Store(binary.BigEndian.Uint64(v))
		}
		if err := s.loadTotals(tx); err != nil {
			return err
		}
		return s.loadEvents(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("initialise snapshot database %s: %w", path, err)
	}
	return s, nil
}

// Index returns the WAL index the stored state covers (0: none).
func (s *Store) Index() uint64 { return s.index.Load() }

// Load calls fn for every stored series. The *State is reused between calls.
func (s *Store) Load(fn func(*State) error) (err error) {
	defer caught(&err)
	return s.db.View(func(tx *bolt.Tx) error {
		var st State
		return tx.Bucket(bucketSeries).ForEach(func(k, v []byte) error {
			if err := readState(k, v, &st); err != nil {
				return err
			}
			st.Key = string(k)
			return fn(&st)
		})
	})
}

// readState decodes the stored state v of series k.
func readState(k, v []byte, st *State) error {
	v, err := unseal(bucketSeries, k, v)
	if err != nil {
		return err
	}
	if err := decodeState(v, st); err != nil {
		return damaged(bucketSeries, k, err)
	}
	return nil
}

// Commit applies ups and records index in one transaction. Commit sorts ups by key, keeping the order of the updates of one key,
// and applies them in that order.
func (s *Store) Commit(index uint64, ups []Update) (err error) {
	defer caught(&err)
	// bbolt inserts into a node by shifting the entries after the new one,
	// and splits nodes only at commit: keys put in random order into one
	// transaction cost O(n²) (100k keys: 25.7 s). In key order every put
	// lands at the end of its node (BenchmarkCommit).
	slices.SortStableFunc(ups, func(a, b Update) int { return strings.Compare(a.Key, b.Key) })
	var totals HistoryTotals
	err = s.update(func(tx *bolt.Tx) error {
		var t tally
		series := tx.Bucket(bucketSeries)
		hist := tx.Bucket(bucketHistory)
		hist.FillPercent = historyFill
		for i := range ups {
			u := &ups[i]
			if u.Drop != 0 {
				if err := s.drop(tx, series, u.Key, u.Drop, &t); err != nil {
					return err
				}
			}
			if u.State == nil {
				continue
			}
			if u.State.Created == 0 {
				return fmt.Errorf("%w: a state of %q names no incarnation", ErrFormat, u.Key)
			}
			chunks := u.Chunks
			if chunks == nil {
				chunks, _ = s.EncodeChunks(nil, nil, u.Points, u.FirstOrdinal)
			}
			k := []byte(u.Key)
			var old *State
			var prev State
			if v := series.Get(k); v != nil {
				if err := readState(k, v, &prev); err != nil {
					return err
				}
				if prev.Created == u.State.Created {
					old = &prev
				} else {
					// Never expected (a batch drops the ended incarnation
					// first); its tail goes with the state put over it.
					ti, err := readTail(prev.Tail)
					if err != nil {
						return damaged(bucketSeries, k, err)
					}
					t.tail(len(prev.Tail), ti, -1)
				}
			}
			st := *u.State
			if err := s.storeTail(hist, u.Key, &st, old, chunks, &t); err != nil {
				return fmt.Errorf("store the points of %q: %w", u.Key, err)
			}
			// bbolt keeps the value until the transaction commits: no reuse.
			if err := series.Put(k, sealState(k, &st)); err != nil {
				return fmt.Errorf("put series %q: %w", u.Key, err)
			}
			if i%releaseEvery == releaseEvery-1 {
				releaseInTx(s.db, tx)
			}
		}
		if s.afterUpdates != nil {
			s.afterUpdates()
		}
		var err error
		if totals, err = s.saveTotals(tx, t); err != nil {
			return err
		}
		var ib [8]byte
		binary.BigEndian.PutUint64(ib[:], index)
		return tx.Bucket(bucketMeta).Put(keyIndex, seal(bucketMeta, keyIndex, ib[:]))
	})
	if err != nil {
		return fmt.Errorf("commit snapshot at index %d: %w", index, err)
	}
	s.index.Store(index)
	s.totals.Store(&totals)
	return nil
}

// update runs fn in a write transaction, through the commit hook when
// one is set.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	if s.commitHook != nil {
		return s.commitHook(func() error { return s.db.Update(fn) })
	}
	return s.db.Update(fn)
}

// ClearCovers sets every stored state's Covers to 0, and deletes the
// stored events and alerts with ids past the index, in one transaction: for a WAL
// that no longer holds the records they covered (a repair writes one
// without them, numbered anew, and its events are stored again under
// their new ids).
func (s *Store) ClearCovers() (err error) {
	defer caught(&err)
	var left EventTotals
	err = s.db.Update(func(tx *bolt.Tx) error {
		series := tx.Bucket(bucketSeries)
		var keys [][]byte
		var vals [][]byte
		var st State
		err := series.ForEach(func(k, v []byte) error {
			if err := readState(k, v, &st); err != nil {
				return err
			}
			if st.Covers != 0 {
				st.Covers = 0
				keys = append(keys, bytes.Clone(k)) // puts may remap the file
				vals = append(vals, sealState(k, &st))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, k := range keys {
			if err := series.Put(k, vals[i]); err != nil {
				return fmt.Errorf("put series %q: %w", k, err)
			}
		}
		if left, err = s.dropEventsAfter(tx, s.Index()); err != nil {
			return err
		}
		if err := clearClientCovers(tx); err != nil {
			return err
		}
		return dropAlertsAfter(tx, s.Index())
	})
	if err != nil {
		return fmt.Errorf("clear what series states cover: %w", err)
	}
	s.evTotals.Store(&left)
	return nil
}

// drop deletes the incarnation of key created at WAL index created.
func (s *Store) drop(tx *bolt.Tx, series *bolt.Bucket, key string, created uint64, t *tally) error {
	if v := series.Get([]byte(key)); v != nil {
		var old State
		if err := readState([]byte(key), v, &old); err != nil {
			return err
		}
		if old.Created == created {
			ti, err := readTail(old.Tail)
			if err != nil {
				return damaged(bucketSeries, []byte(key), err)
			}
			t.tail(len(old.Tail), ti, -1)
			if err := series.Delete([]byte(key)); err != nil {
				return fmt.Errorf("delete series %q: %w", key, err)
			}
		}
	}
	prefix := binary.BigEndian.AppendUint64(seriesPrefix(nil, key), created)
	for _, name := range [][]byte{bucketHistory, bucketArchive, bucketWatermark} {
		if b := tx.Bucket(name); b != nil {
			if err := deletePrefix(b, name, prefix, t); err != nil {
				return fmt.Errorf("delete %s of %q: %w", name, key, err)
			}
		}
	}
	return nil
}

// History appends to dst the stored points of the incarnation created at
// WAL index created, with ordinals below before and times in [from, to],
// oldest first. take, when not nil, is called with the point count of each
// chunk before it is decoded; an error from it ends the read (a query's
// budget or deadline).
func (s *Store) History(key string, created, before uint64, from, to int64, dst []sample.Point, take func(n int) error) (_ []sample.Point, err error) {
	defer caught(&err)
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHistory).Cursor()
		prefix := binary.BigEndian.AppendUint64(seriesPrefix(nil, key), created)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+8 {
				return fmt.Errorf("%w: history key %q", ErrFormat, k)
			}
			ord := binary.BigEndian.Uint64(k[len(prefix):])
			if ord >= before {
				break
			}
			n, first, last, err := header(bucketHistory, k, v)
			if err != nil {
				return err
			}
			if last < from || first > to || n == 0 {
				continue
			}
			if take != nil {
				if err := take(int(min(n, 1<<30))); err != nil {
					return err
				}
			}
			start := len(dst)
			if dst, err = decode(bucketHistory, k, v, dst); err != nil {
				return err
			}
			dst = keepRange(dst, start, ord, before, from, to)
		}
		tail, ord, err := storedTail(tx, key, created)
		if err != nil || ord >= before {
			return err
		}
		return eachPiece(tail, func(data []byte) error {
			n, first, last, err := chunkHeader(data)
			if err != nil {
				return damaged(bucketSeries, []byte(key), err)
			}
			at := ord
			ord += n
			if at >= before || last < from || first > to {
				return nil
			}
			if take != nil {
				if err := take(int(min(n, 1<<30))); err != nil {
					return err
				}
			}
			start := len(dst)
			if dst, err = DecodeChunk(data, dst); err != nil {
				return damaged(bucketSeries, []byte(key), err)
			}
			dst = keepRange(dst, start, at, before, from, to)
			return nil
		})
	})
	return dst, err
}

// keepRange keeps, of the points dst holds from start (ordinals ord, ord+1,
// ...), those with ordinals below before and times in [from, to].
func keepRange(dst []sample.Point, start int, ord, before uint64, from, to int64) []sample.Point {
	keep := dst[:start]
	for i, p := range dst[start:] {
		if ord+uint64(i) >= before {
			break
		}
		if p.T >= from && p.T <= to {
			keep = append(keep, p)
		}
	}
	return keep
}

// storedTail returns the tail of the incarnation of key created at WAL
// index created, and the ordinal of its first point; nil when it has
// none. The bytes are valid while tx is.
func storedTail(tx *bolt.Tx, key string, created uint64) ([]byte, uint64, error) {
	k := []byte(key)
	v := tx.Bucket(bucketSeries).Get(k)
	if v == nil {
		return nil, 0, nil
	}
	var st State
	if err := readState(k, v, &st); err != nil {
		return nil, 0, err
	}
	if st.Created != created || len(st.Tail) == 0 {
		return nil, 0, nil
	}
	return st.Tail, st.TailFirst, nil
}

// Newest appends to dst the newest n stored points of the incarnation
// created at WAL index created with ordinals below before, oldest first,
// reading chunks from the newest back. take is as for History.
func (s *Store) Newest(key string, created, before uint64, n int, dst []sample.Point, take func(n int) error) (_ []sample.Point, err error) {
	defer caught(&err)
	var chunks [][]sample.Point // newest first
	got := 0
	err = s.db.View(func(tx *bolt.Tx) error {
		tail, ord, err := storedTail(tx, key, created)
		if err != nil {
			return err
		}
		var pieces [][]byte
		if err := eachPiece(tail, func(data []byte) error { pieces = append(pieces, data); return nil }); err != nil {
			return damaged(bucketSeries, []byte(key), err)
		}
		starts := make([]uint64, len(pieces))
		for i, data := range pieces {
			cnt, _, _, err := chunkHeader(data)
			if err != nil {
				return damaged(bucketSeries, []byte(key), err)
			}
			starts[i], ord = ord, ord+cnt
		}
		for i := len(pieces) - 1; i >= 0 && got < n; i-- {
			if starts[i] >= before {
				continue
			}
			cnt, _, _, _ := chunkHeader(pieces[i])
			if take != nil {
				if err := take(int(min(cnt, 1<<30))); err != nil {
					return err
				}
			}
			pts, err := DecodeChunk(pieces[i], nil)
			if err != nil {
				return damaged(bucketSeries, []byte(key), err)
			}
			if keep := before - starts[i]; uint64(len(pts)) > keep {
				pts = pts[:keep]
			}
			chunks = append(chunks, pts)
			got += len(pts)
		}
		c := tx.Bucket(bucketHistory).Cursor()
		prefix := binary.BigEndian.AppendUint64(seriesPrefix(nil, key), created)
		var k, v []byte
		if k, _ = c.Seek(binary.BigEndian.AppendUint64(slices.Clone(prefix), before)); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && got < n; k, v = c.Prev() {
			if len(k) != len(prefix)+8 {
				return fmt.Errorf("%w: history key %q", ErrFormat, k)
			}
			ord := binary.BigEndian.Uint64(k[len(prefix):])
			cnt, _, _, err := header(bucketHistory, k, v)
			if err != nil {
				return err
			}
			if take != nil {
				if err := take(int(min(cnt, 1<<30))); err != nil {
					return err
				}
			}
			pts, err := decode(bucketHistory, k, v, nil)
			if err != nil {
				return err
			}
			if keep := before - ord; uint64(len(pts)) > keep {
				pts = pts[:keep] // ordinals at or above before are newer than asked
			}
			chunks = append(chunks, pts)
			got += len(pts)
		}
		return nil
	})
	if err != nil {
		return dst, err
	}
	skip := max(got-n, 0)
	for i := len(chunks) - 1; i >= 0; i-- {
		pts := chunks[i]
		d := min(skip, len(pts))
		skip -= d
		dst = append(dst, pts[d:]...)
	}
	return dst, nil
}

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close snapshot database: %w", err)
	}
	return nil
}

// seriesPrefix is key + 0x00; keys never hold a zero byte.
func seriesPrefix(dst []byte, key string) []byte {
	dst = append(dst, key...)
	return append(dst, 0)
}

func chunkKey(dst []byte, key string, created, firstOrdinal uint64) []byte {
	dst = seriesPrefix(dst, key)
	dst = binary.BigEndian.AppendUint64(dst, created)
	return binary.BigEndian.AppendUint64(dst, firstOrdinal)
}

// deletePrefix deletes every key of b (named name) under prefix, counting
// the chunks it deletes in t.
func deletePrefix(b *bolt.Bucket, name, prefix []byte, t *tally) error {
	chunks := !bytes.Equal(name, bucketWatermark)
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Seek(prefix) {
		if chunks {
			if err := t.addStored(name, k, v, -1); err != nil {
				return err
			}
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// maxStateHeader is the most bytes encodeState writes before the tail:
// version and kind, three float64s, six varints and the tail's first
// ordinal.
const maxStateHeader = 2 + 3*8 + 7*binary.MaxVarintLen64

func encodeState(dst []byte, st *State) []byte {
	dst = append(dst, stateVersion, byte(st.Kind))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(st.Value))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(st.Running))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(st.Shown))
	dst = binary.AppendVarint(dst, st.WinStart)
	dst = binary.AppendVarint(dst, st.Interval)
	dst = binary.AppendVarint(dst, st.Updated)
	dst = binary.AppendUvarint(dst, st.Ordinal)
	dst = binary.AppendUvarint(dst, st.Created)
	dst = binary.AppendUvarint(dst, st.Covers)
	if len(st.Tail) == 0 {
		return binary.AppendUvarint(dst, 0)
	}
	dst = binary.AppendUvarint(dst, st.TailFirst)
	return append(dst, st.Tail...)
}

func decodeState(b []byte, st *State) error {
	if len(b) < 26 || b[0] < 1 || b[0] > stateVersion {
		return fmt.Errorf("%w: series state of %d bytes", ErrFormat, len(b))
	}
	b0 := b[0]
	*st = State{Kind: sample.Kind(b[1])}
	st.Value = math.Float64frombits(binary.LittleEndian.Uint64(b[2:]))
	st.Running = math.Float64frombits(binary.LittleEndian.Uint64(b[10:]))
	st.Shown = math.Float64frombits(binary.LittleEndian.Uint64(b[18:]))
	b = b[26:]
	var ok bool
	if st.WinStart, b, ok = varint(b); !ok {
		return fmt.Errorf("%w: window start", ErrFormat)
	}
	if st.Interval, b, ok = varint(b); !ok {
		return fmt.Errorf("%w: interval", ErrFormat)
	}
	if st.Updated, b, ok = varint(b); !ok {
		return fmt.Errorf("%w: updated", ErrFormat)
	}
	if st.Ordinal, b, ok = uvarint(b); !ok {
		return fmt.Errorf("%w: ordinal", ErrFormat)
	}
	if st.Created, b, ok = uvarint(b); !ok {
		return fmt.Errorf("%w: created", ErrFormat)
	}
	if b0 >= 2 {
		if st.Covers, b, ok = uvarint(b); !ok {
			return fmt.Errorf("%w: covers", ErrFormat)
		}
	}
	if b0 >= 3 {
		if st.TailFirst, b, ok = uvarint(b); !ok {
			return fmt.Errorf("%w: tail", ErrFormat)
		}
		if st.TailFirst == 0 && len(b) > 0 {
			return fmt.Errorf("%w: a tail without its first ordinal", ErrFormat)
		}
		if err := eachPiece(b, func([]byte) error { return nil }); err != nil {
			return err
		}
		st.Tail = b
	}
	return nil
}

func varint(b []byte) (int64, []byte, bool) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return 0, b, false
	}
	return v, b[n:], true
}

func uvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, b, false
	}
	return v, b[n:], true
}

// AppendChunk encodes pts (oldest first, at least one) as one chunk, in
// the current format (engine/internal/chunk, version 2).
func AppendChunk(dst []byte, pts []sample.Point) []byte { return chunk.Append(dst, pts) }

// chunkHeader returns the point count and the first and last times of a
// chunk of either version.
func chunkHeader(b []byte) (n uint64, first, last int64, err error) {
	n, first, last, _, err = chunk.Header(b)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return n, first, last, err
}

// DecodeChunk appends the points of chunk b, of either version, to dst.
func DecodeChunk(b []byte, dst []sample.Point) ([]sample.Point, error) {
	dst, err := chunk.Decode(b, dst)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return dst, err
}
