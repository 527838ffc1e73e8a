package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// dialFrom connects to addr from the local address src (127.0.0.0/8
// routes through loopback, so 127.0.0.2 is another source on one machine).
func dialFrom(t *testing.T, network, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if network == "udp" {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
	} else {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// closedAtOnce reports whether the server closed c without a byte.
func closedAtOnce(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestAllowlist: with -allow, every listener takes its allowed source
// (127.0.0.1 here) and refuses another (127.0.0.2): TCP and HTTP
// listeners close the connection at once without a byte, statsd drops the
// datagram; each refusal is counted in /api/v1/stats by listener.
func TestAllowlist(t *testing.T) {
	p := start(t, t.TempDir(), "-allow", "127.0.0.1/32", "-glo", "127.0.0.1:0", "-watchtower", "127.0.0.1:0")
	tcpLike := map[string]string{
		"tcp": p.tcpAddr, "graphite": p.graphiteAddr, "logatron": p.addrs["logatron"].(string),
		"collectd": p.collectdAddr, "http": p.httpAddr, "glo": p.addrs["glo"].(string), "watchtower": p.addrs["watchtower"].(string),
	}
	for name, addr := range tcpLike {
		c := dialFrom(t, "tcp", "127.0.0.2", addr)
		if !closedAtOnce(t, c) {
			t.Errorf("%s: a connection from 127.0.0.2 was not closed at once", name)
		}
		c.Close()
	}
	// The allowed source is served.
	c := dialFrom(t, "tcp", "127.0.0.1", p.tcpAddr)
	fmt.Fprintf(c, "SET allowed 1\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		t.Fatalf("allowed source: %q %v", line, err)
	}
	c.Close()
	for _, path := range []string{"/data", "/glo"} {
		resp, err := http.Get(p.url(path))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s from 127.0.0.1: %v %v", path, err, resp)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// statsd: the refused source's datagram is dropped, the allowed one's stored.
	u := dialFrom(t, "udp", "127.0.0.2", p.statsdAddr)
	u.Write([]byte("refused.gauge:1|g"))
	u.Close()
	u = dialFrom(t, "udp", "127.0.0.1", p.statsdAddr)
	u.Write([]byte("allowed.gauge:2|g"))
	u.Close()
	var st struct {
		Allow struct {
			Sources string           `json:"sources"`
			Refused map[string]int64 `json:"refused"`
		} `json:"allow"`
	}
	waitFor(t, "the statsd refusal counted", func() bool {
		p.get("/api/v1/stats", &st)
		return st.Allow.Refused["statsd"] == 1
	})
	waitFor(t, "the allowed datagram stored", func() bool { _, ok := p.data()["stats.gauges.allowed.gauge"]; return ok })
	if _, ok := p.data()["stats.gauges.refused.gauge"]; ok {
		t.Fatal("a datagram from a refused source was stored")
	}
	for name := range tcpLike {
		if st.Allow.Refused[name] != 1 {
			t.Errorf("refusals of %s counted %d, want 1 (%v)", name, st.Allow.Refused[name], st.Allow.Refused)
		}
	}
	if st.Allow.Sources != "127.0.0.1/32" {
		t.Errorf("sources %q", st.Allow.Sources)
	}
}

// TestExposureRefused: a listener beyond loopback with no -allow refuses
// to start, naming the flag; -allow or -insecure let it start.
func TestExposureRefused(t *testing.T) {
	out, err := exec.Command(binary, "-data", t.TempDir(), "-http", "0.0.0.0:0").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "-http 0.0.0.0:0 listens beyond loopback") {
		t.Fatalf("exit %v: %s", err, out)
	}
	for _, extra := range [][]string{{"-allow", "10.0.0.0/8,127.0.0.1,::1"}, {"-insecure"}} {
		p := start(t, t.TempDir(), append([]string{"-http", "0.0.0.0:0"}, extra...)...)
		var m map[string]json.RawMessage
		p.get("/api/v1/stats", &m) // from 127.0.0.1: allowed in both
		if p.stop() != 0 {
			t.Fatalf("%v: unclean stop", extra)
		}
	}
}
