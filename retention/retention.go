// Package retention holds Sonde's retention policies: for each key pattern
// (first match wins), how long raw points are kept and which coarser
// archives (resolution:keep) they are averaged down into, Graphite style:
//
//	# pattern      archives                    aggregation
//	stats.timers.* raw:1d,1m:30d,1h:2y         max
//	*              raw:7d,1m:90d,1h:5y         avg
//
// The first archive is the raw points ("raw:7d"; a Graphite-style
// "10s:7d" means the same, Sonde keeping the points as they came); each
// later one has a coarser step and a longer keep. The aggregation folds a
// step's points into one: avg, sum, min, max or last. COUNTER series
// always keep the last cumulative value of a step, so rates over archives
// stay right. A key no pattern matches gets the default policy.
//
// The package is pure: it parses and matches; the engine's snapshotter
// applies the policies (docs/retention.md).
package retention

import (
	"bufio"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Agg folds the points of one archive step into one value.
type Agg = sample.Agg

// The aggregations.
const (
	Avg  = sample.Avg
	Sum  = sample.Sum
	Min  = sample.Min
	Max  = sample.Max
	Last = sample.Last
)

var aggNames = map[string]Agg{"avg": Avg, "average": Avg, "sum": Sum, "min": Min, "max": Max, "last": Last}

// Archive is one resolution of a policy.
type Archive = sample.Archive

// Policy is the retention of the keys one pattern matches.
type Policy struct {
	Pattern  string
	Raw      time.Duration // how long raw points are kept
	Archives []Archive     // coarser archives, finest first
	Agg      Agg
}

// DefaultText is the policy of every key when no file says otherwise.
const DefaultText = "* raw:7d,1m:90d,1h:5y avg"

// Policies is an ordered list of policies, the last matching everything.
type Policies struct {
	list []Policy
}

// Default returns the built-in policies (DefaultText).
func Default() *Policies {
	p, err := Parse(DefaultText)
	if err != nil {
		panic(fmt.Sprintf("retention: the default policy does not parse: %v", err))
	}
	return p
}

// For returns the policy of key and the aggregation to use for it: Last
// for a COUNTER.
func (p *Policies) For(key string, kind sample.Kind) (Policy, Agg) {
	name, _, _ := strings.Cut(key, ";")
	for _, pol := range p.list {
		if ok, _ := path.Match(pol.Pattern, name); ok || pol.Pattern == "*" {
			if kind == sample.Counter {
				return pol, Last
			}
			return pol, pol.Agg
		}
	}
	return Policy{}, 0 // unreachable: Parse ends every list with a catch-all
}

// Keep returns how key's history is kept: its policy, as the engine takes
// it (engine.Retention).
func (p *Policies) Keep(key string, kind sample.Kind) sample.Keep {
	pol, agg := p.For(key, kind)
	return sample.Keep{Raw: pol.Raw, Archives: pol.Archives, Agg: agg}
}

// List returns the policies in match order.
func (p *Policies) List() []Policy { return p.list }

// Parse reads policies, one per line: a pattern, the archives, and an
// optional aggregation (avg). Blank lines and # comments are skipped. A
// catch-all "*" is added from DefaultText when no line has one. The
// pattern is a path.Match glob over the name part of a key (before any
// ;tags), where * does not cross a '/' but does cross '.'.
func Parse(text string) (*Policies, error) {
	p := &Policies{}
	sc := bufio.NewScanner(strings.NewReader(text))
	n := 0
	catchAll := false
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("retention line %d: want a pattern, archives and an optional aggregation", n)
		}
		if _, err := path.Match(f[0], ""); err != nil {
			return nil, fmt.Errorf("retention line %d: pattern %q: %w", n, f[0], err)
		}
		pol := Policy{Pattern: f[0], Agg: Avg}
		if len(f) == 3 {
			a, ok := aggNames[f[2]]
			if !ok {
				return nil, fmt.Errorf("retention line %d: aggregation %q (want avg, sum, min, max or last)", n, f[2])
			}
			pol.Agg = a
		}
		if err := parseArchives(f[1], &pol); err != nil {
			return nil, fmt.Errorf("retention line %d: %w", n, err)
		}
		p.list = append(p.list, pol)
		catchAll = catchAll || pol.Pattern == "*"
	}
	if !catchAll {
		d := Default()
		p.list = append(p.list, d.list...)
	}
	return p, nil
}

func parseArchives(s string, pol *Policy) error {
	var prev Archive
	for i, a := range strings.Split(s, ",") {
		res, keep, ok := strings.Cut(a, ":")
		if !ok {
			return fmt.Errorf("archive %q is not resolution:keep", a)
		}
		k, err := ParseDuration(keep)
		if err != nil {
			return fmt.Errorf("archive %q: keep: %w", a, err)
		}
		if i == 0 {
			if res != "raw" {
				if _, err := ParseDuration(res); err != nil {
					return fmt.Errorf("archive %q: the first is the raw points: raw:<keep> or <resolution>:<keep>", a)
				}
			}
			pol.Raw = k
			prev = Archive{Keep: k}
			continue
		}
		step, err := ParseDuration(res)
		if err != nil {
			return fmt.Errorf("archive %q: resolution: %w", a, err)
		}
		if step < time.Second || step <= prev.Step || k <= prev.Keep || k < step {
			return fmt.Errorf("archive %q: each archive needs a coarser resolution (at least 1s) and a longer keep than the one before", a)
		}
		prev = Archive{Step: step, Keep: k}
		pol.Archives = append(pol.Archives, prev)
	}
	return nil
}

// ParseDuration reads Graphite's durations: a number and s, m (min), h,
// d, w or y (365 d).
func ParseDuration(s string) (time.Duration, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive whole number and a unit", s)
	}
	var unit time.Duration
	switch s[i:] {
	case "s":
		unit = time.Second
	case "m", "min":
		unit = time.Minute
	case "h":
		unit = time.Hour
	case "d":
		unit = 24 * time.Hour
	case "w":
		unit = 7 * 24 * time.Hour
	case "y":
		unit = 365 * 24 * time.Hour
	default:
		return 0, fmt.Errorf("%q: unit %q is not s, m, h, d, w or y", s, s[i:])
	}
	if n > int64(200*365*24*time.Hour/unit) {
		return 0, fmt.Errorf("%q is longer than 200 years", s)
	}
	return time.Duration(n) * unit, nil
}
