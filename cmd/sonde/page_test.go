package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser is a headless Chromium (Debian's, which make test-deps
// installs) driven over the DevTools protocol, with what its console
// and its log said.
type browser struct {
	t      testing.TB
	ctx    context.Context
	mu     sync.Mutex
	errors []string // console errors, uncaught exceptions, failed loads
}

func newBrowser(t testing.TB) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is missing (Debian package chromium; make test-deps installs it): %v", err)
	}
	// The flags this workplace's machines need: no sandbox as root, and no
	// background connections, which its closed network refuses.
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless,
		chromedp.DisableGPU, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	t.Cleanup(func() { cancel(); cancelAlloc() })
	messages := chromedp.Console(ctx) // subscribes now, before the page loads
	// The first run starts the browser: no timeout on its context.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.errors = append(b.errors, m.String()+" ("+m.URL+")")
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// within runs fn with the browser's context bounded to 90 s.
func (b *browser) within(what string, fn func(ctx context.Context) error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	if err := fn(ctx); err != nil {
		b.t.Fatalf("%s: %v (page errors: %v)", what, err, b.errs())
	}
}

// wait waits until the JavaScript expression is true in the page,
// evaluated at each animation frame, for at most 90 s.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	b.within("wait for "+what, func(ctx context.Context) error {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(90*time.Second)))
		if err != nil {
			// Say what the page showed instead.
			dctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			defer cancel()
			state, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`JSON.stringify({status: document.getElementById('status').textContent,
				stats: window.sonde && window.sonde.stats, keys: window.sonde && [...window.sonde.keys.values()].slice(0, 20).map(e => e.key + '=' + e.value)})`))
			err = fmt.Errorf("%w; the page: %s", err, state)
		}
		return err
	})
}

// do runs JavaScript for its effect.
func (b *browser) do(what, expr string) {
	b.t.Helper()
	b.within(what, func(ctx context.Context) error {
		_, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
		return err
	})
}

func evalAs[T any](b *browser, expr string) T {
	b.t.Helper()
	var v T
	b.within("evaluate "+expr, func(ctx context.Context) error {
		var err error
		v, err = chromedp.Run(ctx, chromedp.Evaluate[T](expr))
		return err
	})
	return v
}

func (b *browser) navigate(url string) {
	b.t.Helper()
	b.within("open "+url, func(ctx context.Context) error { return chromedp.Do(ctx, chromedp.Navigate(url)) })
}

func (b *browser) errs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// rowValue is an expression: the value the table shows for a key.
func rowValue(key string) string {
	k, _ := json.Marshal(key)
	return fmt.Sprintf(`(() => { const r = [...document.querySelectorAll('#rows .row')].find(r => !r.hidden && r.dataset.key === %s); return r ? r.querySelector('.value').textContent : null })()`, k)
}

// TestPage drives the page at GET / in Chromium against a real server: a
// SET shows in the table; two agents make two host panels with drawn
// charts, and one goes stale and then away when its agent stops; the
// series view draws a key with 10,000 points, as the history API serves
// them; and after the server restarts the page resumes without reloading
// and shows what changed while it was away. The console stays clean.
func TestPage(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	b := newBrowser(t)
	b.navigate(p.url("/?stale=2&remove=4"))
	b.wait("the stream", `document.getElementById('status').dataset.state === 'live'`)

	c := dial(t, p.tcpAddr)
	if r := c.do(t, "SET answer 42", "INCR hits 3"); r[0] != "+OK" || r[1] != "+OK" {
		t.Fatalf("replies %v", r)
	}
	b.wait("answer in the table", rowValue("answer")+` === '42'`)
	b.wait("hits' type", `[...document.querySelectorAll('#rows .row')].some(r => r.dataset.key === 'hits' && r.querySelector('.type').textContent === 'COUNTER')`)

	// The keyboard: Enter on a focused row opens its series; Escape closes it.
	b.do("focus answer's row", `(() => { const r = [...document.querySelectorAll('#rows .row')].find(r => r.dataset.key === 'answer'); r.focus();
		r.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true})) })()`)
	b.wait("the series view of answer", `!document.getElementById('series').hidden && document.getElementById('series-title').textContent === 'answer'`)
	b.do("Escape", `document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))`)
	b.wait("the series view closed", `document.getElementById('series').hidden && location.hash === ''`)
	// Keys that a URL path would resolve away ("." and ".."), and glob
	// characters: the page reads them by ?match=, escaped.
	for i, r := range dial(t, p.tcpAddr).do(t, "SET .. 1", "SET . 2", "SET a*b? 3") {
		if r != "+OK" {
			t.Fatalf("write %d: %q", i, r)
		}
	}
	for _, k := range []string{"..", ".", "a*b?"} {
		b.do("the series view of "+k, `location.hash = 'series=' + encodeURIComponent('`+k+`') + '&range=15m'`)
		b.wait("the chart of "+k, `(() => { const c = document.getElementById('series-chart'); return c.dataset.loading === 'false' &&
			document.getElementById('series-title').textContent === '`+k+`' && c.dataset.points === '1' && document.getElementById('series-type').textContent === 'GAUGE' })()`)
	}
	b.do("Escape", `document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))`)
	b.wait("the sparklines' and types' reads of those keys", `['..', '.', 'a*b?'].every(k => window.sonde.keys.get(k)?.type === 'GAUGE')`)

	// A phone's width: the narrow layout leaves the type and sparkline out.
	b.within("a phone's viewport", func(ctx context.Context) error { return chromedp.Do(ctx, chromedp.EmulateViewport(375, 800)) })
	b.wait("the narrow layout", `getComputedStyle(document.querySelector('#rows .row .spark')).display === 'none' && document.documentElement.scrollWidth <= 375`)
	b.within("a desktop's viewport", func(ctx context.Context) error { return chromedp.Do(ctx, chromedp.EmulateViewport(1280, 1000)) })

	// Two hosts, each with drawn charts.
	alpha := startAgent(t, "-server", p.tcpAddr, "-interval", "200ms", "-name", "alpha")
	beta := startAgent(t, "-server", p.tcpAddr, "-interval", "200ms", "-name", "beta")
	for _, h := range []string{"alpha", "beta"} {
		b.wait(h+"'s panel with data", fmt.Sprintf(`(() => { const h = document.getElementById('host-%s');
			return !!h && h.dataset.state === 'live' && +h.dataset.points > 20 && ['cpu', 'disk', 'load', 'memory', 'network'].every(g => h.querySelector('[data-group="' + g + '"] canvas')) })()`, h))
	}
	b.do("filter", `(() => { const f = document.getElementById('filter'); f.value = 'alpha.load.*'; f.dispatchEvent(new Event('input')) })()`)
	b.wait("three filtered rows", `[...document.querySelectorAll('#rows .row')].filter(r => !r.hidden).length === 3`)
	b.do("clear the filter", `(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')) })()`)
	if path := os.Getenv("SONDE_PAGE_SCREENSHOT"); path != "" {
		b.within("screenshot", func(ctx context.Context) error {
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: a PNG
			if err == nil {
				err = os.WriteFile(path, png, 0o644)
			}
			return err
		})
	}
	alpha.stop()
	// The page's own record of what it showed: a poll may miss a state
	// that lasts a few hundred ms.
	b.wait("alpha stale, then gone", `(() => { const l = window.sonde.hostLog.filter(e => e[1] === 'alpha').map(e => e[2]);
		return l.at(-1) === 'removed' && l.at(-2) === 'stale' })() && !document.getElementById('host-alpha') && !!document.getElementById('host-beta')`)
	beta.stop()

	// The series view of a key with 10,000 points, a second apart.
	now := time.Now().UnixMilli()
	lines := make([]string, 10000)
	for i := range lines {
		lines[i] = fmt.Sprintf("SET big %d @%d", i%100, now-int64(10000-i)*1000)
	}
	for i, r := range dial(t, p.tcpAddr).do(t, lines...) { // c's one-shot connection is closed by now
		if r != "+OK" {
			t.Fatalf("point %d: %q", i, r)
		}
	}
	b.do("open the series view", `location.hash = 'series=big&range=6h'`)
	b.wait("the series chart", `(() => { const c = document.getElementById('series-chart'); return c.dataset.loading === 'false' && +c.dataset.points > 0 && !!c.querySelector('canvas') })()`)
	shown := evalAs[struct {
		URL    string `json:"url"`
		Points string `json:"points"`
	}](b, `({url: document.getElementById('series-chart').dataset.url, points: document.getElementById('series-chart').dataset.points})`)
	var h struct {
		Series []struct {
			Key    string       `json:"key"`
			Points [][2]float64 `json:"points"`
		} `json:"series"`
	}
	if code := p.get(shown.URL, &h); code != http.StatusOK || len(h.Series) != 1 || h.Series[0].Key != "big" {
		t.Fatalf("GET %s: %d %+v", shown.URL, code, h)
	}
	if n := len(h.Series[0].Points); fmt.Sprint(n) != shown.Points || n < 600 {
		t.Fatalf("the chart drew %s points; %s serves %d", shown.Points, shown.URL, n)
	}
	// 10,000 more keys: the table holds them all and puts only the rows
	// in view into the page.
	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("SET many.k%05d %d", i, i)
	}
	for i, r := range dial(t, p.tcpAddr).do(t, many...) {
		if r != "+OK" {
			t.Fatalf("key %d: %q", i, r)
		}
	}
	b.do("close the series view", `document.getElementById('series-close').click()`)
	b.wait("10,000 more keys", `window.sonde.keys.size >= 10000 && document.getElementById('count').textContent === window.sonde.keys.size + ' keys'`)
	if n := evalAs[int](b, `document.querySelectorAll('#rows .row').length`); n > 100 {
		t.Errorf("%d row elements for %d keys: the table renders more than the rows in view", n, 10000)
	}
	b.do("scroll to the end", `document.getElementById('viewport').scrollTop = 1e9`)
	b.wait("the last key in view", rowValue("many.k09999")+` === '9999'`)
	if errs := b.errs(); len(errs) > 0 {
		t.Fatalf("the page logged errors: %v", errs)
	}

	// The server goes away and comes back on the same ports; what changes
	// before the page reconnects arrives through Last-Event-ID.
	loaded := evalAs[float64](b, `window.sonde.stats.loaded`)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b.wait("the page to notice", `document.getElementById('status').dataset.state === 'reconnecting'`)
	p = start(t, dir, "-http", p.httpAddr, "-tcp", p.tcpAddr)
	c = dial(t, p.tcpAddr)
	if r := c.do(t, "SET answer 43", "SET fresh 1", "DELETE big"); strings.Join(r, " ") != "+OK +OK +OK" {
		t.Fatalf("replies %v", r)
	}
	// Each key through the filter, so that its row is in view.
	for _, w := range []struct{ key, shows string }{{"answer", rowValue("answer") + ` === '43'`}, {"fresh", rowValue("fresh") + ` === '1'`},
		{"big", `!window.sonde.keys.has('big') && document.getElementById('count').textContent.startsWith('0 of ')`}} {
		b.do("filter "+w.key, `(() => { const f = document.getElementById('filter'); f.value = '`+w.key+`'; f.dispatchEvent(new Event('input')) })()`)
		b.wait(w.key+" after the restart", w.shows)
	}
	if again := evalAs[float64](b, `window.sonde.stats.loaded`); again != loaded {
		t.Fatal("the page reloaded")
	}
	// While the server was down Chromium logged the refused connections
	// of the event stream's retries, and of reads the page had under way;
	// nothing else.
	for _, e := range b.errs() {
		if !strings.Contains(e, "net::ERR_CONNECTION_REFUSED") && !strings.Contains(e, "/events") {
			t.Errorf("page error: %s", e)
		}
	}
}

// BenchmarkPageUpdate measures SET → DOM: the time from writing a value
// over the command protocol to the page's table showing it.
func BenchmarkPageUpdate(bm *testing.B) {
	p := start(bm, bm.TempDir())
	b := newBrowser(bm)
	b.navigate(p.url("/"))
	b.wait("the stream", `document.getElementById('status').dataset.state === 'live'`)
	c := dial(bm, p.tcpAddr)
	i := 0
	for bm.Loop() {
		i++
		c.do(bm, fmt.Sprintf("SET bench.page %d", i)) // a steady writer: never idle 300 ms, not taken for a one-shot nc
		b.wait("the value", rowValue("bench.page")+fmt.Sprintf(` === '%d'`, i))
	}
	p.stop()
}

// TestPageAssets: / and /ui/ serve the embedded files with their types
// and a content security policy that keeps the page to its own origin;
// other paths under /ui/ are 404, and only GET and HEAD are served.
func TestPageAssets(t *testing.T) {
	p := start(t, t.TempDir())
	for path, ct := range map[string]string{"/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css",
		"/ui/vendor/uplot/uPlot.iife.min.js": "text/javascript", "/ui/vendor/uplot/LICENSE": "application/octet-stream"} {
		resp, err := http.Get(p.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ct) ||
			!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: %d %q %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
		}
	}
	for _, path := range []string{"/ui/", "/ui/nope.js", "/ui/../main.go", "/ui/vendor/../app.js", "/ui//app.js", "/index.html"} {
		resp, err := http.Get(p.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	if code := p.postStatus("/"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", code)
	}
}

// TestPageStatus: the Status tab lists the heartbeats and the events
// written before it opened, and shows a new event as it is written.
func TestPageStatus(t *testing.T) {
	p := start(t, t.TempDir())
	if code, body := p.send("POST", "/api/v1/events", `[{"service":"backup","level":1,"message":"done <b>in</b> 4 min"},{"service":"deploy","message":"started"}]`); code != 200 {
		t.Fatalf("post events: %d %s", code, body)
	}
	if code, body := p.send("POST", "/api/v1/heartbeats", `{"service":"cron","nextIn":3600}`); code != 200 {
		t.Fatalf("pulse: %d %s", code, body)
	}
	b := newBrowser(t)
	b.navigate(p.url("/"))
	b.do("open the Status tab", `document.getElementById('tab-status').click()`)
	b.wait("the events written before", `window.sonde.events.length === 2 && document.querySelectorAll('#events tr').length === 2`)
	b.wait("the heartbeat", `document.querySelector('#heartbeats tr[data-service="cron"][data-state="on-time"]') !== null`)
	if got := evalAs[string](b, `document.querySelector('#events tr:last-child td.msg').textContent`); got != "done <b>in</b> 4 min" {
		t.Fatalf("the oldest event's message shows as %q (as text, not markup)", got)
	}
	if evalAs[bool](b, `document.getElementById('viewport').checkVisibility()`) {
		t.Fatal("the key table still shows on the Status tab")
	}
	if code, body := p.send("POST", "/api/v1/events", `{"service":"db","level":3,"message":"failover"}`); code != 200 {
		t.Fatalf("post an event: %d %s", code, body)
	}
	b.wait("the new event, live, first", `window.sonde.events[0]?.message === 'failover' && document.querySelector('#events tr:first-child').dataset.level === '3'`)
	b.do("back to Metrics", `document.getElementById('tab-metrics').click()`)
	b.wait("the key table again", `document.getElementById('viewport').checkVisibility() && document.getElementById('status-view').hidden`)
	if errs := b.errs(); len(errs) > 0 {
		t.Fatalf("page errors: %v", errs)
	}
}
