package text

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckKey(t *testing.T) {
	for _, k := range []string{"a", "cpu.load", "é/ü:x", "日本語", "emoji😀", "\ufffd", strings.Repeat("k", MaxKeyLen)} {
		if err := CheckKey([]byte(k)); err != nil {
			t.Errorf("CheckKey(%q) = %v, want nil", k, err)
		}
	}
	for k, want := range map[string]string{
		"":                               "empty key",
		strings.Repeat("k", MaxKeyLen+1): "longer than 255",
		"a\x01b":                         "control character 0x01",
		"a\x7f":                          "control character 0x7f",
		"\xff\xfe":                       "key is not valid UTF-8 (byte 0xff at 0)",
		"abcd\xfd":                       "key is not valid UTF-8 (byte 0xfd at 4)",
		"é\x80":                          "(byte 0x80 at 2)",       // a lone continuation byte
		"a\xe2\x82":                      "(byte 0xe2 at 1)",       // a rune cut short
		"a\xc0\x80":                      "(byte 0xc0 at 1)",       // an overlong NUL
		"ab\xed\xa0\x80":                 "(byte 0xed at 2)",       // a surrogate
		"\xf4\x90\x80\x80":               "(byte 0xf4 at 0)",       // past U+10FFFF
		"x\x01\xff":                      "control character 0x01", // the first fault is named
	} {
		err := CheckKey([]byte(k))
		if !errors.Is(err, ErrSyntax) || !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckKey(%q) = %v, want a key error with %q", k, err, want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "syntax: ") {
			t.Errorf("CheckKey(%q) = %q, want it to read as a syntax error", k, err)
		}
	}
}

func TestCheckUTF8(t *testing.T) {
	if err := CheckUTF8("name", []byte("ok é")); err != nil {
		t.Errorf("valid: %v", err)
	}
	err := CheckUTF8("tag list", []byte("env:a\xfeb"))
	if !errors.Is(err, ErrKey) || err.Error() != "syntax: tag list is not valid UTF-8 (byte 0xfe at 5)" {
		t.Errorf("CheckUTF8 = %v", err)
	}
	if i := InvalidUTF8([]byte("ok")); i != -1 {
		t.Errorf("InvalidUTF8(ok) = %d, want -1", i)
	}
	// Syntax errors that are not about a key do not wrap ErrKey.
	if _, err := Float([]byte("x")); !errors.Is(err, ErrSyntax) || errors.Is(err, ErrKey) {
		t.Errorf("Float(x) = %v: want a syntax error that is not a key error", err)
	}
}
