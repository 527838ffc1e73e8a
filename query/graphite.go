package query

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// The Graphite-compatible read API that Grafana's Graphite data source
// speaks (docs/graphite-api.md):
//
//	/render?target=...&from=&until=&format=json&maxDataPoints=  (GET or POST form)
//	/metrics/find?query=...                                    (GET or POST form)
//
// Targets are series paths with Graphite's globs ('*' within one node,
// '?', [set], {a,b}); of Graphite's functions only constantLine(n), which
// Grafana's health check sends, is known.

// graphiteArgs returns the value of name from the query string, else from
// a form body.
func graphiteArgs(ctx *fasthttp.RequestCtx, name string) [][]byte {
	if v := ctx.QueryArgs().PeekMulti(name); len(v) > 0 {
		return v
	}
	return ctx.PostArgs().PeekMulti(name)
}

func graphiteArg(ctx *fasthttp.RequestCtx, name string) string {
	if v := graphiteArgs(ctx, name); len(v) > 0 {
		return string(v[len(v)-1])
	}
	return ""
}

// graphiteTime parses Graphite's from/until: Unix seconds, "now", or
// "-<n><unit>" (s, min, h, d, w, mon, y) before now; s is the default
// when empty. The result is clamped to [minTime, maxTime] in seconds, so
// that no arithmetic on it overflows: "-9223372036854775808" is 1970 and
// "now-9999999999999999y" too.
func graphiteTime(s, def string, now time.Time) (int64, error) {
	const lo, hi = minTime / 1000, maxTime / 1000
	if s == "" {
		s = def
	}
	if s == "now" {
		return min(max(now.Unix(), lo), hi), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return min(max(n, lo), hi), nil
	} else if errors.Is(err, strconv.ErrRange) {
		if strings.HasPrefix(s, "-") {
			return lo, nil
		}
		return hi, nil
	}
	rest, _ := strings.CutPrefix(s, "now")
	rest, neg := strings.CutPrefix(rest, "-")
	if !neg {
		return 0, fmt.Errorf("time %q is not Unix seconds, now or -<n><unit>", s)
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("time %q has no number of units", s)
	}
	n, err := strconv.ParseInt(rest[:i], 10, 64)
	if err != nil {
		n = math.MaxInt64 // more digits than int64 holds: long before 1970
	}
	var unit int64
	switch u := rest[i:]; {
	case u == "s" || strings.HasPrefix(u, "sec"):
		unit = 1
	case u == "min" || strings.HasPrefix(u, "minute"):
		unit = 60
	case u == "h" || strings.HasPrefix(u, "hour"):
		unit = 3600
	case u == "d" || strings.HasPrefix(u, "day"):
		unit = 86400
	case u == "w" || strings.HasPrefix(u, "week"):
		unit = 7 * 86400
	case u == "mon" || strings.HasPrefix(u, "month"):
		unit = 30 * 86400
	case u == "y" || strings.HasPrefix(u, "year"):
		unit = 365 * 86400
	default:
		return 0, fmt.Errorf("time %q has an unknown unit (want s, min, h, d, w, mon or y)", s)
	}
	nowSec := min(max(now.Unix(), lo), hi)
	if n > (nowSec-lo)/unit {
		return lo, nil
	}
	return nowSec - n*unit, nil
}

// graphiteGlob turns a Graphite path pattern into a regexp over the name
// part of a key (before any ';tags'), compiled to a matcher linear in the
// name's length (glob.go).
func graphiteGlob(pattern string) (*nfa, error) {
	if len(pattern) > MaxGlobLen {
		return nil, fmt.Errorf("pattern is %d bytes; at most %d", len(pattern), MaxGlobLen)
	}
	if !utf8.ValidString(pattern) {
		return nil, fmt.Errorf("pattern %q is not UTF-8", pattern)
	}
	var b strings.Builder
	b.WriteString("^")
	depth := 0
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			b.WriteString(`[^.]*`)
		case '?':
			b.WriteString(`[^.]`)
		case '[':
			j := strings.IndexByte(pattern[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("pattern %q: [ without ]", pattern)
			}
			b.WriteString(pattern[i : i+j+1])
			i += j
		case '{':
			depth++
			b.WriteString("(?:")
		case '}':
			if depth == 0 {
				return nil, fmt.Errorf("pattern %q: } without {", pattern)
			}
			depth--
			b.WriteString(")")
		case ',':
			if depth > 0 {
				b.WriteString("|")
			} else {
				b.WriteString(",")
			}
		default:
			b.WriteString(regexp.QuoteMeta(pattern[i : i+1])) // a byte; multi-byte runes rejoin
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("pattern %q: { without }", pattern)
	}
	b.WriteString("$")
	return graphiteNFA(pattern, b.String())
}

// appendTags writes a series' "tags" as Graphite does: its name, and
// each tag of a key "name;tag=value;...".
func appendTags(b []byte, key string) []byte {
	name, rest, tagged := strings.Cut(key, ";")
	b = append(b, `,"tags":{"name":`...)
	b = appendString(b, name)
	for tagged {
		var pair string
		pair, rest, tagged = strings.Cut(rest, ";")
		if k, v, ok := strings.Cut(pair, "="); ok && k != "" && k != "name" {
			b = append(b, ',')
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, v)
		}
	}
	return append(b, '}')
}

func keyName(key string) string {
	name, _, _ := strings.Cut(key, ";")
	return name
}

var constantLine = regexp.MustCompile(`^constantLine\(\s*(-?[0-9.eE+-]+)\s*\)$`)

func (s *Server) render(ctx *fasthttp.RequestCtx) {
	now := time.Now()
	from, err := graphiteTime(graphiteArg(ctx, "from"), "-24h", now)
	if err == nil {
		var until int64
		until, err = graphiteTime(graphiteArg(ctx, "until"), "now", now)
		if err == nil {
			s.renderRange(ctx, from, until)
			return
		}
	}
	writeError(ctx, fasthttp.StatusBadRequest, err.Error())
}

func (s *Server) renderRange(ctx *fasthttp.RequestCtx, from, until int64) {
	if f := graphiteArg(ctx, "format"); f != "" && f != "json" {
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("format=%s is not served (want json)", text([]byte(f))))
		return
	}
	if from >= until {
		writeError(ctx, fasthttp.StatusBadRequest, "from is not before until")
		return
	}
	step := int64(0) // seconds per point; 0 keeps the raw points
	if v := graphiteArg(ctx, "maxDataPoints"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("maxDataPoints=%q is not a whole number >= 0", text([]byte(v))))
			return
		}
		if n > 0 {
			step = max((until-from)/n, 1)
			if step*n < until-from {
				step++ // ceil without overflow: until-from is at most maxTime/1000
			}
		}
	}
	var targets []string
	for _, t := range graphiteArgs(ctx, "target") {
		targets = append(targets, strings.TrimSpace(string(t)))
	}
	s.bounded(ctx, func(r *read) error {
		b := []byte{'['}
		n := 0
		for _, target := range targets {
			err := s.renderTarget(r, target, from, until, step, func(name string, pts []sample.Point) error {
				if n > 0 {
					b = append(b, ',')
				}
				n++
				b = append(b, `{"target":`...)
				b = appendString(b, name)
				b = appendTags(b, name)
				b = append(b, `,"datapoints":[`...)
				for i, p := range pts {
					if i > 0 {
						b = append(b, ',')
					}
					b = append(b, '[')
					if math.IsNaN(p.V) {
						b = append(b, "null"...)
					} else {
						b = appendFloat(b, p.V)
					}
					b = append(b, ',')
					b = strconv.AppendInt(b, p.T, 10)
					b = append(b, ']')
				}
				b = append(b, "]}"...)
				return r.body(len(b))
			})
			if errors.Is(err, errTarget) {
				writeError(ctx, fasthttp.StatusBadRequest, err.Error())
				return nil
			}
			if err != nil {
				return err
			}
		}
		b = append(b, "]\n"...)
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
		return nil
	})
}

var errTarget = errors.New("bad target")

// renderTarget reads the series of one target and hands each to emit, its
// datapoints with T in seconds and NaN for a gap. The points of a series
// are given back to the read's budget once emitted: the answer's bytes
// bound what is kept.
func (s *Server) renderTarget(r *read, target string, from, until, step int64, emit func(name string, pts []sample.Point) error) error {
	if m := constantLine.FindStringSubmatch(target); m != nil {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return fmt.Errorf("%w: %s: %q is not a number", errTarget, target, m[1])
		}
		return emit(strconv.FormatFloat(v, 'g', -1, 64), []sample.Point{{T: from, V: v}, {T: until, V: v}})
	}
	var list []sample.Series
	if exprs, ok, err := seriesByTag(target); err != nil {
		return fmt.Errorf("%w: %w", errTarget, err)
	} else if ok {
		if list, err = s.taggedSeries(r, exprs); err != nil {
			return err
		}
	} else if i := strings.IndexByte(target, '('); i >= 0 {
		return fmt.Errorf("%w: %s: Graphite functions are not served, only series paths, seriesByTag and constantLine (function %s)", errTarget, text([]byte(target)), target[:i])
	} else {
		pat, err := compileGraphite(target)
		if err != nil {
			return fmt.Errorf("%w: %w", errTarget, err)
		}
		if list, err = s.graphiteSeries(r, pat); err != nil {
			return err
		}
	}
	if err := r.series(len(list)); err != nil {
		return err
	}
	slots := 0 // datapoints per series on the step grid
	if step > 0 {
		slots = int(min((until-from)/step+1, math.MaxInt32))
	}
	for _, se := range list {
		if err := r.alive(); err != nil {
			return err
		}
		mark := r.budget.Mark()
		if err := r.budget.Take(slots); err != nil {
			return err
		}
		pts, err := s.store.Range(r.ctx, se.Key, from*1000, until*1000+999, 0, nil)
		if errors.Is(err, sample.ErrNotFound) {
			r.budget.Rewind(mark)
			continue // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("render %s: %w", se.Key, err)
		}
		if step == 0 {
			if err := r.budget.Take(len(pts)); err != nil { // the copy in seconds
				return err
			}
		}
		if err := emit(se.Key, consolidate(pts, from, until, step)); err != nil {
			return err
		}
		r.budget.Rewind(mark)
	}
	return nil
}

// consolidate turns points (T in ms) into Graphite's datapoints (T in
// seconds): with step 0, every point; else one average per step from
// `from`, NaN where a step has none, as Graphite's consolidateBy(average)
// on a fixed grid.
func consolidate(pts []sample.Point, from, until, step int64) []sample.Point {
	if step == 0 {
		out := make([]sample.Point, len(pts))
		for i, p := range pts {
			out[i] = sample.Point{T: p.T / 1000, V: p.V}
		}
		return out
	}
	n := (until-from)/step + 1
	out := make([]sample.Point, n)
	for i := range out {
		out[i] = sample.Point{T: from + int64(i)*step, V: math.NaN()}
	}
	slot := func(p sample.Point) int64 { return sample.FloorStep(p.T/1000-from, step) / step }
	for i := 0; i < len(pts); {
		k, j := slot(pts[i]), i+1
		for j < len(pts) && slot(pts[j]) == k {
			j++
		}
		if k >= 0 && k < n {
			out[k].V = sample.Fold(sample.Avg, pts[i:j])
		}
		i = j
	}
	return out
}

// metricsFind answers /metrics/find?query=a.b.*: the nodes at the
// pattern's depth, each a leaf (a series ends there) and/or expandable
// (longer series go on), as Graphite lists them.
func (s *Server) metricsFind(ctx *fasthttp.RequestCtx) {
	q := graphiteArg(ctx, "query")
	if q == "" {
		writeError(ctx, fasthttp.StatusBadRequest, "query= is missing")
		return
	}
	depth := strings.Count(q, ".") + 1
	pat, err := compileGraphite(q)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	s.bounded(ctx, func(r *read) error { return s.find(ctx, r, pat, depth) })
}

// graphiteSeries lists the series whose name pat matches, in key order.
func (s *Server) graphiteSeries(r *read, pat *graphitePattern) ([]sample.Series, error) {
	list, full, err := graphiteKeys(s.store, pat, r.opts.MaxSeries, r.alive)
	if full {
		return nil, r.series(r.opts.MaxSeries + 1)
	}
	return list, err
}

// graphiteKeys lists the series whose name pat matches, in key order: by
// a walk of the key hierarchy when pat splits into levels (tree.go), else
// by matching every key under its literal prefix. full is true when there
// are more than limit.
func graphiteKeys(idx keyIndex, pat *graphitePattern, limit int, check func() error) (list []sample.Series, full bool, err error) {
	if pat.levels == nil {
		list = idx.Series(pat.prefix, func(k string) bool { return pat.whole.MatchString(keyName(k)) }, nil)
		return list, len(list) > limit, nil
	}
	w := &walker{store: idx, check: check}
	paths, kinds, full := w.nodes(pat, limit, true)
	if full || w.err != nil {
		return nil, full, w.err
	}
	for _, path := range paths {
		if !kinds[path].leaf {
			continue
		}
		list = idx.Series(path, func(k string) bool {
			return (len(k) == len(path) || k[len(path)] == ';') && pat.whole.MatchString(keyName(k))
		}, list)
		if len(list) > limit {
			return nil, true, nil
		}
	}
	// Paths sort as their keys do, but not their tagged keys: "a;t" comes
	// after "a-b".
	slices.SortFunc(list, func(a, b sample.Series) int { return strings.Compare(a.Key, b.Key) })
	return list, false, nil
}

// find lists the nodes at depth whose path pat matches.
func (s *Server) find(ctx *fasthttp.RequestCtx, r *read, pat *graphitePattern, depth int) error {
	var ids []string
	var nodes map[string]node
	if pat.levels != nil {
		w := &walker{store: s.store, check: r.alive}
		var full bool
		if ids, nodes, full = w.nodes(pat, r.opts.MaxSeries, false); full {
			return r.series(r.opts.MaxSeries + 1)
		}
		if w.err != nil {
			return w.err
		}
	} else {
		nodes = map[string]node{}
		s.store.Series(pat.prefix, func(k string) bool {
			parts := strings.SplitN(keyName(k), ".", depth+1)
			if len(parts) < depth {
				return false
			}
			id := strings.Join(parts[:depth], ".")
			if !pat.whole.MatchString(id) {
				return false
			}
			nd := nodes[id]
			if len(parts) > depth {
				nd.branch = true
			} else {
				nd.leaf = true
			}
			nodes[id] = nd
			return false // only walked for the names: nothing is copied
		}, nil)
		for id := range nodes {
			ids = append(ids, id)
		}
		slices.Sort(ids)
	}
	b := []byte{'['}
	n := 0
	entry := func(id string, leaf bool) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		text := id[strings.LastIndexByte(id, '.')+1:]
		l, e := "0", "1"
		if leaf {
			l, e = "1", "0"
		}
		b = append(b, `{"text":`...)
		b = appendString(b, text)
		b = append(b, `,"id":`...)
		b = appendString(b, id)
		b = append(b, `,"leaf":`+l+`,"expandable":`+e+`,"allowChildren":`+e+`}`...)
	}
	for _, id := range ids {
		if nodes[id].branch {
			entry(id, false)
		}
		if nodes[id].leaf {
			entry(id, true)
		}
		if err := r.body(len(b)); err != nil {
			return err
		}
	}
	b = append(b, "]\n"...)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
	return nil
}
