package engine

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// MaxKeyLen is the longest key the engine accepts.
const MaxKeyLen = 255

// MaxFuture is how far ahead of the server clock a write's own time
// (Op.Time) may be. Further ahead it is refused: a point in the future
// would make every write of its key until then out of order.
const MaxFuture = 10 * time.Minute

// DB is an open Sonde store. All exported methods may be called
// concurrently.
type DB struct {
	opts   Options
	logger *slog.Logger
	dir    string
	lock   *os.File
	wal    *wal.Log
	store  *snapshot.Store

	epochs    []epoch       // the epochs of event ids, the current one last; fixed at Open
	index     *index        // the series readers see
	published atomic.Uint64 // newest WAL index applied to the hot state
	synced    atomic.Uint64 // newest WAL index known to be fsynced
	feed      *feed
	events    eventMem    // status events not in snapshot.db yet (eventstore.go)
	status    status      // heartbeats and the alert queue (heartbeat.go)
	clients   clientTable // logatron clients (clients.go)

	notifyMu sync.Mutex    // guards notifyCh.
	notifyCh chan struct{} // closed and replaced when the feed grows

	sendMu sync.RWMutex // guards closed against sends on reqs.
	closed bool
	reqs   chan *request

	syncReq  chan chan error // snapshotter → committer: fsync now
	calls    chan func()     // snapshotter → committer: run this between groups
	snapReq  chan chan error // anyone → snapshotter: snapshot now
	snapKick chan struct{}   // committer → snapshotter: many records since the last one
	snapMu   sync.Mutex      // serialises snapshots.
	stopSnap chan struct{}
	// Guarded by snapMu: the records snapshots stored since Open, and the
	// compaction and retention passes (snapshot.go).
	stored        int64
	compaction    pass
	retention     pass
	snapshots     atomic.Int64 // snapshots taken since Open, empty ones included
	snapTxs       atomic.Int64 // their transactions
	snapLast      atomic.Int64 // ns the last snapshot that stored something took
	recovery      Recovery     // set by Open
	merged        atomic.Int64 // chunks compaction merged away since Open
	archived      atomic.Int64 // archive points written since Open
	expired       atomic.Int64 // chunks retention deleted since Open
	eventsExpired atomic.Int64 // stored events retention deleted since Open

	committerDone chan struct{}
	snapDone      chan struct{}

	// When the disk fails (docs/semantics.md, "When the disk fails"):
	failed        atomic.Pointer[error] // set for good: an fsync failed, or a failed write could not be cut off
	paused        atomic.Pointer[pause] // set while writes are paused after a write was cut off
	failures      atomic.Int64          // WAL writes that failed
	refused       atomic.Int64          // writes refused while paused
	snapErr       atomic.Pointer[error] // set for good when a snapshot failed other than for space
	snapFail      atomic.Int64          // snapshots that failed
	releaseFailed atomic.Bool           // a Release of mapped pages failed (logged once)

	committer // owned by the committer goroutine (and by Open before it starts)

	// Snapshotter-owned: the series the snapshot in progress (or a failed
	// one) has still to store, and the batch it writes.
	snapQueue []*series
	snapBatch batch
}

// committer is the state only the committer goroutine reads or writes.
type committer struct {
	series  map[string]*series // the committer's view: what its queued records leave
	windows windowHeap
	pend    []pending
	found   []*series   // the group's ops' series as the group began (commit)
	ticks   []string    // keys whose idle window ended in this group
	resent  bool        // an op of the group was a resend of a stored point (prepare)
	undo    []undoEntry // committer state before the group's changes
	group   uint64      // numbers the groups, for touch
	backoff time.Duration
	changes []sample.Change
	body    []byte
	// dirty lists the series changed since the last snapshot took the
	// list, each once: the series of generation dirtyGen.
	dirty    []*series
	dirtyGen uint64
	// replayMade lists the series replay created, for Open's index;
	// replaySlab is where they come from.
	replayMade []*series
	replaySlab seriesSlab
}

type request struct {
	ops    []sample.Op
	events []sample.Event // AppendEvents: the events, whose ID and Time the committer sets
	status []statusOp     // heartbeat operations, whose err the committer sets
	client *clientReq     // a logatron client's operation, whose errs the committer sets
	errs   []error
	acked  bool // Append: under FsyncAlways, fsync the group before answering
	done   chan error
}

type pending struct {
	s   *series
	rec record.Record
	idx uint64
}

// size is what the request counts for toward MaxGroup.
func (r *request) size() int {
	n := len(r.ops) + len(r.events) + len(r.status)
	if r.client != nil {
		n += 1 + len(r.client.writes)
	}
	return n
}

var reqPool = sync.Pool{New: func() any { return &request{done: make(chan error, 1)} }}

// pause is the state of writes after a WAL write was cut off: until
// `until`, writes are refused without touching the disk; then the next
// group is tried.
type pause struct {
	until time.Time
	since time.Time
	cause error
}

func (p *pause) refusal() error {
	return fmt.Errorf("%w after a failed wal write (%v); nothing was applied; next try in %s",
		ErrPaused, p.cause, time.Until(p.until).Round(time.Millisecond))
}

// Backoff between tries of a paused WAL.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// undoEntry is a series' committer state before a group changed it.
type undoEntry struct {
	s       *series
	c       committed
	created bool // the group created s
}

// Close stops taking writes, finishes the queued ones, takes a final
// snapshot and closes the files.
func (db *DB) Close() error {
	if !db.stop() {
		return ErrClosed
	}
	err := db.snapshotNow()
	db.closeFiles()
	if err != nil {
		return fmt.Errorf("final snapshot: %w", err)
	}
	return nil
}

// stop refuses new writes, lets the committer finish the queued ones and
// stops the snapshotter. It reports false when already stopped.
func (db *DB) stop() bool {
	db.sendMu.Lock()
	if db.closed {
		db.sendMu.Unlock()
		return false
	}
	db.closed = true
	close(db.reqs)
	db.sendMu.Unlock()
	<-db.committerDone
	close(db.stopSnap)
	<-db.snapDone
	return true
}
