package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/internal/wal"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Report is what Check found in a data directory, or what Repair did.
type Report struct {
	Dir           string
	SnapshotIndex uint64 // the WAL index snapshot.db covers
	Series        int    // series stored in snapshot.db
	Entries       map[string]int
	Pages         Pages  // Check's: how snapshot.db's pages are used
	Records       int    // WAL records that read back
	WALFirst      uint64 // first and last WAL index read (0: none)
	WALLast       uint64
	// Problems is the damage found, one line each; Check's directory is
	// clean when it is empty.
	Problems []string
	// Lost is, for Repair, what the repaired directory no longer holds,
	// one line each; Backup is where the damaged files went.
	Lost   []string
	Backup string

	origLast uint64 // Repair: the last index the damaged WAL reached
}

// Pages says how the pages of snapshot.db are used: where its size goes
// (snapshot.FilePages: the pages up to the highest in use, the free ones
// among them, and per bucket, "" being the tree of bucket names, its
// pages and the bytes written in them; Partial when damage in the tree
// left some pages unread).
type Pages struct {
	snapshot.FilePages
}

// probableKey names the key a damaged record seems to be about, when its
// body still decodes.
func probableKey(p wal.ScanProblem) string {
	var r record.Record
	if p.Body == nil || record.Decode(p.Body, &r) != nil {
		return ""
	}
	return fmt.Sprintf(" (it looks like a write to %q)", r.Key)
}

// Clean reports whether Check found no damage.
func (r *Report) Clean() bool { return len(r.Problems) == 0 }

// chain follows one key through the WAL as replay does: whether it
// exists, its type and its newest history ordinal.
type chain struct {
	exists  bool
	kind    sample.Kind
	ordinal uint64 // the newest history ordinal, as renumbered
	read    uint64 // that point's ordinal as the WAL had it
	covers  uint64 // the stored state holds this key's records up to this WAL index
}

// covered reports whether the stored state of r's key holds the record
// at WAL index idx already (a snapshot was under way): replay skips it.
func covered(chains map[string]*chain, r *record.Record, idx uint64) bool {
	c := chains[r.Key]
	return c != nil && idx <= c.covers
}

// Check reads a data directory the way startup does, without changing it
// and without trusting any of it: every page and value of snapshot.db,
// every WAL record's frame, and whether the records after the snapshot
// follow on from it (what startup would refuse). The directory must not
// be open by a running sonde.
func Check(dir string) (*Report, error) {
	unlock, err := lockFile(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rep := &Report{Dir: dir}
	fr, err := snapshot.CheckFile(filepath.Join(dir, "snapshot.db"))
	if err != nil {
		return nil, fmt.Errorf("check snapshot.db: %w", err)
	}
	rep.SnapshotIndex, rep.Entries = fr.Index, fr.Entries
	rep.Series = fr.Entries["series"]
	rep.Pages = Pages{FilePages: fr.Pages}
	for _, p := range fr.Problems {
		rep.Problems = append(rep.Problems, p.String())
	}
	recs, probs, next, err := wal.Scan(filepath.Join(dir, "wal"))
	if err != nil {
		return nil, fmt.Errorf("check the wal: %w", err)
	}
	rep.Records = len(recs)
	if len(recs) > 0 {
		rep.WALFirst, rep.WALLast = recs[0].Index, recs[len(recs)-1].Index
	}
	if n := wal.IncompleteGroup(recs); n > 0 && recs[len(recs)-1].Index > fr.Index {
		rep.Problems = append(rep.Problems, incompleteGroup(recs, n, fr.Index)+": the next start drops them")
	}
	for _, p := range probs {
		line := "wal: " + p.String() + probableKey(p)
		if p.Last >= p.First && p.Last <= fr.Index {
			line += "; the snapshot holds them, so nothing is missing"
		}
		rep.Problems = append(rep.Problems, line)
	}
	// What replay would meet: a gap after the snapshot, or a record that
	// does not follow on from the one before for its key.
	chains, _, err := storedChains(filepath.Join(dir, "snapshot.db"), len(fr.Problems) > 0)
	if err != nil {
		return nil, err
	}
	want := fr.Index + 1 // the index replay needs next
	for _, s := range recs {
		if s.Index <= fr.Index {
			continue
		}
		if s.Index != want {
			rep.Problems = append(rep.Problems, fmt.Sprintf("wal: records %d to %d, after the snapshot, are missing", want, s.Index-1))
		}
		want = s.Index + 1
		var r record.Record
		if err := record.Decode(s.Body, &r); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("wal: record %d does not decode: %v", s.Index, err))
			continue
		}
		if noSeries(r.Code) {
			continue // a status event, heartbeat or client record follows on from nothing
		}
		if covered(chains, &r, s.Index) {
			continue
		}
		if _, note := follow(chains, &r); note != "" {
			rep.Problems = append(rep.Problems, fmt.Sprintf("wal: record %d: %s", s.Index, note))
		}
	}
	if fr.Index > 0 && (next == 0 || next-1 < fr.Index) {
		rep.Problems = append(rep.Problems, fmt.Sprintf("wal: it ends before index %d, which the snapshot covers: segments are missing", fr.Index))
	}
	return rep, nil
}

// storedChains reads the series states of snapshot.db. When the file has
// damage, the states are read from what a salvage keeps.
func storedChains(path string, damaged bool) (map[string]*chain, map[string]uint64, error) {
	chains, clients := map[string]*chain{}, map[string]uint64{}
	if damaged {
		tmp, err := os.MkdirTemp("", "sonde-check")
		if err != nil {
			return nil, nil, err
		}
		defer os.RemoveAll(tmp)
		if _, err := snapshot.Salvage(path, filepath.Join(tmp, "snapshot.db")); err != nil {
			return nil, nil, err
		}
		path = filepath.Join(tmp, "snapshot.db")
	} else if _, err := os.Stat(path); os.IsNotExist(err) {
		return chains, clients, nil
	}
	st, err := snapshot.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read series states: %w", err)
	}
	defer st.Close()
	err = st.Load(func(s *snapshot.State) error {
		chains[s.Key] = &chain{exists: true, kind: s.Kind, ordinal: s.Ordinal, read: s.Ordinal, covers: s.Covers}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read series states: %w", err)
	}
	cs, err := st.LoadClients()
	if err != nil {
		return nil, nil, fmt.Errorf("read clients: %w", err)
	}
	for _, c := range cs {
		clients[c.Name] = c.Covers
	}
	return chains, clients, nil
}

// follow applies record r to the chains as replay would, and says what
// does not follow on: keep is false for a record replay cannot apply at
// all; a record that can be made to follow on is fixed in place (its
// ordinal). note is empty when r follows on as it is.
func follow(chains map[string]*chain, r *record.Record) (keep bool, note string) {
	c := chains[r.Key]
	if c == nil {
		c = &chain{}
		chains[r.Key] = c
	}
	switch r.Code {
	case sample.Delete:
		if !c.exists {
			return false, fmt.Sprintf("DELETE of %q, which does not exist (the records that made it were lost)", r.Key)
		}
		c.exists = false
		return true, ""
	case sample.Window:
		if !c.exists || c.kind != sample.Counter {
			return false, fmt.Sprintf("a window end of %q, which is not a COUNTER (the records that made it were lost)", r.Key)
		}
		if r.Ordinal != c.read {
			note = fmt.Sprintf("a window end of %q at history point %d, but its newest point is %d (records were lost)", r.Key, r.Ordinal, c.read)
		}
		r.Ordinal = c.ordinal
		return true, note
	case sample.Set, sample.Incr, sample.CounterSet:
	default:
		return false, fmt.Sprintf("an unknown operation %d on %q", r.Code, r.Key)
	}
	kind := sample.Gauge
	if record.IsCounter(r.Code) {
		kind = sample.Counter
	}
	read := r.Ordinal
	switch {
	case r.Ordinal == 1:
		*c = chain{exists: true, kind: kind, ordinal: 1, read: 1}
		return true, ""
	case !c.exists:
		note = fmt.Sprintf("%q at history point %d, but the records that created it were lost: its history starts again here", r.Key, r.Ordinal)
		r.Ordinal = 1
		*c = chain{exists: true, kind: kind, ordinal: 1, read: read}
		return true, note
	case c.kind != kind:
		return false, fmt.Sprintf("a %s write to %q, which is a %s (records were lost)", kind, r.Key, c.kind)
	case read != c.read+1:
		note = fmt.Sprintf("%q jumps from history point %d to %d: the points between were lost", r.Key, c.read, read)
	}
	c.ordinal++
	c.read = read
	r.Ordinal = c.ordinal
	return true, note
}

// Repair rebuilds a damaged data directory from what is intact: every
// readable series, chunk and archive of snapshot.db, and every readable
// WAL record after it, renumbered so that they follow on. The damaged
// snapshot.db and wal/ are moved, untouched, to a damaged-<time>
// directory inside dir first; nothing is deleted. The report lists
// exactly what the repaired directory lost. The directory must not be
// open by a running sonde.
func Repair(dir string) (*Report, error) {
	unlock, err := lockFile(dir)
	if err != nil {
		return nil, err
	}
	rep := &Report{Dir: dir}
	err = repair(dir, rep)
	unlock()
	if err != nil {
		return rep, err
	}
	// The repaired directory must open as any other: replay, then a
	// final snapshot that holds everything.
	db, err := Open(dir, Options{SnapshotInterval: time.Hour})
	if err != nil {
		return rep, fmt.Errorf("open the repaired directory: %w", err)
	}
	last := db.Index()
	if err := db.Close(); err != nil {
		return rep, fmt.Errorf("close the repaired directory: %w", err)
	}
	// Records were renumbered to follow on; event ids go on after the ones
	// the damaged WAL reached, so that no subscriber resumes into others.
	if rep.origLast > last {
		if err := restartIDs(dir, rep.origLast); err != nil {
			return rep, err
		}
	}
	after, err := Check(dir)
	if err != nil {
		return rep, fmt.Errorf("check the repaired directory: %w", err)
	}
	if !after.Clean() {
		return rep, fmt.Errorf("the repaired directory is not clean: %v", after.Problems)
	}
	rep.SnapshotIndex, rep.Series, rep.Entries = after.SnapshotIndex, after.Series, after.Entries
	return rep, nil
}

func repair(dir string, rep *Report) error {
	rep.Backup = filepath.Join(dir, "damaged-"+time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Mkdir(rep.Backup, 0o750); err != nil {
		return fmt.Errorf("create the backup directory: %w", err)
	}
	snap, walDir := filepath.Join(dir, "snapshot.db"), filepath.Join(dir, "wal")
	oldSnap, oldWAL := filepath.Join(rep.Backup, "snapshot.db"), filepath.Join(rep.Backup, "wal")
	for _, m := range [][2]string{{snap, oldSnap}, {walDir, oldWAL}} {
		if err := os.Rename(m[0], m[1]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("move %s aside: %w", m[0], err)
		}
	}
	fr, err := snapshot.Salvage(oldSnap, snap)
	if err != nil {
		return err
	}
	for _, p := range fr.Problems {
		rep.Lost = append(rep.Lost, p.String())
	}
	chains, clientCovers, err := storedChains(snap, false)
	if err != nil {
		return err
	}
	// The new WAL leaves out the records the stored states cover and is
	// numbered anew: the states then cover nothing past the snapshot.
	if err := clearCovers(snap); err != nil {
		return err
	}
	recs, probs, next, err := wal.Scan(oldWAL)
	if err != nil {
		return fmt.Errorf("read the wal: %w", err)
	}
	for _, p := range probs {
		if p.Last < p.First || p.Last > fr.Index { // the snapshot holds what it covers
			rep.Lost = append(rep.Lost, "wal: "+p.String()+probableKey(p))
		}
	}
	if n := wal.IncompleteGroup(recs); n > 0 && recs[len(recs)-1].Index > fr.Index {
		rep.Lost = append(rep.Lost, incompleteGroup(recs, n, fr.Index)+": dropped, as a start drops them")
		recs = recs[:len(recs)-n]
	}
	// The records after the snapshot get new ids: an epoch that starts at
	// the snapshot tells a client resuming from before that its ids past
	// it name other changes now.
	if _, err := startEpoch(dir, fr.Index); err != nil {
		return err
	}
	rep.origLast = fr.Index
	if next > 0 {
		rep.origLast = max(fr.Index, next-1)
	}
	// The records after the snapshot, renumbered densely from it and made
	// to follow on, go into a new WAL that starts right after the snapshot.
	if err := wal.Create(walDir, fr.Index+1); err != nil {
		return err
	}
	log, err := wal.Open(walDir, wal.Options{})
	if err != nil {
		return fmt.Errorf("open the new wal: %w", err)
	}
	defer log.Close()
	var body []byte
	for _, s := range recs {
		if s.Index <= fr.Index {
			continue
		}
		rep.Records++
		var r record.Record
		if err := record.Decode(s.Body, &r); err != nil {
			rep.Lost = append(rep.Lost, fmt.Sprintf("wal: record %d does not decode (%v): dropped", s.Index, err))
			continue
		}
		if isClientRec(r.Code) && s.Index <= clientCovers[r.Key] {
			continue // its stored client holds it; the new WAL leaves it out
		}
		if !noSeries(r.Code) { // a status event, heartbeat or client record follows on from nothing, and is kept
			if covered(chains, &r, s.Index) {
				continue // stored already; the new WAL leaves it out
			}
			keep, note := follow(chains, &r)
			if note != "" {
				rep.Lost = append(rep.Lost, fmt.Sprintf("wal: record %d: %s", s.Index, note))
			}
			if !keep {
				continue
			}
		}
		body = record.Append(body[:0], &r)
		idx := log.Add(body)
		if rep.WALFirst == 0 {
			rep.WALFirst = idx
		}
		rep.WALLast = idx
		if idx%4096 == 0 {
			if err := log.Commit(true); err != nil {
				return fmt.Errorf("write the new wal: %w", err)
			}
		}
	}
	if err := log.Commit(true); err != nil {
		return fmt.Errorf("write the new wal: %w", err)
	}
	return nil
}

// incompleteGroup says which of the last n records, those after the
// snapshot's index, form a commit group cut short.
func incompleteGroup(recs []wal.Scanned, n int, snap uint64) string {
	first := max(recs[len(recs)-n].Index, snap+1)
	return fmt.Sprintf("wal: records %d to %d are the start of a commit group whose last record is missing (a crash during its write leaves this, and then none of it was acknowledged; so does damage to the last record's mark)",
		first, recs[len(recs)-1].Index)
}

func clearCovers(path string) error {
	st, err := snapshot.Open(path)
	if err != nil {
		return fmt.Errorf("open the repaired snapshot: %w", err)
	}
	err = st.ClearCovers()
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return err
}

// restartIDs makes the snapshot of a fully snapshotted directory cover
// index last, and its WAL start right after it, empty.
func restartIDs(dir string, last uint64) error {
	st, err := snapshot.Open(filepath.Join(dir, "snapshot.db"))
	if err != nil {
		return fmt.Errorf("open the repaired snapshot: %w", err)
	}
	err = st.Commit(last, nil)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("move the snapshot's index to %d: %w", last, err)
	}
	walDir := filepath.Join(dir, "wal")
	if err := os.RemoveAll(walDir); err != nil {
		return fmt.Errorf("empty the wal: %w", err)
	}
	return wal.Create(walDir, last+1)
}

// lockFile takes the data directory's lock, as a running sonde holds it.
func lockFile(dir string) (func(), error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	f, err := lockDir(dir)
	if err != nil {
		if errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("%w: stop the sonde that runs on it first", err)
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}
