//go:build sondetest

package boundary

import (
	"bytes"
	"fmt"
)

// Injecting reports whether Inject is compiled in (the sondetest tag).
const Injecting = true

// Inject panics when input holds [Marker], alone or followed by "." and
// where. It is compiled in only with the build tag sondetest.
func Inject(where string, input []byte) {
	for rest := input; ; {
		i := bytes.Index(rest, []byte(Marker))
		if i < 0 {
			return
		}
		rest = rest[i+len(Marker):]
		if target := aim(rest); target == "" || target == where {
			panic(fmt.Sprintf("%s injected at %s", Marker, where))
		}
	}
}

// aim returns the boundary named after a marker: ".name", the name made
// of lower-case letters and '-'.
func aim(b []byte) string {
	if len(b) == 0 || b[0] != '.' {
		return ""
	}
	n := 1
	for n < len(b) && (b[n] >= 'a' && b[n] <= 'z' || b[n] == '-') {
		n++
	}
	return string(b[1:n])
}
