package boundary

import (
	"net"
	"testing"
)

func TestAllow(t *testing.T) {
	a, err := ParseAllow([]string{"10.0.0.0/8,192.168.1.7", "::1", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"10.1.2.3:5": true, "11.0.0.1:5": false, "192.168.1.7:9": true, "192.168.1.8:9": false,
		"[::1]:1": true, "[::ffff:10.9.9.9]:1": true, "[2001:db8::5]:1": true, "[2001:db9::5]:1": false, "127.0.0.1:1": false,
	} {
		tcp, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Allowed(tcp); got != want {
			t.Errorf("%s: allowed %v, want %v", addr, got, want)
		}
	}
	var none *Allow
	if !none.Allowed(&net.TCPAddr{IP: net.IPv4(8, 8, 8, 8)}) || none.String() != "any" {
		t.Error("no allowlist must take every source")
	}
	for _, bad := range []string{"10.0.0.0/33", "host.example", ""} {
		if _, err := ParseAllow([]string{bad}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	for addr, want := range map[string]bool{
		"127.0.0.1:8124": true, "127.5.0.1:1": true, "[::1]:1": true, "localhost:1": true,
		":8124": false, "0.0.0.0:1": false, "10.0.0.1:1": false, "[::]:1": false, "bad": false,
	} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) = %v", addr, !want)
		}
	}
}
