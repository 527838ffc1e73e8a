package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func appendEvents(t *testing.T, db *DB, evs ...sample.Event) []sample.Event {
	t.Helper()
	if err := db.AppendEvents(context.Background(), evs); err != nil {
		t.Fatalf("append events: %v", err)
	}
	return evs
}

// listAll pages through the events q selects, limit at a time, checking
// that every page is in order and that pages follow on.
func listAll(t *testing.T, db *DB, q sample.EventQuery) []sample.Event {
	t.Helper()
	var all []sample.Event
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("paging does not end")
		}
		page, err := db.Events(context.Background(), q)
		if err != nil {
			t.Fatalf("events %+v: %v", q, err)
		}
		if len(page.Events) > q.Limit {
			t.Fatalf("a page of %d events, limit %d", len(page.Events), q.Limit)
		}
		all = append(all, page.Events...)
		if !page.More {
			return all
		}
		q.BeforeTime, q.BeforeID = page.NextTime, page.NextID
	}
}

// eventModel is what the store should list: ev sorted newest first, filtered.
func eventModel(evs []sample.Event, q sample.EventQuery) []sample.Event {
	var out []sample.Event
	for _, ev := range evs {
		if ev.Time >= q.From && (q.To == 0 || ev.Time <= q.To) && (q.Match == nil || q.Match(&ev)) {
			out = append(out, ev)
		}
	}
	slices.SortFunc(out, func(a, b sample.Event) int {
		if eventBefore(&a, &b) {
			return -1
		}
		return 1
	})
	return out
}

func sameEvents(t *testing.T, what string, got, want []sample.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: event %d is %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

// TestEvents writes events in batches between snapshots, crashes and
// restarts, and after each step checks every listing (filters, ranges,
// pages) and every resume point against a model.
func TestEvents(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now().UnixMilli()
	db := openDB(t, dir, Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1})
	defer func() { db.Close() }()
	var written []sample.Event
	check := func(step string) {
		t.Helper()
		for _, q := range []sample.EventQuery{
			{Limit: 1000},
			{Limit: 7},
			{Limit: 3, From: now - 50_000, To: now - 10_000},
			{Limit: 5, Match: func(ev *sample.Event) bool { return ev.Level >= 2 }},
			{Limit: 4, Match: func(ev *sample.Event) bool { return strings.HasPrefix(ev.Service, "svc1") }},
			{Limit: 2, MaxScan: 3},
			{Limit: 50, MaxBytes: 100},
		} {
			sameEvents(t, fmt.Sprintf("%s: list %+v", step, q), listAll(t, db, q), eventModel(written, q))
		}
		byID := slices.Clone(written)
		slices.SortFunc(byID, func(a, b sample.Event) int { return int(a.ID) - int(b.ID) })
		for _, from := range []int{-1, 0, len(byID) / 3, len(byID) / 2, len(byID) - 1} {
			id, want := uint64(0), byID
			if from >= 0 && from < len(byID) {
				id, want = byID[from].ID, byID[from+1:]
			}
			var got []sample.Event
			for {
				n := len(got)
				var err error
				after := id
				if n > 0 {
					after = got[n-1].ID
				}
				if got, err = db.EventsAfter(after, got, 5); err != nil {
					t.Fatalf("%s: events after %d: %v", step, after, err)
				}
				if len(got) == n {
					break
				}
			}
			sameEvents(t, fmt.Sprintf("%s: after %d", step, id), got, want)
		}
	}
	batch := func() {
		evs := make([]sample.Event, 1+rng.IntN(40))
		for i := range evs {
			evs[i] = sample.Event{Service: fmt.Sprintf("svc%d", rng.IntN(30)), Level: int64(rng.IntN(5)),
				Message: strings.Repeat("m", rng.IntN(20)), Alert: rng.IntN(4) == 0}
			if rng.IntN(2) == 0 {
				evs[i].Time = now - int64(rng.IntN(60_000)) // out of order, and sometimes equal
			}
		}
		written = append(written, appendEvents(t, db, evs...)...)
	}
	for round := range 12 {
		for range 5 {
			batch()
		}
		mustApply(t, db, set("a.series", float64(round))) // series records between events
		check(fmt.Sprintf("round %d, written", round))
		switch round % 4 {
		case 0:
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
			if held := db.Stats().Events.Held; held != 0 {
				t.Fatalf("round %d: %d events held after a snapshot", round, held)
			}
		case 1:
			abandon(t, db)
			db = openDB(t, dir, Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1})
		case 2:
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			db = openDB(t, dir, Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1})
		case 3:
			// A snapshot that stores some events and then fails: they are in
			// memory and the store both, and the next one stores them again.
			batch()
			if err := db.storeEvents(db.published.Load()); err != nil {
				t.Fatal(err)
			}
			abandon(t, db)
			db = openDB(t, dir, Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1})
		}
		check(fmt.Sprintf("round %d, after step %d", round, round%4))
	}
	if st := db.Stats().Events; st.Stored+int64(st.Held) < int64(len(written)) {
		t.Fatalf("stats %+v for %d events", st, len(written))
	}
}

func TestEventChecks(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{})
	defer db.Close()
	now := time.Now().UnixMilli()
	for _, c := range []struct {
		ev   sample.Event
		want error
	}{
		{sample.Event{}, ErrKey},
		{sample.Event{Service: strings.Repeat("s", sample.MaxService+1)}, ErrKey},
		{sample.Event{Service: "a\x00b"}, ErrKey},
		{sample.Event{Service: "s", Message: strings.Repeat("m", sample.MaxMessage+1)}, ErrValue},
		{sample.Event{Service: "s", Message: "\xff"}, ErrValue},
		{sample.Event{Service: "s", Time: -1}, ErrValue},
		{sample.Event{Service: "s", Time: now + time.Hour.Milliseconds()}, ErrValue},
		{sample.Event{Service: "s", Time: now - 91*24*time.Hour.Milliseconds()}, ErrValue},
	} {
		// All or nothing: a good event beside the bad one is not written.
		err := db.AppendEvents(context.Background(), []sample.Event{{Service: "good"}, c.ev})
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), "event 1") {
			t.Errorf("%+v: got %v, want %v naming event 1", c.ev, err, c.want)
		}
	}
	if page, _ := db.Events(context.Background(), sample.EventQuery{Limit: 10}); len(page.Events) != 0 {
		t.Fatalf("refused batches wrote %+v", page.Events)
	}
	ok := appendEvents(t, db, sample.Event{Service: strings.Repeat("s", sample.MaxService), Message: strings.Repeat("m", sample.MaxMessage)})
	if ok[0].ID == 0 || ok[0].Time < now {
		t.Fatalf("stored event %+v has no id or time", ok[0])
	}
}

// TestEventRetention expires events by age and by the bytes they take,
// oldest first.
func TestEventRetention(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	dir := t.TempDir()
	opts := Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1, EventRetention: time.Hour,
		Now: func() time.Time { return time.Unix(0, clock.Load()) }}
	db := openDB(t, dir, opts)
	now := opts.Now().UnixMilli()
	var evs []sample.Event
	for i := range 100 {
		evs = append(evs, sample.Event{Service: "s", Time: now - int64(100-i)*30_000, Message: "x"}) // 50 min to 30 s ago
	}
	appendEvents(t, db, evs...)
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(30 * time.Minute)) // the oldest 40 are now over an hour old
	if err := db.retainEvents(); err != nil {
		t.Fatal(err)
	}
	all := listAll(t, db, sample.EventQuery{Limit: 1000})
	if len(all) != 60 || all[len(all)-1].Time != evs[40].Time {
		t.Fatalf("after expiry by age: %d events, oldest at %d, want 60 from %d", len(all), all[len(all)-1].Time, evs[40].Time)
	}
	st := db.Stats().Events
	if st.Stored != 60 || st.Expired != 40 {
		t.Fatalf("stats %+v, want 60 stored and 40 expired", st)
	}
	db.Close()
	// A bound on bytes keeps the newest that fit.
	opts.EventMaxBytes = st.StoredBytes / 2
	db = openDB(t, dir, opts)
	defer db.Close()
	if got := db.Stats().Events.StoredBytes; got != st.StoredBytes {
		t.Fatalf("stored bytes %d after a restart, were %d", got, st.StoredBytes)
	}
	if err := db.retainEvents(); err != nil {
		t.Fatal(err)
	}
	all = listAll(t, db, sample.EventQuery{Limit: 1000})
	if len(all) != 30 || all[0].Time != evs[99].Time {
		t.Fatalf("after expiry by size: %d events, newest at %d, want 30 from %d", len(all), all[0].Time, evs[99].Time)
	}
	if got := db.Stats().Events.StoredBytes; got > opts.EventMaxBytes {
		t.Fatalf("stored bytes %d, bound %d", got, opts.EventMaxBytes)
	}
}

// TestEventBacklog: while snapshots cannot store events, those held in
// memory are bounded, and past the bound events are refused, nothing
// applied; once snapshots work again they are taken.
func TestEventBacklog(t *testing.T) {
	f := &faults{}
	var failing atomic.Bool
	failing.Store(true)
	f.commit = func(commit func() error) error {
		if failing.Load() {
			return fmt.Errorf("injected: %w", syscall.ENOSPC)
		}
		return commit()
	}
	db := openDB(t, t.TempDir(), Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1, EventMemory: 10_000, faults: f})
	defer db.Close()
	n := 0
	var err error
	for ; n < 1000; n++ {
		if err = db.AppendEvents(context.Background(), []sample.Event{{Service: "s", Message: strings.Repeat("m", 100)}}); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrBacklog) {
		t.Fatalf("after %d events: %v, want ErrBacklog", n, err)
	}
	if held := db.Stats().Events.HeldBytes; held < 10_000 || held > 10_000+200 {
		t.Fatalf("held %d bytes, bound 10000", held)
	}
	if got := len(listAll(t, db, sample.EventQuery{Limit: 5000})); got != n {
		t.Fatalf("%d events listed, %d acknowledged", got, n)
	}
	failing.Store(false)
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, db, sample.Event{Service: "s"})
}

// TestRepairKeepsEvents: sonde check passes a WAL of events, and sonde
// repair keeps each event once, even one a failed snapshot had stored
// under an id the repair changes.
func TestRepairKeepsEvents(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1}
	db := openDB(t, dir, opts)
	var written []sample.Event
	for i := range 10 {
		written = append(written, appendEvents(t, db, sample.Event{Service: "svc", Message: fmt.Sprint("a", i)})...)
	}
	mustApply(t, db, set("svc", 1)) // a series named like the service
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		mustApply(t, db, set("svc", 1000.5+float64(i)))
		written = append(written, appendEvents(t, db, sample.Event{Service: "svc", Message: fmt.Sprint("b", i)})...)
	}
	if err := db.storeEvents(db.published.Load()); err != nil { // a snapshot that failed after its events
		t.Fatal(err)
	}
	abandon(t, db)
	rep, err := Check(dir)
	if err != nil || !rep.Clean() {
		t.Fatalf("check: %v, problems %q", err, rep.Problems)
	}
	// A damaged record before the events: repair numbers them anew.
	flip(t, tailSegment(t, dir), func(data []byte) int {
		v := make([]byte, 8)
		putFloat(v, 1000.5)
		return bytes.Index(data, v) + 2
	})
	runRepair(t, dir)
	db = openDB(t, dir, opts)
	defer db.Close()
	got := listAll(t, db, sample.EventQuery{Limit: 100})
	msgs := func(evs []sample.Event) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, fmt.Sprint(ev.Service, ev.Time, ev.Message))
		}
		slices.Sort(out)
		return out
	}
	if g, w := msgs(got), msgs(written); !slices.Equal(g, w) {
		t.Fatalf("after repair: %q, want %q", g, w)
	}
	if v := history(t, db, "svc"); len(v) != 10 {
		t.Fatalf("series svc has %d points after repair, want 10", len(v))
	}
}

// TestEventFilterHoldsNoLock: a listing's filter runs without the lock
// the committer takes to add events, so a slow filter (a client's regex)
// holds up no write.
func TestEventFilterHoldsNoLock(t *testing.T) {
	db := openDB(t, t.TempDir(), Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1})
	defer db.Close()
	appendEvents(t, db, sample.Event{Service: "a"}, sample.Event{Service: "b"})
	inFilter, release := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	listed := make(chan error, 1)
	go func() {
		_, err := db.Events(context.Background(), sample.EventQuery{Limit: 10, Match: func(*sample.Event) bool {
			if once.CompareAndSwap(false, true) {
				close(inFilter)
				<-release
			}
			return true
		}})
		listed <- err
	}()
	<-inFilter
	// The filter is stuck: events and other writes still go through.
	appendEvents(t, db, sample.Event{Service: "c"})
	mustApply(t, db, set("k", 1))
	close(release)
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
}
