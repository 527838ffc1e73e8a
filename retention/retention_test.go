package retention

import (
	"strings"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestParseAndMatch(t *testing.T) {
	p, err := Parse(`
# timers keep their peaks
stats.timers.*  raw:1d,1m:30d,1h:2y  max
host*.cpu-*     10s:6h,5m:90d        # Graphite style: the first is raw
`)
	if err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	for _, c := range []struct {
		key  string
		kind sample.Kind
		raw  time.Duration
		arch []Archive
		agg  Agg
	}{
		{"stats.timers.api.mean", sample.Gauge, day, []Archive{{Step: time.Minute, Keep: 30 * day}, {Step: time.Hour, Keep: 2 * 365 * day}}, Max},
		{"stats.timers.api.mean;env=prod", sample.Gauge, day, []Archive{{Step: time.Minute, Keep: 30 * day}, {Step: time.Hour, Keep: 2 * 365 * day}}, Max},
		{"host1.cpu-0.idle", sample.Counter, 6 * time.Hour, []Archive{{Step: 5 * time.Minute, Keep: 90 * day}}, Last},
		{"other", sample.Gauge, 7 * day, []Archive{{Step: time.Minute, Keep: 90 * day}, {Step: time.Hour, Keep: 5 * 365 * day}}, Avg},
		{"a/b", sample.Gauge, 7 * day, []Archive{{Step: time.Minute, Keep: 90 * day}, {Step: time.Hour, Keep: 5 * 365 * day}}, Avg},
	} {
		pol, agg := p.For(c.key, c.kind)
		if pol.Raw != c.raw || agg != c.agg || len(pol.Archives) != len(c.arch) {
			t.Errorf("%s: %+v %s", c.key, pol, agg)
			continue
		}
		for i := range c.arch {
			if pol.Archives[i] != c.arch[i] {
				t.Errorf("%s: archive %d = %+v, want %+v", c.key, i, pol.Archives[i], c.arch[i])
			}
		}
	}
	if n := len(p.List()); n != 3 {
		t.Errorf("%d policies, want 2 and the default", n)
	}
}

func TestParseErrors(t *testing.T) {
	for text, want := range map[string]string{
		"*":                          "want a pattern",
		"* raw:1d extra more":        "want a pattern",
		"* raw:1d median":            "aggregation",
		"[ raw:1d":                   "pattern",
		"* raw":                      "resolution:keep",
		"* raw:1q":                   "unit",
		"* raw:0d":                   "positive",
		"* x:1d":                     "the first is the raw points",
		"* raw:1d,1m:1h,30s:2d":      "coarser resolution",
		"* raw:1d,1m:1d":             "longer keep",
		"* raw:1d,500ms:2d":          "unit \"ms\"",
		"* raw:99999999y":            "200 years",
		"* raw:1d,1h:2d\n* raw:1d,x": "line 2",
	} {
		if _, err := Parse(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", text, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(DefaultText)
	f.Add("a.* 10s:6h,1m:7d,10m:5y sum\n# c\n")
	f.Add("* raw:1d,1m:1h,30s:2d")
	f.Fuzz(func(t *testing.T, text string) {
		p, err := Parse(text)
		if err != nil {
			return
		}
		pol, agg := p.For("any.key", sample.Gauge)
		if pol.Raw <= 0 || agg == 0 {
			t.Fatalf("policy %+v %v for any.key from %q", pol, agg, text)
		}
		for i, a := range pol.Archives {
			if a.Step < time.Second || (i > 0 && (a.Step <= pol.Archives[i-1].Step || a.Keep <= pol.Archives[i-1].Keep)) {
				t.Fatalf("archives not ever coarser: %+v from %q", pol.Archives, text)
			}
		}
	})
}
