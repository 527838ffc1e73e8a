package safeurl

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"https://user:pw@hooks.example.com/T0/B1/secret?x=1": "https://hooks.example.com/…",
		"http://127.0.0.1:22201/":                            "http://127.0.0.1:22201",
		"http://127.0.0.1:22201/?token=secret":               "http://127.0.0.1:22201/…",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := Redact(u); got != want {
			t.Errorf("Redact(%s) = %s, want %s", raw, got, want)
		}
	}
	inner := errors.New("connection refused")
	err := Cause(&url.Error{Op: "Get", URL: "http://h/secret", Err: inner})
	if err != inner || strings.Contains(err.Error(), "secret") {
		t.Fatalf("Cause: %v", err)
	}
}
