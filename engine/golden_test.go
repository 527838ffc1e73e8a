package engine

import (
	"context"
	"encoding/json"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/retention"
)

// goldenDirs are data directories written by released versions of sonde
// (cmd/sonde's TestGenerateGolden says how). Each must open with today's
// engine and read exactly what that release answered.
var goldenDirs = []string{"golden-v1"}

type goldenExpect struct {
	NowMs  int64              `json:"now_ms"`
	Index  uint64             `json:"index"`
	Data   map[string]float64 `json:"data"`
	Series []struct {
		Key      string       `json:"key"`
		Type     string       `json:"type"`
		Value    float64      `json:"value"`
		View     float64      `json:"view"`
		Updated  int64        `json:"updated"`
		Points   uint64       `json:"points"`
		Interval int64        `json:"interval"`
		History  [][2]float64 `json:"history"`
	} `json:"series"`
}

// TestGoldenDataDir opens each golden directory (WAL segments written
// after its last snapshot, and snapshot.db with compacted chunks,
// archives and watermarks), and checks every series and every history
// point: as recovered, after a snapshot by today's engine, and after a
// clean restart.
func TestGoldenDataDir(t *testing.T) {
	for _, name := range goldenDirs {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join("testdata", name)
			raw, err := os.ReadFile(filepath.Join(src, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			var exp goldenExpect
			if err := json.Unmarshal(raw, &exp); err != nil {
				t.Fatal(err)
			}
			if len(exp.Series) < 10 {
				t.Fatalf("expected.json holds %d series; the fixture is damaged", len(exp.Series))
			}
			dir := t.TempDir()
			copyTree(t, src, dir)
			// The clock stands still at the moment the release answered, so
			// that windows and retention see the same time it saw, and the
			// retention is the server's default, as it was then.
			opts := Options{Now: func() time.Time { return time.UnixMilli(exp.NowMs) }, SnapshotInterval: time.Hour,
				Retention: retention.Default()}
			db := openDB(t, dir, opts)
			checkGolden(t, db, &exp, "recovered")
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, db, &exp, "after a snapshot")
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			db = openDB(t, dir, opts)
			defer db.Close()
			checkGolden(t, db, &exp, "after a restart")
		})
	}
}

func checkGolden(t *testing.T, db *DB, exp *goldenExpect, when string) {
	t.Helper()
	if got := db.Index(); got != exp.Index {
		t.Errorf("%s: index %d, want %d", when, got, exp.Index)
	}
	all := db.Series("", nil, nil)
	if len(all) != len(exp.Series) {
		t.Errorf("%s: %d series, want %d", when, len(all), len(exp.Series))
	}
	view := map[string]float64{}
	for _, s := range all {
		view[s.Key] = s.View
	}
	for k, v := range exp.Data {
		if got, ok := view[k]; !ok || got != v {
			t.Errorf("%s: /data %q = %v (present %v), want %v", when, k, got, ok, v)
		}
	}
	for _, e := range exp.Series {
		s, ok := db.Get(e.Key)
		if !ok {
			t.Errorf("%s: %q is missing", when, e.Key)
			continue
		}
		interval := int64(0)
		if s.Kind == sample.Counter {
			interval = s.Interval
		}
		if s.Kind.String() != e.Type || s.Value != e.Value || s.View != e.View || s.Updated != e.Updated ||
			s.Points != e.Points || interval != e.Interval {
			t.Errorf("%s: %q is %+v, want %+v", when, e.Key, s, e)
		}
		pts, err := db.Range(context.Background(), e.Key, math.MinInt64, math.MaxInt64, 0, nil)
		if err != nil {
			t.Errorf("%s: history of %q: %v", when, e.Key, err)
			continue
		}
		if len(pts) != len(e.History) {
			t.Errorf("%s: %q has %d points, want %d", when, e.Key, len(pts), len(e.History))
			continue
		}
		for i, p := range pts {
			if float64(p.T) != e.History[i][0] || p.V != e.History[i][1] {
				t.Errorf("%s: %q point %d is %v, want %v", when, e.Key, i, p, e.History[i])
				break
			}
		}
	}
}

// copyTree copies the regular files under src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
