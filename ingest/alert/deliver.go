package alert

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sonde-metrics/sonde/engine/boundary"
	"github.com/sonde-metrics/sonde/engine/sample"
)

// Store is what delivery needs of the store (engine.DB is one).
type Store interface {
	// PendingAlerts appends the alerts waiting for delivery, by id.
	PendingAlerts(dst []sample.Alert) []sample.Alert
	// NotifyAlerts returns a channel closed once an alert is queued.
	NotifyAlerts() <-chan struct{}
	// AlertDone takes an alert off the queue and records note as an
	// event; AlertAttempt records note as the outcome of a failed try.
	AlertDone(ctx context.Context, id uint64, note string) error
	AlertAttempt(ctx context.Context, id uint64, note string) error
}

// Backoff between tries of one alert.
const (
	MinBackoff = time.Second
	MaxBackoff = 5 * time.Minute
)

// Deliverer sends the store's pending alerts through their channels, one
// at a time, oldest first, until each is taken; a failed try is retried
// after a backoff (1 s doubling to 5 min). An alert whose channel is no
// longer configured is dropped, and an event says so.
type Deliverer struct {
	store    Store
	channels map[string]*Channel
	logger   *slog.Logger
	retry    map[uint64]*backoff
	stats    struct{ delivered, failed, dropped atomic.Int64 }
}

type backoff struct {
	next     time.Time
	wait     time.Duration
	attempts int
}

// Stats are the Deliverer's counters.
type Stats struct {
	Delivered int64 `json:"delivered"`
	Failed    int64 `json:"failed_attempts"`
	Dropped   int64 `json:"dropped"`
	Channels  int   `json:"channels"`
}

// NewDeliverer delivers store's alerts through channels (by name).
func NewDeliverer(store Store, channels []*Channel, logger *slog.Logger) *Deliverer {
	d := &Deliverer{store: store, channels: map[string]*Channel{}, logger: logger, retry: map[uint64]*backoff{}}
	for _, c := range channels {
		d.channels[c.Name] = c
	}
	return d
}

// Stats returns the counters.
func (d *Deliverer) Stats() Stats {
	return Stats{Delivered: d.stats.delivered.Load(), Failed: d.stats.failed.Load(), Dropped: d.stats.dropped.Load(), Channels: len(d.channels)}
}

// Run delivers until ctx ends. A panic is caught and counted (under
// "alert"), and delivery goes on a second later: a bug must not stop
// every alert after it silently.
func (d *Deliverer) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if d.run(ctx) {
			return
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
}

// run delivers until ctx ends (true) or a panic (false).
func (d *Deliverer) run(ctx context.Context) (ended bool) {
	defer boundary.Recover("alert", d.logger, nil)
	var pending []sample.Alert
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := d.store.NotifyAlerts() // before the read: no alert is missed
		pending = d.store.PendingAlerts(pending[:0])
		var soonest time.Time
		live := map[uint64]bool{}
		for i := range pending {
			if ctx.Err() != nil {
				return true
			}
			a := &pending[i]
			live[a.ID] = true
			if b := d.retry[a.ID]; b != nil && time.Now().Before(b.next) {
				if soonest.IsZero() || b.next.Before(soonest) {
					soonest = b.next
				}
				continue
			}
			if next, ok := d.deliver(ctx, a); !ok && (soonest.IsZero() || next.Before(soonest)) {
				soonest = next
			}
		}
		for id := range d.retry {
			if !live[id] {
				delete(d.retry, id)
			}
		}
		var retryC <-chan time.Time
		if !soonest.IsZero() {
			timer.Reset(max(time.Until(soonest), 0))
			retryC = timer.C
		}
		select {
		case <-wait:
		case <-retryC:
		case <-ctx.Done():
			return true
		}
	}
}

// deliver tries a once. ok is false when it stays queued, to be tried
// again at next.
func (d *Deliverer) deliver(ctx context.Context, a *sample.Alert) (next time.Time, ok bool) {
	c := d.channels[a.Channel]
	if c == nil {
		if err := d.done(ctx, a, fmt.Sprintf("alert %d dropped: channel %q is not configured (-alert)", a.ID, a.Channel)); err != nil {
			return d.later(a), false
		}
		d.stats.dropped.Add(1)
		return time.Time{}, true
	}
	err := d.send(ctx, c, a)
	if err == nil {
		d.stats.delivered.Add(1)
		if err := d.done(ctx, a, fmt.Sprintf("alert %d (%s) delivered to %s (%s %s)", a.ID, a.Kind, c.Name, c.Kind, c.Target)); err != nil {
			return d.later(a), false // sent again, same id, once the store takes writes
		}
		delete(d.retry, a.ID)
		return time.Time{}, true
	}
	if ctx.Err() != nil {
		return time.Now(), false // shutting down: the alert stays queued for the next start
	}
	d.stats.failed.Add(1)
	next = d.later(a)
	b := d.retry[a.ID]
	note := fmt.Sprintf("alert %d (%s) to %s failed (attempt %d): %v; retry in %s", a.ID, a.Kind, c.Name, b.attempts, err, b.wait)
	d.logger.Warn("alert delivery failed", "id", a.ID, "channel", c.Name, "attempt", b.attempts, "err", err, "retry_in", b.wait)
	if err := d.store.AlertAttempt(ctx, a.ID, note); err != nil {
		d.logger.Warn("recording an alert attempt", "id", a.ID, "err", err)
	}
	return next, false
}

// later backs a's next try off and returns when it is.
func (d *Deliverer) later(a *sample.Alert) time.Time {
	b := d.retry[a.ID]
	if b == nil {
		b = &backoff{}
		d.retry[a.ID] = b
	}
	b.attempts++
	b.wait = min(max(2*b.wait, MinBackoff), MaxBackoff)
	b.next = time.Now().Add(b.wait)
	return b.next
}

// send calls the channel, a panic in it caught as an error.
func (d *Deliverer) send(ctx context.Context, c *Channel, a *sample.Alert) (err error) {
	defer boundary.Recover("alert", d.logger, func() { err = fmt.Errorf("internal error in the %s channel", c.Kind) })
	return c.Send(ctx, a)
}

// done takes a off the queue; an error leaves it queued.
func (d *Deliverer) done(ctx context.Context, a *sample.Alert, note string) error {
	d.logger.Info("alert done", "id", a.ID, "service", a.Service, "note", note)
	err := d.store.AlertDone(ctx, a.ID, note)
	if err != nil {
		d.logger.Warn("recording an alert as done", "id", a.ID, "err", err)
	}
	return err
}
