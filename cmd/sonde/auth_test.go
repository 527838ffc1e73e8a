package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// authTokens are the tokens of a test's -auth-file.
type authTokens struct {
	file                   string
	reader, writer, admin  string
	readerFile, writerFile string // each token alone in a file, for a client's -token-file
}

// writeAuthFile writes an -auth-file with a read, a write and a
// read,write token (the writer's by its SHA-256 only) into dir.
func writeAuthFile(t *testing.T, dir string) authTokens {
	t.Helper()
	a := authTokens{file: filepath.Join(dir, "auth"), reader: "reader-token-0123456789", writer: "writer-token-0123456789",
		admin: "admin-token-0123456789", readerFile: filepath.Join(dir, "reader.token"), writerFile: filepath.Join(dir, "writer.token")}
	sum := sha256.Sum256([]byte(a.writer))
	text := "# name scopes token\nreader read " + a.reader + "\nwriter write sha256:" + hex.EncodeToString(sum[:]) + "\nadmin read,write " + a.admin + "\n"
	for path, body := range map[string]string{a.file: text, a.readerFile: a.reader + "\n", a.writerFile: a.writer + "\n"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// authCall is one request: its status, the WWW-Authenticate header and
// the start of the body.
type authCall struct {
	status int
	www    string
	body   string
}

// call makes one request with an optional Authorization header; an event
// stream is cut after its head.
func call(t *testing.T, client *http.Client, method, u, body, authz string, header ...string) authCall {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if method == "POST" && strings.HasPrefix(body, "target=") {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b := make([]byte, 512)
	n, _ := io.ReadAtLeast(resp.Body, b, 1)
	return authCall{status: resp.StatusCode, www: resp.Header.Get("WWW-Authenticate"), body: string(b[:n])}
}

// noRedirectTLS is a client trusting pool that shows redirects.
func noRedirectTLS(pool *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, CheckRedirect: noRedirect.CheckRedirect}
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// TestAuthHTTP: with -auth-file every HTTP route but /healthz and the
// login's asks for a token: none and a wrong one get 401 with a Bearer
// challenge, a read-only token on a write 403, a write-only token on a
// read 403, a good one the route's own answer. The page's login sets a
// cookie that reads (an EventSource) but never writes; token= reads too.
func TestAuthHTTP(t *testing.T) {
	a := writeAuthFile(t, t.TempDir())
	p := start(t, t.TempDir(), "-auth-file", a.file)
	bearer := func(tok string) string { return "Bearer " + tok }
	// Something to read: a series, an event, a heartbeat.
	for _, w := range []struct{ method, path, body string }{
		{"POST", "/collectd", "PUTVAL host/load/load interval=10 N:1:2:3\n"},
		{"POST", "/api/v1/events", `{"service":"auth","message":"hi"}`},
		{"POST", "/api/v1/heartbeats", `{"service":"cron","nextIn":3600}`},
	} {
		if c := call(t, http.DefaultClient, w.method, p.url(w.path), w.body, bearer(a.writer)); c.status != 200 {
			t.Fatalf("%s %s with the write token: %d %s", w.method, w.path, c.status, c.body)
		}
	}
	key := url.PathEscape("host.load.load.shortterm")
	type route struct {
		method, path, body string
		write              bool
		want               int // with a good token
	}
	routes := []route{
		{"GET", "/", "", false, 200},
		{"GET", "/ui/app.js", "", false, 200},
		{"GET", "/data", "", false, 200},
		{"GET", "/vapor", "", false, 200},
		{"GET", "/events", "", false, 200},
		{"GET", "/api/v1/series", "", false, 200},
		{"GET", "/api/v1/series/" + key, "", false, 200},
		{"GET", "/api/v1/series/" + key + "/history", "", false, 200},
		{"GET", "/api/v1/history?match=host.*", "", false, 200},
		{"GET", "/api/v1/stats", "", false, 200},
		{"GET", "/render?target=host.*.*.*&format=json", "", false, 200},
		{"POST", "/render", "target=host.*.*.*&format=json", false, 200},
		{"GET", "/metrics/find?query=*", "", false, 200},
		{"GET", "/tags/findSeries?expr=name=host.load.load.shortterm", "", false, 200},
		{"GET", "/glo", "", false, 200},
		{"GET", "/metrics", "", false, 200},
		{"GET", "/api/v1/events", "", false, 200},
		{"GET", "/api/v1/events/stream", "", false, 200},
		{"GET", "/api/v1/heartbeats", "", false, 200},
		{"GET", "/api/v1/heartbeats/cron", "", false, 200},
		{"GET", "/api/v1/alerts", "", false, 200},
		{"GET", "/api/v1/checks", "", false, 200},
		{"GET", "/api/v1/clients", "", false, 200},
		{"GET", "/api/v1/clients.stream", "", false, 200},
		{"GET", "/api/v1/clients/nobody", "", false, 404},
		{"GET", "/nowhere", "", false, 404},
		{"POST", "/collectd", "PUTVAL host/load/load interval=10 N:2:3:4\n", true, 200},
		{"POST", "/api/v1/events", `{"service":"auth","message":"again"}`, true, 200},
		{"POST", "/api/v1/heartbeats", `{"service":"cron2","nextIn":3600}`, true, 200},
		{"DELETE", "/api/v1/heartbeats/cron2", "", true, 200},
		{"DELETE", "/api/v1/clients/nobody", "", true, 404},
		{"POST", "/data", "x", true, 405},
	}
	for i, r := range routes {
		u := p.url(r.path)
		// Each wrong token from a source of its own: a source has
		// boundary.FailBurst failed attempts (TestAuthListeners).
		from := clientFrom(t, fmt.Sprintf("127.0.1.%d", i+1))
		for _, tok := range []string{"", bearer("wrong-token-0123456789")} {
			c := call(t, from, r.method, u, r.body, tok)
			if r.path == "/" {
				if c.status != 303 {
					t.Errorf("%s %s with token %q: %d, want 303 to /login", r.method, r.path, tok, c.status)
				}
			} else if c.status != 401 || c.www != `Bearer realm="sonde"` {
				t.Errorf("%s %s with token %q: %d %q %s, want 401 with a Bearer challenge", r.method, r.path, tok, c.status, c.www, c.body)
			}
		}
		good, bad := a.reader, a.writer // the token that may, the one that may not
		if r.write {
			good, bad = a.writer, a.reader
		}
		if c := call(t, noRedirect, r.method, u, r.body, bearer(bad)); c.status != 403 {
			t.Errorf("%s %s with a token without the scope: %d %s, want 403", r.method, r.path, c.status, c.body)
		}
		goods := []string{good, a.admin}
		if r.write {
			goods = goods[:1] // a DELETE is done once
		}
		for _, tok := range goods {
			if c := call(t, noRedirect, r.method, u, r.body, bearer(tok)); c.status != r.want {
				t.Errorf("%s %s with a good token: %d %s, want %d", r.method, r.path, c.status, c.body, r.want)
			}
		}
		if !r.write {
			// token= for what cannot send a header; basic auth with the
			// token as the password.
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			if c := call(t, noRedirect, r.method, u+sep+"token="+a.reader, r.body, ""); c.status != r.want {
				t.Errorf("%s %s with token=: %d %s, want %d", r.method, r.path, c.status, c.body, r.want)
			}
		}
	}
	// /healthz tells nothing and asks for nothing.
	if c := call(t, http.DefaultClient, "GET", p.url("/healthz"), "", ""); c.status != 200 || c.body != "ok\n" {
		t.Errorf("/healthz: %d %q", c.status, c.body)
	}
	// A write never takes token= or the cookie.
	if c := call(t, http.DefaultClient, "POST", p.url("/api/v1/events?token="+a.writer), `{"service":"auth"}`, ""); c.status != 401 {
		t.Errorf("a write with token=: %d, want 401", c.status)
	}
	if c := call(t, http.DefaultClient, "POST", p.url("/api/v1/events?token="+a.admin), `{"service":"auth"}`, "Basic "+basic("collectd", a.writer)); c.status != 200 {
		t.Errorf("a write with basic auth: %d %s", c.status, c.body)
	}

	// The page's login: the form, a wrong token, then the cookie.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: noRedirect.CheckRedirect}
	if c := call(t, browser, "GET", p.url("/login"), "", ""); c.status != 200 || !strings.Contains(c.body, `name="token"`) {
		t.Fatalf("GET /login: %d %s", c.status, c.body)
	}
	login := func(tok string) *http.Response {
		resp, err := browser.PostForm(p.url("/login"), url.Values{"token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := login("wrong-token-0123456789"); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Fatalf("login with a wrong token: %d %v", resp.StatusCode, resp.Cookies())
	}
	resp := login(a.admin)
	if resp.StatusCode != 303 || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %v", resp.StatusCode, resp.Cookies())
	}
	if ck := resp.Cookies()[0]; !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Name != "sonde_token" || strings.Contains(ck.Value, a.admin) {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, the token encoded", ck)
	}
	for _, path := range []string{"/", "/data", "/events"} {
		if c := call(t, browser, "GET", p.url(path), "", ""); c.status != 200 {
			t.Errorf("GET %s with the cookie: %d %s", path, c.status, c.body)
		}
	}
	if c := call(t, browser, "POST", p.url("/api/v1/events"), `{"service":"auth"}`, ""); c.status != 401 {
		t.Errorf("a write with the cookie of a read,write token: %d, want 401", c.status)
	}
	if c := call(t, browser, "GET", p.url("/logout"), "", ""); c.status != 303 {
		t.Errorf("logout: %d", c.status)
	}
	if c := call(t, browser, "GET", p.url("/data"), "", ""); c.status != 401 {
		t.Errorf("after logout: %d, want 401", c.status)
	}
	var st struct {
		Auth struct{ Tokens, OK, Missing, Wrong, Scope, Limited int64 }
	}
	p.get("/api/v1/stats?token="+a.reader, &st)
	if st.Auth.Tokens != 3 || st.Auth.Wrong < int64(len(routes)) || st.Auth.Scope < int64(len(routes)) || st.Auth.Missing < int64(len(routes)) {
		t.Errorf("auth stats %+v", st.Auth)
	}
}

// clientFrom is an HTTP client whose connections come from src, which
// does not follow redirects.
func clientFrom(t *testing.T, src string) *http.Client {
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: noRedirect.CheckRedirect}
}

func basic(user, pw string) string {
	req, _ := http.NewRequest("GET", "http://x", nil)
	req.SetBasicAuth(user, pw)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// authLine connects to addr from src, sends lines and returns the
// replies until the server closes or n replies are in.
func authLines(t *testing.T, src, addr string, n int, lines ...string) []string {
	t.Helper()
	c := dialFrom(t, "tcp", src, addr)
	defer c.Close()
	fmt.Fprint(c, strings.Join(lines, "\n")+"\n")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	var out []string
	for len(out) < n {
		l, err := br.ReadString('\n')
		if err != nil {
			break
		}
		out = append(out, strings.TrimRight(l, "\r\n"))
	}
	return out
}

// TestAuthListeners: the command protocol takes AUTH <token> as its first
// line; the collectd, glo, watchtower and pprof listeners take a token
// like the HTTP API. Each is tried with no token, a wrong one, one
// without the scope and a good one. Failed attempts are counted and
// limited per source: past FailBurst a source is refused (429, -ERR)
// even with a good token, while another is served.
func TestAuthListeners(t *testing.T) {
	a := writeAuthFile(t, t.TempDir())
	p := start(t, t.TempDir(), "-auth-file", a.file, "-auth-listeners", "tcp,collectd,http,glo,watchtower,pprof",
		"-glo", "127.0.0.1:0", "-watchtower", "127.0.0.1:0", "-pprof", "127.0.0.1:0")

	// The command protocol.
	for _, c := range []struct {
		lines []string
		want  []string
	}{
		{[]string{"SET cmd.none 1"}, []string{"-ERR authentication required: send AUTH <token> first"}},
		{[]string{"AUTH", "SET cmd.none 1"}, []string{"-ERR authentication required: send AUTH <token> first"}},
		{[]string{"AUTH wrong-token-0123456789", "SET cmd.wrong 1"}, []string{"-ERR the token is not valid"}},
		{[]string{"AUTH " + a.reader, "SET cmd.reader 1"}, []string{"-ERR token reader may not write"}},
		{[]string{"", "AUTH " + a.writer, "SET cmd.writer 1", "PING"}, []string{"+OK", "+OK", "+PONG"}},
	} {
		if got := authLines(t, "127.0.0.1", p.tcpAddr, 3, c.lines...); strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%q: %q, want %q", c.lines, got, c.want)
		}
	}
	var data map[string]float64
	p.get("/data?token="+a.reader, &data)
	if len(data) != 1 || data["cmd.writer"] != 1 {
		t.Fatalf("stored %v, want cmd.writer only", data)
	}

	// HTTP listeners of their own.
	var pprofAddr string
	for _, l := range strings.Split(p.logText(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "pprof listening" {
			pprofAddr = m["addr"].(string)
		}
	}
	glo, wt := "http://"+p.addrs["glo"].(string), "http://"+p.addrs["watchtower"].(string)
	for _, c := range []struct {
		name, method, u, body string
		write                 bool
		header                string // where the token goes; "" Authorization
		want                  int
	}{
		{"collectd", "POST", "http://" + p.collectdAddr + "/", "PUTVAL h/cpu/gauge N:5\n", true, "", 200},
		{"glo", "GET", glo + "/", "", false, "", 200},
		{"pprof", "GET", "http://" + pprofAddr + "/debug/pprof/", "", false, "", 200},
		{"pprof", "POST", "http://" + pprofAddr + "/debug/pprof/symbol", "0x1", true, "", 200},
		{"watchtower", "GET", wt + "/hello", "", false, "password", 200},
		{"watchtower", "POST", wt + "/event", `{"service":"wt","message":"m"}`, true, "password", 200},
	} {
		status := func(tok string) int {
			var res authCall
			if c.header != "" {
				res = call(t, http.DefaultClient, c.method, c.u, c.body, "", c.header, tok)
				var body struct{ Result int }
				if json.Unmarshal([]byte(res.body), &body) == nil && body.Result != 0 {
					return body.Result // watchtower answers 200 with its result in the body
				}
				return res.status
			}
			if tok != "" {
				tok = "Bearer " + tok
			}
			return call(t, http.DefaultClient, c.method, c.u, c.body, tok).status
		}
		good, bad := a.reader, a.writer
		if c.write {
			good, bad = a.writer, a.reader
		}
		for _, try := range []struct {
			tok  string
			want int
		}{{"", 401}, {"wrong-token-0123456789", 401}, {bad, 403}, {good, c.want}} {
			if got := status(try.tok); got != try.want {
				t.Errorf("%s %s %s with token %q: %d, want %d", c.name, c.method, c.u, try.tok, got, try.want)
			}
		}
	}
	// collectd's write_http sends User and Password: basic auth.
	if c := call(t, http.DefaultClient, "POST", "http://"+p.collectdAddr+"/", "PUTVAL h/cpu/gauge N:6\n", "Basic "+basic("collectd", a.writer)); c.status != 200 {
		t.Errorf("collectd with basic auth: %d %s", c.status, c.body)
	}

	// Failed attempts from 127.0.0.3 run out; 127.0.0.1 is still served.
	from3 := clientFrom(t, "127.0.0.3")
	limited := 0
	for range 2 * 10 {
		c := call(t, from3, "GET", p.url("/data"), "", "Bearer wrong-token-0123456789")
		if c.status == 429 {
			limited++
		} else if c.status != 401 {
			t.Fatalf("a wrong token: %d", c.status)
		}
	}
	if limited == 0 {
		t.Fatalf("20 wrong tokens from one source in a row: none limited")
	}
	if c := call(t, from3, "GET", p.url("/data"), "", "Bearer "+a.reader); c.status != 429 {
		t.Errorf("a good token from a source past its failed attempts: %d, want 429", c.status)
	}
	if got := authLines(t, "127.0.0.3", p.tcpAddr, 1, "AUTH "+a.writer); len(got) != 1 || !strings.HasPrefix(got[0], "-ERR too many failed attempts") {
		t.Errorf("AUTH from a source past its failed attempts: %q", got)
	}
	if c := call(t, http.DefaultClient, "GET", p.url("/data"), "", "Bearer "+a.reader); c.status != 200 {
		t.Errorf("another source: %d", c.status)
	}
	var st struct{ Auth struct{ Limited int64 } }
	p.get("/api/v1/stats?token="+a.reader, &st)
	if st.Auth.Limited < int64(limited)+2 {
		t.Errorf("limited %d, want at least %d", st.Auth.Limited, limited+2)
	}
	if !strings.Contains(p.logText(), "too many failed attempts") {
		t.Errorf("no log line for the limited source")
	}
}

// TestAuthExposure: a listener beyond loopback starts with -auth-file when
// it asks for tokens; one whose clients cannot send one (graphite) still
// wants -allow; a bad -auth-file is a clear error naming its line.
func TestAuthExposure(t *testing.T) {
	dir := t.TempDir()
	a := writeAuthFile(t, dir)
	p := start(t, t.TempDir(), "-auth-file", a.file, "-http", "0.0.0.0:0", "-tcp", "0.0.0.0:0")
	if c := call(t, http.DefaultClient, "GET", p.url("/data"), "", ""); c.status != 401 {
		t.Fatalf("exposed HTTP without a token: %d", c.status)
	}
	p.stop()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-auth-file", a.file, "-graphite", "0.0.0.0:0"}, "-graphite 0.0.0.0:0 listens beyond loopback, and asks for no token"},
		{[]string{"-auth-file", a.file, "-auth-listeners", "tcp", "-http", "0.0.0.0:0"}, "-http 0.0.0.0:0 listens beyond loopback, and asks for no token"},
		{[]string{"-auth-listeners", "graphite"}, `-auth-listeners: "graphite" is not a listener that can ask for a token`},
	} {
		out, err := exec.Command(binary, append([]string{"-data", t.TempDir()}, c.args...)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: %v %s, want exit 2 with %q", c.args, err, out, c.want)
		}
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("ok read 0123456789abcdef\nshort write abc\n"), 0o600)
	out, err := exec.Command(binary, "-data", t.TempDir(), "-auth-file", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 2: the token (third field) is 3 bytes") {
		t.Errorf("a bad -auth-file: %v %s", err, out)
	}
}

// TestAuthClients: Sonde's own clients authenticate and verify TLS
// against a server with -auth-file and -tls-cert: `sonde agent
// -token-file -ca-file` (and a read-only token is refused), a follower
// with -upstream https://... -upstream-token-file -ca-file, and -glo-poll
// with token-file=. SIGHUP reads the -auth-file again.
func TestAuthClients(t *testing.T) {
	dir := t.TempDir()
	a := writeAuthFile(t, dir)
	ca := newTestCA(t, dir)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.issue(t, 7, cert, key)
	up := start(t, t.TempDir(), "-auth-file", a.file, "-tls-cert", cert, "-tls-key", key)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	https := &http.Client{Transport: tr}
	data := func(base, tok string) map[string]float64 {
		req, _ := http.NewRequest("GET", base+"/data", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		m := map[string]float64{}
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s/data: %d %v", base, resp.StatusCode, err)
		}
		return m
	}
	upURL := "https://" + up.httpAddr

	// The agent over TLS with a write token.
	ag := startAgent(t, "-server", up.tcpAddr, "-token-file", a.writerFile, "-ca-file", ca.pem, "-name", "authhost", "-interval", "100ms")
	waitFor(t, "the agent's points", func() bool { _, ok := data(upURL, a.reader)["authhost.load.average-1"]; return ok })
	ag.stop()
	// With a read-only token it is refused, and says so.
	ro := startAgent(t, "-server", up.tcpAddr, "-token-file", a.readerFile, "-ca-file", ca.pem, "-name", "rohost", "-interval", "100ms")
	ro.waitLog("a refused token", func(_ []int64, logs []string) bool {
		return slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "token reader may not write") })
	})
	ro.stop()

	// A follower and a glo poller, both over HTTPS with a read token.
	down := start(t, t.TempDir(), "-upstream", upURL+"/events", "-upstream-prefix", "up", "-upstream-token-file", a.readerFile,
		"-ca-file", ca.pem, "-glo-poll", upURL+"/glo,prefix=gp,every=200ms,token-file="+a.readerFile)
	tc, err := tls.Dial("tcp", up.tcpAddr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	fmt.Fprintf(tc, "AUTH %s\nSET chained 42\n", a.writer)
	br := bufio.NewReader(tc)
	for range 2 {
		if l, err := br.ReadString('\n'); err != nil || l != "+OK\r\n" {
			t.Fatalf("AUTH and SET over TLS: %q %v", l, err)
		}
	}
	waitFor(t, "the followed key and the polled glo document", func() bool {
		var m map[string]float64
		down.get("/data", &m)
		gp := false
		for k := range m {
			gp = gp || strings.HasPrefix(k, "gp.")
		}
		return m["up.chained"] == 42 && gp
	})

	// The page's login over TLS: a relative redirect, a Secure cookie.
	resp, err := noRedirectTLS(pool).PostForm(upURL+"/login", url.Values{"token": {a.reader}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/" || len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Fatalf("login over TLS: %d, Location %q, cookies %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}

	// SIGHUP: the reader and writer tokens go, a new one comes; a command
	// connection signed in before is cut at its next write.
	before := tc
	os.WriteFile(a.file, []byte("fresh read fresh-token-0123456789\n"), 0o600)
	up.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reloaded tokens", func() bool { return strings.Contains(up.logText(), "SIGHUP: tokens reloaded") })
	fmt.Fprintf(before, "SET after.revoke 1\n")
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "-ERR the token was revoked") {
		t.Fatalf("a write on a connection whose token was revoked: %q %v", l, err)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatalf("the connection stayed open after its token was revoked")
	}
	req, _ := http.NewRequest("GET", upURL+"/data", nil)
	req.Header.Set("Authorization", "Bearer "+a.reader)
	resp, err = https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("a token gone from the reloaded file: %d", resp.StatusCode)
	}
	if m := data(upURL, "fresh-token-0123456789"); m["chained"] != 42 || m["after.revoke"] != 0 {
		t.Fatalf("the new token reads %v", m)
	}
	if _, ok := data(upURL, "fresh-token-0123456789")["after.revoke"]; ok {
		t.Fatalf("a write after its token was revoked was stored")
	}
	// A broken file keeps the tokens in use.
	os.WriteFile(a.file, []byte("broken\n"), 0o600)
	up.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the refused reload", func() bool { return strings.Contains(up.logText(), "SIGHUP: tokens not reloaded") })
	if m := data(upURL, "fresh-token-0123456789"); m["chained"] != 42 {
		t.Fatalf("after a broken reload %v", m)
	}
}

// TestPageLogin: with -auth-file, Chromium opening the page is sent to
// /login; a wrong token shows the form again; a read token signs in, and
// the page's reads and its EventSource go with the cookie: a SET made
// afterwards shows in the table live. The console stays clean but for the
// wrong token's 401.
func TestPageLogin(t *testing.T) {
	a := writeAuthFile(t, t.TempDir())
	p := start(t, t.TempDir(), "-auth-file", a.file)
	b := newBrowser(t)
	b.navigate(p.url("/"))
	b.wait("the login form", `location.pathname === '/login' && document.querySelector('input[name=token]') !== null`)
	signIn := func(tok string) {
		b.within("sign in", func(ctx context.Context) error {
			// RunResponse waits for the navigation the submit starts.
			_, err := chromedp.RunResponse(ctx, chromedp.SetValue(chromedp.CSS(`input[name=token]`), tok), chromedp.Submit(chromedp.CSS(`form`)))
			return err
		})
	}
	signIn("wrong-token-0123456789")
	b.wait("the form again", `document.readyState === 'complete' && document.body.textContent.includes('the token is not valid')`)
	signIn(a.reader)
	b.wait("the page's stream", `location.pathname === '/' && document.getElementById('status')?.dataset.state === 'live'`)
	for _, r := range authLines(t, "127.0.0.1", p.tcpAddr, 2, "AUTH "+a.writer, "SET answer 42") {
		if r != "+OK" {
			t.Fatalf("write: %q", r)
		}
	}
	b.wait("answer in the table", rowValue("answer")+` === '42'`)
	for _, e := range b.errs() {
		if !strings.Contains(e, "401") {
			t.Errorf("console: %s", e)
		}
	}
}

// TestAuthWaiting: connections that send no AUTH cannot hold the command
// listener's slots (at most half of -max-conns wait for their AUTH; the
// one waiting longest is cut), and an HTTP client refused for its token
// gets its connection closed, not kept alive.
func TestAuthWaiting(t *testing.T) {
	a := writeAuthFile(t, t.TempDir())
	p := start(t, t.TempDir(), "-auth-file", a.file, "-max-conns", "8", "-tcp-auth-timeout", "2m")
	type tcpStats struct {
		TCP struct {
			AuthWaiting int64 `json:"auth_waiting"`
			AuthCut     int64 `json:"auth_cut"`
		}
	}
	stats := func() (st tcpStats) {
		p.get("/api/v1/stats?token="+a.reader, &st)
		return st
	}
	// Silent connections, one at a time: at most 4 (half of 8) wait.
	var silent []net.Conn
	for i := range 6 {
		c := dialFrom(t, "tcp", "127.0.0.1", p.tcpAddr)
		defer c.Close()
		silent = append(silent, c)
		waitFor(t, "the connection waiting", func() bool {
			st := stats()
			return st.TCP.AuthWaiting == int64(min(i+1, 4)) && st.TCP.AuthCut == int64(max(i-3, 0))
		})
	}
	// The two waiting longest were cut: closed without a byte.
	for i, c := range silent[:2] {
		if !closedAtOnce(t, c) {
			t.Fatalf("silent connection %d was not cut", i)
		}
	}
	if got := authLines(t, "127.0.0.1", p.tcpAddr, 2, "AUTH "+a.writer, "SET waited 1"); strings.Join(got, "|") != "+OK|+OK" {
		t.Fatalf("a client beside silent ones: %q", got)
	}
	if st := stats(); st.TCP.AuthCut != 3 || st.TCP.AuthWaiting != 3 {
		t.Errorf("after a client signed in beside 4 silent ones: %+v, want 3 cut, 3 waiting", st.TCP)
	}
	resp, err := http.Get(p.url("/data"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !resp.Close {
		t.Errorf("a refused request: %d, close %v: want 401 and the connection closed", resp.StatusCode, resp.Close)
	}
}

// TestAuthStreamRevoked: a reload (SIGHUP) that takes a token ends the
// event streams it opened, whichever way it came: /events with the
// header, /api/v1/events/stream with token=, /api/v1/clients.stream with
// the login cookie. They end at once, though nothing is written to them
// and their heartbeat is an hour away, each with a comment saying why,
// and they are counted. A stream whose token stays goes on.
func TestAuthStreamRevoked(t *testing.T) {
	a := writeAuthFile(t, t.TempDir())
	p := start(t, t.TempDir(), "-auth-file", a.file, "-sse-heartbeat", "1h")
	open := func(path string, prepare func(*http.Request)) *http.Response {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", p.url(path), nil)
		prepare(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return resp
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	// Each revoked stream is read to its end; what it held comes back.
	type ended struct {
		path, text string
		err        error
	}
	ends := make(chan ended, 3)
	for path, prepare := range map[string]func(*http.Request){
		"/events": bearer(a.reader),
		"/api/v1/events/stream?token=" + a.reader: func(*http.Request) {},
		"/api/v1/clients.stream": func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: "sonde_token", Value: base64.RawURLEncoding.EncodeToString([]byte(a.reader))})
		},
	} {
		resp := open(path, prepare)
		go func() {
			b, err := io.ReadAll(resp.Body)
			ends <- ended{path, string(b), err}
		}()
	}
	kept := bufio.NewReader(open("/events", bearer(a.admin)).Body)
	// The first frame (the dump) shows the stream is being served.
	if l, err := kept.ReadString('\n'); err != nil || !strings.HasPrefix(l, "id: ") {
		t.Fatalf("the kept stream's first line: %q %v", l, err)
	}
	waitFor(t, "four streams", func() bool {
		var st struct {
			Subscribers int `json:"subscribers"`
		}
		return authGet(t, p, a.admin, "/api/v1/stats", &st) == 200 && st.Subscribers == 4
	})

	// The reader goes; the admin and the writer stay.
	sum := sha256.Sum256([]byte(a.writer))
	os.WriteFile(a.file, []byte("writer write sha256:"+hex.EncodeToString(sum[:])+"\nadmin read,write "+a.admin+"\n"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	for range 3 {
		select {
		case e := <-ends:
			if e.err != nil || !strings.HasSuffix(e.text, "\r\n\r\n\r\n: the token was revoked (the auth file was read again)\r\n") {
				t.Errorf("%s after its token was revoked: %v, ends with %q", e.path, e.err, e.text[max(0, len(e.text)-80):])
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a stream of a revoked token went on for 30 s")
		}
	}
	var st struct {
		Subscribers int `json:"subscribers"`
		Auth        struct {
			Revoked int `json:"revoked"`
		} `json:"auth"`
	}
	if authGet(t, p, a.admin, "/api/v1/stats", &st); st.Auth.Revoked != 3 {
		t.Errorf("auth.revoked = %d after three streams ended, want 3", st.Auth.Revoked)
	}
	// The admin's stream still carries what is written.
	c, err := net.Dial("tcp", p.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "AUTH %s\nSET after.reload 7\n", a.writer)
	got := make(chan error, 1)
	go func() {
		for {
			l, err := kept.ReadString('\n')
			if err != nil {
				got <- fmt.Errorf("the kept stream ended: %w", err)
				return
			}
			if strings.HasPrefix(l, "data: ") && strings.Contains(l, `"after.reload"`) {
				got <- nil
				return
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream of a token that stayed did not show a later SET within 30 s")
	}
}

// authGet GETs path with a bearer token into v; it returns the status.
func authGet(t *testing.T, p *proc, tok, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", p.url(path), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

// TestAuthBadHeadNotLogged: a request head fasthttp refuses (a header
// value with a control byte, a URI it cannot parse) is answered 400 and
// logged without the bytes it quotes, which may be a token, on the HTTP
// API and collectd's listener alike.
func TestAuthBadHeadNotLogged(t *testing.T) {
	a := writeAuthFile(t, t.TempDir())
	p := start(t, t.TempDir(), "-auth-file", a.file)
	// One each: a listener logs the first of a kind a minute.
	for addr, head := range map[string]string{
		p.httpAddr:     "GET /data HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + a.admin + "\x01\r\n\r\n",
		p.collectdAddr: "GET /data?token=" + a.reader + "\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, head)
		b, _ := io.ReadAll(c) // fasthttp closes after a bad head
		c.Close()
		if !strings.HasPrefix(string(b), "HTTP/1.1 400") {
			t.Errorf("%s, %q: %q", addr, head, b)
		}
	}
	waitFor(t, "the refused heads' log lines", func() bool {
		return strings.Count(p.logText(), "error when serving connection") == 2
	})
	log := p.logText()
	if strings.Contains(log, a.admin) || strings.Contains(log, a.reader) {
		t.Fatalf("a token in the log:\n%s", log)
	}
}
