package query

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestGraphiteTime(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for in, want := range map[string]int64{
		"": 1_700_000_000 - 86400, "now": 1_700_000_000, "1600000000": 1_600_000_000,
		"-30s": 1_700_000_000 - 30, "-5min": 1_700_000_000 - 300, "-6h": 1_700_000_000 - 6*3600,
		"-2d": 1_700_000_000 - 2*86400, "-1w": 1_700_000_000 - 7*86400, "-1mon": 1_700_000_000 - 30*86400,
		"-1y": 1_700_000_000 - 365*86400, "now-1h": 1_700_000_000 - 3600, "-3hours": 1_700_000_000 - 3*3600,
	} {
		got, err := graphiteTime(in, "-24h", now)
		if err != nil || got != want {
			t.Errorf("graphiteTime(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-h", "-5parsecs", "+1h"} {
		if _, err := graphiteTime(bad, "now", now); err == nil {
			t.Errorf("graphiteTime(%q): no error", bad)
		}
	}
}

func TestGraphiteGlob(t *testing.T) {
	for pattern, cases := range map[string]map[string]bool{
		"a.*.c":      {"a.b.c": true, "a.bb.c": true, "a.b.x.c": false, "a..c": true, "a.b.cd": false},
		"a.b?":       {"a.bc": true, "a.b": false, "a.b.": false},
		"a.{x,yz}.c": {"a.x.c": true, "a.yz.c": true, "a.y.c": false},
		"a.[0-9]":    {"a.5": true, "a.x": false},
		"a+b.c":      {"a+b.c": true, "aab.c": false},
	} {
		re, err := graphiteGlob(pattern)
		if err != nil {
			t.Fatalf("%s: %v", pattern, err)
		}
		for key, want := range cases {
			if re.MatchString(key) != want {
				t.Errorf("%s ~ %s: %v, want %v", pattern, key, !want, want)
			}
		}
	}
	for _, bad := range []string{"a.[b", "a.{b", "a.}b"} {
		if _, err := graphiteGlob(bad); err == nil {
			t.Errorf("graphiteGlob(%q): no error", bad)
		}
	}
}

// Patterns come from clients: any string gives a matcher or an error.
func FuzzGraphiteGlob(f *testing.F) {
	for _, s := range []string{"a.*.c", "{a,b}.[0-9]?", "[", "}", "a.{b,{c,d}}", "(.*)+\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pattern string) {
		re, err := graphiteGlob(pattern)
		if err != nil {
			return
		}
		// A pattern without metacharacters matches itself.
		if !strings.ContainsAny(pattern, "*?[]{},") && !re.MatchString(pattern) {
			t.Fatalf("%q does not match itself", pattern)
		}
	})
}

// FuzzGraphiteTime: any from/until a client sends is an error or a time
// between 1970 and the year 9999, never a panic or a wrapped-around value.
func FuzzGraphiteTime(f *testing.F) {
	for _, s := range []string{"-9223372036854775808", "now-9999999999999999y", "-24h", "now", "1795327142", "-5min",
		"99999999999999999999", "-99999999999999999999y", "now-", "-0s", "9223372036854775807"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		v, err := graphiteTime(s, "now", now)
		if err != nil {
			return
		}
		if v < minTime/1000 || v > maxTime/1000 {
			t.Fatalf("graphiteTime(%q) = %d, outside 1970..9999", s, v)
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 && n <= maxTime/1000 && v != n {
			t.Fatalf("graphiteTime(%q) = %d", s, v)
		}
	})
}
