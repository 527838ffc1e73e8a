package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conns is a TCP listener's accept loop and its open connections, shared
// by the command, Graphite and logatron listeners.
type conns struct {
	ln   net.Listener
	what string // names the listener in errors
	max  int
	log  *slog.Logger
	// refuse tells a connection past max why it is closed (nil: closed
	// without a word).
	refuse func(net.Conn)

	mu       sync.Mutex // guards open.
	open     map[net.Conn]struct{}
	closing  atomic.Bool // set by close before it takes mu and expires read deadlines
	handlers sync.WaitGroup

	accepted, refused atomic.Int64
}

func newConns(ln net.Listener, what string, max int, log *slog.Logger, refuse func(net.Conn)) *conns {
	return &conns{ln: ln, what: what, max: max, log: log, refuse: refuse, open: map[net.Conn]struct{}{}}
}

// count returns how many connections are open.
func (cs *conns) count() int64 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return int64(len(cs.open))
}

// serve accepts connections until close, each served by handle in a
// goroutine of its own, which closes it and calls done(c) when it ends.
// It returns nil after close.
func (cs *conns) serve(handle func(c net.Conn)) error {
	backoff := 5 * time.Millisecond
	for {
		c, err := cs.ln.Accept()
		if err != nil {
			if cs.closing.Load() {
				return nil
			}
			if isTemporary(err) { // EMFILE, ENFILE and the like
				cs.log.Warn("accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff) // capped backoff on EMFILE and the like
				backoff = min(backoff*2, time.Second)
				continue
			}
			return fmt.Errorf("accept %s connections: %w", cs.what, err)
		}
		backoff = 5 * time.Millisecond
		cs.accepted.Add(1)
		// Checked under mu: either close's loop sees this connection, or
		// this sees closing (stored before close took mu).
		cs.mu.Lock()
		if cs.closing.Load() {
			cs.mu.Unlock()
			c.Close()
			continue
		}
		if len(cs.open) >= cs.max {
			cs.mu.Unlock()
			cs.refused.Add(1)
			if cs.refuse != nil {
				cs.refuse(c)
			}
			c.Close()
			continue
		}
		cs.open[c] = struct{}{}
		cs.handlers.Add(1)
		cs.mu.Unlock()
		go handle(c)
	}
}

// done forgets c and closes it: the last thing its handler does.
func (cs *conns) done(c net.Conn) {
	cs.mu.Lock()
	delete(cs.open, c)
	cs.mu.Unlock()
	c.Close()
	cs.handlers.Done()
}

// close stops accepting and expires every read deadline, which unblocks
// the readers (writes still go out); the caller waits for the handlers.
func (cs *conns) close() error {
	cs.closing.Store(true)
	cs.mu.Lock()
	err := cs.ln.Close()
	for c := range cs.open {
		c.SetReadDeadline(time.Now())
	}
	cs.mu.Unlock()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close %s listener: %w", cs.what, err)
	}
	return nil
}
