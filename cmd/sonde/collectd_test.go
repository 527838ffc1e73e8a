package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// collectdBin is Debian's collectd (package collectd-core, with libyajl2
// for write_http's JSON); make test-deps installs it.
const collectdBin = "/usr/sbin/collectd"

const collectdConf = `Hostname "sonde-test"
FQDNLookup false
Interval 1
BaseDir "%[1]s"
PIDFile "%[1]s/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel "info"
  File "stderr"
</Plugin>
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
<LoadPlugin write_http>
  FlushInterval 1
</LoadPlugin>
<LoadPlugin write_graphite>
  FlushInterval 1
</LoadPlugin>
<Plugin write_http>
  <Node "json">
    URL "http://%[2]s/collectd"
    Format "JSON"
  </Node>
  <Node "command">
    URL "http://%[3]s/"
    Format "Command"
  </Node>
</Plugin>
<Plugin write_graphite>
  <Node "sonde">
    Host "%[4]s"
    Port "%[5]s"
    Protocol "tcp"
    Prefix "g."
  </Node>
</Plugin>
`

// TestRealCollectd runs collectd with the cpu, memory and load plugins at
// a 1 s interval, writing to one Sonde over write_http JSON (at /collectd
// on its main port) and to another over write_http Command (its collectd
// port) and write_graphite, and finds the series with sane values.
func TestRealCollectd(t *testing.T) {
	if _, err := os.Stat(collectdBin); err != nil {
		t.Fatalf("%s: %v (make test-deps installs Debian's collectd-core)", collectdBin, err)
	}
	jsonSrv := start(t, t.TempDir())
	cmdSrv := start(t, t.TempDir())
	dir := t.TempDir()
	ghost, gport, _ := strings.Cut(cmdSrv.graphiteAddr, ":")
	conf := filepath.Join(dir, "collectd.conf")
	body := fmt.Sprintf(collectdConf, dir, jsonSrv.httpAddr, cmdSrv.collectdAddr, ghost, gport)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	cmd := exec.Command(collectdBin, "-f", "-C", conf)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stopOnce sync.Once
	stop := func() { // the log may be read once collectd has exited
		stopOnce.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		})
	}
	defer func() {
		stop()
		if t.Failed() {
			t.Logf("collectd log:\n%s", log.String())
		}
	}()
	type want struct {
		p      *proc
		key    string
		typ    string
		points int // at least
		sane   func(v float64) bool
	}
	positive := func(v float64) bool { return v > 0 }
	memory := func(v float64) bool { return v > 1<<20 && v < 1<<45 } // 1 MiB to 32 TiB in use
	load := func(v float64) bool { return v >= 0 && v < 1000 }
	wants := []want{
		{jsonSrv, "sonde-test.cpu-0.cpu-idle", "COUNTER", 3, positive},
		{jsonSrv, "sonde-test.memory.memory-used", "GAUGE", 3, memory},
		{jsonSrv, "sonde-test.load.load.shortterm", "GAUGE", 3, load},
		{cmdSrv, "sonde-test.cpu-0.cpu-idle", "COUNTER", 3, positive},
		{cmdSrv, "sonde-test.memory.memory-used", "GAUGE", 3, memory},
		{cmdSrv, "sonde-test.load.load.longterm", "GAUGE", 3, load},
		// write_graphite sends rates for derives (StoreRates defaults to true).
		{cmdSrv, "g.sonde-test.cpu-0.cpu-idle", "GAUGE", 3, func(v float64) bool { return v >= 0 && v <= 1000 }},
		{cmdSrv, "g.sonde-test.memory.memory-used", "GAUGE", 3, memory},
		{cmdSrv, "g.sonde-test.load.load.midterm", "GAUGE", 3, load},
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, w := range wants {
		for {
			var s struct {
				Type   string  `json:"type"`
				Value  float64 `json:"value"`
				Points int     `json:"points"`
			}
			code := w.p.get("/api/v1/series/"+w.key, &s)
			if code == 200 && s.Points >= w.points {
				if s.Type != w.typ || !w.sane(s.Value) {
					t.Errorf("%s: %s %v, want a sane %s", w.key, s.Type, s.Value, w.typ)
				}
				// write_http sends ms times, one list per interval;
				// write_graphite whole seconds, so two lists may share one.
				pts := w.p.history(w.key)
				for i := 1; i < len(pts); i++ {
					if pts[i][0] < pts[i-1][0] || (pts[i][0] == pts[i-1][0] && !strings.HasPrefix(w.key, "g.")) {
						t.Errorf("%s: points out of order or doubled: %v", w.key, pts)
						break
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not there after 60 s (status %d, %d points)", w.key, code, s.Points)
			}
			time.Sleep(100 * time.Millisecond) // polling for collectd's next interval
		}
	}
	stop()
	for _, bad := range []string{"curl_easy_perform failed", "write_graphite plugin: ", "Server response"} {
		if strings.Contains(log.String(), bad) {
			t.Errorf("collectd reported a failed write (%q)", bad)
		}
	}
}
