package query

import (
	"encoding/base64"
	"errors"
	"html"
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/boundary"
)

// Authentication on the HTTP listeners (-auth-file, docs/auth.md): every
// route but /healthz, /login and /logout asks for a token when the
// listener is in -auth-listeners.

// sourceOf is the client's address.
func sourceOf(ctx *fasthttp.RequestCtx) netip.Addr {
	ip, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return ip.Unmap()
}

// isRead reports whether a request only reads: GET and HEAD, and the
// Graphite API's POSTs (Grafana posts its /render forms).
func isRead(ctx *fasthttp.RequestCtx, path string) bool {
	return ctx.IsGet() || ctx.IsHead() || path == "/render" || path == "/metrics/find" || path == "/tags/findSeries"
}

// authorize checks ctx's token on the listener named name for a read or
// a write (see boundary.Access.Authorize); false: refused, with fail
// having answered. A 401 carries WWW-Authenticate, a 429 Retry-After.
func authorize(ctx *fasthttp.RequestCtx, acc *boundary.Access, name string, read bool, fail func(ctx *fasthttp.RequestCtx, status int, msg string)) bool {
	if !acc.AuthFor(name) {
		return true
	}
	// The cookie holds the token in base64url: a token may hold bytes a
	// cookie value may not (; , " space). streamGrant reads it the same way.
	cookie, _ := base64.RawURLEncoding.AppendDecode(nil, ctx.Request.Header.Cookie(boundary.CookieName))
	v := acc.Authorize(name, sourceOf(ctx), read, ctx.Request.Header.Peek("Authorization"), cookie, ctx.QueryArgs().Peek("token"))
	if v.OK {
		return true
	}
	if name, value := v.Header(); name != "" {
		ctx.Response.Header.Set(name, value)
	}
	ctx.SetConnectionClose() // a refused client holds no worker until the idle timeout
	fail(ctx, v.Status, v.Msg)
	return false
}

// grant is what let an event stream in: the token it was authorized
// with, checked again after each reload of the auth file (SIGHUP), so a
// revoked token ends the streams it opened. A nil grant (authentication
// off) is never revoked.
type grant struct {
	auth    *boundary.Tokens
	token   []byte
	changed <-chan struct{} // closed by the next reload
}

// errRevoked ends a stream whose token a reload took.
var errRevoked = errors.New("the token was revoked (the auth file was read again)")

// streamGrant is the grant of a read on ctx (nil when the listener asks
// for no token); the token is copied: the stream outlives ctx. A reload
// may have come between the request's check and this: the token is
// checked again after the channel is taken, and a grant already revoked
// gets a closed channel, so the stream's first check ends it.
func streamGrant(ctx *fasthttp.RequestCtx, acc *boundary.Access, name string) *grant {
	if !acc.AuthFor(name) {
		return nil
	}
	cookie, _ := base64.RawURLEncoding.AppendDecode(nil, ctx.Request.Header.Cookie(boundary.CookieName))
	token := boundary.RequestToken(true, ctx.Request.Header.Peek("Authorization"), cookie, ctx.QueryArgs().Peek("token"))
	g := &grant{auth: acc.Auth, token: append([]byte(nil), token...), changed: acc.Auth.Changed()}
	if !acc.Auth.Valid(g.token, boundary.Read) {
		g.changed = closed
	}
	return g
}

// closed is a channel closed for good.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// reloaded is closed by the next reload; nil (never ready) without a
// grant. A stream selects on it while it waits.
func (g *grant) reloaded() <-chan struct{} {
	if g == nil {
		return nil
	}
	return g.changed
}

// check returns errRevoked when a reload since the last check took the
// token (or its read scope); it is a channel poll when there was none.
func (g *grant) check() error {
	if g == nil {
		return nil
	}
	select {
	case <-g.changed:
	default:
		return nil
	}
	g.changed = g.auth.Changed() // before the check: no reload is missed
	if g.auth.Revoked("http", g.token, boundary.Read) {
		return errRevoked
	}
	return nil
}

// loginPage is the form the page's login shows; {{msg}} is a message.
const loginPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Sonde: sign in</title></head>
<body style="font-family: sans-serif; max-width: 28em; margin: 4em auto">
<h1>Sonde</h1>
<p>{{msg}}</p>
<form method="post" action="/login">
<label>Token <input type="password" name="token" autofocus autocomplete="current-password" style="width: 100%"></label>
<p><button type="submit">Sign in</button></p>
</form>
</body></html>
`

// login serves /login: GET shows the form, POST checks the token (read
// scope) and sets it as an HttpOnly, SameSite=Strict cookie, then sends
// the browser to the page. /logout clears the cookie.
func (s *Server) login(ctx *fasthttp.RequestCtx, path string) {
	acc := s.opts.Access
	if !acc.AuthFor("http") {
		writeError(ctx, fasthttp.StatusNotFound, "no such endpoint (authentication is off)")
		return
	}
	if path == "/logout" {
		s.setCookie(ctx, "", -1)
		seeOther(ctx, "/login")
		return
	}
	form := func(status int, msg string) {
		ctx.SetStatusCode(status)
		ctx.SetContentType("text/html; charset=utf-8")
		ctx.Response.Header.Set("Cache-Control", "no-store")
		ctx.Response.Header.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
		ctx.SetBodyString(strings.Replace(loginPage, "{{msg}}", html.EscapeString(msg), 1))
	}
	if ctx.IsGet() || ctx.IsHead() {
		form(fasthttp.StatusOK, "Sign in with a token of the server's -auth-file.")
		return
	}
	if !ctx.IsPost() {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "GET shows the form, POST signs in")
		return
	}
	token := ctx.PostArgs().Peek("token")
	v := acc.Auth.Check("http", sourceOf(ctx), token, boundary.Read)
	if !v.OK {
		if name, value := v.Header(); name == "Retry-After" {
			ctx.Response.Header.Set(name, value)
		}
		form(v.Status, v.Msg)
		return
	}
	s.setCookie(ctx, base64.RawURLEncoding.EncodeToString(token), 0)
	seeOther(ctx, "/")
}

// setCookie sets (or, with maxAge < 0, clears) the login cookie: a
// session cookie, HttpOnly, SameSite=Strict, Secure over TLS.
func (s *Server) setCookie(ctx *fasthttp.RequestCtx, value string, maxAge int) {
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(boundary.CookieName)
	c.SetValue(value)
	c.SetPath("/")
	c.SetHTTPOnly(true)
	c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	c.SetSecure(s.opts.Access.TLSFor("http")) // ctx.IsTLS() is false: the gate wraps the *tls.Conn
	if maxAge < 0 {
		c.SetExpire(fasthttp.CookieExpireDelete)
	}
	ctx.Response.Header.SetCookie(c)
}

// seeOther answers 303 with a relative Location: fasthttp's Redirect
// makes it absolute from the Host header and ctx.IsTLS(), which is false
// behind the gate, so a TLS listener would send the browser to http://.
func seeOther(ctx *fasthttp.RequestCtx, path string) {
	ctx.Response.Header.Set("Location", path)
	ctx.SetStatusCode(fasthttp.StatusSeeOther)
}
