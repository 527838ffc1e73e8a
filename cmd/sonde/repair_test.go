package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sondeCmd runs `sonde args...` to its end and returns its exit code and
// what it printed.
func sondeCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("sonde %v: %v", args, err)
	}
	return 0, string(out)
}

// TestCheckAndRepair: a flipped byte in snapshot.db, and one in a WAL
// segment. Each time `sonde check` reports it (exit 1) and names the key;
// startup refuses with a clear error (no panic, no goroutine dump) that
// points to `sonde repair`; repair moves the damaged files aside, lists
// what was lost, and leaves a directory that `sonde check` finds clean and
// that opens with every value the damage did not touch.
func TestCheckAndRepair(t *testing.T) {
	base := t.TempDir()
	p := start(t, base, "-tcp-oneshot-idle", "-1s")
	c := dial(t, p.tcpAddr)
	var lines []string
	for i := range 20 {
		for k := range 10 {
			lines = append(lines, fmt.Sprintf("SET key.%d %d", k, k*1000+i))
		}
	}
	c.do(t, lines...)
	if code := p.stop(); code != 0 { // a final snapshot holds all of it
		t.Fatalf("exit %d", code)
	}
	p = start(t, base, "-tcp-oneshot-idle", "-1s")
	c = dial(t, p.tcpAddr)
	lines = lines[:0]
	for i := 20; i < 30; i++ {
		for k := range 10 {
			lines = append(lines, fmt.Sprintf("SET key.%d %d", k, k*1000+i))
		}
	}
	c.do(t, lines...)
	p.kill() // the last ten rounds are only in the WAL
	want := map[string]float64{}
	for k := range 10 {
		want[fmt.Sprintf("key.%d", k)] = float64(k*1000 + 29)
	}
	if code, out := sondeCmd(t, "check", "-data", base); code != 0 || !strings.Contains(out, "clean") ||
		!regexp.MustCompile(`(?m)^snapshot\.db pages: [1-9]\d* of \d+ bytes .* free \([\d.]+ MB\)$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^  \(bucket names\) +[1-9]\d* pages \([\d.]+ MB\), [1-9]\d* % of their bytes written$`).MatchString(out) {
		t.Fatalf("check of the intact directory: %d\n%s", code, out)
	}

	for _, c := range []struct {
		name   string
		damage func(dir string)
		key    string // the key whose data the damage hit
	}{
		{"snapshot.db", func(dir string) {
			// key.3's stored state: the key, then its sealed value (every
			// copy: freed pages keep older ones).
			path := filepath.Join(dir, "snapshot.db")
			data := mustRead(t, path)
			mark := []byte("key.3\xc3")
			n := 0
			for i := 0; ; i++ {
				j := bytes.Index(data[i:], mark)
				if j < 0 {
					break
				}
				i += j
				data[i+len(mark)+9] ^= 0x01
				n++
			}
			if n == 0 {
				t.Fatal("key.3's state is not in snapshot.db")
			}
			mustWrite(t, path, data)
		}, "key.3"},
		{"wal", func(dir string) {
			// The record that set key.6 to 6025: its value's bytes.
			segs, _ := filepath.Glob(filepath.Join(dir, "wal", "0*"))
			path := segs[len(segs)-1]
			data := mustRead(t, path)
			v := make([]byte, 8)
			u := math.Float64bits(6025)
			for i := range v {
				v[i] = byte(u >> (8 * i))
			}
			i := bytes.Index(data, v)
			if i < 0 {
				t.Fatal("the record is not in the WAL")
			}
			data[i+3] ^= 0x01
			mustWrite(t, path, data)
		}, "key.6"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, base, dir)
			c.damage(dir)
			code, out := sondeCmd(t, "check", "-data", dir)
			if code != 1 || !strings.Contains(out, `"`+c.key+`"`) || !strings.Contains(out, "sonde repair") {
				t.Fatalf("check of the damaged directory: exit %d\n%s", code, out)
			}
			code, out = sondeCmd(t, "-data", dir, "-tcp", "127.0.0.1:0", "-http", "127.0.0.1:0", "-graphite", "", "-statsd", "", "-collectd", "", "-logatron", "")
			if code == 0 || !strings.Contains(out, "sonde repair") || strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
				t.Fatalf("startup on the damaged directory: exit %d\n%s", code, out)
			}
			code, out = sondeCmd(t, "repair", "-data", dir)
			if code != 0 || !strings.Contains(out, "lost") || !strings.Contains(out, c.key) {
				t.Fatalf("repair: exit %d\n%s", code, out)
			}
			t.Logf("repair:\n%s", out)
			if backups, _ := filepath.Glob(filepath.Join(dir, "damaged-*", "wal")); len(backups) != 1 {
				t.Fatalf("the damaged files were not kept: %v", backups)
			}
			if code, out := sondeCmd(t, "check", "-data", dir); code != 0 {
				t.Fatalf("check after the repair: exit %d\n%s", code, out)
			}
			p := start(t, dir)
			var data map[string]float64
			p.get("/data", &data)
			for k, v := range want {
				if k == c.key {
					continue
				}
				if data[k] != v {
					t.Errorf("%s = %v after the repair, want %v: the damage did not touch it", k, data[k], v)
				}
			}
			if c.name == "wal" && data[c.key] != want[c.key] {
				t.Errorf("%s = %v, want %v: only one of its points was damaged", c.key, data[c.key], want[c.key])
			}
			if code := p.stop(); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}
