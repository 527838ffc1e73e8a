package boundary

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scope is what a token may do: read (GET and HEAD, event streams) and
// write (every other method, the command protocol).
type Scope uint8

// The scopes of a token.
const (
	Read Scope = 1 << iota
	Write
)

func (s Scope) String() string {
	switch s {
	case Read:
		return "read"
	case Write:
		return "write"
	case Read | Write:
		return "read,write"
	}
	return "none"
}

// ParseScope reads "read", "write" or "read,write".
func ParseScope(s string) (Scope, error) {
	switch s {
	case "read":
		return Read, nil
	case "write":
		return Write, nil
	case "read,write", "write,read":
		return Read | Write, nil
	}
	return 0, fmt.Errorf("scope %q: want read, write or read,write", s)
}

// Token limits: a literal token in the auth file is 16 to 256 printable
// ASCII bytes; a presented one longer than MaxTokenLen is wrong unread.
const (
	MinTokenLen = 16
	MaxTokenLen = 256
)

// Failed attempts (a wrong token) are limited per source address (an
// IPv6 source by its /64, which one host may hold whole): a source has
// FailBurst of them, and one more each FailEvery; past them every attempt
// that carries a token is refused (429) without being checked until one
// has come back. At most maxFailSources sources are followed: when a new
// one fails past that, those whose allowance is whole again are let go,
// or else one at random. Memory stays bounded and no source is refused
// for others' failures; a source that many others push out gets its
// attempts back sooner, which 32 random bytes of token make harmless.
const (
	FailBurst      = 10
	FailEvery      = time.Second
	maxFailSources = 16384
)

// tokenEntry is one line of the auth file.
type tokenEntry struct {
	name  string
	scope Scope
}

// ParseTokens reads an auth file: one token a line, "NAME SCOPES TOKEN",
// blank lines and lines starting with # skipped. NAME is 1 to 64 of
// [A-Za-z0-9_.-], SCOPES read, write or read,write, TOKEN either the token
// itself (16 to 256 printable ASCII bytes) or sha256:HEX, its SHA-256.
// Errors name the line and the field, never a field's text: a line with
// its fields out of order would show its token. The map is keyed by the
// token's SHA-256.
func ParseTokens(text string) (map[[32]byte]tokenEntry, error) {
	out := map[[32]byte]tokenEntry{}
	names := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want NAME SCOPES TOKEN, got %d fields", n, len(f))
		}
		if !validTokenName(f[0]) {
			return nil, fmt.Errorf("line %d: the name (first field): want 1 to 64 of A-Z a-z 0-9 _ . -", n)
		}
		if o, dup := names[f[0]]; dup {
			return nil, fmt.Errorf("line %d: the name is line %d's too", n, o)
		}
		scope, err := ParseScope(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: the scopes (second field): want read, write or read,write", n)
		}
		var sum [32]byte
		if h, ok := strings.CutPrefix(f[2], "sha256:"); ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("line %d: the token (third field): sha256: wants 64 hex digits", n)
			}
			copy(sum[:], b)
		} else {
			if len(f[2]) < MinTokenLen || len(f[2]) > MaxTokenLen || !printable(f[2]) {
				return nil, fmt.Errorf("line %d: the token (third field) is %d bytes: want %d to %d printable ASCII ones (`sonde token` makes one)",
					n, len(f[2]), MinTokenLen, MaxTokenLen)
			}
			sum = sha256.Sum256([]byte(f[2]))
		}
		if o, dup := out[sum]; dup {
			return nil, fmt.Errorf("line %d: the token is %s's too", n, o.name)
		}
		names[f[0]] = n
		out[sum] = tokenEntry{name: f[0], scope: scope}
	}
	return out, nil
}

// printable reports whether s is printable ASCII without space.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func validTokenName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// NewToken returns a random token (32 bytes, base64url) and its auth file
// form sha256:HEX.
func NewToken() (token, hashed string) {
	var b [32]byte
	rand.Read(b[:])
	token = base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(token))
	return token, "sha256:" + hex.EncodeToString(sum[:])
}

// Tokens are the tokens of an auth file (-auth-file), read again by
// Reload (SIGHUP). They count what they refused and limit failed
// attempts per source.
type Tokens struct {
	path string
	cur  atomic.Pointer[map[[32]byte]tokenEntry]
	// changed is closed by the next reload (and replaced): a Session
	// checks its token again when it is.
	changed atomic.Pointer[chan struct{}]
	log     *slog.Logger
	logs    *LogLimiter

	ok, missing, wrong, scope, limited, revoked atomic.Int64

	mu      sync.Mutex // guards sources and swept.
	sources map[netip.Addr]*allowance
	swept   time.Time // when full sources were last let go
	now     func() time.Time
}

// allowance is a source's failed attempts left (a token bucket).
type allowance struct {
	left float64
	at   time.Time
}

// LoadTokens reads the auth file at path.
func LoadTokens(path string, logger *slog.Logger) (*Tokens, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Tokens{path: path, log: logger, logs: NewLogLimiter(time.Minute), sources: map[netip.Addr]*allowance{}, now: time.Now}
	ch := make(chan struct{})
	t.changed.Store(&ch)
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the file again; on an error the tokens in use stay.
func (t *Tokens) Reload() error {
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("read -auth-file: %w", err)
	}
	m, err := ParseTokens(string(b))
	if err != nil {
		return fmt.Errorf("parse -auth-file %s: %w", t.path, err)
	}
	if len(m) == 0 {
		return fmt.Errorf("parse -auth-file %s: no token in it", t.path)
	}
	t.cur.Store(&m)
	ch := make(chan struct{})
	close(*t.changed.Swap(&ch))
	return nil
}

// Valid reports whether token is in use with the scope need, without
// counting or limiting anything.
func (t *Tokens) Valid(token []byte, need Scope) bool {
	e, ok := (*t.cur.Load())[sha256.Sum256(token)]
	return ok && e.scope&need == need
}

// Session is a token checked once that a lasting session holds (a
// command connection, an event stream): after each reload it checks the
// token again, and ends when the reload took it or the scope it needs.
// A nil Session (authentication off) is never revoked.
type Session struct {
	tokens   *Tokens
	listener string
	token    []byte
	need     Scope
	changed  <-chan struct{} // closed by the next reload
}

// closed is a channel closed for good.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Session begins a session for token, which a Check on listener for need
// has let in; token is copied. A reload may have come since that check:
// the reload channel is taken first, then the token checked again, and a
// session already revoked gets a closed channel, so its first Revoked
// ends it.
func (t *Tokens) Session(listener string, token []byte, need Scope) *Session {
	s := &Session{tokens: t, listener: listener, token: bytes.Clone(token), need: need, changed: *t.changed.Load()}
	if !t.Valid(s.token, need) {
		s.changed = closed
	}
	return s
}

// Reloaded returns a channel the next reload closes (nil, never ready,
// for a nil Session): a session waiting on something else selects on it
// too, then calls Revoked.
func (s *Session) Reloaded() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.changed
}

// Revoked reports whether a reload since the last call took the
// session's token or its scope; the session must end (counted, and
// logged at most once a minute). Without a reload it is a channel poll.
func (s *Session) Revoked() bool {
	if s == nil {
		return false
	}
	select {
	case <-s.changed:
	default:
		return false
	}
	s.changed = *s.tokens.changed.Load() // before the check: no reload is missed
	if s.tokens.Valid(s.token, s.need) {
		return false
	}
	s.tokens.revoked.Add(1)
	s.tokens.logs.Log(s.tokens.log, slog.LevelInfo, "auth-revoked", "a session's token was revoked by a reload: it ends",
		"listener", s.listener)
	return true
}

// Len returns how many tokens are in use.
func (t *Tokens) Len() int { return len(*t.cur.Load()) }

// AuthStats count the attempts to authenticate.
type AuthStats struct {
	Tokens  int   `json:"tokens"`
	OK      int64 `json:"ok"`
	Missing int64 `json:"missing"` // no token where one is needed
	Wrong   int64 `json:"wrong"`   // a token not in the file: a failed attempt
	Scope   int64 `json:"scope"`   // a good token without the scope asked for
	Limited int64 `json:"limited"` // refused unchecked: the source's failed attempts are spent
	Revoked int64 `json:"revoked"` // sessions (command connections, event streams) ended by a reload that took their token
}

// Stats returns the counts so far.
func (t *Tokens) Stats() AuthStats {
	if t == nil {
		return AuthStats{}
	}
	return AuthStats{Tokens: t.Len(), OK: t.ok.Load(), Missing: t.missing.Load(), Wrong: t.wrong.Load(),
		Scope: t.scope.Load(), Limited: t.limited.Load(), Revoked: t.revoked.Load()}
}

// Verdict is the outcome of an attempt: OK, or the status and message
// that refuse it (401: no or a wrong token, 403: a token without the
// scope, 429: too many failed attempts from the source).
type Verdict struct {
	OK     bool
	Status int
	Msg    string
	Retry  time.Duration // with 429: when the source may try again
}

// Check checks token, from source, for need. An empty token is missing.
func (t *Tokens) Check(listener string, source netip.Addr, token []byte, need Scope) Verdict {
	if len(token) == 0 {
		t.missing.Add(1)
		return Verdict{Status: 401, Msg: "authentication required: send a token (Authorization: Bearer TOKEN)"}
	}
	source = sourceKey(source)
	if wait := t.spent(source); wait > 0 {
		t.limited.Add(1)
		t.logs.Log(t.log, slog.LevelWarn, "auth-limited", "too many failed attempts: refused unchecked",
			"listener", listener, "remote", source.String())
		return Verdict{Status: 429, Msg: "too many failed attempts from this address; try again later", Retry: wait}
	}
	var e tokenEntry
	ok := false
	if len(token) <= MaxTokenLen {
		e, ok = (*t.cur.Load())[sha256.Sum256(token)]
	}
	if !ok {
		t.wrong.Add(1)
		t.fail(source)
		t.logs.Log(t.log, slog.LevelWarn, "auth-wrong", "a wrong token was refused",
			"listener", listener, "remote", source.String())
		return Verdict{Status: 401, Msg: "the token is not valid"}
	}
	if e.scope&need != need {
		t.scope.Add(1)
		return Verdict{Status: 403, Msg: fmt.Sprintf("token %s may not %s", e.name, need)}
	}
	t.ok.Add(1)
	return Verdict{OK: true}
}

// sourceKey is the address failed attempts are counted by: an IPv4
// address, or an IPv6 address's /64.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// spent returns how long until source has a failed attempt left; 0 if
// it has one.
func (t *Tokens) spent(source netip.Addr) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.sources[source]
	if a == nil {
		return 0
	}
	t.refill(a, t.now())
	if a.left >= 1 {
		return 0
	}
	return time.Duration((1 - a.left) * float64(FailEvery))
}

// fail takes one failed attempt from source's allowance.
func (t *Tokens) fail(source netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	a := t.sources[source]
	if a == nil {
		if len(t.sources) >= maxFailSources {
			t.makeRoom(now)
		}
		a = &allowance{left: FailBurst, at: now}
		t.sources[source] = a
	}
	t.refill(a, now)
	a.left = max(a.left-1, 0)
}

func (t *Tokens) refill(a *allowance, now time.Time) {
	a.left = min(a.left+float64(now.Sub(a.at))/float64(FailEvery), FailBurst)
	a.at = now
}

// makeRoom lets go of the sources whose allowance is whole again (at most
// once a FailEvery: a walk of the whole map), else of one at random.
func (t *Tokens) makeRoom(now time.Time) {
	if now.Sub(t.swept) >= FailEvery {
		t.swept = now
		for k, a := range t.sources {
			if t.refill(a, now); a.left >= FailBurst {
				delete(t.sources, k)
			}
		}
	}
	for k := range t.sources {
		if len(t.sources) < maxFailSources {
			break
		}
		delete(t.sources, k) // map order: one at random
	}
}

// TokenFromHeader reads the token of an Authorization header: "Bearer
// TOKEN", or "Basic" with the token as the password (any user name), for
// clients that only speak basic authentication (collectd's write_http
// User and Password, curl -u). Nil when there is none.
func TokenFromHeader(h []byte) []byte {
	scheme, rest, ok := bytes.Cut(bytes.TrimSpace(h), []byte(" "))
	if !ok {
		return nil
	}
	rest = bytes.TrimSpace(rest)
	switch strings.ToLower(string(scheme)) {
	case "bearer":
		return rest
	case "basic":
		if len(rest) > 4*MaxTokenLen {
			return rest // wrong, unread
		}
		dec, err := base64.StdEncoding.DecodeString(string(rest))
		if err != nil {
			return rest
		}
		_, pw, ok := bytes.Cut(dec, []byte(":"))
		if !ok {
			return dec
		}
		return pw
	}
	return nil
}

// CookieName is the cookie the page's login sets.
const CookieName = "sonde_token"

// AuthFor reports whether the listener named name asks for a token.
func (a *Access) AuthFor(name string) bool { return a != nil && a.Auth != nil && a.AuthOn[name] }

// Challenge is the WWW-Authenticate header of a 401.
const Challenge = `Bearer realm="sonde"`

// RetryAfter is the Retry-After value of a 429: whole seconds, at least 1.
func (v Verdict) RetryAfter() string {
	return strconv.Itoa(max(1, int((v.Retry+time.Second-1)/time.Second)))
}

// Header is the response header an HTTP refusal carries: WWW-Authenticate
// with a 401, Retry-After with a 429; name is "" for none.
func (v Verdict) Header() (name, value string) {
	switch v.Status {
	case 401:
		return "WWW-Authenticate", Challenge
	case 429:
		return "Retry-After", v.RetryAfter()
	}
	return "", ""
}

// Authorize checks a request on the listener named name; it is OK when
// that listener asks for no token. A read (GET, HEAD) needs the read
// scope, anything else write. The token comes from the Authorization
// header; a read may also carry it in the page's cookie or a token=
// parameter (a browser's EventSource and JSONP send no header), a write
// never: no other site can make a browser write with its cookie.
func (a *Access) Authorize(name string, source netip.Addr, read bool, header, cookie, param []byte) Verdict {
	if !a.AuthFor(name) {
		return Verdict{OK: true}
	}
	need := Write
	if read {
		need = Read
	}
	return a.Auth.Check(name, source, RequestToken(read, header, cookie, param), need)
}

// RequestToken is the token a request carries, where Authorize looks for
// it: the Authorization header; for a read, else the token= parameter,
// else the cookie. It aliases its arguments.
func RequestToken(read bool, header, cookie, param []byte) []byte {
	token := TokenFromHeader(header)
	if read && len(token) == 0 {
		token = param
	}
	if read && len(token) == 0 {
		token = cookie
	}
	return token
}
