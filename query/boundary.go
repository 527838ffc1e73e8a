package query

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/boundary"
)

// readBufferSize is fasthttp's read buffer per connection, which is also
// the longest request head it takes (431 beyond).
const readBufferSize = 4096

// bodyTimeout is how long a request body may take to arrive once its head
// is in.
const bodyTimeout = 30 * time.Second

// readTimeouts is fasthttp's HeaderReceived: the read deadline, which was
// ReadTimeout (the head timeout) from the head's first byte, becomes
// bodyTimeout for the body.
//
// fasthttp serves each connection, kept alive or not, on one of its
// Concurrency workers. The gate makes sure a connection reaches a worker
// with its first head in hand; a later request on a kept-alive connection
// has the head timeout from its first byte, where fasthttp's ReadTimeout
// would give the whole request, head and body, 30 s. A keep-alive
// connection that sends nothing holds its worker until IdleTimeout.
func readTimeouts(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	return fasthttp.RequestConfig{ReadTimeout: bodyTimeout}
}

// serve is the server's handler: every request crosses this boundary.
func (s *Server) serve(ctx *fasthttp.RequestCtx) {
	defer boundary.Recover("http", s.opts.Logger, func() { internalError(ctx) })
	boundary.Inject("http", ctx.RequestURI())
	boundary.Inject("http", ctx.PostBody())
	s.handle(ctx)
}

// internalError replaces whatever response a panicking handler left with
// 500 {"error":"internal error"}. fasthttp writes nothing before the
// handler returns, so the response has never started; a stream the
// handler meant to take over (Hijack) is dropped.
func internalError(ctx *fasthttp.RequestCtx) {
	ctx.Hijack(nil)
	ctx.HijackSetNoResponse(false)
	ctx.Response.Reset()
	writeError(ctx, fasthttp.StatusInternalServerError, "internal error")
}

// readErrorReply is the status and message for a request fasthttp could
// not read: 413 over maxBody, 431 for a head over the read buffer, 408 for
// a request that did not arrive in time, else 400.
func readErrorReply(err error, maxBody int) (int, string) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", maxBody)
	case errors.As(err, &small):
		return fasthttp.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("request head is larger than %d bytes", readBufferSize)
	case errors.As(err, &ne) && ne.Timeout():
		return fasthttp.StatusRequestTimeout, "the request did not arrive in time"
	}
	return fasthttp.StatusBadRequest, "read the request: " + err.Error()
}
