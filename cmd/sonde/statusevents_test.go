package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// statusEvent is an event as /api/v1/events answers it.
type statusEvent struct {
	ID      uint64 `json:"id"`
	Time    int64  `json:"time"`
	Service string `json:"service"`
	Level   int64  `json:"level"`
	Message string `json:"message"`
	Alert   bool   `json:"alert"`
}

// postEvents posts body to /api/v1/events with client and returns the
// status and the ids of a 200.
func postEvents(client *http.Client, p *proc, body []byte) (int, []uint64, error) {
	resp, err := client.Post(p.url("/api/v1/events"), "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode, nil, fmt.Errorf("POST /api/v1/events: %d %s", resp.StatusCode, b)
	}
	var out struct {
		IDs []uint64 `json:"ids"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("answer %q: %w", b, err)
	}
	return resp.StatusCode, out.IDs, nil
}

// listEvents pages through GET /api/v1/events?query, following next.
func (p *proc) listEvents(query string) []statusEvent {
	p.t.Helper()
	var all []statusEvent
	cursor := ""
	for {
		q := query
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		var page struct {
			Events []statusEvent `json:"events"`
			Next   string        `json:"next"`
		}
		p.get("/api/v1/events?"+q, &page)
		all = append(all, page.Events...)
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
}

// TestEventsAcknowledgedSurviveKill: events posted over 4 connections in
// batches, each batch acknowledged with its ids. Sonde is killed with
// SIGKILL once in the middle of the posts, then 100k more are posted and
// acknowledged while snapshots store some, and it is killed again. Every
// acknowledged event is listed after the restart, with its id and text,
// once, and nothing that was never posted.
func TestEventsAcknowledgedSurviveKill(t *testing.T) {
	dir := t.TempDir()
	const total, conns = 100_000, 4
	var (
		mu    sync.Mutex
		acked = map[string]uint64{} // message → id
		tried = map[string]bool{}
	)
	next := 0 // the next event number to post; under mu
	// reached is closed once len(acked) reaches threshold; under mu.
	threshold, reached := 0, make(chan struct{})
	run := func(p *proc, until int) {
		var wg sync.WaitGroup
		for c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: time.Minute}
				defer client.CloseIdleConnections()
				rng := rand.New(rand.NewPCG(uint64(c), uint64(until)))
				for {
					mu.Lock()
					if next >= until {
						mu.Unlock()
						return
					}
					n := min(1+rng.IntN(60), until-next)
					first := next
					next += n
					var msgs []string
					var body []map[string]any
					for i := range n {
						m := fmt.Sprintf("event %d", first+i)
						msgs = append(msgs, m)
						tried[m] = true
						body = append(body, map[string]any{"service": fmt.Sprintf("svc%d", (first+i)%7), "level": (first + i) % 5, "message": m})
					}
					mu.Unlock()
					b, _ := json.Marshal(body)
					_, ids, err := postEvents(client, p, b)
					if err != nil {
						return // killed
					}
					if len(ids) != n {
						t.Errorf("%d ids for %d events", len(ids), n)
						return
					}
					mu.Lock()
					for i, m := range msgs {
						acked[m] = ids[i]
					}
					if threshold > 0 && len(acked) >= threshold {
						close(reached)
						threshold = 0
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	// Killed while posting: the events wait in memory and the WAL.
	const first = 30_000
	p := start(t, dir, "-snapshot-interval", "1h")
	threshold = first / 2
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		<-reached
		p.kill()
	}()
	run(p, first)
	<-killed
	// Then 100k more, each acknowledged, while snapshots store some of
	// them; killed once they all are.
	p = start(t, dir, "-snapshot-interval", "1s")
	next = first
	run(p, first+total)
	for i := first; i < first+total; i++ {
		if _, ok := acked[fmt.Sprintf("event %d", i)]; !ok {
			t.Fatalf("event %d was not acknowledged", i)
		}
	}
	p.kill()
	p = start(t, dir)
	mu.Lock()
	defer mu.Unlock()
	listed := p.listEvents("limit=10000")
	seen := map[string]statusEvent{}
	for i, ev := range listed {
		if i > 0 && (ev.Time > listed[i-1].Time || ev.Time == listed[i-1].Time && ev.ID >= listed[i-1].ID) {
			t.Fatalf("listing out of order at %d: %+v after %+v", i, ev, listed[i-1])
		}
		if !tried[ev.Message] {
			t.Fatalf("listed an event never posted: %+v", ev)
		}
		if _, dup := seen[ev.Message]; dup {
			t.Fatalf("listed twice: %+v", ev)
		}
		seen[ev.Message] = ev
	}
	for m, id := range acked {
		ev, ok := seen[m]
		if !ok {
			t.Fatalf("acknowledged event %q (id %d) is not listed after the kills; %d of %d listed", m, id, len(seen), len(acked))
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(m, "event "))
		if ev.ID != id || ev.Service != fmt.Sprintf("svc%d", n%7) || ev.Level != int64(n%5) {
			t.Fatalf("event %q listed as %+v, acknowledged with id %d", m, ev, id)
		}
	}
	t.Logf("%d acknowledged, %d listed, %d posted", len(acked), len(listed), len(tried))
}

type eventStats struct {
	Held   int   `json:"held"`
	Stored int64 `json:"stored"`
}

func (p *proc) eventStats() eventStats {
	p.t.Helper()
	var eng struct {
		Events eventStats `json:"events"`
	}
	p.section("engine", &eng)
	return eng.Events
}

// TestEventFilters: each filter of GET /api/v1/events against events of
// known times, services, levels and messages, and the refusals.
func TestEventFilters(t *testing.T) {
	p := start(t, t.TempDir())
	now := time.Now().UnixMilli()
	var evs []map[string]any
	for i := range 40 {
		evs = append(evs, map[string]any{
			"service": []string{"Backup", "backup-db", "deploy", "cron"}[i%4],
			"level":   i % 6,
			"message": []string{"started", "Done in 4 min", "FAILED: disk full", "ok"}[i%4],
			"time":    now - int64(40-i)*1000,
			"alert":   i%10 == 0,
		})
	}
	b, _ := json.Marshal(evs)
	if _, ids, err := postEvents(http.DefaultClient, p, b); err != nil || len(ids) != 40 {
		t.Fatalf("post: %v, %d ids", err, len(ids))
	}
	check := func(query string, want func(i int) bool) {
		t.Helper()
		got := p.listEvents(query)
		var wantMsgs, gotMsgs []string
		for i := 39; i >= 0; i-- { // newest first
			if want(i) {
				wantMsgs = append(wantMsgs, fmt.Sprint(evs[i]["time"], evs[i]["service"]))
			}
		}
		for _, ev := range got {
			gotMsgs = append(gotMsgs, fmt.Sprint(ev.Time, ev.Service))
		}
		if !slices.Equal(gotMsgs, wantMsgs) {
			t.Fatalf("%s: got %q, want %q", query, gotMsgs, wantMsgs)
		}
	}
	check("", func(int) bool { return true })
	check("limit=3", func(int) bool { return true }) // pages of 3, in order
	check("service=^backup", func(i int) bool { return i%4 <= 1 })
	check("service=BACKUP$", func(i int) bool { return i%4 == 0 })
	check("message=fail|done", func(i int) bool { return i%4 == 1 || i%4 == 2 })
	check("level=4", func(i int) bool { return i%6 >= 4 })
	check("level=-1", func(int) bool { return true })
	check(fmt.Sprintf("from=%d&to=%d", now-30_000, now-20_000), func(i int) bool { return i >= 10 && i <= 20 })
	check(fmt.Sprintf("from=%s", url.QueryEscape(time.UnixMilli(now-5_000).UTC().Format(time.RFC3339Nano))), func(i int) bool { return i >= 35 })
	check("service=deploy&level=2&limit=2", func(i int) bool { return i%4 == 2 && i%6 >= 2 })
	// One page: limit and its cursor.
	var page struct {
		Events []statusEvent `json:"events"`
		Next   string        `json:"next"`
	}
	p.get("/api/v1/events?limit=5", &page)
	if len(page.Events) != 5 || page.Next == "" || page.Events[0].Time != evs[39]["time"].(int64) {
		t.Fatalf("first page of 5: %+v", page)
	}
	for i, ev := range p.listEvents("") { // newest first: event 39 - i
		if want := (39-i)%10 == 0; ev.Alert != want || ev.Level != int64((39-i)%6) || ev.Message != evs[39-i]["message"] {
			t.Fatalf("event %d listed as %+v, posted as %v", 39-i, ev, evs[39-i])
		}
	}
	for _, none := range []string{"to=0", "to=-5", "to=1960-01-01T00:00:00Z", fmt.Sprintf("from=%d&to=%d", now, now-1)} {
		if got := p.listEvents(none); len(got) != 0 {
			t.Errorf("%s: %d events, want none", none, len(got))
		}
	}
	for _, bad := range []string{"limit=0", "limit=10001", "limit=x", "level=1.5", "service=(", "message=" + strings.Repeat("a", 513),
		"from=yesterday", "cursor=12", "cursor=a.b"} {
		if code, body := p.getRaw("/api/v1/events?" + bad); code != 400 || !strings.Contains(body, "error") {
			t.Errorf("%s: %d %s, want 400", bad, code, body)
		}
	}
	for _, bad := range []string{`{"service":""}`, `{"service":"a","level":"x"}`, `[` + strings.Repeat(`{"service":"a"},`, 1000) + `{"service":"a"}]`,
		`{"service":"a","message":"` + strings.Repeat("m", 4097) + `"}`, `{"service":"a","time":1}`, `{"service":"a","colour":"red"}`, `not json`} {
		if code, _, err := postEvents(http.DefaultClient, p, []byte(bad)); code != 400 {
			t.Errorf("POST %.60s: %d %v, want 400", bad, code, err)
		}
	}
	if got := len(p.listEvents("")); got != 40 {
		t.Fatalf("%d events after refused posts, want 40", got)
	}
}

// TestEventStream: the live stream sends new events as they are written,
// filtered; a client resuming with Last-Event-ID gets exactly the events
// it missed, across a kill and from both memory and snapshot.db.
func TestEventStream(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir, "-snapshot-interval", "1h")
	post := func(svc string, n int) []uint64 {
		t.Helper()
		var evs []map[string]any
		for i := range n {
			evs = append(evs, map[string]any{"service": svc, "message": fmt.Sprint("m", i)})
		}
		b, _ := json.Marshal(evs)
		_, ids, err := postEvents(http.DefaultClient, p, b)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	post("before", 3) // not streamed: the stream starts now
	all := subscribePath(t, p, "/api/v1/events/stream", 0)
	only := subscribePath(t, p, "/api/v1/events/stream?service=^keep$", 0)
	var ids []uint64
	ids = append(ids, post("keep", 2)...)
	ids = append(ids, post("drop", 1)...)
	ids = append(ids, post("keep", 1)...)
	for _, id := range ids {
		ev := next(t, all)
		var se statusEvent
		if err := json.Unmarshal([]byte(ev.data), &se); err != nil || ev.id != id || se.ID != id {
			t.Fatalf("stream: %+v (%v), want id %d", ev, err, id)
		}
	}
	for _, id := range []uint64{ids[0], ids[1], ids[3]} {
		if ev := next(t, only); ev.id != id {
			t.Fatalf("filtered stream: id %d, want %d", ev.id, id)
		}
	}
	// Missed while away: some stored by a snapshot, some only in the WAL
	// when Sonde is killed.
	last := ids[len(ids)-1]
	p.stop()
	p = start(t, dir, "-snapshot-interval", "1s")
	missed := post("keep", 100)
	waitFor(t, "a snapshot storing the events", func() bool { return p.eventStats().Held == 0 })
	missed = append(missed, post("keep", 50)...)
	p.kill()
	p = start(t, dir, "-snapshot-interval", "1h")
	resumed := subscribePath(t, p, "/api/v1/events/stream", last)
	for _, id := range missed {
		if ev := next(t, resumed); ev.id != id {
			t.Fatalf("resumed stream: id %d, want %d", ev.id, id)
		}
	}
	more := post("keep", 1)
	if ev := next(t, resumed); ev.id != more[0] {
		t.Fatalf("resumed stream, live: id %d, want %d", ev.id, more[0])
	}
	// An id from the future gets a reset.
	future := subscribePath(t, p, "/api/v1/events/stream", 1<<40)
	if ev := next(t, future); ev.event != "reset" {
		t.Fatalf("resume from the future: %+v, want a reset", ev)
	}
}
