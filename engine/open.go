package engine

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Open opens the store in dir, creating it when needed, and recovers it:
// the snapshot is loaded and the WAL replayed after the index it covers.
// A torn WAL tail is cut off (and logged); corruption elsewhere makes Open
// fail with an error wrapping a *wal.CorruptionError.
func Open(dir string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	db := &DB{
		opts: opts, logger: opts.Logger, dir: dir,
		committer: committer{series: make(map[string]*series), dirtyGen: 1},
		index:     newIndex(),
		notifyCh:  make(chan struct{}),
		events:    eventMem{notify: make(chan struct{})},
		status: status{hbs: map[string]*hb{}, checks: map[string]*sample.Check{}, alerts: map[uint64]sample.Alert{}, notify: make(chan struct{}),
			group: map[string]*hb{}, done: map[uint64]bool{}},
		clients:       clientTable{m: map[string]*client{}, notify: make(chan struct{}), dirty: map[string]bool{}, forgot: map[string]bool{}},
		reqs:          make(chan *request, 1024),
		syncReq:       make(chan chan error),
		calls:         make(chan func()),
		snapReq:       make(chan chan error),
		snapKick:      make(chan struct{}, 1),
		stopSnap:      make(chan struct{}),
		committerDone: make(chan struct{}),
		snapDone:      make(chan struct{}),
	}
	var err error
	if db.lock, err = lockDir(dir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			db.closeFiles()
		}
	}()
	if db.store, err = snapshot.Open(filepath.Join(dir, "snapshot.db")); err != nil {
		return nil, err
	}
	db.store.SetChunkPoints(db.opts.ChunkPoints)
	db.store.SetMaxSpan(db.maxChunkSpan)
	var hooks *wal.Hooks
	if opts.faults != nil {
		hooks = &opts.faults.wal
		db.store.SetCommitHook(opts.faults.commit)
	}
	db.wal, err = wal.Open(filepath.Join(dir, "wal"), wal.Options{
		SegmentSize: opts.SegmentSize,
		Logger:      db.logger.With("component", "wal"),
		Hooks:       hooks,
		Covered:     db.store.Index(),
	})
	if err != nil {
		return nil, fmt.Errorf("open wal: %w", err)
	}
	start := time.Now()
	if err := db.recover(); err != nil {
		return nil, err
	}
	db.logger.Info("recovered", "series", len(db.series), "snapshot_index", db.store.Index(),
		"wal_index", db.published.Load(), "replayed", db.recovery.Replayed, "covered", db.recovery.Covered,
		"took", time.Since(start))
	if db.epochs, err = startEpoch(dir, db.published.Load()); err != nil {
		// Clients from an earlier epoch then get the whole state (the
		// file does not vouch for them); this epoch holds in this process.
		db.logger.Warn("epochs file; clients resuming from before this start get the whole state", "err", err)
	}
	db.feed = newFeed(opts.EventBuffer, db.published.Load())
	db.startHeartbeats()
	go db.run()
	db.startClients()
	go db.snapshotLoop()
	ok = true
	return db, nil
}

// lockDir takes the data directory's lock (flock on dir/LOCK), held
// until the file returned is closed.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return f, nil
}

func (db *DB) closeFiles() {
	if db.wal != nil {
		if err := db.wal.Close(); err != nil {
			db.logger.Error("close wal", "err", err)
		}
	}
	if db.store != nil {
		if err := db.store.Close(); err != nil {
			db.logger.Error("close snapshot", "err", err)
		}
	}
	if db.lock != nil {
		db.lock.Close() // releases the flock
	}
}

// recover loads the snapshot and replays the WAL after it. A series
// whose stored state covers records past the snapshot's index (Covers)
// skips those.
func (db *DB) recover() error {
	var covers uint64    // the newest record any stored state covers
	var loaded []*series // in key order, as bbolt stores them
	var slab seriesSlab
	err := db.store.Load(func(st *snapshot.State) error {
		s := slab.next()
		s.init(st.Key, st.Kind, st.Interval, st.Created, db.opts.RingSize, st.Ordinal+1)
		s.c.value, s.c.running, s.c.shown = st.Value, st.Running, st.Shown
		s.c.winStart, s.c.ordinal, s.c.updated = st.WinStart, st.Ordinal, st.Updated
		s.c.lastIdx = st.Covers
		covers = max(covers, st.Covers)
		s.flushed.Store(st.Ordinal)
		s.value.Store(math.Float64bits(st.Value))
		view := st.Value
		if st.Kind == sample.Counter {
			view = st.Shown
		}
		s.view.Store(math.Float64bits(view))
		s.updated.Store(st.Updated)
		loaded = append(loaded, s)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load snapshot: %w", err)
	}
	// The readers' index of the stored series is built on another core
	// while this one builds the committer's map and replays the WAL
	// (replay changes neither the index nor the keys it reads); what
	// replay changed is patched in after. In key order, as bbolt stores
	// them: a B-tree filled in a map's random order took half of a
	// restart in comparisons that miss the cache.
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		db.index.mu.Lock()
		for _, s := range loaded {
			db.index.put(s)
		}
		db.index.mu.Unlock()
	}()
	defer func() { <-indexed }() // on every return: nothing may touch the index after
	// Sized once: growing a map of a million keys step by step took a
	// third of a restart.
	db.series = make(map[string]*series, len(loaded))
	for _, s := range loaded {
		db.series[s.key] = s
	}
	snapIdx := db.store.Index()
	db.events.through = snapIdx
	if err := db.loadStatus(); err != nil {
		return err
	}
	if err := db.loadClients(); err != nil {
		return err
	}
	first, err := db.wal.FirstIndex()
	if err != nil {
		return fmt.Errorf("read wal first index: %w", err)
	}
	last, err := db.wal.LastIndex()
	if err != nil {
		return fmt.Errorf("read wal last index: %w", err)
	}
	if last < snapIdx {
		return fmt.Errorf("recover: the snapshot covers wal index %d but the wal ends at %d: wal segments are missing", snapIdx, last)
	}
	if last > snapIdx && first > snapIdx+1 {
		return fmt.Errorf("recover: the wal starts at index %d but the snapshot ends at %d: wal segments are missing", first, snapIdx)
	}
	if covers > last {
		return fmt.Errorf("recover: a stored series covers wal index %d but the wal ends at %d: wal segments are missing", covers, last)
	}
	var r record.Record
	for i := snapIdx + 1; i <= last; i++ {
		body, err := db.wal.Read(i)
		if err != nil {
			return fmt.Errorf("replay wal: %w", err)
		}
		key, err := record.DecodeView(body, &r)
		if err != nil {
			return fmt.Errorf("replay wal: %w", &wal.CorruptionError{Index: i, Offset: -1, Err: err})
		}
		if r.Code == record.Event {
			r.Key = string(key)
			ev := eventOf(&r, i)
			db.events.list = append(db.events.list, ev)
			db.events.bytes += eventCost(&ev)
			db.recovery.Replayed++
			continue
		}
		if isStatus(r.Code) {
			r.Key = string(key)
			db.status.applyStatus(&r, i)
			db.recovery.Replayed++
			continue
		}
		if isClientRec(r.Code) {
			r.Key = string(key)
			db.clients.apply(&r, i, db.opts.ClientRing)
			db.recovery.Replayed++
			continue
		}
		if err := db.replay(&r, key, i); err != nil {
			return fmt.Errorf("replay wal index %d: %w", i, err)
		}
	}
	<-indexed
	// Replay's DELETE marks the series it ends (a key made again was
	// deleted first), so no map lookup is needed to tell what is current.
	made := db.replayMade[:0]
	for _, s := range db.replayMade {
		if !s.c.deleted {
			made = append(made, s)
		}
	}
	db.replayMade, db.replaySlab = nil, nil
	slices.SortFunc(made, func(a, b *series) int { return strings.Compare(a.key, b.key) })
	db.index.mu.Lock()
	for _, s := range loaded {
		if s.c.deleted {
			db.index.remove(s)
		} else if s.kind == sample.Counter {
			db.windows.schedule(s)
		}
	}
	for _, s := range made {
		db.index.put(s)
		if s.kind == sample.Counter {
			db.windows.schedule(s)
		}
	}
	db.index.mu.Unlock()
	db.published.Store(last)
	db.synced.Store(last)
	return nil
}

// replay applies one WAL record, whose key is key, during recovery.
func (db *DB) replay(r *record.Record, key []byte, idx uint64) error {
	s := db.series[string(key)]
	if s != nil {
		if idx <= s.c.lastIdx {
			db.recovery.Covered++
			return nil // the stored state holds it (a snapshot was under way)
		}
		r.Key = s.key
	} else {
		r.Key = string(key)
	}
	switch r.Code {
	case sample.Delete:
		if s != nil {
			delete(db.series, r.Key)
			s.c.deleted = true
			db.changed(s, r.Code, idx)
		}
		db.recovery.Replayed++
		return nil
	case sample.Window:
		if s == nil {
			return fmt.Errorf("window record for missing key %q", r.Key)
		}
	default:
		if r.Ordinal == 1 {
			kind := sample.Gauge
			if record.IsCounter(r.Code) {
				kind = sample.Counter
			}
			s = db.replaySlab.next()
			s.init(r.Key, kind, r.Interval, idx, db.opts.RingSize, 1)
			db.series[r.Key] = s
			db.replayMade = append(db.replayMade, s)
		} else if s == nil {
			return fmt.Errorf("record for missing key %q", r.Key)
		}
		if s.ring.Next() != r.Ordinal {
			return fmt.Errorf("key %q: record ordinal %d, expected %d", r.Key, r.Ordinal, s.ring.Next())
		}
	}
	s.fromRecord(r)
	s.publish(r)
	db.changed(s, r.Code, idx)
	db.recovery.Replayed++
	return nil
}
