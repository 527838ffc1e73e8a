package query

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// Graphite tags: a key "name;tag=value;..." carries its tags, and a tag
// filter selects series by them, as Graphite's seriesByTag and
// /tags/findSeries do. Expressions:
//
//	tag=value    the tag is value ("name" is the part before the tags)
//	tag!=value   the tag is not value (a series without it passes)
//	tag=~re      the tag matches re, anchored at the start (Go's RE2)
//	tag!=~re     the tag does not match re
//
// At least one expression must select something on its own: = or =~ on a
// value the empty string does not match. The series come from the
// store's tag postings for that expression (the keys carrying one
// tag=value, or the values of one tag), or for name from the key index,
// and the other expressions are checked on those only, so a filter costs
// what its most selective expression reads, not the number of series.

// tagExpr is one parsed expression.
type tagExpr struct {
	tag, value string
	not        bool
	re         *regexp.Regexp // for =~ and !=~
}

// MaxTagExprs caps the expressions of one tag filter.
const MaxTagExprs = 64

func parseTagExprs(exprs []string) ([]tagExpr, error) {
	if len(exprs) == 0 {
		return nil, fmt.Errorf("no tag expression (expr=tag=value)")
	}
	if len(exprs) > MaxTagExprs {
		return nil, fmt.Errorf("%d tag expressions; at most %d", len(exprs), MaxTagExprs)
	}
	out := make([]tagExpr, 0, len(exprs))
	selects := false
	for _, e := range exprs {
		if len(e) > MaxGlobLen {
			return nil, fmt.Errorf("tag expression of %d bytes; at most %d", len(e), MaxGlobLen)
		}
		i := strings.IndexAny(e, "!=")
		if i <= 0 {
			return nil, fmt.Errorf("tag expression %q: want tag=value, tag!=value, tag=~regexp or tag!=~regexp", e)
		}
		x := tagExpr{tag: e[:i]}
		op := e[i:]
		switch {
		case strings.HasPrefix(op, "!=~"):
			x.not, x.value = true, op[3:]
		case strings.HasPrefix(op, "=~"):
			x.value = op[2:]
		case strings.HasPrefix(op, "!="):
			x.not, x.value = true, op[2:]
		case strings.HasPrefix(op, "="):
			x.value = op[1:]
		default:
			return nil, fmt.Errorf("tag expression %q: want tag=value, tag!=value, tag=~regexp or tag!=~regexp", e)
		}
		if strings.Contains(op[:min(len(op), 3)], "~") {
			re, err := regexp.Compile("^(?:" + x.value + ")")
			if err != nil {
				return nil, fmt.Errorf("tag expression %q: %w", e, err)
			}
			x.re = re
		}
		if strings.ContainsAny(x.tag, ";~!") || strings.ContainsRune(x.value, ';') {
			return nil, fmt.Errorf("tag expression %q: a tag or value holds ';', '~' or '!'", e)
		}
		selects = selects || x.selects()
		out = append(out, x)
	}
	if !selects {
		return nil, fmt.Errorf("no tag expression selects series on its own: one must be tag=value or tag=~regexp on a non-empty value")
	}
	return out, nil
}

// selects reports whether x alone narrows the series: it needs a value.
func (x *tagExpr) selects() bool {
	if x.not {
		return false
	}
	if x.re != nil {
		return !x.re.MatchString("")
	}
	return x.value != ""
}

func (x *tagExpr) matches(v string, has bool) bool {
	var ok bool
	if x.re != nil {
		ok = has && x.re.MatchString(v)
	} else {
		ok = has && v == x.value || !has && x.value == ""
	}
	return ok != x.not
}

// tagOf returns the value of tag in key ("name" is the part before ';').
func tagOf(key, tag string) (string, bool) {
	name, rest, tagged := strings.Cut(key, ";")
	if tag == "name" {
		return name, true
	}
	for tagged {
		var pair string
		pair, rest, tagged = strings.Cut(rest, ";")
		if k, v, ok := strings.Cut(pair, "="); ok && k == tag {
			return v, true
		}
	}
	return "", false
}

// tagStore is what a tag filter reads.
type tagStore interface {
	keyIndex
	Postings(from string, fn func(pair, key string) bool)
}

// taggedKeys returns the keys every expression accepts, sorted; full
// when there are more than limit. check is called every walkCheck keys.
func taggedKeys(st tagStore, exprs []tagExpr, limit int, check func() error) (keys []string, full bool, err error) {
	lead := leadExpr(st, exprs)
	x := &exprs[lead]
	seen := 0
	accept := func(key string) bool {
		if seen++; seen%walkCheck == 0 {
			if err = check(); err != nil {
				return false
			}
		}
		for i := range exprs {
			if v, has := tagOf(key, exprs[i].tag); !exprs[i].matches(v, has) {
				return true
			}
		}
		if len(keys) == limit {
			full = true
			return false
		}
		keys = append(keys, key)
		return true
	}
	switch {
	case x.tag == "name" && x.re == nil:
		exact := func(k string) bool { return len(k) == len(x.value) || k[len(x.value)] == ';' }
		for _, se := range st.Series(x.value, exact, nil) {
			if !accept(se.Key) {
				break
			}
		}
	case x.tag == "name":
		prefix, _ := x.re.LiteralPrefix()
		st.Keys(prefix, func(k string) bool { return strings.HasPrefix(k, prefix) && accept(k) })
	case x.re == nil:
		pair := x.tag + "=" + x.value
		st.Postings(pair, func(p, key string) bool { return p == pair && accept(key) })
	default:
		prefix, _ := x.re.LiteralPrefix()
		prefix = x.tag + "=" + prefix
		st.Postings(prefix, func(p, key string) bool { return strings.HasPrefix(p, prefix) && accept(key) })
	}
	slices.Sort(keys)
	return slices.Compact(keys), full, err
}

// leadExpr picks the expression whose reading is smallest: the exact
// values (a tag's postings, a name's keys) are counted side by side, up
// to a cap that doubles, until one is whole below it, so choosing costs
// about as many reads, per expression, as the smallest one holds; a
// regexp leads only when no exact value selects.
func leadExpr(st tagStore, exprs []tagExpr) int {
	var exact []int
	lead := -1
	for i := range exprs {
		switch {
		case !exprs[i].selects():
		case exprs[i].re == nil:
			exact = append(exact, i)
		case lead < 0:
			lead = i
		}
	}
	if len(exact) == 0 {
		return lead
	}
	if len(exact) == 1 {
		return exact[0]
	}
	count := func(x *tagExpr, limit int) int {
		n := 0
		if x.tag == "name" {
			st.Keys(x.value, func(k string) bool {
				if !strings.HasPrefix(k, x.value) {
					return false
				}
				n++ // every key read: what the name's reading costs
				return n < limit
			})
			return n
		}
		pair := x.tag + "=" + x.value
		st.Postings(pair, func(p, _ string) bool {
			if p != pair {
				return false
			}
			n++
			return n < limit
		})
		return n
	}
	for limit := 64; ; limit *= 2 {
		best, bestN := -1, limit
		for _, i := range exact {
			if n := count(&exprs[i], limit); n < bestN {
				best, bestN = i, n
			}
		}
		if best >= 0 {
			return best
		}
	}
}

// seriesByTag reads a render target seriesByTag('expr', ...): its
// quoted expressions; false when target is no seriesByTag call.
func seriesByTag(target string) ([]string, bool, error) {
	inner, ok := strings.CutPrefix(target, "seriesByTag(")
	if !ok {
		return nil, false, nil
	}
	inner, ok = strings.CutSuffix(inner, ")")
	if !ok {
		return nil, true, fmt.Errorf("%s: ) missing", target)
	}
	var exprs []string
	for _, a := range strings.Split(inner, ",") {
		a = strings.TrimSpace(a)
		if len(a) < 2 || (a[0] != '\'' && a[0] != '"') || a[len(a)-1] != a[0] {
			return nil, true, fmt.Errorf("%s: each argument is a quoted tag expression", target)
		}
		exprs = append(exprs, a[1:len(a)-1])
	}
	return exprs, true, nil
}

// findSeries serves Graphite's /tags/findSeries?expr=...&expr=...: the
// keys every expression accepts, as a sorted JSON array.
func (s *Server) findSeries(ctx *fasthttp.RequestCtx) {
	var args []string
	for _, a := range graphiteArgs(ctx, "expr") {
		args = append(args, string(a))
	}
	exprs, err := parseTagExprs(args)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	s.bounded(ctx, func(r *read) error {
		keys, full, err := taggedKeys(s.store, exprs, r.opts.MaxSeries, r.alive)
		if full {
			return r.series(r.opts.MaxSeries + 1)
		}
		if err != nil {
			return err
		}
		b := []byte{'['}
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			if err := r.body(len(b)); err != nil {
				return err
			}
		}
		writeJSON(ctx, append(b, "]\n"...))
		return nil
	})
}

// taggedSeries lists the series of a seriesByTag target, in key order.
func (s *Server) taggedSeries(r *read, args []string) ([]sample.Series, error) {
	exprs, err := parseTagExprs(args)
	if err != nil {
		return nil, fmt.Errorf("%w: seriesByTag: %w", errTarget, err)
	}
	keys, full, err := taggedKeys(s.store, exprs, r.opts.MaxSeries, r.alive)
	if full {
		return nil, r.series(r.opts.MaxSeries + 1)
	}
	if err != nil {
		return nil, err
	}
	list := make([]sample.Series, 0, len(keys))
	for _, k := range keys {
		if se, ok := s.store.Get(k); ok { // deleted meanwhile: left out
			list = append(list, se)
		}
	}
	return list, nil
}
