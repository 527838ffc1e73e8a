package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// mountTmpfs mounts a tmpfs of size bytes at a new directory and unmounts
// it when the test ends. It needs root (CI runs as root) or passwordless
// sudo; a full disk cannot be had any other way.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	run := func(args ...string) error {
		if os.Geteuid() != 0 {
			args = append([]string{"sudo", "-n"}, args...)
		}
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0777", size), "tmpfs", dir); err != nil {
		t.Fatalf("a full disk needs a small tmpfs, which needs root or passwordless sudo: %v", err)
	}
	t.Cleanup(func() {
		if err := run("umount", dir); err != nil {
			t.Errorf("unmount the tmpfs: %v", err)
		}
	})
	return dir
}

// fillDisk writes a ballast file that leaves about leave bytes free on the
// file system of dir, and returns its path.
func fillDisk(t *testing.T, dir string, leave int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	path := filepath.Join(dir, "ballast")
	if err := os.WriteFile(path, make([]byte, max(free-leave, 0)), 0o644); err != nil {
		t.Fatalf("write the ballast: %v", err)
	}
	return path
}

// TestFullDisk: a SET and INCR pipeline into a real, small tmpfs until it
// is full. Every write answered -ERR is absent, from the running server,
// after space comes back, and after a SIGKILL and a restart; every write
// answered +OK is there; writes resume without a restart once there is
// room again.
func TestFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, 16<<20)
	dir := filepath.Join(mnt, "data")
	p := start(t, dir, "-tcp-oneshot-idle", "-1s")
	ballast := fillDisk(t, mnt, 1<<20)
	acked := map[string]bool{}   // keys whose SET was answered +OK
	refused := map[string]bool{} // keys whose SET was answered -ERR
	hits := 0                    // INCRs of "hits" answered +OK
	var errText string
	// fill pipelines SETs of new keys (and an INCR of hits per 500) until
	// want of them were refused, redialling after a hang-up.
	batch := 0
	fill := func(p *proc, want int) {
		t.Helper()
		c := dial(t, p.tcpAddr)
		for n := 0; n < want; batch++ {
			if batch == 2000 {
				t.Fatalf("the disk never filled: %d writes taken", len(acked))
			}
			lines := make([]string, 0, 501)
			for i := range 500 {
				lines = append(lines, fmt.Sprintf("SET key.%06d.%d %d", batch, i, batch*1000+i))
			}
			lines = append(lines, "INCR hits 1")
			c.send(t, lines...)
			for i := range lines {
				r, err := c.br.ReadString('\n')
				if err != nil { // a hang-up: the lines left have no answer; dial again
					c = dial(t, p.tcpAddr)
					break
				}
				r = strings.TrimRight(r, "\r\n")
				switch {
				case r == "+OK" && i < 500:
					acked[fmt.Sprintf("key.%06d.%d", batch, i)] = true
				case r == "+OK":
					hits++
				case strings.HasPrefix(r, "-ERR ") && i < 500:
					refused[fmt.Sprintf("key.%06d.%d", batch, i)] = true
					errText = r
					n++
				case strings.HasPrefix(r, "-ERR "):
				default:
					t.Fatalf("reply %q", r)
				}
			}
		}
	}
	fill(p, 2000)
	if len(acked) == 0 {
		t.Fatal("nothing was taken before the disk filled")
	}
	if !strings.Contains(errText, "no space left on device") {
		t.Errorf("the refusal does not say why: %q", errText)
	}
	var st struct {
		Engine struct {
			WAL struct {
				State         string `json:"state"`
				WriteFailures int64  `json:"write_failures"`
			} `json:"wal"`
		} `json:"engine"`
	}
	p.get("/api/v1/stats", &st)
	if st.Engine.WAL.State != "paused" || st.Engine.WAL.WriteFailures == 0 {
		t.Errorf("stats on a full disk: %+v", st.Engine.WAL)
	}
	check := func(when string, p *proc) {
		t.Helper()
		var data map[string]float64
		p.get("/data", &data)
		for k := range refused {
			if _, ok := data[k]; ok {
				t.Fatalf("%s: %s was refused, yet holds %v", when, k, data[k])
			}
		}
		for k := range acked {
			if _, ok := data[k]; !ok {
				t.Fatalf("%s: %s was acknowledged, yet is missing", when, k)
			}
		}
		var h struct {
			Value float64 `json:"value"`
		}
		p.get("/api/v1/series/hits", &h)
		if int(h.Value) < hits {
			t.Fatalf("%s: hits = %v, but %d INCRs were acknowledged", when, h.Value, hits)
		}
		if int(h.Value) != hits {
			t.Fatalf("%s: hits = %v, but only %d INCRs were acknowledged: a refused one counted", when, h.Value, hits)
		}
	}
	check("on the full disk", p)
	p.kill()
	p = start(t, dir, "-tcp-oneshot-idle", "-1s")
	check("after a SIGKILL and a restart on the full disk", p)
	// The disk is still full: this process refuses writes too (the cut
	// freed a little room, so a few may go in first).
	fill(p, 500)
	check("the restarted server on the full disk", p)
	// Room again: writes resume without a restart.
	c := dial(t, p.tcpAddr)
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	p.poll("writes to resume", func() bool {
		r := c.do(t, "SET resumed 1")[0]
		if r == "+OK" {
			acked["resumed"] = true
			return true
		}
		if !strings.Contains(r, "paused") && !strings.Contains(r, "no space") {
			t.Fatalf("while waiting for room: %q", r)
		}
		return false
	})
	if r := c.do(t, "INCR hits 1")[0]; r != "+OK" {
		t.Fatalf("INCR after resuming: %s", r)
	}
	hits++
	check("after space came back", p)
	p.kill()
	p = start(t, dir)
	check("after a SIGKILL and a restart with room", p)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	// Nothing the full disk did left damage behind.
	if code, out := sondeCmd(t, "check", "-data", dir); code != 0 {
		t.Fatalf("sonde check after the full disk: exit %d\n%s", code, out)
	}
}
