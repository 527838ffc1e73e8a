package remotewrite

import (
	"fmt"
	"slices"
	"strings"
)

// Naming: a Sonde key "name;tag=value;..." (Graphite's tagged form, which
// DogStatsD tags also take, docs/statsd.md) becomes a series:
//
//   - __name__ is the name with every byte outside [a-zA-Z0-9_:] made '_',
//     and '_' put before a leading digit: "web.hits" → "web_hits",
//     "5xx.rate" → "_5xx_rate";
//   - each tag is a label, its name mapped the same way but without ':'
//     ("host-name" → "host_name"; a name that would begin with "__",
//     which Prometheus reserves, gets "tag" before it), its value as it is;
//   - when two tags map to one label name, the first (in the key's order)
//     wins and the others are left out;
//   - the external labels (-external-label k=v) are added to every series
//     that has no label of that name already.
//
// COUNTERs go with their cumulative total (what a Prometheus counter is:
// rate() and increase() work on it), GAUGEs with their value.

// label is one name=value pair of a series.
type label struct{ name, value string }

// Label is an external label, added to every series sent.
type Label struct{ Name, Value string }

// ParseLabel parses "name=value" as an external label. The name must be a
// valid Prometheus label name, not reserved.
func ParseLabel(s string) (Label, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok || value == "" {
		return Label{}, fmt.Errorf("external label %q: want name=value", s)
	}
	if !validLabelName(name) || strings.HasPrefix(name, "__") {
		return Label{}, fmt.Errorf("external label %q: the name must match [a-zA-Z_][a-zA-Z0-9_]* and not begin with __", s)
	}
	return Label{Name: name, Value: value}, nil
}

func validLabelName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// MetricName maps a key's name part to a Prometheus metric name.
func MetricName(name string) string { return clean(name, true) }

// clean maps s to the Prometheus name set: [a-zA-Z_:][a-zA-Z0-9_:]* for a
// metric name (colon), [a-zA-Z_][a-zA-Z0-9_]* for a label name.
func clean(s string, colon bool) string {
	var b strings.Builder
	b.Grow(len(s) + 1)
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		b.WriteByte('_')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || colon && c == ':' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// labelsOf returns the labels of key, sorted by name, with the external
// labels ext added.
func labelsOf(key string, ext []Label) []label {
	name, tags, _ := strings.Cut(key, ";")
	out := make([]label, 0, 1+strings.Count(tags, ";")+1+len(ext))
	out = append(out, label{"__name__", MetricName(name)})
	has := func(n string) bool {
		for _, l := range out {
			if l.name == n {
				return true
			}
		}
		return false
	}
	for tags != "" {
		var tag string
		tag, tags, _ = strings.Cut(tags, ";")
		k, v, _ := strings.Cut(tag, "=")
		if k == "" || v == "" {
			continue // Prometheus has no empty label value: an empty one is no label
		}
		n := clean(k, false)
		if strings.HasPrefix(n, "__") {
			n = "tag" + n
		}
		if !has(n) {
			out = append(out, label{n, v})
		}
	}
	for _, e := range ext {
		if !has(e.Name) {
			out = append(out, label{e.Name, e.Value})
		}
	}
	slices.SortFunc(out, func(a, b label) int { return strings.Compare(a.name, b.name) })
	return out
}
