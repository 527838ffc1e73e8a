//go:build !sondetest

package boundary

// Injecting reports whether Inject is compiled in (the sondetest tag).
const Injecting = false

// Inject does nothing: without the build tag sondetest the test hook is
// not compiled in, and the compiler removes the call.
func Inject(where string, input []byte) {}
