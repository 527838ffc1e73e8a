package boundary

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTokensErrors(t *testing.T) {
	sum := sha256.Sum256([]byte("0123456789abcdef"))
	for _, c := range []struct{ text, want string }{
		{"a read", "line 1: want NAME SCOPES TOKEN, got 2 fields"},
		{"# c\n\na read,write 0123456789abcdef\nb admin 0123456789abcdeg", "line 4: the scopes (second field)"},
		{"a read short", "line 1: the token (third field) is 5 bytes: want 16 to 256"},
		{"a read 0123456789abcdef\x01", "line 1: the token (third field) is 17 bytes"},
		{"a read ééééééééé", "line 1: the token (third field)"},
		{"a read,write,read 0123456789abcdef", "line 1: the scopes"},
		{"a read 0123456789abcdef\na write 0123456789abcdeg", "line 2: the name is line 1's too"},
		{"a read 0123456789abcdef\nb write sha256:" + hex.EncodeToString(sum[:]), "line 2: the token is a's too"},
		{"a read sha256:00", "line 1: the token (third field): sha256: wants 64 hex digits"},
		{"a/b read 0123456789abcdef", "line 1: the name (first field)"},
		// Fields out of order: the error shows no field.
		{"admin K0dj5bY2GJ9mS1-example-token read", "line 1: the scopes (second field)"},
	} {
		_, err := ParseTokens(c.text)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseTokens(%q) = %v, want an error with %q", c.text, err, c.want)
		} else if strings.Contains(err.Error(), "K0dj5") {
			t.Errorf("ParseTokens(%q): the error shows the token: %v", c.text, err)
		}
	}
}

func writeTokens(t *testing.T, text string) *Tokens {
	t.Helper()
	p := filepath.Join(t.TempDir(), "auth")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	tk, err := LoadTokens(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTokensCheck(t *testing.T) {
	tok, hashed := NewToken()
	tk := writeTokens(t, "reader read 0123456789abcdef\nwriter write "+hashed+"\n")
	src := netip.MustParseAddr("10.0.0.1")
	for _, c := range []struct {
		token  string
		need   Scope
		status int
	}{
		{"", Read, 401},
		{"0123456789abcdef", Read, 0},
		{"0123456789abcdef", Write, 403},
		{tok, Write, 0},
		{tok, Read, 403},
		{"nope-nope-nope-nope", Read, 401},
		{strings.Repeat("x", 10_000), Read, 401},
	} {
		v := tk.Check("http", src, []byte(c.token), c.need)
		if v.OK != (c.status == 0) || v.Status != c.status {
			t.Errorf("Check(%.20q, %s) = %+v, want status %d", c.token, c.need, v, c.status)
		}
	}
	st := tk.Stats()
	if st.Tokens != 2 || st.OK != 2 || st.Missing != 1 || st.Scope != 2 || st.Wrong != 2 || st.Limited != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestTokensLimitFailures(t *testing.T) {
	tk := writeTokens(t, "reader read 0123456789abcdef\n")
	now := time.Unix(1000, 0)
	tk.now = func() time.Time { return now }
	bad, other := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for i := range FailBurst {
		if v := tk.Check("tcp", bad, []byte("wrong-wrong-wrong"), Read); v.Status != 401 {
			t.Fatalf("attempt %d: %+v, want 401", i, v)
		}
	}
	// Spent: even the good token is refused unchecked, from that source only.
	v := tk.Check("tcp", bad, []byte("0123456789abcdef"), Read)
	if v.Status != 429 || v.RetryAfter() != "1" {
		t.Fatalf("after %d failures: %+v (retry %s), want 429 in 1 s", FailBurst, v, v.RetryAfter())
	}
	if v := tk.Check("tcp", other, []byte("0123456789abcdef"), Read); !v.OK {
		t.Fatalf("another source: %+v", v)
	}
	now = now.Add(FailEvery)
	if v := tk.Check("tcp", bad, []byte("0123456789abcdef"), Read); !v.OK {
		t.Fatalf("after %s: %+v", FailEvery, v)
	}
	if st := tk.Stats(); st.Limited != 1 || st.Wrong != FailBurst {
		t.Errorf("stats %+v", st)
	}
	// An IPv6 source counts by its /64: a host that holds one cannot get
	// fresh attempts by changing its address's low bits.
	for i := range FailBurst {
		ip := netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1))
		tk.Check("tcp", ip, []byte("wrong-wrong-wrong"), Read)
	}
	if v := tk.Check("tcp", netip.MustParseAddr("2001:db8::ffff"), []byte("0123456789abcdef"), Read); v.Status != 429 {
		t.Fatalf("another address of a spent /64: %+v", v)
	}
	if v := tk.Check("tcp", netip.MustParseAddr("2001:db8:0:1::1"), []byte("0123456789abcdef"), Read); !v.OK {
		t.Fatalf("another /64: %+v", v)
	}
}

func TestTokensManySources(t *testing.T) {
	tk := writeTokens(t, "reader read 0123456789abcdef\n")
	now := time.Unix(1000, 0)
	tk.now = func() time.Time { return now }
	for i := range maxFailSources + 100 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		tk.Check("http", ip, []byte("wrong-wrong-wrong"), Read)
	}
	if n := len(tk.sources); n > maxFailSources {
		t.Fatalf("%d sources followed, want at most %d", n, maxFailSources)
	}
	// A full map refuses no one for others' failures.
	if v := tk.Check("http", netip.MustParseAddr("192.168.9.9"), []byte("0123456789abcdef"), Read); !v.OK {
		t.Fatalf("a new source while the map is full: %+v", v)
	}
	now = now.Add(FailBurst * FailEvery) // every allowance full again: dropped when room is needed
	tk.Check("http", netip.MustParseAddr("192.168.0.1"), []byte("wrong-wrong-wrong"), Read)
	if n := len(tk.sources); n != 1 {
		t.Fatalf("%d sources followed after they all refilled, want 1", n)
	}
}

func TestTokensReload(t *testing.T) {
	p := filepath.Join(t.TempDir(), "auth")
	os.WriteFile(p, []byte("a read 0123456789abcdef\n"), 0o600)
	tk, err := LoadTokens(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Sessions begun on the first file: a read, a write, and one whose
	// token is never in it (a closed channel: its first check ends it).
	reader := tk.Session("http", []byte("0123456789abcdef"), Read)
	writer := tk.Session("tcp", []byte("0123456789abcdef"), Write)
	gone := tk.Session("tcp", []byte("gone"), Write)
	if reader.Revoked() || !gone.Revoked() {
		t.Fatal("Revoked before a reload")
	}
	os.WriteFile(p, []byte("a read short\n"), 0o600)
	if err := tk.Reload(); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("Reload of a bad file: %v", err)
	}
	if v := tk.Check("http", netip.Addr{}, []byte("0123456789abcdef"), Read); !v.OK {
		t.Fatalf("after a failed reload the old token: %+v", v)
	}
	select {
	case <-reader.Reloaded():
		t.Fatal("a failed reload closed Reloaded()")
	default:
	}
	os.WriteFile(p, []byte("b write fedcba9876543210\na write 0123456789abcdef\n"), 0o600)
	if err := tk.Reload(); err != nil {
		t.Fatal(err)
	}
	if v := tk.Check("http", netip.Addr{}, []byte("0123456789abcdef"), Read); v.Status != 403 {
		t.Fatalf("a token that lost its read scope: %+v", v)
	}
	select {
	case <-reader.Reloaded():
	default:
		t.Fatal("a reload did not close Reloaded()")
	}
	// Revoked when the token lost the scope the session needs, once.
	if writer.Revoked() || !reader.Revoked() || reader.Revoked() {
		t.Fatal("Revoked after the reload")
	}
	if n := tk.Stats().Revoked; n != 2 {
		t.Fatalf("Stats().Revoked = %d, want 2", n)
	}
	var none *Session
	if none.Revoked() || none.Reloaded() != nil {
		t.Fatal("a nil Session (no auth) has nothing to lose")
	}
}

func TestTokenFromHeader(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for h, want := range map[string]string{
		"Bearer abc":                 "abc",
		"bearer  abc ":               "abc",
		"Basic " + b64("user:tok:x"): "tok:x",
		"Basic " + b64("tok"):        "tok",
		"Basic !!!":                  "!!!",
		"Digest x":                   "",
		"abc":                        "",
		"":                           "",
	} {
		if got := string(TokenFromHeader([]byte(h))); got != want {
			t.Errorf("TokenFromHeader(%q) = %q, want %q", h, got, want)
		}
	}
}

func TestAuthorize(t *testing.T) {
	tk := writeTokens(t, "reader read 0123456789abcdef\nwriter read,write fedcba9876543210\n")
	acc := &Access{Auth: tk, AuthOn: map[string]bool{"http": true}}
	src := netip.MustParseAddr("127.0.0.1")
	if v := acc.Authorize("graphite", src, false, nil, nil, nil); !v.OK {
		t.Errorf("a listener without auth: %+v", v)
	}
	if v := acc.Authorize("http", src, true, nil, []byte("0123456789abcdef"), nil); !v.OK {
		t.Errorf("a read with the cookie: %+v", v)
	}
	if v := acc.Authorize("http", src, true, nil, nil, []byte("0123456789abcdef")); !v.OK {
		t.Errorf("a read with token=: %+v", v)
	}
	if v := acc.Authorize("http", src, false, nil, []byte("fedcba9876543210"), []byte("fedcba9876543210")); v.Status != 401 {
		t.Errorf("a write with the cookie and token= only: %+v, want 401", v)
	}
	if v := acc.Authorize("http", src, false, []byte("Bearer fedcba9876543210"), nil, nil); !v.OK {
		t.Errorf("a write with the header: %+v", v)
	}
}

func FuzzParseTokens(f *testing.F) {
	f.Add("a read 0123456789abcdef\n# x\nb read,write sha256:" + strings.Repeat("0", 64))
	f.Add("a write short")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := ParseTokens(text)
		if err != nil {
			return
		}
		for _, e := range m {
			if !validTokenName(e.name) || e.scope == 0 || e.scope > Read|Write {
				t.Fatalf("accepted %+v", e)
			}
		}
	})
}

func FuzzTokenFromHeader(f *testing.F) {
	f.Add([]byte("Bearer abc"))
	f.Add([]byte("Basic dXNlcjp0b2s="))
	f.Fuzz(func(t *testing.T, h []byte) {
		TokenFromHeader(h)
	})
}
