package bench

import (
	"context"
	"fmt"
)

// SoakConfig is a steady load, paced, for a while: against Sonde and then
// against the peer, each on a fresh data directory, each server's CPU
// time, RSS and data directory sampled every Pair.Idle.Every.
type SoakConfig struct {
	Load Config // Keys, Rate, Duration, Conns, Shape, Prefix; Count is not used
	// Protocol is what Sonde takes: "tcp" (acknowledged mesures SETs) or
	// "graphite" (plaintext). The peer always takes Graphite plaintext.
	Protocol string
	// Pair's Idle says how long to wait after the load for each server to
	// finish the work it deferred: the CPU it costs counts.
	Pair
}

// Soak runs the soak on Sonde, then on the peer.
func Soak(ctx context.Context, sc SoakConfig) ([]WatchedRun, error) {
	cfg := sc.Load
	if cfg.Rate <= 0 || cfg.Duration <= 0 {
		return nil, fmt.Errorf("soak: want a rate and a duration, got %v samples/s for %s", cfg.Rate, cfg.Duration)
	}
	if sc.Protocol == "" {
		sc.Protocol = "tcp"
	}
	if sc.Protocol != "tcp" && sc.Protocol != "graphite" {
		return nil, fmt.Errorf("soak: protocol %q: want tcp or graphite", sc.Protocol)
	}
	cfg.Count, cfg.Query = 0, ""
	cfg.setDefaults()
	sc.logf("== soak: %d keys at %v samples/s for %s", cfg.Keys, cfg.Rate, cfg.Duration)
	return sc.watchEach(ctx, "soak", cfg, sc.Protocol, false)
}
