package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// model is what a test expects of the store: each key's value and the
// history of its current incarnation.
type model struct {
	keys map[string]*modelKey
}

type modelKey struct {
	counter bool
	exists  bool
	value   float64
	hist    []float64
}

func newModel() *model { return &model{keys: map[string]*modelKey{}} }

// step picks a random write, applies it to db and, when acknowledged, to
// the model.
func (m *model) step(rng *rand.Rand, db *DB) error {
	i := rng.IntN(40)
	key := fmt.Sprintf("g%02d", i)
	counter := i >= 30
	if counter {
		key = fmt.Sprintf("c%02d", i)
	}
	k := m.keys[key]
	if k == nil {
		k = &modelKey{counter: counter}
		m.keys[key] = k
	}
	var op sample.Op
	switch {
	case k.exists && rng.IntN(20) == 0:
		op = del(key)
	case counter:
		op = incr(key, float64(1+rng.IntN(3)))
	default:
		op = set(key, float64(rng.IntN(1000))/10)
	}
	errs := make([]error, 1)
	if err := db.Append(context.Background(), []sample.Op{op}, errs); err != nil {
		return err
	}
	if errs[0] != nil {
		return errs[0]
	}
	switch {
	case op.Code == sample.Delete:
		*k = modelKey{counter: counter}
	case counter:
		k.exists, k.value = true, k.value+op.Value
		k.hist = append(k.hist, k.value)
	default:
		k.exists, k.value = true, op.Value
		k.hist = append(k.hist, k.value)
	}
	return nil
}

// check compares db with the model: every key's value and history.
func (m *model) check(t *testing.T, db *DB, when string) {
	t.Helper()
	want := map[string]float64{}
	for key, k := range m.keys {
		if k.exists {
			want[key] = k.value
		}
	}
	sameState(t, when, state(db), want)
	for key, k := range m.keys {
		if k.exists {
			if got := history(t, db, key); !equalFloats(got, k.hist) {
				t.Fatalf("%s: history of %s = %v, want %v", when, key, got, k.hist)
			}
		}
	}
}

var errCrash = errors.New("crash (injected)")

// TestSnapshotCrashBetweenTransactions: a snapshot stores its series in
// several transactions while writes go on, each series as it is when
// captured (some past the index the snapshot will cover). A crash after
// any of its transactions, before the last one records that index, must
// lose nothing and replay nothing twice: replay skips what each stored
// state covers. `sonde check` must find the directory clean at each
// crash, and the store must hold exactly what was acknowledged.
func TestSnapshotCrashBetweenTransactions(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	dir := t.TempDir()
	m := newModel()
	var txs, crashAt atomic.Int64
	var hookErr atomic.Pointer[error]
	var db *DB
	opts := Options{
		SnapshotInterval: time.Hour,
		SnapshotMemory:   2400, // a few series per transaction
		RingSize:         4,
		captureBatch:     3, // and captured a few at a time, between them
		faults: &faults{commit: func(c func() error) error {
			// Writes go on while the snapshot is under way: some series
			// move past its target before they are captured.
			for range 5 {
				if err := m.step(rng, db); err != nil {
					hookErr.CompareAndSwap(nil, &err)
				}
			}
			if txs.Add(1) == crashAt.Load() {
				return errCrash
			}
			return c()
		}},
	}
	crashes, ahead, most := 0, 0, int64(0)
	for round := range 16 {
		db = openDB(t, dir, opts)
		m.check(t, db, fmt.Sprintf("round %d, after opening", round))
		for range 150 {
			if err := m.step(rng, db); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		txs.Store(0)
		crashAt.Store(-1) // every other snapshot completes, so that replay starts mid-way
		if round%2 == 1 {
			crashAt.Store(int64(1 + rng.IntN(10)))
		}
		err := db.Snapshot(context.Background())
		if p := hookErr.Load(); p != nil {
			t.Fatalf("round %d: a write during the snapshot: %v", round, *p)
		}
		most = max(most, txs.Load())
		switch {
		case errors.Is(err, errCrash):
			crashes++
		case err != nil:
			t.Fatalf("round %d: snapshot: %v", round, err)
		}
		abandon(t, db)
		if coversPastIndex(t, dir) {
			ahead++
		}
		rep, err := Check(dir)
		if err != nil {
			t.Fatalf("round %d: check: %v", round, err)
		}
		if !rep.Clean() {
			t.Fatalf("round %d: check after a crash in transaction %d: %v", round, crashAt.Load(), rep.Problems)
		}
	}
	db = openDB(t, dir, opts)
	m.check(t, db, "at the end")
	crashAt.Store(-1)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, opts)
	m.check(t, db, "after a clean stop")
	abandon(t, db)
	if crashes < 4 || most < 6 || ahead < 4 {
		t.Fatalf("%d of 16 snapshots crashed, %d left states covering records past a stored index, the longest took %d transactions: the test did not test",
			crashes, ahead, most)
	}
}

// coversPastIndex reports whether the snapshot database in dir has a
// stored index and a series state covering records past it.
func coversPastIndex(t *testing.T, dir string) bool {
	t.Helper()
	st, err := snapshot.Open(filepath.Join(dir, "snapshot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	past := false
	err = st.Load(func(s *snapshot.State) error {
		past = past || s.Covers > st.Index()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return past && st.Index() > 0
}
