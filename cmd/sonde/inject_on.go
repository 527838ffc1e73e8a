//go:build sondetest

package main

import (
	"context"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest"
)

// testAppender wraps app so that a write whose key holds boundary.Marker
// (aimed at "append") panics in the goroutine that appends it: the
// end-to-end tests reach statsd's writers and flusher this way, which
// take no client input of their own.
func testAppender(app ingest.Appender) ingest.Appender { return injectingAppender{app} }

type injectingAppender struct{ ingest.Appender }

func (a injectingAppender) Append(ctx context.Context, ops []sample.Op, errs []error) error {
	inject(ops)
	return a.Appender.Append(ctx, ops, errs)
}

func (a injectingAppender) AppendUnacked(ctx context.Context, ops []sample.Op, errs []error) error {
	inject(ops)
	return a.Appender.AppendUnacked(ctx, ops, errs)
}

func inject(ops []sample.Op) {
	for _, op := range ops {
		boundary.Inject("append", []byte(op.Key))
	}
}
