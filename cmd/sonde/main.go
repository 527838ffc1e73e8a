// Command sonde runs the Sonde metrics and status store: the engine, the
// mesures TCP command listener and the HTTP query server. With no flags it
// keeps its data in ./data and listens on 127.0.0.1 only.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/remotewrite"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest"
	"github.com/sonde-metrics/sonde/ingest/alert"
	"github.com/sonde-metrics/sonde/ingest/collectd"
	"github.com/sonde-metrics/sonde/query"
	"github.com/sonde-metrics/sonde/retention"
)

// The engine must fit what its consumers expect of it.
var (
	_ query.Store        = (*engine.DB)(nil)
	_ ingest.Appender    = (*engine.DB)(nil)
	_ ingest.FollowStore = (*engine.DB)(nil)
)

type config struct {
	configFile       string
	dataDir          string
	tcpAddr          string
	graphiteAddr     string
	collectdAddr     string
	statsdAddr       string
	statsdFlush      time.Duration
	statsdPcts       string
	statsdMaxNames   int
	statsdMaxSet     int
	statsdMaxTimer   int
	statsdIdle       int
	statsdMaxQueue   int
	typesDB          string
	maxBody          int
	httpAddr         string
	headerTimeout    time.Duration
	fsync            string
	fsyncInterval    time.Duration
	snapshotInterval time.Duration
	snapshotRecords  int
	snapshotQuiet    time.Duration
	snapshotMemory   int
	ringSize         int
	vaporPoints      int
	chunkPoints      int
	retainEvery      time.Duration
	retentionFile    string
	eventRetention   string
	eventMaxBytes    int64
	eventMemory      int
	maxHeartbeats    int
	maxSeries        int
	minWindow        time.Duration
	walSegment       int
	eventBuffer      int
	maxConns         int
	maxLine          int
	oneShotIdle      time.Duration
	idleTimeout      time.Duration
	heartbeat        time.Duration
	queryTimeout     time.Duration
	queryMaxPoints   int
	queryMaxBytes    int
	queryMaxSeries   int
	queryConcurrency int
	sseWriteTimeout  time.Duration
	selfInterval     time.Duration
	upstreams        stringList // -upstream, paired by order with
	upstreamNames    stringList // -upstream-prefix
	alerts           stringList // -alert
	checkFlags       stringList // -check
	checks           []*alert.Check
	watchtowerAddr   string
	logatronAddr     string
	logatronLine     int
	logatronClients  int
	logatronRing     int
	logatronKeys     int
	gloAddr          string
	gloKeyFlags      stringList // -glo-key
	glo              query.GloOptions
	gloPollFlags     stringList // -glo-poll
	gloPolls         []ingest.GloPollOptions
	watchtowerPWFile string
	remoteWriteFlags stringList // -remote-write
	externalLabels   stringList // -external-label
	remoteWrites     []remotewrite.Config
	remoteWriteMax   int64
	allowFlags       stringList // -allow
	allow            *boundary.Allow
	insecure         bool
	tlsCert, tlsKey  string
	tlsListeners     string
	authFile         string
	authListeners    string
	caFile           string
	authTimeout      time.Duration
	clientTLS        *tls.Config      // from -ca-file: Sonde's own clients'
	upTokenFiles     stringList       // -upstream-token-file
	upTokens         []string         // read from them
	access           *boundary.Access // set by run: the allowlist, the certificates and the tokens
	channels         []*alert.Channel
	pprofAddr        string
	gogc             int    // 0: leave the runtime's (the GOGC environment variable)
	gcHeadroom       uint64 // 0: leave the runtime's memory limit (the GOMEMLIMIT environment variable)
	gcFloor          uint64
	logLevel         string
	logFormat        string
}

// flagSet defines every flag of the server on c.
func flagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("sonde", flag.ContinueOnError)
	fs.StringVar(&c.configFile, "config", "", "a TOML file of settings: each key a flag's name, each value its value (a list for a repeatable flag); flags given on the command line win (README, \"Configuration\")")
	fs.StringVar(&c.dataDir, "data", "./data", "data directory (WAL, snapshot database, lock)")
	fs.StringVar(&c.tcpAddr, "tcp", "127.0.0.1:8124", "listen address of the mesures command protocol")
	fs.StringVar(&c.graphiteAddr, "graphite", "127.0.0.1:2003", "listen address of Graphite plaintext (TCP); empty turns it off")
	fs.StringVar(&c.statsdAddr, "statsd", "127.0.0.1:8125", "listen address of statsd (UDP); empty turns it off")
	fs.DurationVar(&c.statsdFlush, "statsd-flush", 10*time.Second, "statsd flush interval: timer, set and counter-rate aggregates are written this often")
	fs.StringVar(&c.statsdPcts, "statsd-percentiles", "50,90,95,99", "statsd timer percentiles, comma separated")
	fs.IntVar(&c.statsdMaxNames, "statsd-max-names", 50_000, "most statsd counter, timer and set names the aggregates hold, active or idle (samples of the rest are written raw only)")
	fs.IntVar(&c.statsdMaxSet, "statsd-max-set", 500_000, "most statsd set members the aggregates hold, all sets together, per flush interval")
	fs.IntVar(&c.statsdMaxTimer, "statsd-max-timer-values", 500_000, "most statsd timer values the aggregates hold, all timers together, per flush interval")
	fs.IntVar(&c.statsdIdle, "statsd-idle-flushes", 3, "flushes that write zeros for a statsd name without samples before it is forgotten (0: forgotten at once)")
	fs.IntVar(&c.statsdMaxQueue, "statsd-max-queue", 65536, "most raw statsd samples read and not yet in the WAL; past it the readers wait and the kernel buffers or drops")
	fs.StringVar(&c.collectdAddr, "collectd", "127.0.0.1:8125", "listen address of the collectd write_http receiver (HTTP; also at /collectd on -http); empty turns this listener off")
	fs.StringVar(&c.typesDB, "collectd-typesdb", "", "collectd's types.db, for PUTVAL data source names (default: /usr/share/collectd/types.db when present, else a built-in subset)")
	fs.IntVar(&c.maxBody, "max-body", 1<<20, "largest HTTP request body in bytes")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:1337", "listen address of the HTTP API (/data, /events, /api/v1)")
	fs.DurationVar(&c.headerTimeout, "http-header-timeout", 5*time.Second, "cut an HTTP connection whose request head takes longer (the first from accept, later ones from their first byte); at most half of -max-conns may be sending their first")
	fs.StringVar(&c.fsync, "fsync", "always", "WAL durability: always (ack after fsync), interval, never")
	fs.DurationVar(&c.fsyncInterval, "fsync-interval", 100*time.Millisecond, "the longest a write stays in the WAL unfsynced with -fsync=interval, and a Graphite or statsd write (no ack) with -fsync=always")
	fs.DurationVar(&c.snapshotInterval, "snapshot-interval", 30*time.Second, "how often changes are stored into the snapshot database")
	fs.IntVar(&c.snapshotRecords, "snapshot-records", 1<<23, "take a snapshot early once the WAL holds this many records past the last one")
	fs.DurationVar(&c.snapshotQuiet, "snapshot-quiet", time.Second, "take a snapshot early once writes have been quiet this long with 65536 records or more not yet stored; 0 turns it off")
	fs.IntVar(&c.snapshotMemory, "snapshot-memory", 16<<20, "bytes one snapshot may use whatever the number of changed series (beyond 8 per changed series); it writes in transactions of a quarter of it")
	fs.IntVar(&c.ringSize, "ring", 0, "stored history points each series also keeps in memory (points not yet in the snapshot database are always there)")
	fs.IntVar(&c.vaporPoints, "vapor-points", 120, "recent points /vapor returns per key")
	fs.StringVar(&c.retentionFile, "retention", "", "retention policy file (docs/retention.md); default: "+retention.DefaultText)
	fs.DurationVar(&c.retainEvery, "retention-every", time.Minute, "least time between retention passes (each walks every series; docs/retention.md)")
	fs.StringVar(&c.eventRetention, "event-retention", "90d", "how long status events are kept, by their time (s, m, h, d, w, y); older ones are refused and expired")
	fs.Int64Var(&c.eventMaxBytes, "event-max-bytes", 1<<30, "most bytes the stored status events take; the oldest are expired past it (0: no bound but -event-retention)")
	fs.IntVar(&c.eventMemory, "event-memory", 64<<20, "most bytes of status events held in memory until a snapshot stores them; past it new events are refused (503)")
	fs.IntVar(&c.maxHeartbeats, "max-heartbeats", 10_000, "most heartbeats (a cancelled one counts for a week); a pulse of one more service gets 400")
	fs.IntVar(&c.chunkPoints, "chunk-points", 4096, "history points compaction gathers into one stored chunk (negative: no compaction)")
	fs.IntVar(&c.maxSeries, "max-series", 1_000_000, "most keys the store holds")
	fs.IntVar(&c.walSegment, "wal-segment-size", 8<<20, "WAL segment size in bytes; the WAL is truncated a whole segment at a time after snapshots")
	fs.IntVar(&c.eventBuffer, "event-buffer", 1<<16, "recent changes kept in memory for SSE subscribers; older ones are read from the WAL")
	fs.DurationVar(&c.minWindow, "min-window", time.Second, "shortest counting window an INCR may ask for (each window end costs work)")
	fs.IntVar(&c.maxConns, "max-conns", 1024, "most open connections per listener")
	fs.IntVar(&c.maxLine, "max-line", 4096, "longest command line in bytes")
	fs.DurationVar(&c.oneShotIdle, "tcp-oneshot-idle", 300*time.Millisecond, "close a scripted command connection idle this long (negative: never)")
	fs.DurationVar(&c.idleTimeout, "tcp-idle-timeout", 10*time.Minute, "close other command connections idle this long")
	fs.DurationVar(&c.authTimeout, "tcp-auth-timeout", 5*time.Second, "with -auth-file: how long a command connection has to send its AUTH line (at most half of -max-conns wait at once; past that the one waiting longest is cut)")
	fs.DurationVar(&c.queryTimeout, "query-timeout", 30*time.Second, "longest time one read (/data, /vapor, /render, history, ...) may take")
	fs.IntVar(&c.queryMaxPoints, "query-max-points", 1_000_000, "most history points one read may hold (read and answered)")
	fs.IntVar(&c.queryMaxBytes, "query-max-bytes", 32<<20, "largest answer of one read, in bytes")
	fs.IntVar(&c.queryMaxSeries, "query-max-series", 10_000, "most series one history or /render read covers")
	fs.IntVar(&c.queryConcurrency, "query-concurrency", 4, "reads served at once; more wait up to -query-timeout for a slot")
	fs.DurationVar(&c.heartbeat, "sse-heartbeat", 15*time.Second, "period of SSE heartbeat comments")
	fs.DurationVar(&c.sseWriteTimeout, "sse-write-timeout", 30*time.Second, "cut off an SSE subscriber whose socket takes nothing for this long")
	fs.IntVar(&c.gogc, "gogc", defaultGOGC, "the Go collector's GOGC: heap growth in percent of the live heap between collections (the GOGC environment variable wins over the default, not over this flag)")
	fs.Uint64Var(&c.gcFloor, "gogc-floor", defaultGCFloor, "the least heap growth in bytes between collections, whatever -gogc says of a small heap (0: none)")
	fs.Uint64Var(&c.gcHeadroom, "gc-headroom", defaultGCHeadroom, "after each collection, set Go's soft memory limit to the heap goal plus the runtime's memory outside the heap plus this many bytes or a tenth of the goal, whichever is more, so that freed pages go back to the system (0: leave the limit to the GOMEMLIMIT environment variable, none without it; GOMEMLIMIT wins over the default, and caps the limit this flag sets)")
	fs.DurationVar(&c.selfInterval, "self-interval", 10*time.Second, "how often Sonde records its own figures as series ("+selfNames()+"); 0 turns it off, else at least 100ms (GET /metrics serves them either way)")
	fs.Var(&c.upstreams, "upstream", "follow another Sonde's event stream (http://host:1337/events[?match=glob]) and store its keys under the -upstream-prefix of the same rank; repeatable")
	fs.Var(&c.upstreamNames, "upstream-prefix", "NAME: keys of the -upstream of the same rank are stored as NAME.<key>, its cursor in "+ingest.CursorKey("NAME")+"; repeatable")
	fs.Var(&c.alerts, "alert", "an alert channel heartbeats may name: name=NAME,webhook=URL | name=NAME,email=ADDR,smtp=HOST:PORT,from=ADDR[,user=U,password-file=F] | name=NAME,pushover=USER,token-file=F (secrets from *-file= or *-env=, never the flag); repeatable")
	fs.Var(&c.checkFlags, "check", "an HTTP check: NAME=URL[,every=30s][,expect=200][,alert=CHANNEL][,timeout=10s]: a failing GET records an event and alerts once, and again when it passes; repeatable")
	fs.StringVar(&c.watchtowerAddr, "watchtower", "", "serve watchtower's API (its clients, heartbeats and events) at the root of this address, e.g. 127.0.0.1:5000; off when empty (docs/watchtower.md)")
	fs.StringVar(&c.watchtowerPWFile, "watchtower-password-file", "", "a file holding the password watchtower clients must send in their password header (none: no password)")
	fs.StringVar(&c.logatronAddr, "logatron", "127.0.0.1:2212", "listen address of logatron clients (TCP: IAM name, then LOG and SET lines; nothing is written back); empty turns it off")
	fs.IntVar(&c.logatronLine, "logatron-max-line", 4096, "longest logatron line in bytes; a longer one closes its connection")
	fs.IntVar(&c.logatronClients, "logatron-max-clients", 256, "most logatron clients kept, connected or not; a new name takes the place of the one disconnected longest ago, and is refused when all are connected")
	fs.IntVar(&c.logatronRing, "logatron-ring", 128, "log lines kept per logatron client, newest first")
	fs.IntVar(&c.logatronKeys, "logatron-max-keys", 64, "most state keys (SET) per logatron client; a new key past it closes its connection")
	fs.StringVar(&c.gloAddr, "glo", "", "serve the glo status document at the root of this address too (it is at /glo on -http), e.g. 127.0.0.1:22200 where glo's poller page looks first; off when empty")
	fs.Var(&c.gloKeyFlags, "glo-key", "PATTERN[,lvl=N][,desc=TEXT]: the glo desc and lvl of the keys the glob matches (the first that matches wins); repeatable")
	fs.IntVar(&c.glo.MaxKeys, "glo-max-keys", query.DefaultGloMaxKeys, "most keys in one glo document; past it the document ends with \"truncated\": true (?match= picks keys)")
	fs.Var(&c.gloPollFlags, "glo-poll", "URL[,prefix=NAME][,every=1s][,token-file=F]: read a glo document every interval and store its numbers as NAME.<name>.<tag> (default prefix glo.<host>_<port>); repeatable")
	fs.Var(&c.remoteWriteFlags, "remote-write", "URL[,name=NAME][,shards=4][,max-samples=5000][,timeout=30s][,bearer-token-file=F]: send every stored point to this Prometheus remote_write endpoint, read from the WAL behind a durable position (docs/remote-write.md; default name: host_port); repeatable")
	fs.Int64Var(&c.remoteWriteMax, "remote-write-max-backlog", 1<<30, "most bytes of WAL segments kept for -remote-write destinations that have not sent them; past it the oldest are cut, counted and logged (0: no bound)")
	fs.Var(&c.externalLabels, "external-label", "NAME=VALUE: a label -remote-write adds to every series without it; repeatable")
	fs.Var(&c.allowFlags, "allow", "CIDR or address: take connections and datagrams on every listener from these sources only (others are closed at once, or dropped, and counted); repeatable, or comma separated")
	fs.BoolVar(&c.insecure, "insecure", false, "start even when a listener binds beyond loopback with neither -allow nor -auth-file asking its clients for a token (anyone who reaches it may read and write)")
	fs.StringVar(&c.authFile, "auth-file", "", "a file of tokens, one a line: NAME read|write|read,write TOKEN|sha256:HEX (sonde token makes one); the -auth-listeners then ask every client for one (docs/auth.md); read again on SIGHUP")
	fs.StringVar(&c.authListeners, "auth-listeners", "tcp,collectd,http,watchtower,pprof", "the listeners that ask for a token when -auth-file is given (also glo, whose clients may send ?token=; graphite, statsd and logatron clients cannot: give them -allow)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM CA certificates Sonde's own clients (-upstream, -glo-poll, -remote-write) trust besides the system's")
	fs.Var(&c.upTokenFiles, "upstream-token-file", "a file holding the token sent to the -upstream of the same rank (one file for every -upstream when given once); repeatable")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "a PEM certificate (chain): the -tls-listeners serve TLS with it and -tls-key; both read again on SIGHUP")
	fs.StringVar(&c.tlsKey, "tls-key", "", "the PEM private key of -tls-cert")
	fs.StringVar(&c.tlsListeners, "tls-listeners", "tcp,collectd,http,glo,watchtower,pprof", "the listeners that serve TLS when -tls-cert is given (also graphite, logatron; statsd is UDP)")
	fs.StringVar(&c.pprofAddr, "pprof", "", "serve Go's profiler (net/http/pprof) on this address; off when empty")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	return fs
}

func parseFlags(args []string) (config, error) {
	c, _, err := parse(args, os.Stderr)
	return c, err
}

// parse reads the flags of args (and the -config file) into a config,
// and returns the flag set that holds them; usage goes to out. more adds
// a subcommand's own flags (sonde config -show-secrets).
func parse(args []string, out io.Writer, more ...func(*flag.FlagSet)) (config, *flag.FlagSet, error) {
	var c config
	fs := flagSet(&c)
	for _, f := range more {
		f(fs)
	}
	fs.SetOutput(out)
	if err := fs.Parse(args); err != nil {
		return c, fs, err
	}
	if fs.NArg() > 0 {
		return c, fs, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.configFile != "" {
		if err := loadConfig(fs, c.configFile); err != nil {
			return c, fs, err
		}
	}
	if explicit(fs, "gogc") && c.gogc <= 0 {
		return c, fs, fmt.Errorf("-gogc %d: want a percentage above 0", c.gogc)
	}
	if c.selfInterval < 0 || (c.selfInterval > 0 && c.selfInterval < minSelfInterval) {
		return c, fs, fmt.Errorf("-self-interval %s: want 0 (off) or at least %s", c.selfInterval, minSelfInterval)
	}
	if c.logatronLine < 16 || c.logatronLine > maxLogatronLine {
		return c, fs, fmt.Errorf("-logatron-max-line %d: want 16 to %d bytes", c.logatronLine, maxLogatronLine)
	}
	for _, spec := range c.gloKeyFlags {
		k, err := query.ParseGloKey(spec)
		if err != nil {
			return c, fs, err
		}
		c.glo.Keys = append(c.glo.Keys, k)
	}
	for _, spec := range c.gloPollFlags {
		o, err := parseGloPoll(spec)
		if err != nil {
			return c, fs, err
		}
		if slices.ContainsFunc(c.gloPolls, func(p ingest.GloPollOptions) bool { return p.Prefix == o.Prefix }) {
			return c, fs, fmt.Errorf("-glo-poll: prefix %s is given twice", o.Prefix)
		}
		c.gloPolls = append(c.gloPolls, o)
	}
	var ext []remotewrite.Label
	for _, spec := range c.externalLabels {
		l, err := remotewrite.ParseLabel(spec)
		if err != nil {
			return c, fs, fmt.Errorf("-external-label: %w", err)
		}
		if slices.ContainsFunc(ext, func(o remotewrite.Label) bool { return o.Name == l.Name }) {
			return c, fs, fmt.Errorf("-external-label: %s is given twice", l.Name)
		}
		ext = append(ext, l)
	}
	for _, spec := range c.remoteWriteFlags {
		rw, err := parseRemoteWrite(spec, ext)
		if err != nil {
			return c, fs, err
		}
		if slices.ContainsFunc(c.remoteWrites, func(o remotewrite.Config) bool { return o.Name == rw.Name }) {
			return c, fs, fmt.Errorf("-remote-write: the name %s is given twice (name= tells them apart)", rw.Name)
		}
		c.remoteWrites = append(c.remoteWrites, rw)
	}
	if c.remoteWriteMax < 0 {
		return c, fs, fmt.Errorf("-remote-write-max-backlog %d: want 0 (no bound) or a number of bytes", c.remoteWriteMax)
	}
	allow, err := boundary.ParseAllow(c.allowFlags)
	if err != nil {
		return c, fs, err
	}
	c.allow = allow
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return c, fs, fmt.Errorf("-tls-cert and -tls-key go together")
	}
	for _, n := range strings.Split(c.tlsListeners, ",") {
		if !slices.Contains([]string{"tcp", "graphite", "collectd", "http", "logatron", "glo", "watchtower", "pprof", ""}, n) {
			return c, fs, fmt.Errorf("-tls-listeners: %q is not a TCP listener (tcp, graphite, collectd, http, logatron, glo, watchtower, pprof)", n)
		}
	}
	for _, n := range strings.Split(c.authListeners, ",") {
		if !slices.Contains([]string{"tcp", "collectd", "http", "glo", "watchtower", "pprof", ""}, n) {
			return c, fs, fmt.Errorf("-auth-listeners: %q is not a listener that can ask for a token (tcp, collectd, http, glo, watchtower, pprof)", n)
		}
	}
	if c.authFile != "" && c.watchtowerPWFile != "" && slices.Contains(strings.Split(c.authListeners, ","), "watchtower") {
		return c, fs, fmt.Errorf("-watchtower-password-file and -auth-file both guard the watchtower listener: give one (a watchtower client sends a token as its password)")
	}
	if c.clientTLS, err = clientTLS("-ca-file", c.caFile); err != nil {
		return c, fs, err
	}
	if len(c.upTokenFiles) > 1 && len(c.upTokenFiles) != len(c.upstreams) {
		return c, fs, fmt.Errorf("%d -upstream-token-file and %d -upstream: give one file for all, or one per upstream in the same order", len(c.upTokenFiles), len(c.upstreams))
	}
	for _, f := range c.upTokenFiles {
		tok, err := readToken("-upstream-token-file", f)
		if err != nil {
			return c, fs, err
		}
		c.upTokens = append(c.upTokens, tok)
	}
	for i := range c.gloPolls {
		c.gloPolls[i].TLS = c.clientTLS
	}
	for i := range c.remoteWrites {
		c.remoteWrites[i].TLS = c.clientTLS
	}
	if err := checkExposure(c); err != nil {
		return c, fs, err
	}
	if err := checkUpstreams(c.upstreams, c.upstreamNames); err != nil {
		return c, fs, err
	}
	for _, spec := range c.alerts {
		ch, err := alert.ParseChannel(spec, alert.FromEnvironment)
		if err != nil {
			return c, fs, err
		}
		if slices.ContainsFunc(c.channels, func(o *alert.Channel) bool { return o.Name == ch.Name }) {
			return c, fs, fmt.Errorf("-alert: the name %s is given twice", ch.Name)
		}
		c.channels = append(c.channels, ch)
	}
	for _, spec := range c.checkFlags {
		ch, err := alert.ParseCheck(spec)
		if err != nil {
			return c, fs, err
		}
		if ch.Channel != "" && !slices.ContainsFunc(c.channels, func(o *alert.Channel) bool { return o.Name == ch.Channel }) {
			return c, fs, fmt.Errorf("-check %s: alert=%s names no -alert channel", ch.Name, ch.Channel)
		}
		if slices.ContainsFunc(c.checks, func(o *alert.Check) bool { return o.Name == ch.Name }) {
			return c, fs, fmt.Errorf("-check: the name %s is given twice", ch.Name)
		}
		c.checks = append(c.checks, ch)
	}
	if !explicit(fs, "gogc") && os.Getenv("GOGC") != "" {
		c.gogc = 0 // the environment's, as the runtime read it
	}
	if !explicit(fs, "gc-headroom") && os.Getenv("GOMEMLIMIT") != "" {
		c.gcHeadroom = 0 // the environment's limit, as the runtime read it
	}
	return c, fs, nil
}

// parseGloPoll reads URL[,prefix=NAME][,every=D]. Its errors show the
// URL without its path and query, which may hold a token.
func parseGloPoll(spec string) (ingest.GloPollOptions, error) {
	u, rest, _ := strings.Cut(spec, ",")
	o := ingest.GloPollOptions{URL: u, Prefix: ingest.GloPrefix(u), Every: time.Second}
	for rest != "" {
		var field string
		field, rest, _ = strings.Cut(rest, ",")
		name, v, _ := strings.Cut(field, "=")
		switch name {
		case "prefix":
			o.Prefix = v
		case "every":
			d, err := time.ParseDuration(v)
			if err != nil || d < 100*time.Millisecond {
				return o, fmt.Errorf("-glo-poll of %s: every=%s is not a duration of 100ms or more", o.Prefix, v)
			}
			o.Every = d
		case "token-file":
			tok, err := readToken("-glo-poll of "+o.Prefix+" token-file=", v)
			if err != nil {
				return o, err
			}
			o.Token = tok
		default:
			return o, fmt.Errorf("-glo-poll of %s: unknown field %q (prefix=, every=, token-file=; a comma in the URL is written %%2C)", o.Prefix, name)
		}
	}
	if _, err := ingest.NewGloPoller(o, nil, nil); err != nil {
		return o, err
	}
	return o, nil
}

// reloadCerts reads the TLS certificate and key again (SIGHUP); on an
// error the one in use stays.
func reloadCerts(acc *boundary.Access, logger *slog.Logger) {
	if acc.TLS == nil {
		logger.Info("SIGHUP: nothing to reload (no -tls-cert)")
		return
	}
	if err := acc.TLS.Reload(); err != nil {
		logger.Error("SIGHUP: TLS certificate not reloaded; the one in use stays", "err", err)
		return
	}
	logger.Info("SIGHUP: TLS certificate reloaded")
}

// reloadTokens reads the -auth-file again (SIGHUP); on an error the
// tokens in use stay.
func reloadTokens(acc *boundary.Access, logger *slog.Logger) {
	if acc.Auth == nil {
		return
	}
	if err := acc.Auth.Reload(); err != nil {
		logger.Error("SIGHUP: tokens not reloaded; those in use stay", "err", err)
		return
	}
	logger.Info("SIGHUP: tokens reloaded", "tokens", acc.Auth.Len())
}

// checkExposure refuses a listen address beyond loopback that neither an
// allowlist nor tokens guard, unless -insecure: anyone who reaches such a
// listener may read and write.
func checkExposure(c config) error {
	if c.allow != nil || c.insecure {
		return nil
	}
	authOn := strings.Split(c.authListeners, ",")
	for _, l := range []struct{ flag, addr string }{
		{"tcp", c.tcpAddr}, {"graphite", c.graphiteAddr}, {"statsd", c.statsdAddr}, {"collectd", c.collectdAddr},
		{"http", c.httpAddr}, {"logatron", c.logatronAddr}, {"glo", c.gloAddr}, {"watchtower", c.watchtowerAddr}, {"pprof", c.pprofAddr},
	} {
		if l.addr == "" || boundary.IsLoopback(l.addr) || c.authFile != "" && slices.Contains(authOn, l.flag) {
			continue
		}
		if c.authFile != "" {
			return fmt.Errorf("-%s %s listens beyond loopback, and asks for no token (it is not in -auth-listeners, or its clients cannot send one): give -allow CIDR (the sources it may take), or -insecure to take any", l.flag, l.addr)
		}
		return fmt.Errorf("-%s %s listens beyond loopback with no guard: give -auth-file (tokens) or -allow CIDR (the sources it may take), or -insecure to take any", l.flag, l.addr)
	}
	return nil
}

// maxLogatronLine is the longest line -logatron-max-line may allow: a
// WAL record holds a message of at most 16 KiB.
const maxLogatronLine = 16 << 10

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// checkUpstreams pairs each -upstream with its -upstream-prefix. No
// prefix may cover another's keys: a follower deletes under its prefix
// what its upstream no longer holds.
func checkUpstreams(urls, names []string) error {
	if len(urls) != len(names) {
		return fmt.Errorf("%d -upstream and %d -upstream-prefix: give one prefix per upstream, in the same order", len(urls), len(names))
	}
	for i, n := range names {
		if err := ingest.CheckFollowName(n); err != nil {
			return fmt.Errorf("-upstream-prefix: %w", err)
		}
		for _, o := range names[:i] {
			if strings.HasPrefix(n+".", o+".") || strings.HasPrefix(o+".", n+".") {
				return fmt.Errorf("-upstream-prefix %q and %q: one covers the other's keys", o, n)
			}
		}
	}
	return nil
}

// explicit reports whether the flag name was given on the command line.
func explicit(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func newLogger(c config) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("parse -log-level: %w", err)
	}
	o := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	}
	return nil, fmt.Errorf("unknown -log-format %q (want text or json)", c.logFormat)
}

// goStats is the Go runtime's view of the process' memory.
func goStats() map[string]uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return map[string]uint64{"heap_alloc": m.HeapAlloc, "heap_inuse": m.HeapInuse, "heap_sys": m.HeapSys,
		"sys": m.Sys, "num_gc": uint64(m.NumGC), "goroutines": uint64(runtime.NumGoroutine()), "gogc": uint64(gcTuning.percent.Load()), "gogc_floor": uint64(gcTuning.floor.Load()), "gc_percent": uint64(max(gcTuning.now.Load(), 0)),
		"gc_headroom": uint64(gcTuning.headroom.Load()), "memory_limit": uint64(max(gcTuning.limit.Load(), 0))}
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "check" || os.Args[1] == "repair") {
		os.Exit(subcommand(os.Args[1], os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "token" {
		os.Exit(tokenMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(agentMain(os.Args[2:], os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "config" {
		os.Exit(configMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) == 2 && (os.Args[1] == "version" || os.Args[1] == "-version") {
		version(os.Stdout)
		os.Exit(0)
	}
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sonde:", err)
		os.Exit(2)
	}
	logger, err := newLogger(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sonde:", err)
		os.Exit(2)
	}
	if err := run(c, logger); err != nil {
		logger.Error("sonde stopped", "err", err)
		os.Exit(1)
	}
}

func run(c config, logger *slog.Logger) error {
	tuneGC(c.gogc, c.gcFloor, c.gcHeadroom)
	policy, err := engine.ParseFsyncPolicy(c.fsync)
	if err != nil {
		return fmt.Errorf("parse -fsync: %w", err)
	}
	if c.statsdAddr != "" && c.statsdFlush < c.minWindow {
		// stats_counts.<name> keys count per flush interval.
		return fmt.Errorf("check flags: -statsd-flush %s is shorter than -min-window %s", c.statsdFlush, c.minWindow)
	}
	pols := retention.Default()
	if c.retentionFile != "" {
		b, err := os.ReadFile(c.retentionFile)
		if err != nil {
			return fmt.Errorf("read -retention: %w", err)
		}
		if pols, err = retention.Parse(string(b)); err != nil {
			return fmt.Errorf("parse %s: %w", c.retentionFile, err)
		}
	}
	eventKeep, err := retention.ParseDuration(c.eventRetention)
	if err != nil {
		return fmt.Errorf("check flags: -event-retention: %w", err)
	}
	eventMaxBytes := c.eventMaxBytes
	if eventMaxBytes == 0 {
		eventMaxBytes = -1 // the engine's "no bound"
	}
	if c.eventMemory < 4096 {
		return fmt.Errorf("check flags: -event-memory %d: want at least 4096 bytes", c.eventMemory)
	}
	c.access = &boundary.Access{Allow: c.allow}
	if c.authFile != "" {
		tokens, err := boundary.LoadTokens(c.authFile, logger.With("component", "auth"))
		if err != nil {
			return err
		}
		c.access.Auth = tokens
		c.access.AuthOn = map[string]bool{}
		for _, n := range strings.Split(c.authListeners, ",") {
			c.access.AuthOn[n] = true
		}
	}
	if c.tlsCert != "" {
		certs, err := boundary.LoadCerts(c.tlsCert, c.tlsKey)
		if err != nil {
			return err
		}
		c.access.TLS = certs
		c.access.TLSOn = map[string]bool{}
		for _, n := range strings.Split(c.tlsListeners, ",") {
			c.access.TLSOn[n] = true
		}
	}
	var fwds []*remotewrite.Forwarder
	var holds []*engine.Hold
	for _, rw := range c.remoteWrites {
		rw.Logger = logger.With("component", "remote_write") // its lines name the destination
		rw.UserAgent = "sonde/" + versionString()
		f, err := remotewrite.Prepare(remoteWriteDir(c.dataDir), rw)
		if err != nil {
			return err
		}
		fwds = append(fwds, f)
		holds = append(holds, f.Hold())
	}
	maxHeld := c.remoteWriteMax
	if maxHeld == 0 {
		maxHeld = -1 // the engine's "no bound"
	}
	db, err := engine.Open(c.dataDir, engine.Options{
		Holds:            holds,
		MaxHeld:          maxHeld,
		Retention:        pols,
		Fsync:            policy,
		FsyncInterval:    c.fsyncInterval,
		SnapshotInterval: c.snapshotInterval,
		SnapshotRecords:  c.snapshotRecords,
		SnapshotQuiet:    quietOption(c.snapshotQuiet),
		SnapshotMemory:   c.snapshotMemory,
		RingSize:         c.ringSize,
		ChunkPoints:      c.chunkPoints,
		RetainEvery:      c.retainEvery,
		MaxSeries:        c.maxSeries,
		MinWindow:        c.minWindow,
		SegmentSize:      c.walSegment,
		EventBuffer:      c.eventBuffer,
		EventRetention:   eventKeep,
		EventMaxBytes:    eventMaxBytes,
		EventMemory:      c.eventMemory,
		MaxHeartbeats:    c.maxHeartbeats,
		MaxClients:       c.logatronClients,
		ClientRing:       c.logatronRing,
		MaxClientKeys:    c.logatronKeys,
		Logger:           logger.With("component", "engine"),
		// A failed WAL write that could not be cut off may come back at
		// the next start: exit without answering its writers, as
		// PostgreSQL does after a failed fsync (docs/semantics.md).
		OnFatal: func(err error) {
			logger.Error("wal write failed and could not be cut off; exiting so that recovery decides", "err", err)
			os.Exit(1)
		},
	})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	var lns listeners
	defer lns.close(logger) // on the error paths; a no-op after the shutdown below
	app := testAppender(db) // db itself, unless built for the end-to-end tests
	for _, f := range fwds {
		if err := f.Start(db); err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		done := make(chan struct{})
		lns.add("remote_write."+f.Name(), f.Name(), func() error { <-done; return nil }, func() error {
			defer close(done)
			return f.Close()
		}, func() any { return f.Stats() })
	}
	tcp, err := ingest.ListenTCP(ingest.TCPOptions{
		Addr: c.tcpAddr, MaxLineLen: c.maxLine, MaxConns: c.maxConns,
		OneShotIdle: c.oneShotIdle, IdleTimeout: c.idleTimeout, AuthTimeout: c.authTimeout, Access: c.access,
		Logger: logger.With("component", "tcp"),
	}, app)
	if err != nil {
		db.Close()
		return err
	}
	lns.add("tcp", tcp.Addr().String(), tcp.Serve, tcp.Close, func() any { return tcp.Stats() })
	if c.graphiteAddr != "" {
		g, err := ingest.ListenTCP(ingest.TCPOptions{
			Protocol: ingest.Graphite, Addr: c.graphiteAddr, MaxLineLen: c.maxLine, MaxConns: c.maxConns,
			IdleTimeout: c.idleTimeout, Access: c.access, Logger: logger.With("component", "graphite"),
		}, app)
		if err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		lns.add("graphite", g.Addr().String(), g.Serve, g.Close, func() any { return g.Stats() })
	}
	if c.statsdAddr != "" {
		pcts, err := parsePercentiles(c.statsdPcts)
		if err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		sd, err := ingest.ListenStatsd(ingest.StatsdOptions{Addr: c.statsdAddr, FlushInterval: c.statsdFlush, Percentiles: pcts,
			MaxNames: c.statsdMaxNames, MaxSetMembers: c.statsdMaxSet, MaxTimerValues: c.statsdMaxTimer,
			IdleFlushes: idleFlushes(c.statsdIdle), MaxQueue: c.statsdMaxQueue, Access: c.access,
			Logger: logger.With("component", "statsd")}, app)
		if err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		lns.add("statsd", sd.Addr().String(), sd.Serve, sd.Close, func() any { return sd.Stats() })
	}
	types, err := loadTypesDB(c.typesDB)
	if err != nil {
		lns.close(logger)
		db.Close()
		return err
	}
	cd := ingest.NewCollectd(ingest.CollectdOptions{Addr: c.collectdAddr, MaxBodySize: c.maxBody, MaxConns: c.maxConns,
		HeaderTimeout: c.headerTimeout, Types: types, Access: c.access, Logger: logger.With("component", "collectd")}, app)
	if c.collectdAddr != "" {
		if err := cd.Listen(); err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		lns.add("collectd", cd.Addr().String(), cd.Serve, cd.Close, func() any { return cd.Stats() })
	}
	if c.logatronAddr != "" {
		lg, err := ingest.ListenLogatron(ingest.LogatronOptions{Addr: c.logatronAddr, MaxLineLen: c.logatronLine, MaxConns: c.maxConns, Access: c.access,
			Logger: logger.With("component", "logatron")}, db)
		if err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		lns.add("logatron", lg.Addr().String(), lg.Serve, lg.Close, func() any { return lg.Stats() })
	}
	for _, o := range c.gloPolls {
		o.Logger = logger.With("component", "glo-poll", "prefix", o.Prefix)
		gp, err := ingest.NewGloPoller(o, app, db)
		if err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		lns.addLoop("glo-poll."+o.Prefix, gp.URL(), gp.Run, func() any { return gp.Stats() })
	}
	instance := newInstanceID()
	for i, u := range c.upstreams {
		var token string
		if len(c.upTokens) > 0 {
			token = c.upTokens[min(i, len(c.upTokens)-1)]
		}
		f, err := ingest.NewFollower(ingest.FollowOptions{URL: u, Name: c.upstreamNames[i], Instance: instance, Token: token, TLS: c.clientTLS,
			Logger: logger.With("component", "upstream", "prefix", c.upstreamNames[i])}, followStore{app, db})
		if err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		lns.add("upstream."+c.upstreamNames[i], f.URL(), f.Serve, f.Close, func() any { return f.Stats() })
	}
	if len(c.channels) > 0 || len(db.PendingAlerts(nil)) > 0 {
		d := alert.NewDeliverer(db, c.channels, logger.With("component", "alert"))
		// It runs from here, with the store: an alert queued before a crash
		// goes out even if a listener fails to start.
		lns.addLoop("alerts", fmt.Sprintf("%d channels", len(c.channels)), d.Run, func() any { return d.Stats() })
	}
	checker := alert.NewChecker(db, c.checks, logger.With("component", "check"))
	if len(c.checks) > 0 {
		lns.addLoop("checks", fmt.Sprintf("%d checks", len(c.checks)), checker.Run, func() any {
			failing := 0
			for _, s := range checker.Status() {
				if s.Failing {
					failing++
				}
			}
			return map[string]int{"checks": len(c.checks), "failing": failing} // each one: /api/v1/checks
		})
	}
	var names []string
	kinds := map[string]string{}
	for _, ch := range c.channels {
		names = append(names, ch.Name)
		kinds[ch.Name] = ch.Kind
	}
	if c.watchtowerAddr != "" {
		var pw string
		if c.watchtowerPWFile != "" {
			b, err := os.ReadFile(c.watchtowerPWFile)
			if err != nil {
				lns.close(logger)
				db.Close()
				return fmt.Errorf("read -watchtower-password-file: %w", err)
			}
			if pw = strings.TrimRight(string(b), "\r\n"); pw == "" {
				lns.close(logger)
				db.Close()
				return fmt.Errorf("-watchtower-password-file %s is empty", c.watchtowerPWFile)
			}
		}
		wt, err := query.ListenWatchtower(query.WatchtowerOptions{Addr: c.watchtowerAddr, Password: pw, Channels: kinds, Checks: checker.Status,
			MaxConns: c.maxConns, MaxBodySize: c.maxBody, HeaderTimeout: c.headerTimeout, QueryTimeout: c.queryTimeout, Access: c.access,
			MaxQueries: c.queryConcurrency, Logger: logger.With("component", "watchtower")}, db)
		if err != nil {
			lns.close(logger)
			db.Close()
			return err
		}
		lns.add("watchtower", wt.Addr().String(), wt.Serve, wt.Close, func() any { return map[string]any{"admission": wt.Stats()} })
	}
	var httpSrv *query.Server                     // set before it serves, and so before Stats runs
	self := &selfSource{db: db, forwarders: fwds} // its http is set with httpSrv
	httpSrv, err = query.Listen(query.Options{
		Routes:      map[string]fasthttp.RequestHandler{"/collectd": cd.Handle, "/metrics": metricsHandler(self, logger.With("component", "metrics"))},
		MaxBodySize: c.maxBody,
		Addr:        c.httpAddr, Heartbeat: c.heartbeat, StreamWriteTimeout: c.sseWriteTimeout, VaporPoints: c.vaporPoints, MaxConns: c.maxConns,
		QueryTimeout: c.queryTimeout, MaxPoints: c.queryMaxPoints, MaxBytes: c.queryMaxBytes, MaxSeries: c.queryMaxSeries,
		MaxQueries: c.queryConcurrency, HeaderTimeout: c.headerTimeout, Instance: instance, Access: c.access, Status: db, Clients: db, Glo: c.glo, AlertChannels: names, Checks: checker.Status,
		Logger: logger.With("component", "http"),
		Stats: func() map[string][]byte {
			out := lns.stats()
			out["collectd"], _ = json.Marshal(cd.Stats()) // both of its routes
			out["engine"], _ = json.Marshal(db.Stats())
			out["go"], _ = json.Marshal(goStats())
			out["http"], _ = json.Marshal(map[string]any{"admission": httpSrv.Admission()})
			out["panics"], _ = json.Marshal(boundary.Panics())
			out["allow"], _ = json.Marshal(map[string]any{"sources": c.allow.String(), "refused": c.allow.Refused()})
			out["auth"], _ = json.Marshal(c.access.Auth.Stats())
			return out
		},
	}, db)
	if err != nil {
		lns.close(logger)
		db.Close()
		return err
	}
	if c.gloAddr != "" {
		gs, err := httpSrv.ListenGlo(query.GloListenOptions{Addr: c.gloAddr, MaxConns: c.maxConns, HeaderTimeout: c.headerTimeout, Access: c.access,
			Logger: logger.With("component", "glo")})
		if err != nil {
			httpSrv.Shutdown(context.Background())
			lns.close(logger)
			db.Close()
			return err
		}
		lns.add("glo", gs.Addr().String(), gs.Serve, gs.Close, func() any { return map[string]any{"admission": gs.Stats()} })
	}
	if c.pprofAddr != "" {
		if err := servePprof(c.pprofAddr, c.access, logger); err != nil {
			httpSrv.Shutdown(context.Background())
			lns.close(logger)
			db.Close()
			return err
		}
	}
	errc := make(chan error, len(lns.l)+1)
	for _, l := range lns.l {
		go func() { errc <- l.serve() }()
	}
	self.http = httpSrv
	go func() { errc <- httpSrv.Serve() }()
	rec := startSelf(self, app, c.selfInterval, logger.With("component", "self"))
	attrs := []any{"http", httpSrv.Addr().String(), "data", c.dataDir, "fsync", policy.String()}
	for _, l := range lns.l {
		attrs = append(attrs, l.name, l.addr)
	}
	// Signals are caught before "listening" is said: a supervisor (or a
	// test) that stops Sonde as soon as it listens gets a clean stop.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	logger.Info("listening", attrs...)
	var runErr error
wait:
	for {
		select {
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				reloadCerts(c.access, logger)
				reloadTokens(c.access, logger)
				continue
			}
			logger.Info("shutting down", "signal", sig.String())
		case runErr = <-errc:
			logger.Error("listener failed", "err", runErr)
		}
		break wait
	}
	signal.Stop(sigc)
	rec.stop()
	// Reverse order: stop taking writes (finishing those in flight), stop
	// serving reads, then the final snapshot.
	lns.close(logger)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := httpSrv.Shutdown(ctx); err != nil {
		logger.Error("shut down http", "err", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	logger.Info("stopped cleanly")
	return runErr
}

// listeners are the ingest servers, started after the store opens and
// closed before it closes.
type listeners struct {
	l      []listener // fixed once serving starts; stats reads it from HTTP handlers
	closed bool       // only the main goroutine touches it
}

type listener struct {
	name, addr string
	serve      func() error
	close      func() error
	stats      func() any
}

func (ls *listeners) add(name, addr string, serve, close func() error, stats func() any) {
	ls.l = append(ls.l, listener{name: name, addr: addr, serve: serve, close: close, stats: stats})
}

// addLoop starts run now, in a goroutine of its own, and adds it as a
// listener: its serve waits for it, its close ends run's context and
// waits for run to return.
func (ls *listeners) addLoop(name, addr string, run func(ctx context.Context), stats func() any) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx)
	}()
	wait := func() error {
		<-done
		return nil
	}
	ls.add(name, addr, wait, func() error {
		cancel()
		return wait()
	}, stats)
}

// close closes every listener once, each finishing the writes in flight.
func (ls *listeners) close(logger *slog.Logger) {
	if ls.closed {
		return
	}
	ls.closed = true
	for _, l := range ls.l {
		if err := l.close(); err != nil {
			logger.Error("close listener", "listener", l.name, "err", err)
		}
	}
}

func (ls *listeners) stats() map[string][]byte {
	out := make(map[string][]byte, len(ls.l)+2)
	for _, l := range ls.l {
		out[l.name], _ = json.Marshal(l.stats())
	}
	return out
}

// followStore is what a follower writes through (the ingest path every
// listener takes) and reads from.
type followStore struct {
	ingest.Appender
	db *engine.DB
}

func (s followStore) Get(key string) (sample.Series, bool)       { return s.db.Get(key) }
func (s followStore) Keys(from string, fn func(key string) bool) { s.db.Keys(from, fn) }

// newInstanceID names this process in its event streams' headers, so
// that a follower pointed at its own server finds out.
func newInstanceID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// debianTypesDB is where Debian's collectd-core puts collectd's types.db.
const debianTypesDB = "/usr/share/collectd/types.db"

// loadTypesDB reads the types.db at path; with no path, collectd's own
// when it is installed, else the built-in subset.
func loadTypesDB(path string) (collectd.TypesDB, error) {
	if path == "" {
		if _, err := os.Stat(debianTypesDB); err != nil {
			return collectd.Builtin(), nil
		}
		path = debianTypesDB
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read -collectd-typesdb: %w", err)
	}
	db, err := collectd.ParseTypesDB(b)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return db, nil
}

// parsePercentiles reads -statsd-percentiles: numbers in (0, 100].
func parsePercentiles(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		p, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(p > 0 && p <= 100) {
			return nil, fmt.Errorf("parse -statsd-percentiles: %q is not a percentile in (0, 100]", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// idleFlushes maps -statsd-idle-flushes to StatsdOptions.IdleFlushes,
// where 0 is the default and a negative number means none.
func idleFlushes(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// quietOption maps -snapshot-quiet to engine.Options.SnapshotQuiet, where
// zero means the default: the flag's 0 (or less) turns quiet snapshots off.
func quietOption(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
