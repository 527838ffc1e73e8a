package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/glo"
	"github.com/sonde-metrics/sonde/ingest/internal/safeurl"
)

// EventAppender records status events (engine.DB is one).
type EventAppender interface {
	AppendEvents(ctx context.Context, evs []sample.Event) error
}

// GloPollOptions configure a GloPoller.
type GloPollOptions struct {
	// URL is the glo document's address, e.g. http://127.0.0.1:22201/.
	URL string
	// Prefix starts the key of every value: <Prefix>.<name>.<tag>.
	Prefix string
	// Every is the poll interval; default 1 s. Timeout bounds one poll;
	// default Every, at most 10 s.
	Every, Timeout time.Duration
	// MaxBody bounds a document's bytes (default 4 MiB), MaxItems its
	// values (default 10,000); past MaxBody a poll fails, past MaxItems
	// the rest are skipped. MaxSeries bounds the series one poller
	// writes (default 10,000): a document whose names change at each
	// poll cannot fill the store's -max-series; values of new names past
	// it are skipped and counted (refused).
	MaxBody   int64
	MaxItems  int
	MaxSeries int
	// Token, when set, is sent as a bearer token; TLS, when set, holds
	// the CAs trusted (nil: the system's).
	Token  string
	TLS    *tls.Config
	Logger *slog.Logger
}

// GloPollStats counts what a GloPoller did.
type GloPollStats struct {
	Polls    int64  `json:"polls"`
	Failures int64  `json:"failures"`
	Outages  int64  `json:"outages"` // runs of failures
	Failing  bool   `json:"failing"`
	Stale    int64  `json:"stale"`   // documents with the timestamp of the one before: nothing new
	Written  int64  `json:"written"` // values written
	Refused  int64  `json:"refused"` // values the store refused (a bad key, a time before the newest point)
	Skipped  int64  `json:"skipped"` // items that are not numbers or have an unknown tag
	Error    string `json:"error,omitempty"`
}

// GloPoller reads a glo document every Every and writes each numeric
// value as a series (glo.go: count and total-duration-us as COUNTERs, the
// other tags as GAUGEs) at the document's timestamp. A failing poll is
// counted; the first failure after a success (or the first poll) is
// recorded as an event of service Prefix, and so is the first success
// after failures: one pair of events per outage.
type GloPoller struct {
	opts   GloPollOptions
	app    Appender
	events EventAppender // nil: no events
	client *http.Client
	shown  string // the URL as events and logs show it: no userinfo, path or query

	mu    sync.Mutex
	stats GloPollStats
	last  int64 // the timestamp of the last document written

	keys map[string]bool // the keys it wrote (poll's), at most MaxSeries
}

// NewGloPoller checks opts and returns a poller; events may be nil.
func NewGloPoller(opts GloPollOptions, app Appender, events EventAppender) (*GloPoller, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-glo-poll of %s: want an http:// or https:// URL with a host", opts.Prefix)
	}
	if err := CheckFollowName(opts.Prefix); err != nil {
		return nil, fmt.Errorf("-glo-poll prefix: %w", err)
	}
	if opts.Every <= 0 {
		opts.Every = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = min(opts.Every, 10*time.Second)
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = 4 << 20
	}
	if opts.MaxItems <= 0 {
		opts.MaxItems = 10_000
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = 10_000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &GloPoller{opts: opts, app: app, events: events, shown: safeurl.Redact(u), keys: map[string]bool{},
		client: &http.Client{Timeout: opts.Timeout,
			Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxResponseHeaderBytes: 64 << 10, MaxIdleConns: 2,
				IdleConnTimeout: time.Minute, ResponseHeaderTimeout: opts.Timeout, TLSClientConfig: opts.TLS},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return errors.New("glo documents are not followed through redirects")
			}}}, nil
}

// URL is the polled address as logs and events show it: its scheme and
// host (a path or query may hold a token).
func (p *GloPoller) URL() string { return p.shown }

// Stats returns the poller's counters.
func (p *GloPoller) Stats() GloPollStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Run polls until ctx ends.
func (p *GloPoller) Run(ctx context.Context) {
	tick := time.NewTicker(p.opts.Every)
	defer tick.Stop()
	for {
		p.pollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pollOnce polls, writes and records the outcome; a panic is caught here.
func (p *GloPoller) pollOnce(ctx context.Context) {
	defer boundary.Recover("glo-poll", p.opts.Logger, nil)
	err := p.poll(ctx)
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	p.stats.Polls++
	was := p.stats.Failing
	p.stats.Failing = err != nil
	if err != nil {
		p.stats.Failures++
		p.stats.Error = err.Error()
		if !was {
			p.stats.Outages++
		}
	} else {
		p.stats.Error = ""
	}
	p.mu.Unlock()
	switch {
	case err != nil && !was:
		p.opts.Logger.Warn("glo poll failing", "url", p.shown, "err", err)
		p.event(sample.LevelWarning, fmt.Sprintf("glo document %s is failing: %v", p.shown, err))
	case err == nil && was:
		p.opts.Logger.Info("glo poll answers again", "url", p.shown)
		p.event(sample.LevelBack, fmt.Sprintf("glo document %s answers again", p.shown))
	}
}

func (p *GloPoller) event(level int64, msg string) {
	if p.events == nil {
		return
	}
	ev := []sample.Event{{Service: p.opts.Prefix, Level: level, Message: msg}}
	if err := p.events.AppendEvents(context.Background(), ev); err != nil {
		p.opts.Logger.Warn("glo poll event not recorded", "err", err)
	}
}

func (p *GloPoller) poll(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.opts.URL, nil)
	if err != nil {
		return fmt.Errorf("make request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if p.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.opts.Token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("get: %w", safeurl.Cause(err)) // without the URL, which may hold a token
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.opts.MaxBody+1))
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if int64(len(body)) > p.opts.MaxBody {
		return fmt.Errorf("read: the document is larger than %d bytes", p.opts.MaxBody)
	}
	doc, err := glo.Parse(body, p.opts.MaxItems)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	p.mu.Lock()
	p.stats.Skipped += int64(doc.Skipped)
	stale := doc.Time != 0 && doc.Time == p.last
	if stale {
		p.stats.Stale++
	}
	p.mu.Unlock()
	if stale || len(doc.Items) == 0 {
		return nil
	}
	ops := make([]sample.Op, 0, len(doc.Items))
	unbounded := int64(0)
	for _, it := range doc.Items {
		op := sample.Op{Code: sample.Set, Key: p.opts.Prefix + "." + it.Name + "." + it.Tag, Value: it.Value, Time: doc.Time}
		if it.Counter {
			op.Code = sample.CounterSet
		}
		if !p.keys[op.Key] {
			if len(p.keys) >= p.opts.MaxSeries {
				unbounded++
				continue
			}
			p.keys[op.Key] = true
		}
		ops = append(ops, op)
	}
	if len(ops) == 0 {
		p.mu.Lock()
		p.stats.Refused += unbounded
		p.mu.Unlock()
		return nil
	}
	errs := make([]error, len(ops))
	if err := p.app.AppendUnacked(ctx, ops, errs); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	written, refused := int64(0), unbounded
	for i, err := range errs {
		if err == nil {
			written++
			continue
		}
		refused++
		if refused == 1 {
			p.opts.Logger.Debug("glo value refused", "key", ops[i].Key, "err", err)
		}
	}
	p.mu.Lock()
	p.stats.Written += written
	p.stats.Refused += refused
	p.last = doc.Time
	p.mu.Unlock()
	return nil
}

// GloPrefix is the default prefix of a polled document's keys:
// glo.<host>_<port>, the host's dots and colons made '_'.
func GloPrefix(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "glo"
	}
	host := strings.NewReplacer(".", "_", ":", "_", "[", "", "]", "").Replace(u.Host)
	return "glo." + host
}
