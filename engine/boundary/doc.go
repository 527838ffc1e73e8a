// Package boundary holds what every listener shares at its boundary with
// clients: recovery from panics, a test hook that injects them, an
// admission gate for HTTP listeners, a limiter for repeated log lines, and
// access: a source allowlist, TLS certificates and tokens (docs/auth.md).
// It uses the standard library only, so that ingest and query may both
// import it.
//
// # Panics
//
// Every goroutine that serves a client (an HTTP request, a TCP
// connection, a UDP reader, an SSE stream) defers [Recover] with the name
// of its boundary. A panic there is logged at ERROR with its stack,
// counted by boundary ([Panics], shown in /api/v1/stats), and answered by
// the caller's callback: 500 {"error":"internal error"} over HTTP, "-ERR
// internal error" on a command connection, which then closes. The process
// keeps serving everyone else.
//
//	func (s *Server) handle(ctx *fasthttp.RequestCtx) {
//		defer boundary.Recover("http", s.log, func() { internalError(ctx) })
//		boundary.Inject("http", ctx.RequestURI())
//		...
//	}
//
// # Injected panics
//
// [Inject] is compiled in only with the build tag sondetest (the
// end-to-end tests build the binary with it): it panics when the client's
// input holds [Marker]. Without the tag it is an empty function.
//
// # Admission
//
// [Gate] wraps an HTTP listener and hands a connection to the server only
// once its first request head has arrived, so that connections still
// sending theirs, however many, never hold the server's workers.
//
// # Repeated log lines
//
// [LogLimiter] logs the first message of a kind and counts the repeats of
// the following interval, logging their number once when it ends: a
// client that makes the server log a line per connection cannot fill the
// log.
package boundary
