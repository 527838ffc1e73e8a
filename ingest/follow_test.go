package ingest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// writesStore is a real store that also keeps the ops of each write, to
// check what went together.
type writesStore struct {
	*engine.DB
	mu     sync.Mutex
	writes [][]sample.Op
}

func (s *writesStore) AppendUnacked(ctx context.Context, ops []sample.Op, errs []error) error {
	s.mu.Lock()
	s.writes = append(s.writes, slices.Clone(ops))
	s.mu.Unlock()
	return s.DB.AppendUnacked(ctx, ops, errs)
}

// upstreamScript plays an upstream Sonde: connection i gets the frames of
// conns[i] ("status N" answers N instead), then the stream ends, or for
// the last connection stays open. It keeps the Last-Event-ID of each.
type upstreamScript struct {
	conns   [][]string
	mu      sync.Mutex
	n       int
	lastIDs []string
	epochs  []string // X-Sonde-Epoch of each request
	query   string   // of the last request
}

func (u *upstreamScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	i := u.n
	u.n++
	u.lastIDs = append(u.lastIDs, r.Header.Get("Last-Event-ID"))
	u.epochs = append(u.epochs, r.Header.Get("X-Sonde-Epoch"))
	u.query = r.URL.RawQuery
	u.mu.Unlock()
	if i >= len(u.conns) {
		i = len(u.conns) - 1
	}
	frames := u.conns[i]
	if len(frames) > 0 && strings.HasPrefix(frames[0], "epoch ") {
		w.Header().Set("X-Sonde-Epoch", strings.TrimPrefix(frames[0], "epoch "))
		frames = frames[1:]
	}
	switch {
	case len(frames) > 0 && frames[0] == "stall 503": // a body that never comes
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "overloaded")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	case len(frames) > 0 && frames[0] == "stall 101": // the connection is the body
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprint(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		c.Read(make([]byte, 1)) // until the follower closes it
		return
	}
	if len(frames) > 0 && strings.HasPrefix(frames[0], "status ") {
		var code int
		fmt.Sscanf(frames[0], "status %d", &code)
		http.Error(w, "busy", code)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for _, f := range frames {
		if f == "hold" { // send nothing more, and keep the stream open
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, f)
		w.(http.Flusher).Flush()
	}
	if i == len(u.conns)-1 {
		<-r.Context().Done()
	}
}

func (u *upstreamScript) ids() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.lastIDs)
}

func frame(id uint64, typ, data string) string {
	if typ != "" {
		return fmt.Sprintf("id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n", id, typ, data)
	}
	return fmt.Sprintf("id: %d\r\ndata: %s\r\n\r\n", id, data)
}

// follow starts a follower named "up" of the script on a fresh store
// that first takes pre, and waits until its cursor reaches id.
func follow(t testing.TB, u *upstreamScript, maxBatch int, id uint64, pre ...sample.Op) (*writesStore, *Follower) {
	t.Helper()
	return followWith(t, u, FollowOptions{MaxBatch: maxBatch}, id, pre...)
}

func followWith(t testing.TB, u *upstreamScript, opts FollowOptions, id uint64, pre ...sample.Op) (*writesStore, *Follower) {
	t.Helper()
	db, err := engine.Open(t.TempDir(), engine.Options{SnapshotInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if len(pre) > 0 {
		if err := db.Append(context.Background(), pre, make([]error, len(pre))); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	st := &writesStore{DB: db}
	opts.URL, opts.Name, opts.MinBackoff = srv.URL+"/events", "up", time.Millisecond
	f, err := NewFollower(opts, st)
	if err != nil {
		t.Fatal(err)
	}
	go f.Serve()
	t.Cleanup(func() { f.Close() })
	waitCursor(t, db, id)
	return st, f
}

// waitCursor waits, on the store's own change notices, until the cursor
// holds id.
func waitCursor(t testing.TB, db *engine.DB, id uint64) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		idx := db.Index()
		if s, ok := db.Get(CursorKey("up")); ok && s.Value == float64(id) {
			return
		}
		select {
		case <-db.Notify(idx):
		case <-deadline:
			s, _ := db.Get(CursorKey("up"))
			t.Fatalf("the cursor is %v, want %d; state %v", s.Value, id, followed(db))
		}
	}
}

// followed is the store's state, but the follower's epoch key (an
// upstream script sends none, but in TestFollowerEpoch).
func followed(db *engine.DB) map[string]string {
	out := map[string]string{}
	for _, s := range db.Series("", nil, nil) {
		if s.Key == "sonde.upstream.up.epoch" {
			continue
		}
		out[s.Key] = fmt.Sprintf("%s %g", s.Kind, s.Value)
	}
	return out
}

func points(t *testing.T, db *engine.DB, key string) int {
	t.Helper()
	pts, err := db.Range(context.Background(), key, 0, 1<<62, 0, nil)
	if err != nil {
		t.Fatalf("history of %s: %v", key, err)
	}
	return len(pts)
}

// A first dump is a state: keys whose value is already the dump's are not
// written again, others are, keys the dump lacks go (the cursor and keys
// outside the prefix stay), and a COUNTER under the prefix becomes the
// GAUGE upstream shows.
func TestFollowerDumpIsAState(t *testing.T) {
	u := &upstreamScript{conns: [][]string{{frame(10, "", `{"ctr":4,"diff":5,"new":6,"same":1}`)}}}
	st, f := follow(t, u, 0, 10,
		sample.Op{Code: sample.Set, Key: "up.same", Value: 1}, sample.Op{Code: sample.Set, Key: "up.diff", Value: 2},
		sample.Op{Code: sample.Set, Key: "up.stale", Value: 3}, sample.Op{Code: sample.Incr, Key: "up.ctr", Value: 1},
		sample.Op{Code: sample.Set, Key: "other", Value: 9}, sample.Op{Code: sample.Set, Key: "up", Value: 8},
		sample.Op{Code: sample.Set, Key: "upx.a", Value: 7})
	want := map[string]string{"up.ctr": "GAUGE 4", "up.diff": "GAUGE 5", "up.new": "GAUGE 6", "up.same": "GAUGE 1",
		"other": "GAUGE 9", "up": "GAUGE 8", "upx.a": "GAUGE 7", CursorKey("up"): "GAUGE 10"}
	if got := followed(st.DB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v\nwant %v", got, want)
	}
	if n := points(t, st.DB, "up.same"); n != 1 {
		t.Fatalf("up.same has %d points: a dump rewrote an equal value", n)
	}
	f.Close() // its counters are final
	if s := f.Stats(); s.Dumps != 1 || s.Resets != 0 || s.Cursor != 10 || s.Connects != 1 || s.Connected {
		t.Fatalf("stats %+v", s)
	}
	if ids := u.ids(); ids[0] != "" {
		t.Fatalf("a follower with no cursor sent Last-Event-ID %q", ids[0])
	}
	u.mu.Lock()
	q := u.query
	u.mu.Unlock()
	if q != "ticks=0" {
		t.Fatalf("the follower asked for %q, want changes only (ticks=0)", q)
	}
}

// Changes are stored in the order they came, each batch in one write that
// ends with the cursor; idle window ends (ids at or below the cursor)
// store nothing; a reset replaces the state; a stream that breaks
// reconnects with Last-Event-ID at the last event applied.
func TestFollowerChanges(t *testing.T) {
	u := &upstreamScript{conns: [][]string{
		{
			frame(5, "", `{"a":1}`),
			frame(6, "", `{"a":2}`), frame(6, "", `{"c":0}`), frame(7, "", `{"b":3}`), frame(8, "", `{"a":null}`),
			frame(20, "reset", `{"b":4,"z":1}`),
			frame(21, "", `{"z":2}`),
			"id: 22\r\ndata: {\"z\":", // cut in the middle: not applied
		},
		{": resumed\r\n\r\n", frame(22, "", `{"y":1}`), frame(22, "", `{"q":0}`), frame(23, "", `{"x":5}`)},
	}}
	st, f := follow(t, u, 0, 23)
	want := map[string]string{"up.b": "GAUGE 4", "up.x": "GAUGE 5", "up.y": "GAUGE 1", "up.z": "GAUGE 2", CursorKey("up"): "GAUGE 23"}
	if got := followed(st.DB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v\nwant %v", got, want)
	}
	if n := points(t, st.DB, "up.z"); n != 2 {
		t.Fatalf("up.z has %d points, want 2", n)
	}
	if ids := u.ids(); len(ids) < 2 || ids[1] != "21" {
		t.Fatalf("Last-Event-ID of each connection: %q, want the second to resume after 21", ids)
	}
	f.Close()
	if s := f.Stats(); s.Dumps != 2 || s.Resets != 1 || s.Skipped != 2 || s.Changes != 6 || s.Errors < 1 {
		t.Fatalf("stats %+v", s)
	}
	// Every write that holds a change event holds the cursor, last.
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, w := range st.writes {
		if w[len(w)-1].Key != CursorKey("up") && slices.ContainsFunc(w, func(op sample.Op) bool { return op.Key == "up.a" || op.Key == "up.z" || op.Key == "up.y" }) {
			t.Fatalf("a write of changes without the cursor: %+v", w)
		}
	}
}

// A dump larger than MaxBatch is written in parts; only the last moves
// the cursor, so a dump cut short is done again from the start. An
// upstream that refuses the request is retried.
func TestFollowerDumpInParts(t *testing.T) {
	var keys []string
	for i := range 7 {
		keys = append(keys, fmt.Sprintf(`"k%d":%d`, i, i))
	}
	u := &upstreamScript{conns: [][]string{{"status 503"}, {frame(3, "", "{"+strings.Join(keys, ",")+"}")}}}
	var pre []sample.Op
	for i := range 5 {
		pre = append(pre, sample.Op{Code: sample.Set, Key: fmt.Sprintf("up.old%d", i), Value: 1})
	}
	st, f := follow(t, u, 2, 3, pre...)
	if got := len(followed(st.DB)); got != 8 {
		t.Fatalf("%d keys, want the 7 of the dump and the cursor: %v", got, followed(st.DB))
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	cursors := 0
	for i, w := range st.writes {
		for j, op := range w {
			if op.Key == CursorKey("up") && op.Value != 0 {
				cursors++
				if i != len(st.writes)-1 || j != len(w)-1 {
					t.Fatalf("the cursor moved in write %d of %d", i+1, len(st.writes))
				}
			}
		}
	}
	if cursors != 1 || len(st.writes) < 5 {
		t.Fatalf("%d writes, %d of them moved the cursor", len(st.writes), cursors)
	}
	f.Close()
	if s := f.Stats(); s.Errors < 1 {
		t.Fatalf("the 503 was not counted: %+v", s)
	}
}

// A change event with more keys than a write holds is no Sonde's: the
// stream is refused, nothing of it stored, and the follower goes on from
// its cursor.
func TestFollowerRefusesHugeChange(t *testing.T) {
	var pairs []string
	for i := range 5 {
		pairs = append(pairs, fmt.Sprintf(`"k%d":1`, i))
	}
	u := &upstreamScript{conns: [][]string{
		{frame(1, "", `{}`), frame(2, "", "{"+strings.Join(pairs, ",")+"}")},
		{frame(3, "", `{"a":1}`)},
	}}
	st, f := follow(t, u, 4, 3)
	f.Close()
	want := map[string]string{"up.a": "GAUGE 1", CursorKey("up"): "GAUGE 3"}
	if got := followed(st.DB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v\nwant %v", got, want)
	}
	if ids := u.ids(); len(ids) != 2 || ids[1] != "1" {
		t.Fatalf("Last-Event-ID of each connection: %q", ids)
	}
}

// BenchmarkFollower: change events applied a second by a follower reading
// a stream that is all there (an upstream far ahead), against its peer,
// the same SETs appended straight to the store in writes of the same
// size. The ratio is what the stream, its parsing and the cursor cost.
func BenchmarkFollower(b *testing.B) {
	const keys = 1000
	b.Run("follower", func(b *testing.B) {
		var sb strings.Builder
		sb.WriteString(frame(1, "", "{}"))
		for i := range b.N {
			sb.WriteString(frame(uint64(i+2), "", fmt.Sprintf(`{"host%d.load":%d.5}`, i%keys, i)))
		}
		u := &upstreamScript{conns: [][]string{{sb.String()}}}
		b.ReportAllocs()
		b.ResetTimer()
		st, _ := follow(b, u, 0, uint64(b.N+1))
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
		st.mu.Lock()
		b.ReportMetric(float64(b.N)/float64(len(st.writes)), "changes/write")
		st.mu.Unlock()
	})
	b.Run("direct", func(b *testing.B) {
		db, err := engine.Open(b.TempDir(), engine.Options{SnapshotInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		ops := make([]sample.Op, 0, 4096)
		errs := make([]error, 4096)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			ops = append(ops, sample.Op{Code: sample.Set, Key: fmt.Sprintf("up.host%d.load", i%keys), Value: float64(i) + 0.5})
			if len(ops) == cap(ops)-1 || i == b.N-1 {
				ops = append(ops, sample.Op{Code: sample.Set, Key: CursorKey("up"), Value: float64(i)})
				if err := db.AppendUnacked(context.Background(), ops, errs); err != nil {
					b.Fatal(err)
				}
				ops = ops[:0]
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
	})
}

// A reset cut short (here after its first write) leaves no cursor: the
// next stream opens without Last-Event-ID and its dump finishes the state.
// With the old cursor left, an upstream that had grown past it would
// resume there, and the keys the reset was to delete would stay.
func TestFollowerResetCutShort(t *testing.T) {
	u := &upstreamScript{conns: [][]string{
		{frame(5, "", `{"a":1,"b":1,"c":1}`), "id: 2\r\nevent: reset\r\ndata: {\"a\":2,\"b\":2"},
		{frame(6, "", `{"a":2,"b":2,"d":1}`)},
	}}
	st, f := follow(t, u, 2, 6)
	f.Close()
	want := map[string]string{"up.a": "GAUGE 2", "up.b": "GAUGE 2", "up.d": "GAUGE 1", CursorKey("up"): "GAUGE 6"}
	if got := followed(st.DB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v\nwant %v", got, want)
	}
	if ids := u.ids(); fmt.Sprint(ids) != fmt.Sprint([]string{"", ""}) {
		t.Fatalf("Last-Event-ID of each connection: %q, want none after the cut reset", ids)
	}
	if n := points(t, st.DB, "up.a"); n != 2 {
		t.Fatalf("up.a has %d points, want 2 (1, then the reset's 2, not written again by the dump)", n)
	}
}

// A stream that goes silent (no event, no heartbeat) for IdleTimeout is
// given up and opened again from the cursor.
func TestFollowerIdleTimeout(t *testing.T) {
	u := &upstreamScript{conns: [][]string{
		{frame(1, "", `{"a":1}`), "hold"},
		{": resumed\r\n\r\n", frame(2, "", `{"a":2}`)},
	}}
	_, f := followWith(t, u, FollowOptions{IdleTimeout: 200 * time.Millisecond}, 2)
	f.Close()
	if ids := u.ids(); fmt.Sprint(ids) != fmt.Sprint([]string{"", "1"}) {
		t.Fatalf("Last-Event-ID of each connection: %q", ids)
	}
	if s := f.Stats(); s.Errors != 1 || s.Connects != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// What a Sonde never sends is refused, stream by stream, and nothing of
// it stored: an unknown event type, an id past 2^53 (the cursor is a
// float64); another follower's cursor is not copied (in a loop of
// followers each would copy the other's cursor writes for ever). An error
// answer whose body never ends, or a 101 whose body is the connection,
// ends the session after IdleTimeout.
func TestFollowerRefusesWhatNoSondeSends(t *testing.T) {
	u := &upstreamScript{conns: [][]string{
		{frame(1, "", `{}`), frame(2, "foo", `{"a":1}`)},
		{frame(1<<53+1, "", `{"b":1}`)},
		{"stall 503"},
		{"stall 101"},
		{": resumed\r\n\r\n", frame(3, "", `{"sonde.upstream.x.id":5}`), frame(4, "", `{"c":1}`)},
	}}
	st, f := followWith(t, u, FollowOptions{IdleTimeout: 300 * time.Millisecond}, 4)
	f.Close()
	want := map[string]string{"up.c": "GAUGE 1", CursorKey("up"): "GAUGE 4"}
	if got := followed(st.DB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v\nwant %v", got, want)
	}
	if s := f.Stats(); s.Errors != 4 || s.Changes != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// The follower keeps upstream's epoch beside its cursor, written with it,
// and sends it back with Last-Event-ID: upstream then resumes only if it
// still vouches for the ids (docs/format/epochs.md). An epoch that
// changes (upstream restarted) is written with the next cursor.
func TestFollowerEpoch(t *testing.T) {
	u := &upstreamScript{conns: [][]string{
		{"epoch 7", frame(5, "", `{"a":1}`), frame(6, "", `{"a":2}`)},
		{"epoch 9", ": resumed\r\n\r\n", frame(7, "", `{"a":3}`)},
	}}
	st, f := follow(t, u, 0, 7)
	f.Close()
	if s, _ := st.Get("sonde.upstream.up.epoch"); s.Value != 9 {
		t.Fatalf("stored epoch %v, want 9", s.Value)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if fmt.Sprint(u.lastIDs, u.epochs) != fmt.Sprint([]string{"", "6"}, []string{"", "7"}) {
		t.Fatalf("Last-Event-ID %q and X-Sonde-Epoch %q of each request", u.lastIDs, u.epochs)
	}
	// Each epoch went in the write of the cursor it came with.
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, w := range st.writes {
		for i, op := range w {
			if op.Key == "sonde.upstream.up.epoch" && op.Value != 0 && (i+2 != len(w) || w[i+1].Key != CursorKey("up")) {
				t.Fatalf("the epoch written apart from its cursor: %+v", w)
			}
		}
	}
}

// TestFollowerShownURL: logs and stats show an upstream's URL without
// what may hold its token (userinfo, token=).
func TestFollowerShownURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://u:secret-token@h:1337/events?match=a*": "http://h:1337/events?match=a*&ticks=0",
		"https://h/events?token=secret-token&match=a":  "https://h/events?match=a&ticks=0&token=%E2%80%A6",
		"http://h/events": "http://h/events?ticks=0",
	} {
		f, err := NewFollower(FollowOptions{URL: in, Name: "up"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.URL(); got != want || strings.Contains(got, "secret") || strings.Contains(fmt.Sprint(f.Stats()), "secret") {
			t.Errorf("%s shown as %s, want %s", in, got, want)
		}
	}
}
