//go:build !sondetest

package boundary

import "testing"

func TestInjectIsOffWithoutTheTag(t *testing.T) {
	Inject("http", []byte(Marker)) // must not panic
	if Injecting {
		t.Error("Injecting is true without the sondetest tag")
	}
}
