package engine

import (
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// FsyncPolicy says when the committer fsyncs the WAL, and so when a write
// is acknowledged.
type FsyncPolicy int

const (
	// FsyncAlways fsyncs every group before acknowledging it (the default).
	// A group of AppendUnacked writes only is not fsynced: the next
	// acknowledged group or, at most FsyncInterval later, the committer
	// fsyncs it, as under FsyncInterval.
	FsyncAlways FsyncPolicy = iota
	// FsyncInterval acknowledges once the group is written to the OS and
	// fsyncs at most FsyncInterval after it: a power loss may lose that
	// much. A process crash loses nothing.
	FsyncInterval
	// FsyncNever leaves flushing to the OS (and to snapshots). UNSAFE on
	// power loss; a process crash loses nothing.
	FsyncNever
)

// ParseFsyncPolicy parses "always", "interval" or "never".
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	switch s {
	case "always", "":
		return FsyncAlways, nil
	case "interval":
		return FsyncInterval, nil
	case "never":
		return FsyncNever, nil
	}
	return 0, fmt.Errorf("unknown fsync policy %q (want always, interval or never)", s)
}

func (p FsyncPolicy) String() string {
	switch p {
	case FsyncAlways:
		return "always"
	case FsyncInterval:
		return "interval"
	case FsyncNever:
		return "never"
	}
	return fmt.Sprintf("FsyncPolicy(%d)", int(p))
}

// Options configure a DB. The zero value means the defaults given below.
type Options struct {
	// Fsync is the durability policy; default FsyncAlways.
	Fsync FsyncPolicy
	// FsyncInterval is the longest a group stays unfsynced under
	// FsyncInterval, and an AppendUnacked group under FsyncAlways; default
	// 100 ms.
	FsyncInterval time.Duration
	// SnapshotInterval is how often changes are stored into the snapshot
	// database; default 30 s. Every snapshot rewrites the state and tail of
	// each series changed since the last one, so under a steady load over
	// many series a third as many snapshots cost the server about 18 % less
	// CPU than at 10 s (docs/benchmarks.md). The WAL holds up to that much
	// more (SnapshotRecords still bounds it, and so the replay after a
	// crash and the points held in memory), and a burst's work is still done
	// when it ends (SnapshotQuiet).
	SnapshotInterval time.Duration
	// SnapshotRecords starts a snapshot early once this many records were
	// written since the last one; default 1<<23 (8M). Each snapshot writes
	// a page per changed key, so at high rates fewer, larger snapshots cost
	// far less; the bound on replay is the price (10M records replay in
	// about 7 s, docs/benchmarks.md).
	SnapshotRecords int
	// SnapshotQuiet starts a snapshot early once no record was written for
	// this long and at least SnapshotQuietRecords records wait to be
	// stored: the work a burst defers (folding its points into history,
	// cutting the WAL) is done once the burst is over, not up to
	// SnapshotInterval later, and the ring memory its unstored points hold
	// goes back. Writes are checked every SnapshotQuiet, so a snapshot
	// starts between one and two of it after the last write. Default 1 s;
	// negative turns it off.
	SnapshotQuiet time.Duration
	// SnapshotQuietRecords is how many records must wait for a quiet
	// snapshot to start (default 65536): a trickle of writes waits for
	// SnapshotInterval, so it does not cost a snapshot at each pause.
	SnapshotQuietRecords int
	// SnapshotMemory bounds the memory one snapshot uses, whatever the
	// number of changed series, beyond 8 bytes per changed series: it
	// writes them in transactions of at most a quarter of it of encoded
	// states and chunks (bbolt's dirty pages take the rest); default
	// 16 MiB (docs/benchmarks.md: against 64 MiB, 12-15 % less peak RSS
	// and a smaller file under a steady load, the same CPU).
	SnapshotMemory int
	// ChunkPoints is how many points compaction gathers into one history
	// chunk; default 4096 (11 hours at 10 s). Larger chunks waste less of
	// bbolt's 4 KiB pages: a realistic day took 2.47 bytes a point in use
	// at 1024, 1.83 at 4096 (docs/benchmarks.md). A snapshot writes a small chunk per changed key;
	// after it, the snapshotter merges contiguous small chunks of a series
	// (docs/format/snapshot.md). Negative turns compaction off.
	ChunkPoints int
	// CompactBudget caps the chunks one compaction transaction rewrites,
	// and CompactTime the time the snapshotter spends compacting after
	// each snapshot; defaults 8192 and 1 s.
	CompactBudget int
	CompactTime   time.Duration
	// Retention says how long each key's raw points are kept and which
	// archives they are folded into (*retention.Policies is one); nil
	// keeps raw points for ever, without archives. The snapshotter applies
	// it after snapshots, for up to CompactTime each time.
	Retention Retention
	// RetainEvery is the least time between the end of a retention pass
	// and the start of the next (default 1 min): a pass walks every
	// series. A pass starts once it has passed and either new points
	// were stored or some stored history may have work by now.
	RetainEvery time.Duration
	// RingSize is how many of its newest stored points each series also
	// keeps in memory, for reads that would otherwise go to the snapshot
	// database; default 0. Whatever it is, a series keeps every point the
	// snapshot database does not hold yet, and the block of points being
	// filled (docs/architecture.md, "History reads").
	RingSize int
	// MaxSeries caps how many keys may exist; default 1,000,000.
	MaxSeries int
	// DefaultWindow is the counting window of an INCR key created without
	// one; default 60 s (mesures).
	DefaultWindow time.Duration
	// MinWindow is the shortest counting window an INCR may ask for;
	// default 1 s. Every window end costs the committer a heap operation
	// (and a WAL record when the window counted something), so it bounds
	// that cost at MaxSeries / MinWindow per second.
	MinWindow time.Duration
	// EventBuffer is how many recent entries of the change feed (changes
	// and idle window ends) are kept in memory for subscribers; older
	// changes are read back from the WAL. Default 65536.
	EventBuffer int
	// EventRetention is how long status events are kept, by their time;
	// default 90 days. An event older than that is refused when it is
	// written, and deleted from the store once it is.
	EventRetention time.Duration
	// EventMaxBytes bounds the stored events' size (keys and values in
	// snapshot.db); the oldest are deleted past it. Default 1 GiB;
	// negative: no bound but the retention.
	EventMaxBytes int64
	// EventMemory bounds the events held in memory while they wait for a
	// snapshot (its bytes of service and message, plus 64 a event); past
	// half of it a snapshot starts, past it events are refused with
	// ErrBacklog until one has stored them. Default 64 MiB.
	EventMemory int
	// MaxHeartbeats caps the heartbeats (a cancelled one counts for a
	// week); default 10,000. MaxAlerts caps the alerts waiting for
	// delivery; past it a new alert is not queued, and an event says so.
	// Default 10,000.
	MaxHeartbeats int
	MaxAlerts     int
	// MaxClients caps the logatron clients kept, connected or not;
	// default 256. A new name past it takes the place of the client that
	// disconnected longest ago, or is refused (ErrTooManyClients) when
	// all are connected. ClientRing is how many log lines each keeps
	// (default 128, logatron's), MaxClientKeys how many state keys
	// (default 64; past it ErrTooManyKeys).
	MaxClients    int
	ClientRing    int
	MaxClientKeys int
	// Holds keep the WAL records their readers (remote_write forwarders)
	// have not taken: a snapshot cuts the WAL only below the oldest of them
	// (forward.go), unless the segments kept would pass MaxHeld bytes
	// (default 1 GiB; negative: no bound); then the oldest segments go,
	// logged as an error, and the reader finds ReadPoints' ErrCut.
	Holds   []*Hold
	MaxHeld int64
	// MaxGroup caps the operations in one group commit; default 16384.
	MaxGroup int
	// SegmentSize is the WAL segment size; default 8 MiB.
	SegmentSize int
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// OnFatal is called by the committer when a failed WAL write could not
	// be cut off the log, so that its outcome is unknown (docs/semantics.md,
	// "When the disk fails"). cmd/sonde exits there, without answering the
	// batch's writers, as PostgreSQL does on a failed fsync. When OnFatal is
	// nil or returns, the writers get an error saying the outcome is
	// unknown, and every later write is refused.
	OnFatal func(error)
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time

	faults *faults // injected I/O failures, in tests
	// captureBatch overrides how many series a snapshot captures at a
	// time (captureBatch), in tests.
	captureBatch int
}

// faults wrap the engine's calls into the WAL and the snapshot database
// (see wal.Hooks), so tests can make them fail as a full or failing disk
// does.
type faults struct {
	wal    wal.Hooks
	commit func(commit func() error) error // one snapshot transaction
	quiet  func(started bool)              // after each quiet check of the snapshotter
}

func (o Options) withDefaults() Options {
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = 100 * time.Millisecond
	}
	if o.SnapshotInterval <= 0 {
		o.SnapshotInterval = 30 * time.Second
	}
	if o.SnapshotRecords <= 0 {
		o.SnapshotRecords = 1 << 23
	}
	if o.SnapshotQuiet == 0 {
		o.SnapshotQuiet = time.Second
	}
	if o.SnapshotQuietRecords <= 0 {
		o.SnapshotQuietRecords = 1 << 16
	}
	if o.SnapshotMemory <= 0 {
		o.SnapshotMemory = 16 << 20
	}
	if o.ChunkPoints == 0 {
		o.ChunkPoints = 4096
	}
	if o.CompactBudget <= 0 {
		o.CompactBudget = 8192
	}
	if o.CompactTime <= 0 {
		o.CompactTime = time.Second
	}
	if o.Retention == nil {
		o.Retention = keepForever{}
	}
	if o.RetainEvery <= 0 {
		o.RetainEvery = time.Minute
	}
	o.RingSize = max(o.RingSize, 0)
	if o.MaxSeries <= 0 {
		o.MaxSeries = 1_000_000
	}
	if o.MinWindow <= 0 {
		o.MinWindow = time.Second
	}
	if o.DefaultWindow <= 0 {
		o.DefaultWindow = 60 * time.Second
	}
	o.DefaultWindow = max(o.DefaultWindow, o.MinWindow)
	if o.EventBuffer <= 0 {
		o.EventBuffer = 1 << 16
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 16384
	}
	if o.MaxHeartbeats <= 0 {
		o.MaxHeartbeats = 10_000
	}
	if o.MaxAlerts <= 0 {
		o.MaxAlerts = 10_000
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 256
	}
	if o.ClientRing <= 0 {
		o.ClientRing = 128
	}
	if o.MaxClientKeys <= 0 {
		o.MaxClientKeys = 64
	}
	if o.EventRetention <= 0 {
		o.EventRetention = 90 * 24 * time.Hour
	}
	if o.EventMaxBytes == 0 {
		o.EventMaxBytes = 1 << 30
	}
	if o.MaxHeld == 0 {
		o.MaxHeld = 1 << 30
	}
	if o.EventMemory <= 0 {
		o.EventMemory = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Retention is how the engine learns each series' retention. The engine
// declares it, so that it knows nothing of where policies come from
// (package retention parses and matches them).
type Retention interface {
	Keep(key string, kind sample.Kind) sample.Keep
}

// keepForever keeps raw points for ever, without archives.
type keepForever struct{}

func (keepForever) Keep(string, sample.Kind) sample.Keep {
	return sample.Keep{Raw: time.Duration(math.MaxInt64), Agg: sample.Avg}
}
