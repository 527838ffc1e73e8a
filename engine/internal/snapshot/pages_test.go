package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// seedFile writes a small store: states, chunks across several pages, and
// returns its bytes.
func seedFile(t testing.TB) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snapshot.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var ups []Update
	for k := range 40 {
		key := fmt.Sprintf("series.%02d", k)
		pts := make([]sample.Point, 30)
		for i := range pts {
			pts[i] = sample.Point{T: int64(1000 + i*10), V: float64(k*i) / 4}
		}
		ups = append(ups, Update{Key: key, State: &State{Key: key, Kind: sample.Gauge, Value: 1, Updated: 1300, Ordinal: 30, Created: uint64(k + 1)},
			Points: pts, FirstOrdinal: 1})
	}
	if err := s.Commit(100, ups); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzVerifyFile damages a valid snapshot.db at the fuzzer's places and
// opens it. Whatever the damage, the careful reader, the check and the
// salvage never panic; and when the careful reader accepts the file, bbolt
// opens and reads it without a panic in a goroutine of its own (which
// would kill the process): that is what Open relies on.
func FuzzVerifyFile(f *testing.F) {
	seed := seedFile(f)
	f.Add(uint32(2*4096+20), byte(0xff), uint32(0), byte(0))
	f.Add(uint32(3*4096+40), byte(0x5a), uint32(3*4096+300), byte(1))
	f.Add(uint32(16), byte(0x01), uint32(4096+16), byte(0x01))
	f.Add(uint32(2*4096+10), byte(0x80), uint32(0), byte(0))
	f.Fuzz(func(t *testing.T, at1 uint32, x1 byte, at2 uint32, x2 byte) {
		data := append([]byte(nil), seed...)
		data[int(at1)%len(data)] ^= x1
		data[int(at2)%len(data)] ^= x2
		dir := t.TempDir()
		path := filepath.Join(dir, "snapshot.db")
		if err := os.WriteFile(path, data, 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := CheckFile(path); err != nil {
			t.Fatalf("check: %v", err)
		}
		if _, err := Salvage(path, filepath.Join(dir, "salvaged.db")); err != nil {
			t.Fatalf("salvage: %v", err)
		}
		if verifyFile(path) != nil {
			return
		}
		s, err := Open(path)
		if err != nil {
			if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrFormat) {
				t.Fatalf("open: %v is neither damage nor format", err)
			}
			return
		}
		defer s.Close()
		s.Load(func(st *State) error {
			_, err := s.History(st.Key, st.Created, 1<<62, 0, 1<<62, nil, nil)
			if err != nil && !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrFormat) {
				t.Fatalf("history: %v", err)
			}
			return nil
		})
	})
}

// A value's seal covers its bucket and key too: the same bytes under
// another key, or another bucket, do not check out.
func TestSeal(t *testing.T) {
	v := seal(bucketSeries, []byte("a"), []byte("payload"))
	if p, err := unseal(bucketSeries, []byte("a"), v); err != nil || string(p) != "payload" {
		t.Fatalf("unseal: %q %v", p, err)
	}
	for _, c := range []struct{ bucket, key string }{{"series", "b"}, {"history", "a"}} {
		if _, err := unseal([]byte(c.bucket), []byte(c.key), v); !errors.Is(err, ErrDamaged) {
			t.Errorf("the value unsealed under %s/%s: %v", c.bucket, c.key, err)
		}
	}
	for i := range v {
		w := append([]byte(nil), v...)
		w[i] ^= 0x10
		if _, err := unseal(bucketSeries, []byte("a"), w); err == nil && i > 0 {
			t.Errorf("a flipped bit at byte %d went unnoticed", i)
		}
	}
	legacy := binary.BigEndian.AppendUint64(nil, 42)
	if p, err := unseal(bucketMeta, keyIndex, legacy); err != nil || len(p) != 8 {
		t.Fatalf("a version 1 value: %v", err)
	}
}

// TestCheckFileCountsPages: CheckFile's page use per bucket is bbolt's
// own statistics of the same file, and the buckets' pages, the root's
// and the free ones add up to the pages in use.
func TestCheckFileCountsPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// Enough series for a tree of several levels, and points enough for
	// history chunks; then half of them deleted, for free pages.
	for round := range 3 {
		var ups []Update
		var states []State
		for i := range 3000 {
			key := fmt.Sprintf("host%04d.cpu", i)
			states = append(states, State{Key: key, Kind: sample.Gauge, Ordinal: uint64(200 * (round + 1)), Created: 1})
			pts := make([]sample.Point, 200)
			for j := range pts {
				pts[j] = sample.Point{T: int64(round*200+j+1) * 1000, V: float64(i*j%97) / 4}
			}
			ups = append(ups, Update{Key: key, Points: pts, FirstOrdinal: uint64(200*round + 1)})
		}
		for i := range ups {
			ups[i].State = &states[i]
		}
		if err := s.Commit(uint64(round+1), ups); err != nil {
			t.Fatal(err)
		}
	}
	var drops []Update
	for i := 0; i < 3000; i += 2 {
		drops = append(drops, Update{Key: fmt.Sprintf("host%04d.cpu", i), Drop: 1})
	}
	if err := s.Commit(4, drops); err != nil {
		t.Fatal(err)
	}
	s.Close()

	rep, err := CheckFile(path)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("check: %v %v", err, rep.Problems)
	}
	pg := rep.Pages
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sum := pg.Free
	for _, u := range pg.Buckets {
		sum += u.Pages
	}
	if pg.PageSize != db.Info().PageSize || sum != pg.InUse || pg.Free < 3 {
		t.Fatalf("page size %d (bbolt's %d); %d pages in the buckets and free, %d in use, %d free", pg.PageSize, db.Info().PageSize, sum, pg.InUse, pg.Free)
	}
	err = db.View(func(tx *bolt.Tx) error {
		if int(tx.Size()) != pg.InUse*pg.PageSize {
			t.Errorf("in use %d pages, bbolt's tx.Size %d bytes", pg.InUse, tx.Size())
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			st, u := b.Stats(), pg.Buckets[string(name)]
			if st.InlineBucketN > 0 {
				return nil // in its parent's page
			}
			pages := st.BranchPageN + st.BranchOverflowN + st.LeafPageN + st.LeafOverflowN
			if u.Pages != pages || u.Bytes != int64(st.BranchAlloc+st.LeafAlloc) || u.Used != int64(st.BranchInuse+st.LeafInuse) {
				t.Errorf("bucket %s: %+v; bbolt's: %d pages, %d bytes, %d in use", name, u, pages, st.BranchAlloc+st.LeafAlloc, st.BranchInuse+st.LeafInuse)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if h := pg.Buckets["history"]; h.Pages < 100 {
		t.Fatalf("history on %d pages: the test stored too little to test", h.Pages)
	}
}

// TestCheckFilePagesPartial: page counts are partial only when damage in
// the tree left pages unread; a value that fails its seal, or a bucket
// Sonde does not write, is a problem, but every page is still counted.
func TestCheckFilePagesPartial(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "snapshot.db")
	if err := os.WriteFile(path, seedFile(t), 0o640); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var root uint64 // the series bucket's root page
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSeries).Put([]byte("series.07"), []byte{0xC3, 1, 2, 3, 4, 5}); err != nil {
			return err
		}
		b, err := tx.CreateBucket([]byte("stranger"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		return nil
	})
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error {
			root = uint64(tx.Bucket(bucketSeries).Root()) // as committed
			return nil
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	pageSize := db.Info().PageSize
	db.Close()
	rep, err := CheckFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := rep.Pages.Free
	for _, u := range rep.Pages.Buckets {
		sum += u.Pages
	}
	if len(rep.Problems) != 2 || rep.Pages.Partial || sum != rep.Pages.InUse {
		t.Fatalf("a bad seal and a strange bucket: problems %v, pages %+v (%d counted)", rep.Problems, rep.Pages, sum)
	}

	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, pageSize), int64(root)*int64(pageSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rep, err = CheckFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Pages.Partial {
		t.Fatalf("the series bucket's root overwritten: problems %v, pages %+v, not partial", rep.Problems, rep.Pages)
	}
}
