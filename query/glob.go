package query

// Glob is a key pattern: '*' matches any run of bytes (slashes and dots
// included), '?' one byte, and '\' makes the next byte literal.
type Glob string

// Match reports whether key matches the pattern.
func (g Glob) Match(key string) bool {
	p := string(g)
	// Iterative matching with one backtrack point, linear in practice.
	var starP, starK = -1, 0
	i, k := 0, 0
	for k < len(key) {
		if i < len(p) {
			switch c := p[i]; c {
			case '*':
				starP, starK = i, k
				i++
				continue
			case '?':
				i++
				k++
				continue
			case '\\':
				if i+1 < len(p) && p[i+1] == key[k] {
					i += 2
					k++
					continue
				}
			default:
				if c == key[k] {
					i++
					k++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starK++
		i, k = starP+1, starK
	}
	for i < len(p) && p[i] == '*' {
		i++
	}
	return i == len(p)
}
