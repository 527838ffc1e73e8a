package remotewrite

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// got is one sample a receiver took: its series (labels as
// name="value" joined by ','), time and value.
type got struct {
	series string
	ts     int64
	v      float64
}

// decode parses a snappy-compressed WriteRequest with protowire, field by
// field, as a receiver does: an independent reading of what wire.go
// writes.
func decode(t *testing.T, body []byte) []got {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Errorf("snappy: %v", err)
		return nil
	}
	var out []got
	fields(t, raw, func(num protowire.Number, typ protowire.Type, b []byte, _ uint64) {
		if num != 1 || typ != protowire.BytesType {
			t.Errorf("WriteRequest field %d type %d", num, typ)
			return
		}
		var labels []string
		var samples []got
		fields(t, b, func(num protowire.Number, typ protowire.Type, b []byte, _ uint64) {
			switch num {
			case 1:
				var name, value string
				fields(t, b, func(num protowire.Number, _ protowire.Type, b []byte, _ uint64) {
					if num == 1 {
						name = string(b)
					} else {
						value = string(b)
					}
				})
				labels = append(labels, fmt.Sprintf("%s=%q", name, value))
			case 2:
				var s got
				fields(t, b, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) {
					if num == 1 {
						s.v = math.Float64frombits(x)
					} else {
						s.ts = int64(x)
					}
				})
				samples = append(samples, s)
			}
		})
		if !sort.StringsAreSorted(labels) {
			t.Errorf("labels not sorted: %v", labels)
		}
		for _, s := range samples {
			s.series = strings.Join(labels, ",")
			out = append(out, s)
		}
	})
	return out
}

func fields(t *testing.T, b []byte, fn func(protowire.Number, protowire.Type, []byte, uint64)) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Errorf("bad tag: %v", protowire.ParseError(n))
			return
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		default:
			t.Errorf("unexpected wire type %d", typ)
			return
		}
		if n < 0 {
			t.Errorf("bad field: %v", protowire.ParseError(n))
			return
		}
		b = b[n:]
		fn(num, typ, v, x)
	}
}

// receiver is a remote_write endpoint with Prometheus' rules: a request
// holding a sample older than its series' newest, or at the newest's time
// with another value, is refused whole with a 400 and nothing of it is
// kept.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	series map[string][]got
	newest map[string]got
	// answer, when set, answers a request instead (0: go on as usual).
	answer func(req []got) int
	// after runs once a request was stored (or refused), before the answer.
	after    func()
	requests int
	bad      int // requests refused
	arrived  chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, series: map[string][]got{}, newest: map[string]got{}, arrived: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	if req.Header.Get("Content-Encoding") != "snappy" || req.Header.Get("Content-Type") != "application/x-protobuf" ||
		req.Header.Get("X-Prometheus-Remote-Write-Version") != "0.1.0" {
		r.t.Errorf("headers %v", req.Header)
	}
	samples := decode(r.t, body)
	r.mu.Lock()
	r.requests++
	code := http.StatusNoContent
	if r.answer != nil {
		if c := r.answer(samples); c != 0 {
			code = c
		}
	}
	if code == http.StatusNoContent {
		newest := map[string]got{}
		for _, s := range samples {
			n, ok := newest[s.series]
			if !ok {
				n, ok = r.newest[s.series]
			}
			if ok && (s.ts < n.ts || s.ts == n.ts && s.v != n.v) {
				code = http.StatusBadRequest
				break
			}
			newest[s.series] = s
		}
	}
	if code == http.StatusNoContent {
		for _, s := range samples {
			if n, ok := r.newest[s.series]; ok && n.ts == s.ts {
				continue // the same sample again: kept once
			}
			r.newest[s.series] = s
			r.series[s.series] = append(r.series[s.series], s)
		}
	}
	if code == http.StatusBadRequest {
		r.bad++
	}
	after := r.after
	r.mu.Unlock()
	if after != nil {
		after()
	}
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	w.WriteHeader(code)
	if code >= 400 {
		fmt.Fprintf(w, "refused (%d)\n", code)
	}
}

func (r *receiver) url() string { return r.srv.URL + "/api/v1/write" }

// total returns how many samples the receiver holds.
func (r *receiver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.series {
		n += len(s)
	}
	return n
}

// waitFor waits until cond holds, checking after each request the
// receiver answers and each second.
func (r *receiver) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-r.arrived:
		case <-time.After(time.Second):
		}
	}
}

type env struct {
	t    *testing.T
	dir  string
	db   *engine.DB
	f    *Forwarder
	opts engine.Options
}

// open opens a DB in dir with a forwarder to url.
func open(t *testing.T, dir string, cfg Config, opts engine.Options) *env {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	f, err := Prepare(filepath.Join(dir, "remote_write"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts.Holds = append(opts.Holds, f.Hold())
	db, err := engine.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(db); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, db: db, f: f, opts: opts}
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	if e.f != nil {
		if err := e.f.Close(); err != nil {
			e.t.Error(err)
		}
		e.f = nil
	}
	if e.db != nil {
		if err := e.db.Close(); err != nil {
			e.t.Error(err)
		}
		e.db = nil
	}
}

func (e *env) write(ops ...sample.Op) {
	e.t.Helper()
	errs := make([]error, len(ops))
	if err := e.db.Append(context.Background(), ops, errs); err != nil {
		e.t.Fatal(err)
	}
	for _, err := range errs {
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

func gauge(key string, ts int64, v float64) sample.Op {
	return sample.Op{Code: sample.Set, Key: key, Time: ts, Value: v}
}

// TestForward: gauges, counters and tagged keys arrive in order, named as
// docs/remote-write.md says, counters as their totals, one point per
// series and millisecond.
func TestForward(t *testing.T) {
	r := newReceiver(t)
	e := open(t, t.TempDir(), Config{URL: r.url(), Shards: 3, MaxSamples: 7,
		ExternalLabels: []Label{{"site", "edge1"}, {"env", "ignored"}}}, engine.Options{})
	base := time.Now().Add(-time.Minute).UnixMilli()
	var ops []sample.Op
	for i := range 100 {
		ops = append(ops, gauge("web.load", base+int64(i), float64(i)))
		ops = append(ops, gauge(fmt.Sprintf("5xx.rate;host-name=a%d;env=prod", i%3), base+int64(i), float64(-i)))
	}
	e.write(ops...)
	for range 10 {
		e.write(sample.Op{Code: sample.Incr, Key: "hits", Value: 2})
	}
	// Two points of one millisecond: the second stands.
	e.write(gauge("same.ms", base+500, 1), gauge("same.ms", base+500, 2), gauge("same.ms", base+501, 3))
	want := 100 + 100 + 2
	r.waitFor(t, "every point", func() bool { return r.total() >= want && e.f.Stats().Backlog == 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	load := r.series[`__name__="web_load",env="ignored",site="edge1"`]
	if len(load) != 100 {
		t.Fatalf("web.load: %d points; series %v", len(load), keys(r.series))
	}
	for i, s := range load {
		if s.ts != base+int64(i) || s.v != float64(i) {
			t.Fatalf("web.load point %d: %+v", i, s)
		}
	}
	tagged := r.series[`__name__="_5xx_rate",env="prod",host_name="a1",site="edge1"`]
	if len(tagged) != 33 {
		t.Fatalf("tagged series: %d points; series %v", len(tagged), keys(r.series))
	}
	hits := r.series[`__name__="hits",env="ignored",site="edge1"`]
	if len(hits) == 0 || hits[len(hits)-1].v != 20 {
		t.Fatalf("hits: %+v, want the total 20 last", hits)
	}
	for i := 1; i < len(hits); i++ {
		if hits[i].v < hits[i-1].v || hits[i].ts < hits[i-1].ts {
			t.Fatalf("hits out of order: %+v", hits)
		}
	}
	same := r.series[`__name__="same_ms",env="ignored",site="edge1"`]
	if len(same) != 2 || same[0].v != 2 || same[1].v != 3 {
		t.Fatalf("same.ms: %+v, want 2 then 3", same)
	}
	if r.bad != 0 {
		t.Fatalf("%d requests refused", r.bad)
	}
	held := 0
	for _, s := range r.series {
		held += len(s)
	}
	if st := e.f.Stats(); st.Sent != int64(held) || st.Refused != 0 || st.Retries != 0 {
		t.Fatalf("stats %+v, receiver holds %d", st, held)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestForwardRetries: 5xx and 429 answers are retried until the receiver
// takes the points; nothing is lost or doubled.
func TestForwardRetries(t *testing.T) {
	r := newReceiver(t)
	fails := 0
	r.answer = func([]got) int {
		if fails < 4 {
			fails++
			if fails%2 == 0 {
				return http.StatusTooManyRequests
			}
			return http.StatusServiceUnavailable
		}
		return 0
	}
	e := open(t, t.TempDir(), Config{URL: r.url(), Shards: 1, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}, engine.Options{})
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 50 {
		e.write(gauge("g", base+int64(i), float64(i)))
	}
	r.waitFor(t, "50 points", func() bool { return r.total() == 50 && e.f.Stats().Backlog == 0 })
	if st := e.f.Stats(); st.Retries != 4 || st.Sent != 50 || !strings.Contains(st.LastError, "429") {
		t.Fatalf("stats %+v, want 4 retries, 50 sent, the last error a 429", st)
	}
}

// TestForwardRefusedPoint: a point the receiver refuses (a 400 for the
// whole request, as Prometheus answers) costs only itself: the request
// is sent again in halves.
func TestForwardRefusedPoint(t *testing.T) {
	r := newReceiver(t)
	r.answer = func(req []got) int {
		for _, s := range req {
			if s.v == 666 {
				return http.StatusBadRequest
			}
		}
		return 0
	}
	e := open(t, t.TempDir(), Config{URL: r.url(), Shards: 2, MaxSamples: 64}, engine.Options{})
	base := time.Now().Add(-time.Minute).UnixMilli()
	var ops []sample.Op
	for i := range 200 {
		v := float64(i)
		if i == 77 || i == 150 {
			v = 666
		}
		ops = append(ops, gauge(fmt.Sprintf("k%d", i%5), base+int64(i), v))
	}
	e.write(ops...)
	r.waitFor(t, "198 points", func() bool { return r.total() == 198 && e.f.Stats().Backlog == 0 })
	if st := e.f.Stats(); st.Refused != 2 || st.Sent != 198 || !strings.Contains(st.LastError, "400 refused") {
		t.Fatalf("stats %+v, want 2 refused, 198 sent", st)
	}
}

// TestForwardResumes: a destination closed and opened again goes on from
// where it was: points written meanwhile arrive, none twice.
func TestForwardResumes(t *testing.T) {
	r := newReceiver(t)
	dir := t.TempDir()
	cfg := Config{URL: r.url(), Shards: 2}
	e := open(t, dir, cfg, engine.Options{})
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 30 {
		e.write(gauge("g", base+int64(i), float64(i)))
	}
	r.waitFor(t, "30 points", func() bool { return r.total() == 30 && e.f.Stats().Backlog == 0 })
	through := e.f.Stats().Through
	e.close()

	// Written while no forwarder runs.
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e2 := &env{t: t, db: db}
	for i := 30; i < 60; i++ {
		e2.write(gauge("g", base+int64(i), float64(i)))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	e = open(t, dir, cfg, engine.Options{})
	if got := e.f.Stats().Through; got < through {
		t.Fatalf("position went back: %d after %d", got, through)
	}
	r.waitFor(t, "60 points", func() bool { return r.total() == 60 && e.f.Stats().Backlog == 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bad != 0 || r.requests > 40 {
		t.Fatalf("%d requests, %d refused", r.requests, r.bad)
	}
}

// TestForwardResendAfterCrash: a chunk whose request reached the receiver
// but whose answer never came back (the process died) is sent again, cut
// the same way, when the destination opens again: the receiver refuses it
// whole, as it has it, and that is counted as duplicates, not refusals;
// the chunks after it arrive.
func TestForwardResendAfterCrash(t *testing.T) {
	r := newReceiver(t)
	dir := t.TempDir()
	cfg := Config{URL: r.url(), Shards: 1, MaxSamples: 10}
	stall := make(chan struct{})
	stalled := make(chan struct{})
	var once sync.Once
	r.after = func() { once.Do(func() { close(stalled); <-stall }) }
	e := open(t, dir, cfg, engine.Options{})
	base := time.Now().Add(-time.Minute).UnixMilli()
	var ops []sample.Op
	for i := range 10 {
		ops = append(ops, gauge("g", base+int64(i), float64(i)))
	}
	e.write(ops...)
	<-stalled // the receiver stored the first request and does not answer
	ops = ops[:0]
	for i := 10; i < 25; i++ {
		ops = append(ops, gauge("g", base+int64(i), float64(i)))
	}
	e.write(ops...)
	// The process "dies": the forwarder stops without the answer.
	go func() { <-time.After(100 * time.Millisecond); close(stall) }()
	e.close()
	r.mu.Lock()
	r.after = nil
	r.mu.Unlock()
	if n := r.total(); n != 10 {
		t.Fatalf("receiver holds %d points before the restart, want the first request's 10", n)
	}

	e = open(t, dir, cfg, engine.Options{})
	r.waitFor(t, "25 points", func() bool { return r.total() == 25 && e.f.Stats().Backlog == 0 })
	st := e.f.Stats()
	if st.Duplicates != 10 || st.Refused != 0 || st.Sent != 15 {
		t.Fatalf("stats %+v, want 10 duplicates, 15 sent", st)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.series[`__name__="g"`] {
		if s.ts != base+int64(i) {
			t.Fatalf("point %d at %d", i, s.ts)
		}
	}
}

// TestForwardBacklogBound: while the receiver is down the WAL kept for it
// grows only to MaxHeld; the records cut are counted, and forwarding goes
// on after them.
func TestForwardBacklogBound(t *testing.T) {
	r := newReceiver(t)
	var down sync.Mutex
	isDown := true
	r.answer = func([]got) int {
		down.Lock()
		defer down.Unlock()
		if isDown {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	opts := engine.Options{SegmentSize: 32 << 10, MaxHeld: 128 << 10, SnapshotQuiet: -1}
	e := open(t, t.TempDir(), Config{URL: r.url(), Shards: 1, MaxSamples: 50, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}, opts)
	base := time.Now().Add(-time.Hour).UnixMilli()
	n := 0
	for range 40 {
		var ops []sample.Op
		for range 250 {
			ops = append(ops, gauge(fmt.Sprintf("key.%d", n%100), base+int64(n), float64(n)))
			n++
		}
		e.write(ops...)
		if err := e.db.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	walBytes := int64(0)
	ents, _ := filepath.Glob(filepath.Join(e.dir, "wal", "*"))
	for _, p := range ents {
		if st, err := osStat(p); err == nil {
			walBytes += st
		}
	}
	if walBytes > 128<<10+2*(32<<10) {
		t.Fatalf("the WAL holds %d bytes, bound %d", walBytes, 128<<10)
	}
	down.Lock()
	isDown = false
	down.Unlock()
	r.waitFor(t, "the backlog sent", func() bool { return e.f.Stats().Backlog == 0 && r.total() > 0 })
	st := e.f.Stats()
	if st.Cut == 0 || st.Sent == 0 || st.Sent+st.Cut < int64(n) {
		t.Fatalf("stats %+v after %d points", st, n)
	}
	// The newest point arrived.
	r.mu.Lock()
	defer r.mu.Unlock()
	last := r.newest[fmt.Sprintf(`__name__="key_%d"`, (n-1)%100)]
	if last.v != float64(n-1) {
		t.Fatalf("newest point of key.%d: %+v", (n-1)%100, last)
	}
}

func osStat(p string) (int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// TestForwardJournalPastWAL: after a power loss the WAL may end before
// the journal's position (records published before their fsync are
// gone, and their indexes go to new records). The destination goes on
// from the WAL's end, and sends the new records.
func TestForwardJournalPastWAL(t *testing.T) {
	r := newReceiver(t)
	base := time.Now().Add(-time.Minute).UnixMilli()
	a := t.TempDir()
	db, err := engine.Open(a, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e0 := &env{t: t, db: db}
	for i := range 50 {
		e0.write(gauge("old", base+int64(i), float64(i)))
	}
	db.Close()
	b := t.TempDir()
	if err := os.CopyFS(b, os.DirFS(a)); err != nil { // what the disk kept
		t.Fatal(err)
	}
	cfg := Config{URL: r.url(), Shards: 1}
	e := open(t, a, cfg, engine.Options{})
	for i := 50; i < 100; i++ {
		e.write(gauge("g", base+int64(i), float64(i)))
	}
	r.waitFor(t, "50 points", func() bool { return r.total() == 50 && e.f.Stats().Backlog == 0 })
	e.close()
	jb, err := os.ReadFile(filepath.Join(a, "remote_write", "test.journal"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(b, "remote_write"), 0o755)
	if err := os.WriteFile(filepath.Join(b, "remote_write", "test.journal"), jb, 0o644); err != nil {
		t.Fatal(err)
	}
	e = open(t, b, cfg, engine.Options{})
	if st := e.f.Stats(); st.Through != 50 {
		t.Fatalf("position %d after the cut back, want the WAL's end 50", st.Through)
	}
	for i := range 40 {
		e.write(gauge("new", base+1000+int64(i), float64(i)))
	}
	r.waitFor(t, "the 40 new points", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.series[`__name__="new"`]) == 40
	})
	r.waitFor(t, "the new points acknowledged", func() bool { return e.f.Stats().Backlog == 0 })
	// The cut back is durable: a restart does not go past the WAL again.
	e.close()
	e = open(t, b, cfg, engine.Options{})
	if st := e.f.Stats(); st.Through != 90 || st.Backlog != 0 {
		t.Fatalf("after a restart: %+v", st)
	}
}

// TestForwardDestinationErrors: 401, 403, 404 and a redirect say the
// destination is wrong, not the points: they are sent again until it is
// fixed, never dropped, and a redirect is not followed.
func TestForwardDestinationErrors(t *testing.T) {
	r := newReceiver(t)
	answers := []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusFound}
	n := 0
	r.answer = func([]got) int {
		if n < len(answers) {
			n++
			return answers[n-1]
		}
		return 0
	}
	redirected := make(chan struct{}, 10)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { redirected <- struct{}{} }))
	defer other.Close()
	r.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if n == len(answers)-1 { // the next answer is the redirect
			n++
			w.Header().Set("Location", other.URL)
			w.WriteHeader(http.StatusFound)
			return
		}
		r.serve(w, req)
	})
	e := open(t, t.TempDir(), Config{URL: r.url(), Shards: 1, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}, engine.Options{})
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 20 {
		e.write(gauge("g", base+int64(i), float64(i)))
	}
	r.waitFor(t, "20 points", func() bool { return r.total() == 20 && e.f.Stats().Backlog == 0 })
	if st := e.f.Stats(); st.Refused != 0 || st.Sent != 20 || st.Retries < int64(len(answers)) {
		t.Fatalf("stats %+v", st)
	}
	select {
	case <-redirected:
		t.Fatal("the redirect was followed")
	default:
	}
}

// TestForwardJournalWriteFails: while a chunk cannot be recorded in the
// journal (a full disk) none of it is sent; once it can, it is, and a
// restart loses nothing.
func TestForwardJournalWriteFails(t *testing.T) {
	r := newReceiver(t)
	dir := t.TempDir()
	cfg := Config{URL: r.url(), Shards: 1, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	e := open(t, dir, cfg, engine.Options{})
	ro, err := os.Open(e.f.j.path)
	if err != nil {
		t.Fatal(err)
	}
	e.f.j.mu.Lock()
	good := e.f.j.f
	e.f.j.f = ro // every write fails
	e.f.j.mu.Unlock()
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 10 {
		e.write(gauge("a", base+int64(i), float64(i)))
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.f.Stats().LastError, "journal") {
		if time.Now().After(deadline) {
			t.Fatalf("no journal error: %+v", e.f.Stats())
		}
		time.Sleep(time.Millisecond) // the forwarder's error shows only in its figures
	}
	if n := r.total(); n != 0 {
		t.Fatalf("%d points sent without their chunk in the journal", n)
	}
	e.f.j.mu.Lock()
	e.f.j.f = good
	e.f.j.mu.Unlock()
	ro.Close()
	for i := range 10 {
		e.write(gauge("b", base+int64(i), float64(i)))
	}
	r.waitFor(t, "20 points", func() bool { return r.total() == 20 && e.f.Stats().Backlog == 0 })
	e.close()
	e = open(t, dir, cfg, engine.Options{})
	if st := e.f.Stats(); st.Through != 20 {
		t.Fatalf("after a restart: %+v", st)
	}
}

// TestForwardTLSAndToken: a destination over HTTPS whose certificate only
// Config.TLS trusts, asking for a bearer token (Config.Header, as
// bearer-token-file= sets it): every point arrives, with the token on
// every request; without the CA nothing is sent (retried, counted).
func TestForwardTLSAndToken(t *testing.T) {
	r := newReceiver(t)
	r.srv.Close()
	var mu sync.Mutex
	var wrongAuth int
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "Bearer tok-0123456789abcdef" {
			mu.Lock()
			wrongAuth++
			mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.serve(w, req)
	}))
	defer r.srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(r.srv.Certificate())
	hdr := http.Header{"Authorization": {"Bearer tok-0123456789abcdef"}}

	// Without the CA: the certificate is refused, nothing arrives.
	dir := t.TempDir()
	e := open(t, dir, Config{URL: r.url(), Header: hdr, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}, engine.Options{})
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 10 {
		e.write(gauge("tls", base+int64(i), float64(i)))
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.f.Stats().Retries < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no retries against an untrusted certificate: %+v", e.f.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := e.f.Stats(); st.Sent != 0 || !strings.Contains(st.LastError, "certificate") || r.total() != 0 {
		t.Fatalf("sent to an untrusted certificate: %+v, %d arrived", st, r.total())
	}
	e.close()

	// With it, the same data directory: everything arrives, authenticated.
	e = open(t, dir, Config{URL: r.url(), Header: hdr, TLS: &tls.Config{RootCAs: pool}}, engine.Options{})
	r.waitFor(t, "10 points over TLS", func() bool { return r.total() == 10 && e.f.Stats().Backlog == 0 })
	mu.Lock()
	defer mu.Unlock()
	if wrongAuth != 0 {
		t.Fatalf("%d requests without the token", wrongAuth)
	}
}
