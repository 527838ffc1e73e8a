package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the sonde executable the tests run, built once by TestMain
// with the race detector so the server is checked too, and with the
// sondetest tag, which compiles in the panic hook (boundary.Inject).
// SONDE_TEST_BINARY names another one instead: a release, to see a
// regression test fail on the code before its fix.
var binary string

func TestMain(m *testing.M) {
	if b := os.Getenv("SONDE_TEST_BINARY"); b != "" {
		binary = b
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "sonde-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sonde")
	cmd := exec.Command("go", "build", "-race", "-tags", "sondetest", "-o", binary, ".")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sonde:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running sonde process.
type proc struct {
	t            testing.TB
	cmd          *exec.Cmd
	tcpAddr      string
	graphiteAddr string
	collectdAddr string
	statsdAddr   string
	httpAddr     string
	addrs        map[string]any // every address of the "listening" line, by listener
	exited       chan struct{}
	mu           sync.Mutex
	logs         []string
}

// start runs sonde on dataDir with loopback listeners on free ports and
// waits for its "listening" log line. Self-monitoring is off unless flags
// set -self-interval: the tests count and compare the keys they wrote.
func start(t testing.TB, dataDir string, flags ...string) *proc {
	t.Helper()
	args := append([]string{"-data", dataDir, "-tcp", "127.0.0.1:0", "-graphite", "127.0.0.1:0", "-collectd", "127.0.0.1:0", "-statsd", "127.0.0.1:0", "-logatron", "127.0.0.1:0", "-http", "127.0.0.1:0", "-log-format", "json", "-self-interval", "0"}, flags...)
	cmd := exec.Command(binary, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, exited: make(chan struct{})}
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "listening" {
				ready <- m
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	select {
	case m := <-ready:
		p.tcpAddr, p.httpAddr = m["tcp"].(string), m["http"].(string)
		p.graphiteAddr, _ = m["graphite"].(string)
		p.collectdAddr, _ = m["collectd"].(string)
		p.statsdAddr, _ = m["statsd"].(string)
		p.addrs = m
	case <-p.exited:
		t.Fatalf("sonde exited before listening: %v\n%s", cmd.ProcessState, p.logText())
	case <-time.After(60 * time.Second):
		p.kill()
		t.Fatalf("sonde did not start listening:\n%s", p.logText())
	}
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.kill()
		}
		if t.Failed() {
			t.Logf("sonde log:\n%s", p.logText())
		}
	})
	return p
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop() int {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		p.kill()
		p.t.Fatalf("sonde did not stop on SIGTERM:\n%s", p.logText())
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) url(path string) string { return "http://" + p.httpAddr + path }

// get fetches path and decodes its JSON into v; it returns the status.
func (p *proc) get(path string, v any) int {
	p.t.Helper()
	resp, err := http.Get(p.url(path))
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			p.t.Fatalf("GET %s: decode %q: %v", path, body, err)
		}
	}
	return resp.StatusCode
}

// postStatus POSTs a one-byte body to path and returns the status.
func (p *proc) postStatus(path string) int {
	p.t.Helper()
	resp, err := http.Post(p.url(path), "text/plain", strings.NewReader("x"))
	if err != nil {
		p.t.Fatalf("POST %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// client is a pipelining mesures protocol client.
type client struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, br: bufio.NewReader(c)}
}

func (c *client) send(t testing.TB, lines ...string) {
	t.Helper()
	if _, err := io.WriteString(c.c, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
}

func (c *client) reply(t testing.TB) string {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return strings.TrimRight(line, "\r\n")
}

// do sends lines and returns their replies.
func (c *client) do(t testing.TB, lines ...string) []string {
	t.Helper()
	c.send(t, lines...)
	out := make([]string, len(lines))
	for i := range lines {
		out[i] = c.reply(t)
	}
	return out
}

// index is the WAL index of the newest change the server published.
func (p *proc) index() uint64 {
	var st struct {
		Index uint64 `json:"index"`
	}
	p.get("/api/v1/stats", &st)
	return st.Index
}

// copyDir copies the regular files of src (one level of subdirectories).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
