package ingest

import (
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// clientLog records what a LogatronServer hands the store, in order.
type clientLog struct {
	mu     sync.Mutex
	calls  []string
	keys   int // keys taken before ErrTooManyKeys
	ended  chan string
	logged chan string
}

func (l *clientLog) add(s string) {
	l.mu.Lock()
	l.calls = append(l.calls, s)
	l.mu.Unlock()
}

func (l *clientLog) ClientConnect(_ context.Context, name string) error {
	l.add("connect " + name)
	return nil
}

func (l *clientLog) ClientDisconnect(_ context.Context, name string) error {
	l.add("disconnect " + name)
	l.ended <- name
	return nil
}

func (l *clientLog) ClientWrite(_ context.Context, name string, ws []sample.ClientWrite, errs []error) error {
	for i, w := range ws {
		if w.Set {
			if l.keys == 0 {
				errs[i] = sample.ErrTooManyKeys
				continue
			}
			l.keys--
			l.add("set " + w.Key + "=" + w.Text)
		} else {
			l.add("log " + w.Text)
			l.logged <- w.Text
		}
		errs[i] = nil
	}
	return nil
}

func (l *clientLog) got() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

func listenLogatron(t *testing.T, keys int) (*LogatronServer, *clientLog) {
	t.Helper()
	store := &clientLog{keys: keys, ended: make(chan string, 16), logged: make(chan string, 64)}
	s, err := ListenLogatron(LogatronOptions{Addr: "127.0.0.1:0", IAMTimeout: 200 * time.Millisecond}, store)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return s, store
}

// silentEnd waits for the server to end c, having written nothing.
func silentEnd(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(c); len(b) > 0 || err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read %q, %v", b, err)
	}
}

// TestLogatronUnfinishedLines: a last line without its line end is a line
// only at the client's end of input; at the IAM timeout, or when the
// server closes, it is dropped. A SET key past 255 bytes closes the
// connection, and one key too many counts once.
func TestLogatronUnfinishedLines(t *testing.T) {
	s, store := listenLogatron(t, 2)
	dial := func(text string) net.Conn {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, text)
		return c
	}
	// A half IAM at the timeout: no client.
	silentEnd(t, dial("IAM slowpoke"))
	// The end of input ends the last line.
	c := dial("IAM a\nLOG one\nLOG last")
	c.(*net.TCPConn).CloseWrite()
	silentEnd(t, c)
	<-store.ended
	// A key past 255 bytes closes; the line before it is written.
	silentEnd(t, dial("IAM b\nLOG before\nSET "+strings.Repeat("k", 256)+" v\nLOG after\n"))
	<-store.ended
	// One key too many closes, counted once.
	silentEnd(t, dial("IAM c\nSET k1 1\nSET k2 2\nSET k3 3\nSET k4 4\n"))
	<-store.ended
	// Unfinished when the server closes: dropped.
	c = dial("IAM d\nLOG whole\nLOG half a li")
	for l := ""; l != "whole"; l = <-store.logged {
	}
	s.Close()
	silentEnd(t, c)
	want := []string{"connect a", "log one", "log last", "disconnect a", "connect b", "log before", "disconnect b",
		"connect c", "set k1=1", "set k2=2", "disconnect c", "connect d", "log whole", "disconnect d"}
	if got := store.got(); !slices.Equal(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
	if st := s.Stats(); st.BadIAM != 1 || st.TooLong != 1 || st.TooManyKeys != 1 || st.Written != 6 || st.Open != 0 {
		t.Fatalf("stats %+v", st)
	}
}
