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
	header, cookie, param := tokenPlaces(ctx)
	v := acc.Authorize(name, sourceOf(ctx), read, header, cookie, param)
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

// tokenPlaces are where a request may carry its token: the
// Authorization header, the page's cookie and the token= parameter. The
// cookie holds the token in base64url: a token may hold bytes a cookie
// value may not (; , " space).
func tokenPlaces(ctx *fasthttp.RequestCtx) (header, cookie, param []byte) {
	cookie, _ = base64.RawURLEncoding.AppendDecode(nil, ctx.Request.Header.Cookie(boundary.CookieName))
	return ctx.Request.Header.Peek("Authorization"), cookie, ctx.QueryArgs().Peek("token")
}

// errRevoked ends a stream whose token a reload took.
var errRevoked = errors.New("the token was revoked (the auth file was read again)")

// streamSession is the session of an event stream, a read on ctx that
// authorize let in: its token, checked again after each reload of the
// auth file (SIGHUP), so a revoked token ends the streams it opened. Nil
// when the listener asks for no token.
func streamSession(ctx *fasthttp.RequestCtx, acc *boundary.Access, name string) *boundary.Session {
	if !acc.AuthFor(name) {
		return nil
	}
	header, cookie, param := tokenPlaces(ctx)
	return acc.Auth.Session(name, boundary.RequestToken(true, header, cookie, param), boundary.Read)
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
