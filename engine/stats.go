package engine

import (
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
)

// Stats is a summary of the engine's state.
type Stats struct {
	Series        int    `json:"series"`
	Index         uint64 `json:"wal_index"`
	SyncedIndex   uint64 `json:"synced_index"`
	SnapshotIndex uint64 `json:"snapshot_index"`
	WALFirstIndex uint64 `json:"wal_first_index"`
	// WALBytes is the size of the WAL's files on disk.
	WALBytes int64 `json:"wal_bytes"`
	// History is the stored history as of the last snapshot database
	// commit (exact: every transaction keeps the totals): chunks,
	// points, bytes of chunks, the database file, and file bytes per point.
	History *HistoryStats `json:"history,omitempty"`
	// Compacted counts the chunks compaction merged into others since the
	// store opened.
	Compacted int64 `json:"compacted_chunks"`
	// Archived counts the archive points retention wrote, Expired the raw
	// and archive chunks it deleted, since the store opened.
	Archived int64 `json:"archived_points"`
	Expired  int64 `json:"expired_chunks"`
	// IdleWindows counts the ends of idle counting windows since the store
	// opened: published to subscribers, not stored.
	IdleWindows uint64 `json:"idle_windows"`
	// WAL says whether writes are taken (docs/semantics.md, "When the
	// disk fails").
	WAL WALState `json:"wal"`
	// Snapshots counts failed snapshot database writes, and says why
	// snapshots stopped when they did.
	Snapshots SnapshotState `json:"snapshots"`
	// Recovery is what Open replayed.
	Recovery Recovery `json:"recovery"`
	// Events are the status events held and stored.
	Events EventStats `json:"events"`
}

// EventStats counts the status events: those held in memory until the
// next snapshot stores them (and their cost against
// Options.EventMemory), those snapshot.db holds (and their bytes, which
// Options.EventMaxBytes bounds), and those retention deleted since Open.
type EventStats struct {
	Held        int   `json:"held"`
	HeldBytes   int   `json:"held_bytes"`
	Stored      int64 `json:"stored"`
	StoredBytes int64 `json:"stored_bytes"`
	Expired     int64 `json:"expired"`
}

// Recovery is what Open replayed of the WAL: the records after the
// snapshot's index it applied, and those it skipped because a series'
// stored state held them already (a snapshot was stopped between its
// transactions).
type Recovery struct {
	Replayed int64 `json:"replayed"`
	Covered  int64 `json:"covered"`
}

// WALState is the state of writes.
type WALState struct {
	// State is "ok"; "paused" after a write failed and was cut off (a
	// full disk): writes are refused until the next try (RetryInMs);
	// or "failed" until a restart (a failed fsync).
	State         string `json:"state"`
	Error         string `json:"error,omitempty"`
	RetryInMs     int64  `json:"retry_in_ms,omitempty"`
	WriteFailures int64  `json:"write_failures"`
	// Refused counts writes refused while paused, without trying the disk.
	Refused int64 `json:"refused_while_paused"`
}

// SnapshotState is the state of snapshots.
type SnapshotState struct {
	State    string `json:"state"` // "ok", or "off" until a restart
	Error    string `json:"error,omitempty"`
	Failures int64  `json:"failures"`
	// Taken counts the snapshots taken since the store opened, empty ones
	// included; CompactionPasses and RetentionPasses the passes over the
	// stored history that ended. A pass runs only when snapshots stored
	// something since the last one began, or (retention) a minute after
	// the last one ended.
	Taken int64 `json:"taken"`
	// Transactions counts the snapshot database transactions snapshots
	// wrote (a snapshot writes its series in transactions of at most
	// Options.SnapshotMemory/4 bytes).
	Transactions int64 `json:"transactions"`
	// LastSeconds is how long the last snapshot that stored something
	// took, WAL truncation included (0 until one has).
	LastSeconds      float64 `json:"last_seconds"`
	CompactionPasses int64   `json:"compaction_passes"`
	RetentionPasses  int64   `json:"retention_passes"`
}

// HistoryStats is the size of the stored history; bytes per point are
// over raw and archive points together.
type HistoryStats struct {
	snapshot.HistoryTotals
	BytesPerPoint     float64 `json:"bytes_per_point"`      // chunk keys and values
	UsedBytesPerPoint float64 `json:"used_bytes_per_point"` // the snapshot database's pages in use
	FileBytesPerPoint float64 `json:"file_bytes_per_point"` // its file
}

// Stats returns a summary of the engine's state.
func (db *DB) Stats() Stats {
	st := Stats{Index: db.published.Load(), SyncedIndex: db.synced.Load(), SnapshotIndex: db.store.Index(), Compacted: db.merged.Load(),
		Archived: db.archived.Load(), Expired: db.expired.Load()}
	st.WALFirstIndex, _ = db.wal.FirstIndex()
	st.WALBytes, _ = db.wal.Bytes()
	if h, err := db.store.Totals(); err == nil {
		st.History = &HistoryStats{HistoryTotals: h}
		if n := float64(h.Points + h.ArchivePoints); n > 0 {
			st.History.BytesPerPoint = float64(h.Bytes) / n
			st.History.UsedBytesPerPoint = float64(h.UsedBytes) / n
			st.History.FileBytesPerPoint = float64(h.FileBytes) / n
		}
	}
	st.Series = db.index.len()
	db.feed.mu.RLock()
	st.IdleWindows = db.feed.ticks
	db.feed.mu.RUnlock()
	st.WAL = WALState{State: "ok", WriteFailures: db.failures.Load(), Refused: db.refused.Load()}
	if p := db.failed.Load(); p != nil {
		st.WAL.State, st.WAL.Error = "failed", (*p).Error()
	} else if p := db.paused.Load(); p != nil {
		st.WAL.State, st.WAL.Error = "paused", p.cause.Error()
		st.WAL.RetryInMs = max(time.Until(p.until).Milliseconds(), 0)
	}
	st.Recovery = db.recovery
	db.events.mu.RLock()
	st.Events.Held, st.Events.HeldBytes = len(db.events.list), db.events.bytes
	db.events.mu.RUnlock()
	et := db.store.EventTotals()
	st.Events.Stored, st.Events.StoredBytes, st.Events.Expired = et.Count, et.Bytes, db.eventsExpired.Load()
	st.Snapshots = SnapshotState{State: "ok", Failures: db.snapFail.Load(), Taken: db.snapshots.Load(), Transactions: db.snapTxs.Load(),
		LastSeconds:      time.Duration(db.snapLast.Load()).Seconds(),
		CompactionPasses: db.compaction.done.Load(), RetentionPasses: db.retention.done.Load()}
	if p := db.snapErr.Load(); p != nil {
		st.Snapshots.State, st.Snapshots.Error = "off", (*p).Error()
	}
	return st
}
