package boundary

import (
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"sync"
	"time"
)

// PanicLogInterval is how long, after a boundary logged a panic with its
// stack, further panics there are only counted; their number is logged
// when it ends.
const PanicLogInterval = time.Minute

var (
	panicsMu   sync.Mutex           // guards panicCount.
	panicCount = map[string]int64{} // by boundary, and "total"
	panicLog   = NewLogLimiter(PanicLogInterval)
)

// Recover, deferred at the top of a goroutine or handler that serves a
// client, stops a panic there: it logs the panic value and the stack at
// ERROR on log (one stack per boundary per PanicLogInterval, the rest
// counted), counts it under where, and calls then, which answers the
// client. Recover must be the deferred function itself:
//
//	defer boundary.Recover("tcp", log, func() { c.Write(internalError) })
//
// Locks the panicking code held are not released by Recover: code that
// may panic under a lock unlocks it with defer. A panic in then is logged
// and dropped.
func Recover(where string, log *slog.Logger, then func()) {
	v := recover()
	if v == nil {
		return
	}
	stack := debug.Stack()
	panicsMu.Lock()
	panicCount[where]++
	panicCount["total"]++
	panicsMu.Unlock()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	panicLog.Log(log, slog.LevelError, where, "panic recovered", "where", where, "panic", fmt.Sprint(v), "stack", string(stack))
	if then != nil {
		answer(where, log, then)
	}
}

// answer runs a recovery callback; it must not take the process down
// either.
func answer(where string, log *slog.Logger, then func()) {
	defer func() {
		if v := recover(); v != nil {
			panicLog.Log(log, slog.LevelError, where+" answer", "panic while answering a recovered panic", "where", where, "panic", fmt.Sprint(v))
		}
	}()
	then()
}

// Panics returns how many panics each boundary recovered since the
// process started, and their total under "total".
func Panics() map[string]int64 {
	panicsMu.Lock()
	defer panicsMu.Unlock()
	out := maps.Clone(panicCount)
	out["total"] += 0 // present even before the first panic
	return out
}
