package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// crashKey tracks one key across crash rounds. Gauge keys get SETs of
// strictly increasing integers. Counter keys get INCR 1, so their totals
// are 1, 2, 3, ...; a +OK does not say the total, so a round checks
// base + acknowledged <= total <= base + sent. Fields are written by one
// goroutine at a time.
type crashKey struct {
	name    string
	counter bool
	sent    int          // gauge: highest value sent; counter: INCRs sent this round
	acked   map[int]bool // gauge: values acknowledged
	maxAck  int          // gauge: highest value acknowledged; counter: INCRs acknowledged this round
	base    int          // counter: total at the start of the round
}

// TestCrashKill9 writes acknowledged SETs and INCRs from several
// pipelining connections, SIGKILLs the server at a random moment while
// writes are in flight, restarts it and checks that every acknowledged
// write is there: the current value and every history point, with no
// point duplicated by replay.
func TestCrashKill9(t *testing.T) {
	testRestarts(t, 20, (*proc).kill, compacting...)
}

// compacting makes compaction merge chunks between the snapshots of a
// crash test (each snapshot writes a chunk of tens of points per key), so
// the kills hit it too; testRestarts then checks that it ran.
var compacting = []string{"-chunk-points", "256"}

// TestCrashKill9WeakerFsync: with -fsync=interval or never a write is
// acknowledged once the OS has it, so a process crash still loses nothing
// acknowledged (docs/semantics.md); only a power loss could.
func TestCrashKill9WeakerFsync(t *testing.T) {
	for _, policy := range []string{"interval", "never"} {
		t.Run(policy, func(t *testing.T) {
			testRestarts(t, 5, (*proc).kill, append([]string{"-fsync", policy}, compacting...)...)
		})
	}
}

// TestSigtermFinishesInFlight: SIGTERM under pipelined load exits 0, and
// every write it acknowledged, up to the last, is there after a restart.
func TestSigtermFinishesInFlight(t *testing.T) {
	testRestarts(t, 3, func(p *proc) {
		if code := p.stop(); code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
	})
}

// testRestarts runs rounds of load, each ended by stop while writes are in
// flight, and checks every acknowledged write after each restart.
func testRestarts(t *testing.T, rounds int, stop func(*proc), extraFlags ...string) {
	const conns, keysPerConn = 4, 4
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	flags := append([]string{"-snapshot-interval", "40ms", "-ring", "8"}, extraFlags...)

	keys := make([][]*crashKey, conns)
	for c := range keys {
		for k := range keysPerConn {
			keys[c] = append(keys[c],
				&crashKey{name: fmt.Sprintf("c%d.g%d", c, k), acked: map[int]bool{}},
				&crashKey{name: fmt.Sprintf("c%d.n%d", c, k), counter: true, acked: map[int]bool{}})
		}
	}
	totalAcked := 0
	merging := slices.Contains(extraFlags, compacting[0])
	var compacted int64 // chunks merged by the processes the rounds stopped
	for round := range rounds {
		p := start(t, dir, flags...)
		verifyCrashKeys(t, p, keys, round)
		target := int64(200 + rng.IntN(3000))
		if merging {
			// A snapshot's points go to the series' tail, which moves into
			// history as a chunk of up to 128 points; compaction has two
			// such chunks to merge once a key has had some 300 points. The
			// 32 keys get 100 or more a round, or the rounds' random sizes
			// could all be small and leave nothing to merge (it happened).
			target += 3200
		}
		var acked atomic.Int64
		reached := make(chan struct{})
		var once sync.Once
		var wg sync.WaitGroup
		for c := range conns {
			wg.Go(func() {
				crashLoad(p.tcpAddr, keys[c], func() {
					if acked.Add(1) >= target {
						once.Do(func() { close(reached) })
					}
				})
			})
		}
		select {
		case <-reached:
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: only %d of %d writes acknowledged", round, acked.Load(), target)
		}
		var st struct {
			Engine struct {
				Compacted int64 `json:"compacted_chunks"`
			} `json:"engine"`
		}
		p.get("/api/v1/stats", &st)
		if merging && compacted+st.Engine.Compacted == 0 {
			// No stopped process has merged a chunk yet: a fast machine
			// can reach the targets between two compaction passes in
			// every round (it happened in CI). The load goes on until
			// this one has, so the stop below follows a merge with the
			// next ones under way.
			p.poll("a chunk merged under load", func() bool {
				p.get("/api/v1/stats", &st)
				return st.Engine.Compacted > 0
			})
		}
		compacted += st.Engine.Compacted
		stop(p) // writes are still in flight on every connection
		wg.Wait()
		totalAcked += int(acked.Load())
	}
	p := start(t, dir, flags...)
	verifyCrashKeys(t, p, keys, rounds)
	h := p.historyStats()
	t.Logf("%d rounds, %d acknowledged writes checked; %d chunks merged in the rounds; history %d points in %d chunks",
		rounds, totalAcked, compacted, h.Points, h.Chunks)
}

// historyStats waits for the first compaction pass after start and
// returns its totals.
func (p *proc) historyStats() (h struct {
	Chunks int64 `json:"chunks"`
	Points int64 `json:"points"`
}) {
	p.t.Helper()
	p.poll("a compaction pass", func() bool {
		var st struct {
			Engine struct {
				History *struct {
					Chunks int64 `json:"chunks"`
					Points int64 `json:"points"`
				} `json:"history"`
			} `json:"engine"`
		}
		p.get("/api/v1/stats", &st)
		if st.Engine.History == nil {
			return false
		}
		h.Chunks, h.Points = st.Engine.History.Chunks, st.Engine.History.Points
		return true
	})
	return h
}

// crashLoad pipelines writes over one connection until it breaks; up to
// 256 are in flight at once.
func crashLoad(addr string, keys []*crashKey, onAck func()) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	type cmd struct {
		k   *crashKey
		val int
	}
	inflight := make(chan cmd, 256)
	go func() {
		defer close(inflight)
		bw := bufio.NewWriter(c)
		for i := 0; ; i++ {
			k := keys[i%len(keys)]
			k.sent++ // a gauge's next value, or one more INCR this round
			if k.counter {
				fmt.Fprintf(bw, "INCR %s 1\n", k.name)
			} else {
				fmt.Fprintf(bw, "SET %s %d\n", k.name, k.sent)
			}
			inflight <- cmd{k, k.sent}
			if i%16 == 15 {
				if bw.Flush() != nil {
					return
				}
			}
		}
	}()
	br := bufio.NewReader(c)
	for cm := range inflight {
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close() // stops the writer
			for range inflight {
			}
			return
		}
		if line != "+OK\r\n" {
			panic(fmt.Sprintf("write to %s refused: %q", cm.k.name, line))
		}
		if cm.k.counter {
			cm.k.maxAck++
		} else {
			cm.k.acked[cm.val] = true
			cm.k.maxAck = max(cm.k.maxAck, cm.val)
		}
		onAck()
	}
}

func verifyCrashKeys(t *testing.T, p *proc, keys [][]*crashKey, round int) {
	t.Helper()
	for _, ks := range keys {
		for _, k := range ks {
			if k.sent == 0 && k.base == 0 {
				continue
			}
			var cur struct {
				Value float64 `json:"value"`
			}
			if code := p.get("/api/v1/series/"+k.name, &cur); code != 200 {
				if k.maxAck > 0 || k.base > 0 {
					t.Fatalf("round %d: %s lost (status %d), %d writes acknowledged", round, k.name, code, len(k.acked))
				}
				continue
			}
			var h struct {
				Points [][2]float64 `json:"points"`
			}
			p.get("/api/v1/series/"+k.name+"/history", &h)
			vals := make([]int, len(h.Points))
			for i, pt := range h.Points {
				vals[i] = int(pt[1])
			}
			// Strictly increasing: nothing replayed twice, nothing reordered.
			for i := 1; i < len(vals); i++ {
				if vals[i] <= vals[i-1] {
					t.Fatalf("round %d: %s history not increasing at %d: %v", round, k.name, i, around(vals, i))
				}
			}
			if len(vals) == 0 || float64(vals[len(vals)-1]) != cur.Value {
				t.Fatalf("round %d: %s value %v is not its newest history point", round, k.name, cur.Value)
			}
			if k.counter {
				total := int(cur.Value)
				if total < k.base+k.maxAck || total > k.base+k.sent {
					t.Fatalf("round %d: %s total %d; it was %d, then %d INCRs were acknowledged of %d sent",
						round, k.name, total, k.base, k.maxAck, k.sent)
				}
				// Totals of INCR 1: exactly 1..total.
				if len(vals) != total || vals[0] != 1 {
					t.Fatalf("round %d: %s history has %d points for total %d", round, k.name, len(vals), total)
				}
				k.base, k.sent, k.maxAck = total, 0, 0
				continue
			}
			if int(cur.Value) < k.maxAck || int(cur.Value) > k.sent {
				t.Fatalf("round %d: %s = %v, acknowledged up to %d, sent up to %d", round, k.name, cur.Value, k.maxAck, k.sent)
			}
			have := make(map[int]bool, len(vals))
			for _, v := range vals {
				have[v] = true
			}
			for v := range k.acked {
				if !have[v] {
					t.Fatalf("round %d: %s lost acknowledged history point %d", round, k.name, v)
				}
			}
		}
	}
}

func around(v []int, i int) string {
	lo, hi := max(0, i-3), min(len(v), i+3)
	parts := make([]string, 0, hi-lo)
	for _, x := range v[lo:hi] {
		parts = append(parts, strconv.Itoa(x))
	}
	return strings.Join(parts, " ")
}

// TestCrashGraphite: Graphite lines have no acknowledgement, but every
// line the listener counted before a SIGKILL is there after the restart,
// and what survives of each connection is a prefix of what it sent, at
// the times it sent: no hole, no duplicate.
func TestCrashGraphite(t *testing.T) {
	const conns, rounds = 3, 3
	dir := t.TempDir()
	flags := []string{"-snapshot-interval", "40ms", "-ring", "8", "-chunk-points", "256"}
	base := time.Now().Add(-time.Hour).UnixMilli()
	have := make([]int, conns) // points of key g<c> so far: values 1..have[c] at base+value ms
	for round := range rounds {
		p := start(t, dir, flags...)
		for c := range conns {
			have[c] = checkPrefix(t, p, fmt.Sprintf("g%d", c), base, have[c])
		}
		var wg sync.WaitGroup
		for c := range conns {
			wg.Go(func() {
				// value v at base+v ms, until the server is gone
				sendGraphite(p.graphiteAddr, fmt.Sprintf("g%d", c), have[c]+1, math.MaxInt, func(v int) int64 { return base + int64(v) })
			})
		}
		target := int64(2000 + 3000*round)
		counted := p.waitStats("graphite", func(s listenerStats) bool { return s.Commands >= target }).Commands
		p.kill() // lines are still in flight on every connection
		wg.Wait()
		before := 0
		for _, n := range have {
			before += n
		}
		p = start(t, dir, flags...)
		after := 0
		for c := range conns {
			have[c] = checkPrefix(t, p, fmt.Sprintf("g%d", c), base, have[c])
			after += have[c]
		}
		if int64(after-before) < counted {
			t.Fatalf("round %d: the listener counted %d lines before the kill, %d survived", round, counted, after-before)
		}
		t.Logf("round %d: %d lines counted before the kill, %d survived", round, counted, after-before)
		p.kill()
	}
}

// checkPrefix checks that key holds exactly the values 1..n at base+value
// ms, with n >= had, and returns n.
func checkPrefix(t *testing.T, p *proc, key string, base int64, had int) int {
	t.Helper()
	var h struct {
		Points [][2]float64 `json:"points"`
	}
	if code := p.get("/api/v1/series/"+key+"/history", &h); code != 200 && (code != 404 || had > 0) {
		t.Fatalf("history of %s: status %d", key, code)
	}
	pts := h.Points
	if len(pts) < had {
		t.Fatalf("%s: %d points, had %d before", key, len(pts), had)
	}
	for i, pt := range pts {
		v := i + 1
		if pt[1] != float64(v) || int64(pt[0]) != base+int64(v) {
			t.Fatalf("%s: point %d is %v, want [%d %d]: not a prefix of what was sent", key, i, pt, base+int64(v), v)
		}
	}
	return len(pts)
}

// TestCrashCollectd: every collectd post answered 200 before a SIGKILL is
// there after the restart; the post in flight at the kill is there
// entirely or not at all.
func TestCrashCollectd(t *testing.T) {
	const clients, rounds, perPost = 3, 3, 4
	dir := t.TempDir()
	flags := []string{"-snapshot-interval", "40ms", "-ring", "8", "-chunk-points", "256"}
	base := time.Now().Add(-time.Hour).UnixMilli()
	acked := make([]int, clients) // values in posts answered 200 so far, per client
	have := make([]int, clients)  // points of key h<c>.p.gauge after the last restart
	for round := range rounds {
		p := start(t, dir, flags...)
		var wg sync.WaitGroup
		var total atomic.Int64
		reached := make(chan struct{})
		var once sync.Once
		for c := range clients {
			wg.Go(func() {
				hc := &http.Client{Timeout: 10 * time.Second}
				for post := have[c] / perPost; ; post++ {
					var b strings.Builder
					b.WriteString("[")
					for i := range perPost {
						v := post*perPost + i + 1
						if i > 0 {
							b.WriteString(",")
						}
						fmt.Fprintf(&b, `{"values":[%d],"dstypes":["gauge"],"dsnames":["value"],"time":%.3f,"interval":1,"host":"h%d","plugin":"p","plugin_instance":"","type":"gauge","type_instance":""}`,
							v, float64(base+int64(v))/1000, c)
					}
					b.WriteString("]")
					resp, err := hc.Post("http://"+p.collectdAddr+"/", "application/json", strings.NewReader(b.String()))
					if err != nil {
						return // killed
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						panic(fmt.Sprintf("post refused: %d", resp.StatusCode))
					}
					acked[c] = (post + 1) * perPost
					if total.Add(1) >= 150 {
						once.Do(func() { close(reached) })
					}
				}
			})
		}
		select {
		case <-reached:
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: only %d posts answered", round, total.Load())
		}
		p.kill() // a post is in flight on every client
		wg.Wait()
		p = start(t, dir, flags...)
		for c := range clients {
			n := checkPrefix(t, p, fmt.Sprintf("h%d.p.gauge", c), base, have[c])
			if n < acked[c] || n > acked[c]+perPost || n%perPost != 0 {
				t.Fatalf("round %d, client %d: %d values back, %d acknowledged: want every acknowledged post, whole posts only", round, c, n, acked[c])
			}
			have[c] = n
		}
		t.Logf("round %d: %d posts answered before the kill; all back", round, total.Load())
		p.kill()
	}
}

// TestCrashRetention: kill -9 while retention downsamples and expires
// loses nothing and doubles nothing. Graphite lines carry a point a
// second, 30 minutes in the past, with the value its second's index;
// raw points are kept a minute, so retention averages them into 10 s and
// 1 m archives and deletes them as the rounds go. After each restart a
// key's history must start at the first second, move forward without a
// gap wider than its tier's step, and hold at each point either the raw
// value or the exact mean of its step.
func TestCrashRetention(t *testing.T) {
	const conns, rounds = 2, 4
	dir := t.TempDir()
	pol := filepath.Join(dir, "retention.conf")
	if err := os.WriteFile(pol, []byte("* raw:1m,10s:1d,1m:7d avg\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := []string{"-snapshot-interval", "40ms", "-ring", "8", "-chunk-points", "256", "-retention", pol, "-retention-every", "20ms"}
	base := (time.Now().Add(-30*time.Minute).UnixMilli() / 60_000) * 60_000
	have := make([]int, conns) // seconds of key r<c> that survived so far
	var archived, expired int64
	for round := range rounds {
		p := start(t, filepath.Join(dir, "data"), flags...)
		var wg sync.WaitGroup
		for c := range conns {
			wg.Go(func() {
				// each round five more minutes of the past, a point a second
				sendGraphite(p.graphiteAddr, fmt.Sprintf("r%d", c), have[c], (round+1)*300, func(i int) int64 { return base + int64(i)*1000 })
			})
		}
		// Kill as soon as this server has archived something: its
		// retention is at work, or just was.
		var st struct {
			Engine struct {
				Archived int64 `json:"archived_points"`
				Expired  int64 `json:"expired_chunks"`
			} `json:"engine"`
		}
		deadline := time.Now().Add(30 * time.Second)
		for st.Engine.Archived == 0 && time.Now().Before(deadline) {
			p.get("/api/v1/stats", &st)
			time.Sleep(2 * time.Millisecond) // polling: there is no event for it
		}
		archived += st.Engine.Archived
		expired += st.Engine.Expired
		p.kill()
		wg.Wait()
		p = start(t, filepath.Join(dir, "data"), flags...)
		for c := range conns {
			have[c] = checkRetained(t, p, fmt.Sprintf("r%d", c), base, have[c])
		}
		p.kill()
	}
	if archived == 0 || expired == 0 {
		t.Fatalf("the rounds archived %d points and expired %d chunks: retention was not exercised", archived, expired)
	}
	t.Logf("%d rounds; the killed servers had archived %d points and expired %d chunks; seconds kept: %v", rounds, archived, expired, have)
}

// checkRetained reads key's whole history and checks it against the
// load: returns how many seconds it covers.
func checkRetained(t *testing.T, p *proc, key string, base int64, had int) int {
	t.Helper()
	var h struct {
		Points [][2]float64 `json:"points"`
	}
	if code := p.get("/api/v1/series/"+key+"/history", &h); code != 200 && (code != 404 || had > 0) {
		t.Fatalf("%s: status %d", key, code)
	}
	pts := h.Points
	if len(pts) == 0 {
		if had > 0 {
			t.Fatalf("%s: history gone", key)
		}
		return 0
	}
	if int64(pts[0][0]) != base {
		t.Fatalf("%s: history starts at %v, not at the first second %d", key, pts[0][0], base)
	}
	end := 0 // seconds covered so far
	for i, pt := range pts {
		s := (int64(pt[0]) - base) / 1000
		if (int64(pt[0])-base)%1000 != 0 || int(s) != end {
			t.Fatalf("%s: point %d at second %v, want %d: out of order, doubled or a gap", key, i, float64(int64(pt[0])-base)/1000, end)
		}
		switch {
		case pt[1] == float64(s): // a raw point
			end++
		case s%10 == 0 && pt[1] == float64(s)+4.5:
			end += 10 // a 10 s mean
		case s%60 == 0 && pt[1] == float64(s)+29.5:
			end += 60 // a 1 m mean
		default:
			t.Fatalf("%s: point %d = %v: neither the raw value %d nor a step's mean", key, i, pt, s)
		}
	}
	if end < had {
		t.Fatalf("%s: covers %d seconds, had %d", key, end, had)
	}
	return end
}

// sendGraphite writes the lines "key v time" for v in [from, to) over one
// connection, v's time at at(v) ms, flushing every 32 lines; it returns
// when it is done or the server is gone.
func sendGraphite(addr, key string, from, to int, at func(v int) int64) {
	gc, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer gc.Close()
	bw := bufio.NewWriter(gc)
	for v := from; v < to; v++ {
		ms := at(v)
		fmt.Fprintf(bw, "%s %d %d.%03d\n", key, v, ms/1000, ms%1000)
		if v%32 == 0 && bw.Flush() != nil {
			return
		}
	}
	bw.Flush()
}

// TestCrashKill9ManySeries: 200,000 series, each snapshot written in
// many small transactions (-snapshot-memory 64 KiB: 16 KiB each, about
// 40 series) while acknowledged SETs sweep over every key; SIGKILL at
// random moments. The snapshots run back to back, each hundreds of
// transactions long, so a kill falls between a snapshot's transactions
// all but always (with 256 KiB transactions, once a snapshot's tail
// points no longer rewrote history pages, a snapshot took a few
// transactions and three kills could all miss them). After each
// restart every key's value and history hold every acknowledged write,
// nothing twice. The test fails unless some restart replayed a WAL whose
// records a stopped snapshot had partly stored (engine.recovery.covered).
func TestCrashKill9ManySeries(t *testing.T) {
	const conns, perConn, rounds = 4, 50_000, 3
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	dir := t.TempDir()
	// -tcp-oneshot-idle=-1s: the load's connections write at once, and a
	// starved client pausing 300 ms would be closed as a scripted one.
	flags := []string{"-snapshot-interval", "20ms", "-snapshot-memory", "65536", "-ring", "8", "-tcp-oneshot-idle", "-1s"}
	// sent[c][i] is the newest value sent to key i of connection c,
	// acked[c][i] the newest acknowledged; values go 1, 2, 3, ... and a
	// connection's replies come in order, so 1..acked are all acknowledged.
	sent := make([][]int32, conns)
	acked := make([][]int32, conns)
	for c := range conns {
		sent[c], acked[c] = make([]int32, perConn), make([]int32, perConn)
	}
	var covered, txs int64
	for round := range rounds + 1 {
		p := start(t, dir, flags...)
		verifyManySeries(t, p, sent, acked, round)
		var st struct {
			Engine struct {
				Recovery struct {
					Covered int64 `json:"covered"`
				} `json:"recovery"`
			} `json:"engine"`
		}
		p.get("/api/v1/stats", &st)
		covered += st.Engine.Recovery.Covered
		if round == rounds {
			break
		}
		// Kill somewhere between half a sweep and two sweeps over the keys.
		target := int64(conns*perConn/2 + rng.IntN(conns*perConn*3/2))
		var n atomic.Int64
		reached := make(chan struct{})
		var once sync.Once
		var wg sync.WaitGroup
		for c := range conns {
			wg.Go(func() {
				manySeriesLoad(p.tcpAddr, c, sent[c], acked[c], func() {
					if n.Add(1) >= target {
						once.Do(func() { close(reached) })
					}
				})
			})
		}
		select {
		case <-reached:
		case <-time.After(5 * time.Minute):
			t.Fatalf("round %d: only %d of %d writes acknowledged", round, n.Load(), target)
		}
		var ss struct {
			Engine struct {
				Snapshots struct {
					Transactions int64 `json:"transactions"`
				} `json:"snapshots"`
			} `json:"engine"`
		}
		p.get("/api/v1/stats", &ss)
		txs += ss.Engine.Snapshots.Transactions
		p.kill()
		wg.Wait()
		t.Logf("round %d: killed after %d acknowledged writes, %d snapshot transactions", round, n.Load(), ss.Engine.Snapshots.Transactions)
	}
	if covered == 0 {
		t.Fatalf("no restart found records a stopped snapshot had stored (%d snapshot transactions in all): no kill fell inside a snapshot", txs)
	}
	t.Logf("%d records skipped at restarts as already stored", covered)
}

func manyKey(c, i int) string { return fmt.Sprintf("m%d.%03d.%03d", c, i/1000, i%1000) }

// manySeriesLoad sweeps SETs over the keys of connection c, pipelined,
// until the connection breaks.
func manySeriesLoad(addr string, c int, sent, acked []int32, onAck func()) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer conn.Close()
	type cmd struct{ i, v int32 }
	inflight := make(chan cmd, 1024)
	go func() {
		defer close(inflight)
		bw := bufio.NewWriterSize(conn, 64<<10)
		for n := 0; ; n++ {
			i := int32(n % len(sent))
			sent[i]++
			fmt.Fprintf(bw, "SET %s %d\n", manyKey(c, int(i)), sent[i])
			inflight <- cmd{i, sent[i]}
			if n%64 == 63 && bw.Flush() != nil {
				return
			}
		}
	}()
	br := bufio.NewReader(conn)
	for cm := range inflight {
		line, err := br.ReadString('\n')
		if err != nil {
			conn.Close() // stops the writer
			for range inflight {
			}
			return
		}
		if line != "+OK\r\n" {
			panic(fmt.Sprintf("write to %s refused: %q", manyKey(c, int(cm.i)), line))
		}
		acked[cm.i] = cm.v
		onAck()
	}
}

// verifyManySeries reads every key back, a thousand at a time: its value
// and history must hold 1..acked, in order, nothing twice, and nothing
// past what was sent.
func verifyManySeries(t *testing.T, p *proc, sent, acked [][]int32, round int) {
	t.Helper()
	for c := range sent {
		for block := range len(sent[c]) / 1000 {
			var h struct {
				Series []struct {
					Key    string       `json:"key"`
					Points [][2]float64 `json:"points"`
				} `json:"series"`
			}
			glob := fmt.Sprintf("m%d.%03d.*", c, block)
			if code := p.get("/api/v1/history?match="+glob, &h); code != 200 {
				t.Fatalf("round %d: history of %s: status %d", round, glob, code)
			}
			got := make(map[string][][2]float64, len(h.Series))
			for _, s := range h.Series {
				got[s.Key] = s.Points
			}
			var vals []struct {
				Key   string  `json:"key"`
				Value float64 `json:"value"`
			}
			p.get("/api/v1/series?match="+glob, &vals)
			value := make(map[string]float64, len(vals))
			for _, v := range vals {
				value[v.Key] = v.Value
			}
			for i := block * 1000; i < (block+1)*1000; i++ {
				key, a, s := manyKey(c, i), int(acked[c][i]), int(sent[c][i])
				pts := got[key]
				if len(pts) < a || len(pts) > s {
					t.Fatalf("round %d: %s has %d points; %d were acknowledged, %d sent", round, key, len(pts), a, s)
				}
				for j, pt := range pts {
					if int(pt[1]) != j+1 {
						t.Fatalf("round %d: %s point %d is %v, want %d (nothing lost, nothing twice)", round, key, j, pt[1], j+1)
					}
				}
				if v, ok := value[key]; len(pts) > 0 && (!ok || v != pts[len(pts)-1][1]) {
					t.Fatalf("round %d: %s value %v (found %v), its newest point %v", round, key, v, ok, pts[len(pts)-1][1])
				}
				// What survived beyond the acknowledged is now the base.
				sent[c][i], acked[c][i] = int32(len(pts)), int32(len(pts))
			}
		}
	}
}
