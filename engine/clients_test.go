package engine

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func connect(t *testing.T, db *DB, name string) {
	t.Helper()
	if err := db.ClientConnect(context.Background(), name); err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
}

func disconnect(t *testing.T, db *DB, name string) {
	t.Helper()
	if err := db.ClientDisconnect(context.Background(), name); err != nil {
		t.Fatalf("disconnect %s: %v", name, err)
	}
}

func logLine(s string) sample.ClientWrite   { return sample.ClientWrite{Text: s} }
func setKey(k, v string) sample.ClientWrite { return sample.ClientWrite{Set: true, Key: k, Text: v} }
func clientOf(t *testing.T, db *DB, name string) sample.Client {
	t.Helper()
	c, ok := db.Client(name)
	if !ok {
		t.Fatalf("no client %s", name)
	}
	return c
}

// write writes ws for name and returns the outcome of each.
func write(t *testing.T, db *DB, name string, ws ...sample.ClientWrite) []error {
	t.Helper()
	errs := make([]error, len(ws))
	if err := db.ClientWrite(context.Background(), name, ws, errs); err != nil {
		t.Fatalf("write for %s: %v", name, err)
	}
	return errs
}

func logTexts(c sample.Client) []string {
	var out []string
	for _, l := range c.Log {
		out = append(out, l.Text)
	}
	return out
}

// TestClientRules: one connection per name, the ring keeps the newest
// lines, the key and client bounds, eviction of the client that
// disconnected longest ago, forget.
func TestClientRules(t *testing.T) {
	clock := newClock()
	db := openDB(t, t.TempDir(), hbOpts(clock, Options{MaxClients: 3, ClientRing: 4, MaxClientKeys: 2}))
	defer db.Close()
	ctx := context.Background()
	connect(t, db, "a")
	if err := db.ClientConnect(ctx, "a"); !errors.Is(err, ErrClientConnected) {
		t.Fatalf("second connect of a: %v", err)
	}
	errs := write(t, db, "a", logLine("l1"), logLine("l2"), logLine("l3"), logLine("l4"), logLine("l5"), logLine("l6"),
		setKey("k1", "v1"), setKey("k2", "v2"), setKey("k3", "v3"), setKey("k1", "v1b"))
	for i, err := range errs {
		if want := i == 8; want != errors.Is(err, ErrTooManyKeys) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	c := clientOf(t, db, "a")
	if got, want := logTexts(c), []string{"l6", "l5", "l4", "l3"}; !slices.Equal(got, want) {
		t.Fatalf("log %q, want %q", got, want)
	}
	if want := map[string]string{"k1": "v1b", "k2": "v2"}; !maps.Equal(c.State, want) {
		t.Fatalf("state %v, want %v", c.State, want)
	}
	if c.Lines != 6 || c.Sets != 3 || !c.Connected {
		t.Fatalf("info %+v", c.ClientInfo)
	}
	if err := db.ClientWrite(ctx, "b", []sample.ClientWrite{logLine("x")}, make([]error, 1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("write of a client not connected: %v", err)
	}
	connect(t, db, "b")
	connect(t, db, "c")
	if err := db.ClientConnect(ctx, "d"); !errors.Is(err, ErrTooManyClients) {
		t.Fatalf("a fourth client while three are connected: %v", err)
	}
	write(t, db, "b", logLine("b1"))
	disconnect(t, db, "b")
	clock.add(time.Second)
	disconnect(t, db, "c")
	connect(t, db, "d") // takes b's place: b disconnected first
	names := func() []string {
		var out []string
		for _, c := range db.Clients() {
			out = append(out, fmt.Sprint(c.Name, c.Connected))
		}
		return out
	}
	if got, want := names(), []string{"atrue", "cfalse", "dtrue"}; !slices.Equal(got, want) {
		t.Fatalf("clients %q, want %q", got, want)
	}
	if err := db.ForgetClient(ctx, "a"); !errors.Is(err, ErrClientConnected) {
		t.Fatalf("forget a connected client: %v", err)
	}
	if err := db.ForgetClient(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("forget a forgotten client: %v", err)
	}
	if err := db.ForgetClient(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	disconnect(t, db, "a")
	if err := db.ClientDisconnect(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second disconnect: %v", err)
	}
	connect(t, db, "a") // a new connection keeps the log and state
	c = clientOf(t, db, "a")
	if len(c.Log) != 4 || len(c.State) != 2 || !c.Connected || c.DisconnectedAt == 0 {
		t.Fatalf("a after reconnecting: %+v", c)
	}
	// The stream: every connect, disconnect, line and key still held, in
	// id order.
	evs := db.ClientEventsAfter(0, nil, 1<<20)
	var kinds []string
	for i, ev := range evs {
		if i > 0 && ev.ID <= evs[i-1].ID {
			t.Fatalf("events out of order: %+v", evs)
		}
		if ev.Client == "a" {
			kinds = append(kinds, ev.Kind+":"+ev.Key+ev.Text)
		}
	}
	if want := []string{"gap:", "log:l3", "log:l4", "log:l5", "log:l6", "set:k2v2", "set:k1v1b", "disconnect:", "connect:"}; !slices.Equal(kinds, want) {
		t.Fatalf("stream of a: %q, want %q", kinds, want)
	}
	// A small byte bound cuts the batch; the rest follows after its last id.
	part := db.ClientEventsAfter(0, nil, 1)
	if len(part) != 1 || part[0].ID != evs[0].ID {
		t.Fatalf("a batch bounded at 1 byte: %+v", part)
	}
	if rest := db.ClientEventsAfter(part[0].ID, nil, 1<<20); len(rest) != len(evs)-1 {
		t.Fatalf("after the first: %d events, want %d", len(rest), len(evs)-1)
	}
}

// TestClientsDurable: the rings, states and counts are what the records
// say after snapshots, crashes, clean restarts and a snapshot that stored
// the clients and failed before its index; every client is disconnected
// by a restart.
func TestClientsDurable(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1, ClientRing: 8}
	db := openDB(t, dir, opts)
	type model struct {
		lines []string
		state map[string]string
	}
	models := map[string]*model{}
	names := []string{"w1", "w2", "w3"}
	for _, n := range names {
		models[n] = &model{state: map[string]string{}}
	}
	check := func(what string) {
		t.Helper()
		for _, n := range names {
			m := models[n]
			c := clientOf(t, db, n)
			var want []string
			for i := len(m.lines) - 1; i >= 0 && len(want) < 8; i-- {
				want = append(want, m.lines[i])
			}
			if got := logTexts(c); !slices.Equal(got, want) {
				t.Fatalf("%s: log of %s %q, want %q", what, n, got, want)
			}
			if !maps.Equal(c.State, m.state) || c.Lines != uint64(len(m.lines)) {
				t.Fatalf("%s: %s has state %v and %d lines, want %v and %d", what, n, c.State, c.Lines, m.state, len(m.lines))
			}
		}
	}
	var last uint64 // the index before a restart
	reopen := func(connected bool) {
		db = openDB(t, dir, opts)
		for _, c := range db.Clients() {
			if c.Connected {
				t.Fatalf("%s is connected after a restart", c.Name)
			}
		}
		// The restart's disconnects have ids past any a reader held.
		var got []string
		for _, ev := range db.ClientEventsAfter(last, nil, 1<<20) {
			if ev.Kind != sample.ClientDisconnected {
				t.Fatalf("after the restart: %+v", ev)
			}
			got = append(got, ev.Client)
		}
		slices.Sort(got)
		if want := names; connected && !slices.Equal(got, want) || !connected && len(got) != 0 {
			t.Fatalf("disconnects after %d: %q (clients connected: %v)", last, got, connected)
		}
	}
	line := 0
	for round := range 12 {
		for _, n := range names {
			connect(t, db, n)
			var ws []sample.ClientWrite
			for range 5 {
				line++
				s := fmt.Sprintf("%s line %d", n, line)
				ws = append(ws, logLine(s))
				models[n].lines = append(models[n].lines, s)
			}
			k, v := fmt.Sprint("k", line%3), fmt.Sprint(line)
			ws = append(ws, setKey(k, v))
			models[n].state[k] = v
			for i, err := range write(t, db, n, ws...) {
				if err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			if round%2 == 0 {
				disconnect(t, db, n)
			}
		}
		last = db.Index()
		switch round % 4 {
		case 0:
			if err := db.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
		case 1:
			abandon(t, db)
			reopen(round%2 == 1)
		case 2:
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			reopen(round%2 == 1)
		case 3:
			// A snapshot that stores the clients and fails before its
			// index: replay meets the records the stored clients hold.
			if cs := db.captureClients(); cs == nil {
				t.Fatal("nothing to store")
			} else if err := db.store.PutClients(cs); err != nil {
				t.Fatal(err)
			}
			abandon(t, db)
			reopen(round%2 == 1)
		}
		check(fmt.Sprintf("round %d", round))
		checkBatches(t, db)
		if round%4 == 0 {
			for _, n := range names {
				if c := clientOf(t, db, n); c.Connected {
					t.Fatalf("round %d: %s connected after its disconnect", round, n)
				}
			}
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkBatches reads the client stream from 0 in batches of one byte
// (one id at a time, the events of one id together) and checks it is the
// whole, in id order.
func checkBatches(t *testing.T, db *DB) {
	t.Helper()
	all := naiveEventsAfter(db, 0, nil, 1<<30)
	var got []sample.ClientEvent
	for after := uint64(0); ; {
		b := db.ClientEventsAfter(after, nil, 1)
		if len(b) == 0 {
			break
		}
		for _, ev := range b[1:] {
			if ev.ID != b[0].ID {
				t.Fatalf("a batch past its bound holds ids %d and %d", b[0].ID, ev.ID)
			}
		}
		got = append(got, b...)
		after = b[len(b)-1].ID
	}
	key := func(ev sample.ClientEvent) string { return fmt.Sprint(ev.ID, ev.Client, ev.Kind, ev.Key, ev.Text) }
	var g, w []string
	for i := range all {
		if i > 0 && all[i].ID < all[i-1].ID {
			t.Fatalf("ids out of order: %d after %d", all[i].ID, all[i-1].ID)
		}
		w = append(w, key(all[i]))
	}
	for _, ev := range got {
		g = append(g, key(ev))
	}
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("read in batches: %d events, at once: %d", len(g), len(w))
	}
}

// naiveEventsAfter is what ClientEventsAfter returns, the simple way
// (every held entry copied, sorted, cut): the tests' reference, and the
// benchmark's peer.
func naiveEventsAfter(db *DB, id uint64, dst []sample.ClientEvent, maxBytes int) []sample.ClientEvent {
	t := &db.clients
	t.mu.RLock()
	for name, c := range t.m {
		for i := range c.ring {
			if l := c.line(i); l.ID > id {
				dst = append(dst, sample.ClientEvent{ID: l.ID, Time: l.Time, Client: name, Kind: sample.ClientLogged, Text: l.Text})
			}
		}
		for _, k := range c.state {
			if k.ID > id {
				dst = append(dst, sample.ClientEvent{ID: k.ID, Time: k.Time, Client: name, Kind: sample.ClientSetKey, Key: k.Key, Text: k.Text})
			}
		}
		for _, ev := range []sample.ClientEvent{{ID: c.connIdx, Time: c.info.ConnectedAt, Kind: sample.ClientConnected},
			{ID: c.discIdx, Time: c.info.DisconnectedAt, Kind: sample.ClientDisconnected}, {ID: c.dropped, Time: c.droppedAt, Kind: sample.ClientGap}} {
			if ev.ID > id {
				ev.Client = name
				dst = append(dst, ev)
			}
		}
	}
	t.mu.RUnlock()
	slices.SortStableFunc(dst, func(a, b sample.ClientEvent) int { return cmp.Compare(a.ID, b.ID) })
	size := 0
	for i := range dst {
		size += 64 + len(dst[i].Client) + len(dst[i].Key) + len(dst[i].Text)
		if size > maxBytes && i > 0 && dst[i].ID != dst[i-1].ID {
			return dst[:i]
		}
	}
	return dst
}

// TestRepairKeepsClients: sonde check passes a WAL of client records, and
// sonde repair keeps each line once, even those a failed snapshot had
// stored.
func TestRepairKeepsClients(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1}
	db := openDB(t, dir, opts)
	connect(t, db, "w")
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprint("a", i))
		write(t, db, "w", logLine(want[len(want)-1]))
	}
	mustApply(t, db, set("w", 1))
	if err := db.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		mustApply(t, db, set("w", 1000.5+float64(i)))
		want = append(want, fmt.Sprint("b", i))
		write(t, db, "w", logLine(want[len(want)-1]))
	}
	if err := db.store.PutClients(db.captureClients()); err != nil { // a snapshot that failed after its clients
		t.Fatal(err)
	}
	abandon(t, db)
	rep, err := Check(dir)
	if err != nil || !rep.Clean() {
		t.Fatalf("check: %v, problems %q", err, rep.Problems)
	}
	flip(t, tailSegment(t, dir), func(data []byte) int {
		v := make([]byte, 8)
		putFloat(v, 1000.5)
		return bytes.Index(data, v) + 2
	})
	runRepair(t, dir)
	db = openDB(t, dir, opts)
	defer db.Close()
	c := clientOf(t, db, "w")
	got := logTexts(c)
	slices.Reverse(got)
	if !slices.Equal(got, want) || c.Lines != 20 {
		t.Fatalf("after repair: %q (%d lines), want %q", got, c.Lines, want)
	}
}

// BenchmarkClientStreamFromZero: a client stream resumed from id 0 over
// full tables (256 clients, 128 lines and 64 keys each), read in 64 KiB
// batches as /api/v1/clients.stream reads it: one op is the whole catch-up.
func BenchmarkClientStreamFromZero(b *testing.B) {
	db, err := Open(b.TempDir(), Options{SnapshotInterval: time.Hour, SnapshotQuiet: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	text := strings.Repeat("x", 400)
	for i := range 256 {
		name := fmt.Sprintf("c%03d", i)
		if err := db.ClientConnect(ctx, name); err != nil {
			b.Fatal(err)
		}
		var ws []sample.ClientWrite
		for j := range 128 {
			ws = append(ws, logLine(text), setKey(fmt.Sprint("k", j%64), text))
		}
		if err := db.ClientWrite(ctx, name, ws, make([]error, len(ws))); err != nil {
			b.Fatal(err)
		}
	}
	for _, read := range []struct {
		name string
		fn   func(uint64, []sample.ClientEvent, int) []sample.ClientEvent
	}{{"merge", db.ClientEventsAfter}, {"naive", func(id uint64, dst []sample.ClientEvent, n int) []sample.ClientEvent {
		return naiveEventsAfter(db, id, dst, n)
	}}} {
		b.Run(read.name, func(b *testing.B) {
			var buf []sample.ClientEvent
			events := 0
			for b.Loop() {
				events = 0
				for after := uint64(0); ; {
					buf = read.fn(after, buf[:0], 64<<10)
					if len(buf) == 0 {
						break
					}
					events += len(buf)
					after = buf[len(buf)-1].ID
				}
			}
			b.ReportMetric(float64(events), "events")
		})
	}
}
