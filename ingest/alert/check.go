package alert

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/internal/safeurl"
)

// Check is one HTTP check (-check, watchtower's "pings"): a GET of URL
// every Every passes when the answer's status is Expect.
type Check struct {
	Name, URL string
	Every     time.Duration
	Timeout   time.Duration
	Expect    int
	Channel   string
}

// ParseCheck reads one -check flag:
//
//	NAME=URL[,every=30s][,expect=200][,alert=CHANNEL][,timeout=10s]
//
// The name follows a channel name's rules (it becomes the key
// check.NAME.failing); the timeout is at most the period.
func ParseCheck(spec string) (*Check, error) {
	parts := strings.Split(spec, ",")
	name, raw, ok := strings.Cut(parts[0], "=")
	if !ok || !validName(name) {
		return nil, fmt.Errorf("-check %q: want NAME=URL first, the name 1 to 64 letters, digits, '.', '_' or '-'", clip(spec))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-check %s: %q is not an http or https URL", name, clip(raw))
	}
	c := &Check{Name: name, URL: u.String(), Every: 30 * time.Second, Expect: 200}
	timeout := time.Duration(0)
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "every", "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > 24*time.Hour {
				return nil, fmt.Errorf("-check %s: %s=%q: want a duration from 1s to 24h", name, k, clip(v))
			}
			if k == "every" {
				c.Every = d
			} else {
				timeout = d
			}
		case "expect":
			n, err := strconv.Atoi(v)
			if err != nil || n < 100 || n > 599 {
				return nil, fmt.Errorf("-check %s: expect=%q: want an HTTP status", name, clip(v))
			}
			c.Expect = n
		case "alert":
			c.Channel = v
		default:
			return nil, fmt.Errorf("-check %s: %q is not a setting (every, expect, alert, timeout)", name, clip(k))
		}
	}
	c.Timeout = min(c.Every, 10*time.Second)
	if timeout > 0 {
		c.Timeout = min(timeout, c.Every)
	}
	return c, nil
}

// CheckStore is what checks need of the store (engine.DB is one).
type CheckStore interface {
	CheckResult(ctx context.Context, name string, failing bool, detail string, every time.Duration, channel string) error
	Checks() []sample.Check
}

// Checker runs the checks, one goroutine each, and records each result
// in the store, which writes what changed (engine.DB.CheckResult).
type Checker struct {
	store  CheckStore
	checks []*Check
	logger *slog.Logger
	client *http.Client
	mu     sync.Mutex // guards info
	info   map[string]*sample.CheckInfo
}

// NewChecker runs checks against store.
func NewChecker(store CheckStore, checks []*Check, logger *slog.Logger) *Checker {
	c := &Checker{store: store, checks: checks, logger: logger, info: map[string]*sample.CheckInfo{},
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	stored := map[string]sample.Check{}
	for _, s := range store.Checks() {
		stored[s.Name] = s
	}
	for _, ch := range checks {
		st := stored[ch.Name]
		st.Name, st.Every, st.Channel = ch.Name, ch.Every, ch.Channel
		c.info[ch.Name] = &sample.CheckInfo{Check: st, URL: ch.URL, Expect: ch.Expect}
	}
	return c
}

// Status returns every check as it stands, by name.
func (c *Checker) Status() []sample.CheckInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]sample.CheckInfo, 0, len(c.checks))
	for _, ch := range c.checks {
		out = append(out, *c.info[ch.Name])
	}
	return out
}

// Run runs every check until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ch := range c.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.loop(ctx, ch)
		}()
	}
	wg.Wait()
}

func (c *Checker) loop(ctx context.Context, ch *Check) {
	t := time.NewTicker(ch.Every)
	defer t.Stop()
	for {
		c.once(ctx, ch)
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// once runs ch and records its result; a panic is caught and counted.
func (c *Checker) once(ctx context.Context, ch *Check) {
	defer boundary.Recover("check", c.logger, nil)
	detail, err := c.probe(ctx, ch)
	if ctx.Err() != nil {
		return // shutting down: not a failure of the service
	}
	failing := err != nil
	if failing {
		detail = err.Error()
	}
	now := time.Now().UnixMilli()
	c.mu.Lock()
	in := c.info[ch.Name]
	in.LastRun = now
	if !failing {
		in.LastPass = now
	}
	if in.Failing != failing || in.Since == 0 {
		in.Failing, in.Since, in.Detail = failing, now, detail
	}
	c.mu.Unlock()
	if err := c.store.CheckResult(ctx, ch.Name, failing, detail, ch.Every, ch.Channel); err != nil {
		c.logger.Warn("recording a check result", "check", ch.Name, "err", err)
	}
}

// probe GETs ch's URL; an error says why it did not pass.
func (c *Checker) probe(ctx context.Context, ch *Check) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, ch.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ch.URL, nil)
	if err != nil {
		return "", fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("User-Agent", "sonde-check")
	// What it says goes into events anyone can list: the URL without its
	// path and query, which may hold a token, as for webhooks.
	target := safeurl.Redact(req.URL)
	resp, err := c.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", target, safeurl.Cause(err))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != ch.Expect {
		return "", fmt.Errorf("GET %s: %s, want %d", target, resp.Status, ch.Expect)
	}
	return resp.Status, nil
}
