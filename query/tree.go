package query

import (
	"slices"
	"strings"
)

// Graphite patterns are answered by walking the key hierarchy, as
// Graphite walks its tree of directories, over the store's sorted key
// index: the children of a node "a.b." are read from the first key after
// it, starting again past each child's subtree (Store.Keys), so a level
// costs a read per child there, and a literal level costs nothing. /render of one exact path is one short scan; a.b.* costs the
// children of a.b; the number of series elsewhere does not count.
//
// A pattern whose {a,b} alternatives or [...] classes hold a dot does
// not split into levels: it is matched against every key under its
// literal prefix instead.

// graphitePattern is a compiled Graphite path pattern.
type graphitePattern struct {
	whole  *nfa     // the name matcher: the final word on every key
	prefix string   // the literal start of every name it matches
	levels []*level // nil when the pattern does not split into levels
}

// level is one dot-separated level of a pattern.
type level struct {
	text   string
	fixed  bool   // no wildcard: text is the segment
	prefix string // the literal start of the segment
	m      *nfa
}

// wildcards are the bytes that make a Graphite pattern more than a
// literal ('}' and ',' only mean something after a '{').
const wildcards = "*?[{"

func compileGraphite(pattern string) (*graphitePattern, error) {
	whole, err := graphiteGlob(pattern)
	if err != nil {
		return nil, err
	}
	p := &graphitePattern{whole: whole, prefix: literalPrefix(pattern)}
	texts, ok := splitLevels(pattern)
	if !ok {
		return p, nil
	}
	for _, t := range texts {
		lv := &level{text: t, prefix: literalPrefix(t)}
		lv.fixed = len(lv.prefix) == len(t)
		if !lv.fixed {
			if lv.m, err = graphiteGlob(t); err != nil {
				return nil, err
			}
		}
		p.levels = append(p.levels, lv)
	}
	return p, nil
}

func literalPrefix(pattern string) string {
	if i := strings.IndexAny(pattern, wildcards); i >= 0 {
		return pattern[:i]
	}
	return pattern
}

// splitLevels splits pattern at the dots outside {} and []; false when a
// dot is inside them, or the pattern holds a ';' (which no name does: the
// walk would take tags for a name).
func splitLevels(pattern string) ([]string, bool) {
	if strings.IndexByte(pattern, ';') >= 0 {
		return nil, false
	}
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(pattern); i++ {
		switch pattern[i] {
		case '[':
			j := strings.IndexByte(pattern[i:], ']')
			if j < 0 || strings.IndexByte(pattern[i:i+j], '.') >= 0 {
				return nil, false
			}
			i += j
		case '{':
			depth++
		case '}':
			depth--
		case '.':
			if depth > 0 {
				return nil, false
			}
			out = append(out, pattern[start:i])
			start = i + 1
		}
	}
	return append(out, pattern[start:]), true
}

// walker walks the key hierarchy of a store. check is called every
// walkCheck keys read, and ends the walk with its error (a client gone, a
// read over its time).
type walker struct {
	store keyIndex
	check func() error
	steps int
	err   error
}

const walkCheck = 1024

// keys is the store's Keys, counting the keys read for check.
func (w *walker) keys(from string, fn func(key string) bool) {
	if w.err != nil {
		return
	}
	w.store.Keys(from, func(k string) bool {
		if w.steps++; w.steps%walkCheck == 0 {
			if w.err = w.check(); w.err != nil {
				return false
			}
		}
		return fn(k)
	})
}

// seek returns the smallest key at or after from.
func (w *walker) seek(from string) (key string, ok bool) {
	w.keys(from, func(k string) bool { key, ok = k, true; return false })
	return key, ok
}

// node is what the keys say of a path: a key's name is the path (leaf),
// or goes on below it (branch).
type node struct{ leaf, branch bool }

// children calls visit for the children of the node whose path is parent
// ("" for the root, else ending in '.') that start with prefix: each
// child's segment once per kind of key it was seen in, in key order. A
// run of leaves is read in one pass; the keys below a child, or its
// tagged keys, are skipped by starting again after them.
func (w *walker) children(parent, prefix string, visit func(seg string, n node)) {
	start := parent + prefix
	for from, more := start, true; more; {
		more = false
		w.keys(from, func(k string) bool {
			if !strings.HasPrefix(k, start) {
				return false
			}
			rest := k[len(parent):]
			end := strings.IndexAny(rest, ".;")
			switch {
			case end < 0: // the key is the child's name
				visit(rest, node{leaf: true})
				return true
			case rest[end] == ';': // the child's name with tags: skip them all
				visit(rest[:end], node{leaf: true})
				from = parent + rest[:end] + "<" // ';'+1
			default: // keys below the child: skip its subtree
				visit(rest[:end], node{branch: true})
				from = parent + rest[:end] + "/" // '.'+1
			}
			more = true
			return false
		})
	}
}

// nodeOf says what the keys say of one path.
// Its keys are not together in byte order: "a.b", then maybe "a.b-x",
// then "a.b.c", "a.b0", then "a.b;t=1".
func (w *walker) nodeOf(path string) node {
	var n node
	k, _ := w.seek(path)
	n.leaf = k == path
	n.branch = strings.HasPrefix(k, path+".")
	if !n.branch {
		k, _ = w.seek(path + ".")
		n.branch = strings.HasPrefix(k, path+".")
	}
	if !n.leaf {
		k, _ = w.seek(path + ";")
		n.leaf = strings.HasPrefix(k, path+";")
	}
	return n
}

// nodes returns the paths at the pattern's last level that it matches,
// sorted, with what the keys say of each; at most limit of them (then
// full is true). It needs p.levels. With leaves, only leaves are asked
// for, and a literal last level is not looked up: its path is returned as
// a leaf that may have no key, for the caller's scan of its keys to find.
func (w *walker) nodes(p *graphitePattern, limit int, leaves bool) (paths []string, kinds map[string]node, full bool) {
	kinds = map[string]node{}
	parents := []string{""}
	for i, lv := range p.levels {
		last := i == len(p.levels)-1
		var next []string
		for _, parent := range parents {
			if lv.fixed {
				if !last {
					next = append(next, parent+lv.text+".")
					continue
				}
				path := parent + lv.text
				if !p.whole.MatchString(path) {
					continue
				}
				if leaves {
					kinds[path] = node{leaf: true}
				} else if n := w.nodeOf(path); n.leaf || n.branch {
					kinds[path] = n
				}
				continue
			}
			seen := map[string]node{}
			var order []string
			w.children(parent, lv.prefix, func(seg string, n node) {
				old, ok := seen[seg]
				if !ok {
					order = append(order, seg)
				}
				seen[seg] = node{leaf: old.leaf || n.leaf, branch: old.branch || n.branch}
			})
			for _, seg := range order {
				n := seen[seg]
				if !lv.m.MatchString(seg) {
					continue
				}
				if !last {
					if n.branch {
						next = append(next, parent+seg+".")
					}
					continue
				}
				if path := parent + seg; (n.leaf || !leaves) && p.whole.MatchString(path) {
					kinds[path] = n
				}
			}
			if len(kinds) > limit {
				return nil, nil, true
			}
		}
		if w.err != nil {
			return nil, nil, false
		}
		parents = next
	}
	for path := range kinds {
		paths = append(paths, path)
	}
	slices.Sort(paths)
	return paths, kinds, false
}
