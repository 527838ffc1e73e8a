package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// blockingStore is a real engine whose Range waits until its read's
// context ends, and says why it ended: a read that is slow for as long as
// the test needs, without a clock.
type blockingStore struct {
	*engine.DB
	started chan struct{}
	ended   chan error
	release chan struct{} // when not nil, Range waits for it instead of its context
}

func (b *blockingStore) Range(ctx context.Context, key string, from, to int64, limit int, dst []sample.Point) ([]sample.Point, error) {
	b.started <- struct{}{}
	if b.release != nil {
		<-b.release
		b.ended <- nil
		return append(dst, sample.Point{T: 1, V: 1}), nil
	}
	<-ctx.Done()
	b.ended <- context.Cause(ctx)
	return dst, context.Cause(ctx)
}

func serve(t *testing.T, store Store, opts Options) *Server {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	srv, err := Listen(opts, store)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

func blocking(t *testing.T) *blockingStore {
	t.Helper()
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	errs := make([]error, 1)
	if err := db.Append(context.Background(), []sample.Op{{Code: sample.Set, Key: "k", Value: 1}}, errs); err != nil || errs[0] != nil {
		t.Fatal(err, errs[0])
	}
	return &blockingStore{DB: db, started: make(chan struct{}, 8), ended: make(chan error, 8)}
}

// A read whose client hangs up stops: its context ends with errClientGone
// and it is counted.
func TestReadStopsWhenTheClientHangsUp(t *testing.T) {
	store := blocking(t)
	srv := serve(t, store, Options{QueryTimeout: time.Hour})
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /api/v1/series/k/history HTTP/1.1\r\nHost: x\r\n\r\n")
	<-store.started
	c.Close()
	if cause := <-store.ended; !errors.Is(cause, errClientGone) {
		t.Fatalf("the read ended with %v, want errClientGone", cause)
	}
	waitReads(t, srv, func(s ReadStats) bool { return s.ClientGone == 1 && s.Running == 0 })
}

// A read that passes -query-timeout ends, and the client gets 503.
func TestReadTimesOut(t *testing.T) {
	store := blocking(t)
	srv := serve(t, store, Options{QueryTimeout: 50 * time.Millisecond})
	code, body := httpGet(t, srv, "/api/v1/series/k/history")
	if cause := <-store.ended; !errors.Is(cause, errQueryTimeout) {
		t.Fatalf("the read ended with %v", cause)
	}
	if code != 503 || !strings.Contains(body, "-query-timeout") {
		t.Fatalf("%d %s", code, body)
	}
}

// Reads past -query-concurrency wait for a slot, and get 503 when none
// frees up within the timeout; other routes are served meanwhile.
func TestReadSlots(t *testing.T) {
	store := blocking(t)
	store.release = make(chan struct{})
	srv := serve(t, store, Options{QueryTimeout: 300 * time.Millisecond, MaxQueries: 1})
	first := make(chan int, 1)
	go func() {
		code, _ := httpGet(t, srv, "/api/v1/series/k/history")
		first <- code
	}()
	<-store.started // the first read holds the only slot
	if code, body := httpGet(t, srv, "/healthz"); code != 200 {
		t.Fatalf("healthz while the slot is taken: %d %s", code, body)
	}
	code, body := httpGet(t, srv, "/data")
	if code != 503 || !strings.Contains(body, "-query-concurrency") {
		t.Fatalf("a second read: %d %s", code, body)
	}
	close(store.release)
	<-store.ended
	if c := <-first; c != 200 {
		t.Fatalf("the first read: %d", c)
	}
	if code, body := httpGet(t, srv, "/data"); code != 200 {
		t.Fatalf("a read once the slot is free: %d %s", code, body)
	}
	waitReads(t, srv, func(s ReadStats) bool { return s.Busy == 1 && s.Running == 0 })
}

func httpGet(t *testing.T, srv *Server, path string) (int, string) {
	resp, err := http.Get("http://" + srv.Addr().String() + path)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitReads(t *testing.T, srv *Server, cond func(ReadStats) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(srv.ReadStats()); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("read stats %+v", srv.ReadStats())
		}
	}
}
