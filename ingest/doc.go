// Package ingest runs the listeners through which metrics arrive and hands
// what they parse to an [Appender] (the engine). Parsing lives in pure
// sub-packages (ingest/lineproto); this package owns sockets, goroutines,
// limits and replies.
//
// # The mesures command protocol (TCP, default 127.0.0.1:8124)
//
// Each connection reads lines, parses every complete line it has buffered
// into one batch, appends the batch once (one group commit), then answers
// each line in order: "+OK\r\n", "+PONG\r\n" or "-ERR <reason>\r\n". Many
// commands may be in flight on one connection (pipelining); a bad line is
// answered and counted and never closes the connection. A line holds at
// most MaxLineLen bytes, its LF or CRLF not counted; a longer one is
// answered "-ERR line is longer than N bytes", the last line of the input
// without its newline too. Lines refused for their key (not UTF-8, among
// others) are counted apart as well (bad_keys).
//
// # Closing one-shot connections
//
// Debian's nc does not half-close its socket at the end of its input, so
// `echo "SET answer 42" | nc localhost 8124` only returns when the server
// closes. A connection whose first bytes arrive within OneShotWindow of
// accept is taken to be scripted and is closed once it has been idle for
// OneShotIdle after its last answer. A client that keeps sending is never
// idle and never slowed; one typed by hand (first bytes later) gets
// IdleTimeout. A program that connects, writes at once and then pauses
// must reconnect when the server closes, or the operator sets OneShotIdle
// to 0.
package ingest

import (
	"context"
	"log/slog"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Appender takes batches of writes. It is implemented by *engine.DB.
//
// Append waits until the batch is acknowledged under the store's fsync
// policy; errs[i] receives the outcome of ops[i]. The returned error
// concerns the whole batch. AppendUnacked is the same for writes whose
// sender gets no reply that depends on them (Graphite plaintext, statsd):
// it returns once the batch is applied and written to the OS, and leaves
// the fsync to the next acknowledged write or the store's fsync interval.
type Appender interface {
	Append(ctx context.Context, ops []sample.Op, errs []error) error
	AppendUnacked(ctx context.Context, ops []sample.Op, errs []error) error
}

// appendBatch appends ops, reusing errs for their outcomes; acked says a
// reply to the sender waits on them (Append, not AppendUnacked). An error
// for the whole batch (the store is closed or failed) is set for every op
// and also returned.
func appendBatch(ctx context.Context, app Appender, ops []sample.Op, errs []error, acked bool) ([]error, error) {
	if cap(errs) < len(ops) {
		errs = make([]error, len(ops))
	}
	errs = errs[:len(ops)]
	var err error
	if acked {
		err = app.Append(ctx, ops, errs)
	} else {
		err = app.AppendUnacked(ctx, ops, errs)
	}
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
	}
	return errs, err
}

// logRefused logs a write the store refused on a listener that cannot
// answer it: the first (failed == 1) as a warning, the rest at debug
// level, since the count is in the listener's stats.
func logRefused(log *slog.Logger, failed int64, args ...any) {
	if failed == 1 {
		log.Warn("write refused; later ones are counted (failed) and logged at debug level", args...)
		return
	}
	log.Debug("write refused", args...)
}
