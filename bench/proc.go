package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server is a store process the tool started: Sonde or a peer.
type Server struct {
	Name     string // "sonde" or "victoria-metrics"
	Dir      string // its data directory
	Ingest   string // host:port the load goes to
	Graphite string // Sonde: host:port of its Graphite listener
	Statsd   string // Sonde: host:port of its statsd listener (UDP)
	Query    string // host:port of its HTTP API
	Started  time.Time
	Ready    time.Duration // from exec to ready to serve
	StopTime time.Duration // from SIGTERM to exit, once Stop has run

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	log     *bytes.Buffer
}

// StartSonde starts bin on dir with free loopback ports and waits for its
// "listening" log line. extra are more flags.
//
// The command listener's one-shot rule is off (-tcp-oneshot-idle -1s): the
// load's clients write as soon as they connect, so Sonde would take them
// for scripted nc sessions and close them after 300 ms without a line,
// which a paced or CPU-starved client can reach (seen with the machine
// three times oversubscribed: "the server closed the connection").
//
// Self-monitoring is off (-self-interval 0): its sonde.self.* series and
// records would count among the load's, in the series a restart waits
// for and the records the cardinality phase counts. (A Sonde from before
// that flag refuses it: give such a binary's runs a wrapper script.)
func StartSonde(ctx context.Context, bin, dir string, extra ...string) (*Server, error) {
	args := append([]string{"-data", dir, "-tcp", "127.0.0.1:0", "-graphite", "127.0.0.1:0", "-collectd", "127.0.0.1:0", "-statsd", "127.0.0.1:0", "-logatron", "127.0.0.1:0", "-http", "127.0.0.1:0", "-log-format", "json", "-tcp-oneshot-idle", "-1s", "-self-interval", "0"}, extra...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("start sonde: %w", err)
	}
	s := &Server{Name: "sonde", Dir: dir, cmd: cmd, exited: make(chan struct{}), log: new(bytes.Buffer)}
	s.Started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sonde: %w", err)
	}
	ready := make(chan [4]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if s.log.Len() < 1<<20 {
				s.log.Write(line)
				s.log.WriteByte('\n')
			}
			var m struct{ Msg, TCP, HTTP, Graphite, Statsd string }
			if json.Unmarshal(line, &m) == nil && m.Msg == "listening" {
				ready <- [4]string{m.TCP, m.HTTP, m.Graphite, m.Statsd}
			}
		}
		io.Copy(io.Discard, stderr)
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	select {
	case a := <-ready:
		s.Ready = time.Since(s.Started)
		s.Ingest, s.Query, s.Graphite, s.Statsd = a[0], a[1], a[2], a[3]
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("start sonde: it exited (%v): %s", s.waitErr, tail(s.log.String()))
	case <-ctx.Done():
		s.Kill()
		return nil, fmt.Errorf("start sonde: %w", ctx.Err())
	}
}

// StartVictoriaMetrics starts the single-node VictoriaMetrics binary bin
// on dir, with its HTTP API and Graphite listener on free loopback ports,
// and waits until /health answers.
func StartVictoriaMetrics(ctx context.Context, bin, dir string, extra ...string) (*Server, error) {
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	return StartVictoriaMetricsAt(ctx, bin, dir, httpAddr, extra...)
}

// StartVictoriaMetricsAt is StartVictoriaMetrics with its HTTP API on
// httpAddr.
func StartVictoriaMetricsAt(ctx context.Context, bin, dir, httpAddr string, extra ...string) (*Server, error) {
	graphite, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append([]string{"-storageDataPath", dir, "-httpListenAddr", httpAddr,
		"-graphiteListenAddr", graphite, "-retentionPeriod", "10y", "-loggerLevel", "WARN"}, extra...)
	cmd := exec.Command(bin, args...)
	s := &Server{Name: "victoria-metrics", Dir: dir, Ingest: graphite, Query: httpAddr, cmd: cmd,
		exited: make(chan struct{}), log: new(bytes.Buffer)}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	s.Started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start victoria-metrics: %w", err)
	}
	go func() { s.waitErr = cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + httpAddr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.Ready = time.Since(s.Started)
				return s, nil
			}
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("start victoria-metrics: it exited (%v): %s", s.waitErr, tail(s.log.String()))
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("start victoria-metrics: /health did not answer within a minute")
		}
		if err := pause(ctx, 10*time.Millisecond); err != nil {
			s.Kill()
			return nil, err
		}
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

// PeakRSS is the process' high-water resident set size in bytes (VmHWM).
func (s *Server) PeakRSS() (int64, error) { return procStatus(s.cmd.Process.Pid, "VmHWM:") }

// RSS is the process' resident set size in bytes now.
func (s *Server) RSS() (int64, error) { return procStatus(s.cmd.Process.Pid, "VmRSS:") }

func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				return n << 10, err
			}
		}
	}
	return 0, fmt.Errorf("read process status: no %s line", field)
}

// CPU is the CPU time the process has used so far: utime+stime from
// /proc/PID/stat, in clock ticks of 10 ms.
func (s *Server) CPU() (time.Duration, error) { return procCPU(s.cmd.Process.Pid) }

// clockTick is Linux's USER_HZ, the unit of /proc/PID/stat's times: 100
// on every architecture Go supports.
const clockTick = 10 * time.Millisecond

func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process CPU time: %w", err)
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses,
	// so the fields are counted from the last ')'. utime and stime are
	// fields 14 and 15; f[0] is field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("read process CPU time: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("read process CPU time: %d fields in %q", len(f)+2, b)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read process CPU time: %w", err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// Usage is what the kernel accounted to the process over its whole life,
// shutdown included: CPU time (user and system) and peak resident set
// size. ok is false until the process has exited.
func (s *Server) Usage() (cpu time.Duration, peakRSS int64, ok bool) {
	select {
	case <-s.exited:
	default:
		return 0, 0, false
	}
	ps := s.cmd.ProcessState
	if ps == nil {
		return 0, 0, false
	}
	if ru, isRusage := ps.SysUsage().(*syscall.Rusage); isRusage {
		peakRSS = ru.Maxrss << 10 // kB on Linux
	}
	return ps.UserTime() + ps.SystemTime(), peakRSS, true
}

// Stop sends SIGTERM and waits for the process to exit; StopTime is how
// long that took.
func (s *Server) Stop() error {
	t := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if s.StopTime == 0 {
			s.StopTime = time.Since(t)
		}
	case <-time.After(2 * time.Minute):
		s.Kill()
		return fmt.Errorf("stop %s: no exit two minutes after SIGTERM", s.Name)
	}
	if s.waitErr != nil {
		return fmt.Errorf("stop %s: %w: %s", s.Name, s.waitErr, tail(s.log.String()))
	}
	return nil
}

// Kill sends SIGKILL and waits for the process to be gone.
func (s *Server) Kill() {
	s.cmd.Process.Kill()
	<-s.exited
}

// Log returns what the process printed (the first MiB).
func (s *Server) Log() string { return s.log.String() }

// DiskBytes sums the sizes of the files under dir.
func DiskBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file removed while walking
			}
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measure %s: %w", dir, err)
	}
	return n, nil
}

// MetricSum reads a Prometheus-format counter from http://addr/metrics: the
// sum of the series whose line starts with prefix (name and labels).
func MetricSum(addr, prefix string) (int64, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("read metrics: %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	if !found {
		return 0, fmt.Errorf("read metrics: no %s", prefix)
	}
	return int64(sum), nil
}
