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

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"-shape", "sine", "tcp"},
		{"nosuch"},
		{},
		{"-keys-list", "10,x", "mem"},
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
