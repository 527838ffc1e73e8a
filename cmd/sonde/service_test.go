package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestServiceUnit: systemd (Debian's systemd-analyze; make test installs
// it) takes docs/sonde.service without a word, its ExecStart pointed at
// the binary under test, and rates its hardening "OK" or better (an
// exposure below 2.0 of 10).
func TestServiceUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is needed (make test installs Debian's systemd): %v", err)
	}
	unit, err := os.ReadFile("../../docs/sonde.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/sonde ") {
		t.Fatal("the unit's ExecStart no longer runs /usr/local/bin/sonde, as the README installs it")
	}
	bin, err := filepath.Abs(binary)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sonde.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/sonde", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=true", "--no-pager", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for sonde.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level >= 2.0 {
		t.Fatalf("exposure %.1f, want below 2.0:\n%s", level, out)
	}
}

// TestVersion: `sonde version` names the build.
func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^sonde \S+ commit \S+( \S+)? go1\.\d+`).Match(out) {
		t.Fatalf("sonde version: %q", out)
	}
}
