package engine

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/internal/record"
	"github.com/sonde-metrics/sonde/engine/internal/snapshot"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Client logs (docs/semantics.md, "Client logs"): what the logatron
// listener hears from the processes connected to it. A connect, a
// disconnect, a forget, each log line and each state setting is a WAL
// record (CLIENT, LOG, STATE) written by the committer, which also
// decides the rules that need the whole table: one connection per name,
// at most MaxClients names (a new one takes the place of the client that
// disconnected longest ago), at most MaxClientKeys state keys each. The
// table is a function of the records (applyClient, used by apply and
// replay alike); each client stores the index of its newest record
// (covers), and replay skips the records a stored client covers, so a
// client stored by a snapshot that failed before its index is not logged
// twice. Each client keeps its newest ClientRing log lines.

// ErrClientConnected, ErrTooManyClients and ErrTooManyKeys: see sample.
var (
	ErrClientConnected = sample.ErrClientConnected
	ErrTooManyClients  = sample.ErrTooManyClients
	ErrTooManyKeys     = sample.ErrTooManyKeys
)

// client is one client as the table holds it.
type client struct {
	info             sample.ClientInfo
	covers           uint64 // the WAL index of its newest record
	connIdx, discIdx uint64
	ring             []sample.ClientLine // a ring of up to ClientRing lines
	head             int                 // where the next line goes once the ring is full
	dropped          uint64              // the id of the last line the ring dropped (0: none)
	droppedAt        int64
	state            map[string]snapshot.ClientKey
	byID             []string // the state's keys, oldest setting first (the stream's order)
}

// set sets a state key, which moves to the end of byID.
func (c *client) set(k snapshot.ClientKey) {
	if _, ok := c.state[k.Key]; ok {
		i := slices.Index(c.byID, k.Key)
		c.byID = append(c.byID[:i], c.byID[i+1:]...)
	}
	c.state[k.Key] = k
	c.byID = append(c.byID, k.Key)
}

// push adds a line, over the oldest once the ring holds size; the
// dropped line's id and time are kept (the stream's gaps).
func (c *client) push(l sample.ClientLine, size int) {
	if len(c.ring) < size {
		c.ring = append(c.ring, l)
		return
	}
	old := &c.ring[c.head]
	c.dropped, c.droppedAt = old.ID, old.Time
	*old = l
	c.head = (c.head + 1) % len(c.ring)
}

// line returns the i-th newest line (0 the newest).
func (c *client) line(i int) *sample.ClientLine {
	n := len(c.ring)
	return &c.ring[((c.head-1-i)%n+n)%n]
}

// oldest returns the i-th oldest line (0 the oldest): the ring is in id
// order from head (0 until it is full).
func (c *client) oldest(i int) *sample.ClientLine { return &c.ring[(c.head+i)%len(c.ring)] }

// clientTable holds the clients. The committer changes them (apply,
// replay) under mu; readers copy out under it.
type clientTable struct {
	mu     sync.RWMutex
	m      map[string]*client
	notify chan struct{} // closed and replaced when a record is applied
	// Changed, and forgotten, since the last snapshot took them.
	dirty  map[string]bool
	forgot map[string]bool
	// Committer-owned: what the group decided so far, over the table.
	group clientGroup
}

// clientGroup is the group's view over the table: the names whose
// connection it changed, the state keys it added, the names it added.
type clientGroup struct {
	conn  map[string]uint8 // what the group left the name in: a record.Client* level
	fresh map[string]bool  // forgotten, then made again: the table's keys do not count
	keys  map[[2]string]bool
	nkeys map[string]int
	added int // names added less names forgotten
}

// clientReq is one request of the logatron listener.
type clientReq struct {
	kind   uint8 // creqConnect, creqDisconnect, creqForget, creqWrite
	name   string
	writes []sample.ClientWrite
	errs   []error // creqWrite: one per write
	err    error
}

const (
	creqConnect uint8 = iota + 1
	creqDisconnect
	creqForget
	creqWrite
	creqRestart // every client still connected: the process that held them ended
)

// ClientConnect records that a client named name connected. It returns
// once the record is in the WAL (not waiting for an fsync, as the client
// gets no reply): ErrClientConnected when a client of that name is
// connected, ErrTooManyClients when MaxClients are kept and all are
// connected.
func (db *DB) ClientConnect(ctx context.Context, name string) error {
	return db.clientOp(ctx, &clientReq{kind: creqConnect, name: name}, false)
}

// ClientDisconnect records that the client named name disconnected.
func (db *DB) ClientDisconnect(ctx context.Context, name string) error {
	return db.clientOp(ctx, &clientReq{kind: creqDisconnect, name: name}, false)
}

// ForgetClient deletes a disconnected client, its log and state; it is
// acknowledged under the fsync policy. ErrClientConnected while it is
// connected, ErrNotFound when there is none.
func (db *DB) ForgetClient(ctx context.Context, name string) error {
	return db.clientOp(ctx, &clientReq{kind: creqForget, name: name}, true)
}

// ClientWrite appends the lines of the connected client name, in order;
// errs[i] receives the outcome of writes[i] (ErrTooManyKeys, ErrValue).
// The returned error is for the whole batch (the client is not
// connected, writes are paused, the store is closed). It returns once
// the records are in the WAL, not waiting for an fsync.
func (db *DB) ClientWrite(ctx context.Context, name string, writes []sample.ClientWrite, errs []error) error {
	if len(errs) < len(writes) {
		return fmt.Errorf("engine: client write of %d lines with %d error slots", len(writes), len(errs))
	}
	return db.clientOp(ctx, &clientReq{kind: creqWrite, name: name, writes: writes, errs: errs}, false)
}

func (db *DB) clientOp(ctx context.Context, cr *clientReq, acked bool) error {
	if err := checkClientName(cr.name); err != nil {
		return err
	}
	if err := db.blocked(); err != nil {
		return err
	}
	if err := db.submit(ctx, "client", func(req *request) { req.client, req.acked = cr, acked }); err != nil {
		return err
	}
	return cr.err
}

func checkClientName(name string) error {
	if name == "" || len(name) > sample.MaxService || !utf8.ValidString(name) {
		return fmt.Errorf("%w: a client name is 1 to %d bytes of UTF-8", ErrKey, sample.MaxService)
	}
	return nil
}

// clientState is what the group sees of name: a record.Client* level,
// or -1 when the name is unknown.
func (db *DB) clientState(name string) int {
	t := &db.clients
	if v, ok := t.group.conn[name]; ok {
		if v == record.ClientForgotten {
			return -1
		}
		return int(v)
	}
	if c := t.m[name]; c != nil {
		if c.info.Connected {
			return record.ClientConnected
		}
		return record.ClientDisconnected
	}
	return -1
}

// hasKey reports whether the group sees the state key of name, and how
// many keys it sees.
func (db *DB) hasKey(name, key string) (bool, int) {
	g := &db.clients.group
	n := g.nkeys[name]
	if g.keys[[2]string{name, key}] {
		return true, n
	}
	if c := db.clients.m[name]; c != nil && !g.fresh[name] {
		_, ok := c.state[key]
		return ok, n + len(c.state)
	}
	return false, n
}

// setConn notes what the group left name in.
func (db *DB) setConn(name string, level uint8) {
	db.clients.group.init()
	db.clients.group.conn[name] = level
}

// init makes the group's maps, on first use.
func (g *clientGroup) init() {
	if g.conn == nil {
		g.conn, g.fresh, g.keys, g.nkeys = map[string]uint8{}, map[string]bool{}, map[[2]string]bool{}, map[string]int{}
	}
}

// prepareClient queues the records of cr (the committer's).
func (db *DB) prepareClient(cr *clientReq, now int64) error {
	t := &db.clients
	state := db.clientState(cr.name)
	switch cr.kind {
	case creqConnect:
		if state == record.ClientConnected {
			return fmt.Errorf("%w: %q", ErrClientConnected, cr.name)
		}
		if state < 0 {
			if len(t.m)+t.group.added >= db.opts.MaxClients {
				victim := db.clientVictim()
				if victim == "" {
					return fmt.Errorf("%w: %d clients are connected", ErrTooManyClients, db.opts.MaxClients)
				}
				db.queueRecord(&record.Record{Code: record.Client, Time: now, Key: victim, Level: record.ClientForgotten})
				db.setConn(victim, record.ClientForgotten)
				t.group.fresh[victim] = true
				t.group.added--
			}
			t.group.added++
		}
		db.queueRecord(&record.Record{Code: record.Client, Time: now, Key: cr.name, Level: record.ClientConnected})
		db.setConn(cr.name, record.ClientConnected)
	case creqDisconnect:
		if state != record.ClientConnected {
			return fmt.Errorf("%w: client %q is not connected", ErrNotFound, cr.name)
		}
		db.queueRecord(&record.Record{Code: record.Client, Time: now, Key: cr.name, Level: record.ClientDisconnected})
		db.setConn(cr.name, record.ClientDisconnected)
	case creqForget:
		switch state {
		case record.ClientConnected:
			return fmt.Errorf("%w: %q", ErrClientConnected, cr.name)
		case -1:
			return fmt.Errorf("%w: no client %q", ErrNotFound, cr.name)
		}
		db.queueRecord(&record.Record{Code: record.Client, Time: now, Key: cr.name, Level: record.ClientForgotten})
		db.setConn(cr.name, record.ClientForgotten)
		t.group.fresh[cr.name] = true
		t.group.added--
	case creqRestart:
		for name, c := range t.m {
			if c.info.Connected {
				db.queueRecord(&record.Record{Code: record.Client, Time: now, Key: name, Level: record.ClientDisconnected})
			}
		}
	case creqWrite:
		if state != record.ClientConnected {
			return fmt.Errorf("%w: client %q is not connected", ErrNotFound, cr.name)
		}
		for i := range cr.writes {
			cr.errs[i] = db.prepareClientWrite(cr.name, &cr.writes[i], now)
		}
	default:
		return fmt.Errorf("%w: client operation %d", ErrValue, cr.kind)
	}
	return nil
}

func (db *DB) prepareClientWrite(name string, w *sample.ClientWrite, now int64) error {
	if len(w.Text) > record.MaxMessageLen || !utf8.ValidString(w.Text) {
		return fmt.Errorf("%w: a client line is at most %d bytes of UTF-8", ErrValue, record.MaxMessageLen)
	}
	if !w.Set {
		db.queueRecord(&record.Record{Code: record.Log, Time: now, Key: name, Message: w.Text})
		return nil
	}
	if w.Key == "" || len(w.Key) > sample.MaxStateKey || !utf8.ValidString(w.Key) {
		return fmt.Errorf("%w: a state key is 1 to %d bytes of UTF-8", ErrKey, sample.MaxStateKey)
	}
	has, n := db.hasKey(name, w.Key)
	if !has {
		if n >= db.opts.MaxClientKeys {
			return fmt.Errorf("%w: client %q has %d state keys", ErrTooManyKeys, name, db.opts.MaxClientKeys)
		}
		db.clients.group.init()
		db.clients.group.keys[[2]string{name, w.Key}] = true
		db.clients.group.nkeys[name]++
	}
	db.queueRecord(&record.Record{Code: record.State, Time: now, Key: name, Channel: w.Key, Message: w.Text})
	return nil
}

// clientVictim is the client that disconnected longest ago, as the group
// sees the table; "" when every client is connected.
func (db *DB) clientVictim() string {
	var victim string
	var at int64
	for name, c := range db.clients.m {
		if db.clientState(name) != record.ClientDisconnected {
			continue
		}
		if victim == "" || c.info.DisconnectedAt < at || c.info.DisconnectedAt == at && name < victim {
			victim, at = name, c.info.DisconnectedAt
		}
	}
	return victim
}

// endGroupClients forgets the group's view at the end of every group:
// what it wrote is in the table now, and what it refused never was.
func (db *DB) endGroupClients() {
	if g := &db.clients.group; g.conn != nil && (len(g.conn) > 0 || len(g.keys) > 0) {
		clear(g.conn)
		clear(g.fresh)
		clear(g.keys)
		clear(g.nkeys)
		g.added = 0
	}
}

// isClientRec reports whether code is a client record's.
func isClientRec(code sample.Code) bool {
	return code == record.Client || code == record.Log || code == record.State
}

// noSeries reports whether a record of code changes no series: a status
// event, a heartbeat record or a client record.
func noSeries(code sample.Code) bool {
	return code == record.Event || isStatus(code) || isClientRec(code)
}

// applyGroupClients applies the group's client records and wakes the
// streams (the committer's, in apply).
func (db *DB) applyGroupClients() {
	t := &db.clients
	t.mu.Lock()
	for i := range db.pend {
		if p := &db.pend[i]; isClientRec(p.rec.Code) {
			t.apply(&p.rec, p.idx, db.opts.ClientRing)
		}
	}
	close(t.notify)
	t.notify = make(chan struct{})
	t.mu.Unlock()
}

// apply applies one client record at WAL index idx (apply and replay;
// under mu). A record the client's stored state covers is skipped.
func (t *clientTable) apply(r *record.Record, idx uint64, ring int) {
	c := t.m[r.Key]
	if c != nil && idx <= c.covers {
		return
	}
	if r.Code == record.Client && r.Level == record.ClientForgotten {
		if c != nil {
			delete(t.m, r.Key)
			delete(t.dirty, r.Key)
			t.forgot[r.Key] = true
		}
		return
	}
	if c == nil {
		c = &client{info: sample.ClientInfo{Name: r.Key}, state: map[string]snapshot.ClientKey{}}
		t.m[r.Key] = c
		delete(t.forgot, r.Key)
	}
	switch r.Code {
	case record.Client:
		if r.Level == record.ClientConnected {
			c.info.Connected, c.info.ConnectedAt, c.connIdx = true, r.Time, idx
		} else {
			c.info.Connected, c.info.DisconnectedAt, c.discIdx = false, r.Time, idx
		}
	case record.Log:
		c.push(sample.ClientLine{ID: idx, Time: r.Time, Text: r.Message}, ring)
		c.info.Lines++
		c.info.LastLine = r.Time
	case record.State:
		c.set(snapshot.ClientKey{Key: r.Channel, ID: idx, Time: r.Time, Text: r.Message})
		c.info.Sets++
		c.info.LastLine = r.Time
	}
	c.covers = idx
	t.dirty[r.Key] = true
}

// Clients lists the clients, by name.
func (db *DB) Clients() []sample.ClientInfo {
	t := &db.clients
	t.mu.RLock()
	out := make([]sample.ClientInfo, 0, len(t.m))
	for _, c := range t.m {
		out = append(out, c.info)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b sample.ClientInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Client returns the client name: its info, state, and log newest first.
func (db *DB) Client(name string) (sample.Client, bool) {
	t := &db.clients
	t.mu.RLock()
	defer t.mu.RUnlock()
	c := t.m[name]
	if c == nil {
		return sample.Client{}, false
	}
	out := sample.Client{ClientInfo: c.info, State: make(map[string]string, len(c.state)), Log: make([]sample.ClientLine, len(c.ring))}
	for k, v := range c.state {
		out.State[k] = v.Text
	}
	for i := range out.Log {
		out.Log[i] = *c.line(i)
	}
	return out, true
}

// NotifyClients returns a channel closed once a client record is applied.
func (db *DB) NotifyClients() <-chan struct{} {
	db.clients.mu.RLock()
	defer db.clients.mu.RUnlock()
	return db.clients.notify
}

// ClientEventsAfter appends what the clients hold with ids after id, in
// id order, stopping once the appended events' texts pass maxBytes (at
// least one is appended, and events of one id go together): each log
// line the rings still hold, the newest value of each state key, the last
// connect and disconnect of each client, and a gap where a ring dropped
// lines after id (its id is the last dropped line's). Older values of a
// key, and the lines a ring dropped, are not there to send. The work is
// a merge of the clients' own orders: about the events returned, not all
// that are held.
func (db *DB) ClientEventsAfter(id uint64, dst []sample.ClientEvent, maxBytes int) []sample.ClientEvent {
	t := &db.clients
	t.mu.RLock()
	defer t.mu.RUnlock()
	var h cursorHeap
	for name, c := range t.m {
		if c.covers > id {
			if cc := newCursor(name, c, id); cc.more() {
				h = append(h, cc)
			}
		}
	}
	heap.Init(&h)
	size, start := 0, len(dst)
	for len(h) > 0 {
		cc := h[0]
		next := cc.peek()
		if size > maxBytes && len(dst) > start && next.ID != dst[len(dst)-1].ID {
			break
		}
		dst = append(dst, next)
		size += 64 + len(next.Client) + len(next.Key) + len(next.Text)
		if cc.pop(); cc.more() {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return dst
}

// clientCursor walks what one client holds after an id, in id order: its
// ring from the first line after it, its keys set after it (byID), and
// its connect, disconnect and gap. Making one costs two binary searches.
type clientCursor struct {
	name       string
	c          *client
	ring, key  int // the next line (oldest first) and key (byID)
	extra      [3]sample.ClientEvent
	ne, e      int
	head       sample.ClientEvent
	headSource uint8 // srcLine, srcKey, srcExtra; 0 when done
}

const (
	srcLine uint8 = iota + 1
	srcKey
	srcExtra
)

func newCursor(name string, c *client, id uint64) *clientCursor {
	cc := &clientCursor{name: name, c: c}
	cc.ring = sort.Search(len(c.ring), func(i int) bool { return c.oldest(i).ID > id })
	cc.key = sort.Search(len(c.byID), func(i int) bool { return c.state[c.byID[i]].ID > id })
	add := func(ev sample.ClientEvent) {
		if ev.ID > id {
			cc.extra[cc.ne] = ev
			cc.ne++
		}
	}
	add(sample.ClientEvent{ID: c.connIdx, Time: c.info.ConnectedAt, Client: name, Kind: sample.ClientConnected})
	add(sample.ClientEvent{ID: c.discIdx, Time: c.info.DisconnectedAt, Client: name, Kind: sample.ClientDisconnected})
	add(sample.ClientEvent{ID: c.dropped, Time: c.droppedAt, Client: name, Kind: sample.ClientGap})
	slices.SortFunc(cc.extra[:cc.ne], func(a, b sample.ClientEvent) int { return cmp.Compare(a.ID, b.ID) })
	cc.load()
	return cc
}

// load sets head to the next event, the lowest id of the three sources.
func (cc *clientCursor) load() {
	c := cc.c
	cc.headSource = 0
	var best uint64
	if cc.ring < len(c.ring) {
		best, cc.headSource = c.oldest(cc.ring).ID, srcLine
	}
	if cc.key < len(c.byID) {
		if id := c.state[c.byID[cc.key]].ID; cc.headSource == 0 || id < best {
			best, cc.headSource = id, srcKey
		}
	}
	if cc.e < cc.ne {
		if id := cc.extra[cc.e].ID; cc.headSource == 0 || id < best {
			cc.headSource = srcExtra
		}
	}
	switch cc.headSource {
	case srcLine:
		l := c.oldest(cc.ring)
		cc.head = sample.ClientEvent{ID: l.ID, Time: l.Time, Client: cc.name, Kind: sample.ClientLogged, Text: l.Text}
	case srcKey:
		k := c.state[c.byID[cc.key]]
		cc.head = sample.ClientEvent{ID: k.ID, Time: k.Time, Client: cc.name, Kind: sample.ClientSetKey, Key: k.Key, Text: k.Text}
	case srcExtra:
		cc.head = cc.extra[cc.e]
	}
}

func (cc *clientCursor) more() bool               { return cc.headSource != 0 }
func (cc *clientCursor) peek() sample.ClientEvent { return cc.head }

func (cc *clientCursor) pop() {
	switch cc.headSource {
	case srcLine:
		cc.ring++
	case srcKey:
		cc.key++
	case srcExtra:
		cc.e++
	}
	cc.load()
}

type cursorHeap []*clientCursor

func (h cursorHeap) Len() int           { return len(h) }
func (h cursorHeap) Less(i, j int) bool { return h[i].head.ID < h[j].head.ID }
func (h cursorHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)        { *h = append(*h, x.(*clientCursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// loadClients loads the stored clients (Open, before replay).
func (db *DB) loadClients() error {
	cs, err := db.store.LoadClients()
	if err != nil {
		return fmt.Errorf("load clients: %w", err)
	}
	t := &db.clients
	for i := range cs {
		s := &cs[i]
		c := &client{info: s.ClientInfo, covers: s.Covers, connIdx: s.ConnIdx, discIdx: s.DiscIdx,
			dropped: s.Dropped, droppedAt: s.DroppedAt, state: make(map[string]snapshot.ClientKey, len(s.State))}
		for _, l := range s.Log { // a smaller -logatron-ring drops the oldest
			c.push(l, db.opts.ClientRing)
		}
		slices.SortFunc(s.State, func(a, b snapshot.ClientKey) int { return cmp.Compare(a.ID, b.ID) })
		for _, k := range s.State {
			c.set(k)
		}
		t.m[s.Name] = c
	}
	return nil
}

// startClients disconnects every client the records left connected (Open,
// once the committer runs): its connection did not outlive the process.
// The disconnects are records of one group, with ids past every id a
// stream reader may hold. When they cannot be written (writes paused on
// a full disk) the table marks them in memory, at the index the WAL
// ended at: a crash before the next snapshot stores them makes them again
// at the next start.
func (db *DB) startClients() {
	t := &db.clients
	connected := 0
	for _, c := range t.m {
		if c.info.Connected {
			connected++
		}
	}
	if connected == 0 {
		return
	}
	err := db.submit(context.Background(), "client", func(req *request) { req.client = &clientReq{kind: creqRestart} })
	if err == nil {
		return
	}
	db.logger.Warn("clients left connected by the last run are marked disconnected in memory only", "clients", connected, "err", err)
	t.mu.Lock()
	defer t.mu.Unlock()
	now, idx := db.nowMs(), db.published.Load()
	for name, c := range t.m {
		if c.info.Connected {
			// covers moves with it: the stream skips a client that covers
			// nothing after its reader's id.
			c.info.Connected, c.info.DisconnectedAt, c.discIdx, c.covers = false, now, idx, max(c.covers, idx)
			t.dirty[name] = true
		}
	}
}

// captureClients copies the clients changed since the last snapshot took
// them, and the names forgotten since (the committer's); nil when none.
func (db *DB) captureClients() *snapshot.Clients {
	t := &db.clients
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.dirty) == 0 && len(t.forgot) == 0 {
		return nil
	}
	out := &snapshot.Clients{}
	for name := range t.forgot {
		out.Forget = append(out.Forget, name)
	}
	for name := range t.dirty {
		c := t.m[name]
		s := snapshot.ClientState{ClientInfo: c.info, Covers: c.covers, ConnIdx: c.connIdx, DiscIdx: c.discIdx,
			Dropped: c.dropped, DroppedAt: c.droppedAt, Log: make([]sample.ClientLine, len(c.ring))}
		for i := range s.Log {
			s.Log[len(s.Log)-1-i] = *c.line(i)
		}
		for _, k := range c.state {
			s.State = append(s.State, k)
		}
		out.Put = append(out.Put, s)
	}
	clear(t.dirty)
	clear(t.forgot)
	return out
}

// clientsFailed marks cs changed again after a snapshot failed to store
// them: the next snapshot stores what the table holds of those names.
func (db *DB) clientsFailed(cs *snapshot.Clients) {
	t := &db.clients
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, name := range cs.Forget {
		if t.m[name] == nil {
			t.forgot[name] = true
		}
	}
	for i := range cs.Put {
		if name := cs.Put[i].Name; t.m[name] != nil {
			t.dirty[name] = true
		} else {
			t.forgot[name] = true
		}
	}
}
