package boundary

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"time"
)

// maxKinds caps the kinds a LogLimiter follows at once; messages of
// further kinds are logged unlimited. Kinds are meant to be a fixed set
// (format strings, boundary names), so the cap is never reached.
const maxKinds = 1024

// LogLimiter logs the first message of each kind, then counts the
// messages of that kind for an interval and logs their number once when
// it ends ("suppressed similar messages"). The next message after that is
// logged in full and starts a new interval. A flood of one kind of message
// thus writes two lines per interval. Its methods may be called
// concurrently.
type LogLimiter struct {
	interval time.Duration

	mu      sync.Mutex         // guards windows.
	windows map[string]*window // the kinds within their interval
}

type window struct {
	log        *slog.Logger
	level      slog.Level
	suppressed int64
}

// NewLogLimiter returns a limiter that lets one message of a kind through
// per interval.
func NewLogLimiter(interval time.Duration) *LogLimiter {
	return &LogLimiter{interval: interval, windows: make(map[string]*window)}
}

// Log logs msg with args on log at level, unless a message of the same
// kind was logged within the interval: then it is only counted. The count
// is logged on the logger and at the level of the message that opened the
// interval.
func (l *LogLimiter) Log(log *slog.Logger, level slog.Level, kind, msg string, args ...any) {
	if !log.Enabled(context.Background(), level) {
		return
	}
	l.mu.Lock()
	if w := l.windows[kind]; w != nil {
		w.suppressed++
		l.mu.Unlock()
		return
	}
	if len(l.windows) < maxKinds {
		l.windows[kind] = &window{log: log, level: level}
		time.AfterFunc(l.interval, func() { l.end(kind) })
	}
	l.mu.Unlock()
	log.Log(context.Background(), level, msg, args...)
}

// end closes the interval of kind, logging what it suppressed.
func (l *LogLimiter) end(kind string) {
	l.mu.Lock()
	w := l.windows[kind]
	delete(l.windows, kind)
	l.mu.Unlock()
	if w != nil && w.suppressed > 0 {
		w.log.Log(context.Background(), w.level, fmt.Sprintf("suppressed %d similar messages", w.suppressed),
			"kind", kind, "suppressed", w.suppressed, "interval", l.interval.String())
	}
}

// Printer adapts a LogLimiter to the Printf logger fasthttp takes: every
// message is a warning, and its kind is its format string.
type Printer struct {
	Limiter *LogLimiter
	Logger  *slog.Logger
}

// Printf logs one message. The request bytes an error quotes are left
// out: fasthttp's errors quote a bad header value or request URI whole
// (SecureErrorLogMessage leaves out only the whole head), and either may
// hold a token. Arguments that are not errors (the addresses) stay.
func (p Printer) Printf(format string, args ...any) {
	if !p.Logger.Enabled(context.Background(), slog.LevelWarn) {
		return
	}
	args = slices.Clone(args) // the caller's
	for i, a := range args {
		if err, ok := a.(error); ok {
			args[i] = quoted.ReplaceAllLiteralString(err.Error(), `"…"`)
		}
	}
	p.Limiter.Log(p.Logger, slog.LevelWarn, format, fmt.Sprintf(format, args...))
}

// quoted matches a Go-quoted string (%q).
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
