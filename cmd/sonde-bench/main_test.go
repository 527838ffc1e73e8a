package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sonde-metrics/sonde/bench"
)

// The command end to end: flags in, a load against a real server, the
// JSON result and the plot out.
func TestTCPScenarioWritesResultAndPlot(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "sonde")
	if out, err := exec.Command("go", "build", "-o", bin, "../sonde").CombinedOutput(); err != nil {
		t.Fatalf("build sonde: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := bench.StartSonde(ctx, bin, filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	out, plot := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	err = run([]string{"-target", srv.Ingest, "-http", srv.Query, "-keys", "20", "-count", "2000",
		"-shape", "walk", "-out", out, "-plot", plot, "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	var res bench.Result
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Acked != 2000 || res.Verify == nil || res.Verify.Found != 20 || res.Shape != bench.Walk {
		t.Fatalf("result: acked %d, verify %+v, shape %s", res.Acked, res.Verify, res.Shape)
	}
	if st, err := os.Stat(plot); err != nil || st.Size() == 0 {
		t.Fatalf("plot: %v", err)
	}
}

// soak end to end: flags in, Sonde over Graphite and then Debian's
// VictoriaMetrics, the JSON result and the plot of both out.
func TestSoakScenarioWritesResultAndPlot(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "sonde")
	if out, err := exec.Command("go", "build", "-o", bin, "../sonde").CombinedOutput(); err != nil {
		t.Fatalf("build sonde: %v\n%s", err, out)
	}
	out, plot := filepath.Join(dir, "soak.json"), filepath.Join(dir, "soak.svg")
	err := run([]string{"-sonde", bin, "-peer", "/usr/bin/victoria-metrics", "-workdir", filepath.Join(dir, "work"),
		"-keys", "100", "-conns", "2", "-rate", "2000", "-duration", "1s", "-protocol", "graphite",
		"-sample-every", "250ms", "-idle-window", "1s", "-idle-wait", "30s", "-out", out, "-plot", plot, "soak"})
	if err != nil {
		t.Fatal(err)
	}
	var runs []bench.WatchedRun
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Server != "sonde" || runs[1].Server != "victoria-metrics" {
		t.Fatalf("%d runs, want sonde then victoria-metrics", len(runs))
	}
	for _, r := range runs {
		res := r.Result
		if res.Scenario != "graphite" || res.Keys != 100 || res.Paced != 2000 || res.Sent == 0 || res.Errors != 0 || len(r.Timeline) < 2 || !r.Idle {
			t.Errorf("%s: %s, %d keys at %v/s, sent %d, errors %d, %d samples, idle %v", r.Server, res.Scenario, res.Keys, res.Paced,
				res.Sent, res.Errors, len(r.Timeline), r.Idle)
		}
	}
	svg, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"server CPU seconds", "RSS, bytes", "data directory, bytes", "sonde", "victoria-metrics"} {
		if !strings.Contains(string(svg), text) {
			t.Errorf("the plot has no %q", text)
		}
	}
}

// restart end to end: Sonde and Debian's VictoriaMetrics, each after kill
// -9 and after a clean stop; the JSON holds every case, the ratios, and
// the figures the scenario wrote before it restarted the peer.
func TestRestartScenarioWritesEveryCase(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "sonde")
	if out, err := exec.Command("go", "build", "-o", bin, "../sonde").CombinedOutput(); err != nil {
		t.Fatalf("build sonde: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "restart.json")
	err := run([]string{"-sonde", bin, "-peer", "/usr/bin/victoria-metrics", "-workdir", filepath.Join(dir, "work"),
		"-keys", "500", "-count", "5000", "-conns", "2", "-settle", "1s", "-out", out, "restart"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r bench.RestartResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Cases) != 4 || len(r.Ratios) != 2 || r.Cases[0].Server != "sonde" || r.Cases[3].Server != "victoria-metrics" {
		t.Fatalf("%d cases, %d ratios", len(r.Cases), len(r.Ratios))
	}
	for _, c := range r.Cases {
		if c.Load == nil || c.Load.Sent != 5000 || c.ReadySeconds <= 0 {
			t.Errorf("%s after %s: load %+v, ready at %vs", c.Server, c.Case, c.Load, c.ReadySeconds)
		}
	}
	var old map[string]any
	if err := json.Unmarshal(b, &old); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"keys": 500.0, "wal_records": 5000.0, "verified": true} {
		if old[k] != want {
			t.Errorf("%s: %v, want %v", k, old[k], want)
		}
	}
	if v, ok := old["after_kill_s"].(float64); !ok || v <= 0 {
		t.Errorf("after_kill_s: %v", old["after_kill_s"])
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"-shape", "sine", "tcp"},
		{"nosuch"},
		{},
		{"-keys-list", "10,x", "mem"},
		{"-count", "1000", "soak"},
		{"-protocol", "udp", "soak"},
		{"-rate", "-5", "soak"},
		{"-cardinality", "-1", "compare"},
	} {
		err := run(args)
		if err == nil {
			t.Errorf("run(%q): no error", args)
			continue
		}
		if strings.Contains(err.Error(), "panic") {
			t.Errorf("run(%q): %v", args, err)
		}
	}
}
