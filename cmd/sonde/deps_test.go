package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirection enforces the layering in docs/architecture.md:
// parsers and value types stay pure, the engine knows nothing of its
// consumers, consumers reach the engine only through their own interfaces,
// and only the snapshot package touches bbolt.
func TestImportDirection(t *testing.T) {
	const mod = "github.com/sonde-metrics/sonde/"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}:{{join .Imports \" \"}}", "github.com/sonde-metrics/sonde/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type rule struct {
		pkg     string // prefix
		allowed func(imp string) bool
	}
	stdlib := func(imp string) bool { return !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") }
	sample := mod + "engine/sample"
	parser := func(i string) bool { return stdlib(i) || i == sample || i == mod+"ingest/internal/text" }
	boundary := mod + "engine/boundary"
	rules := []rule{
		{mod + "engine/sample", stdlib},
		// What every listener shares at its boundary with clients.
		{boundary, stdlib},
		{mod + "ingest/internal/text", stdlib},
		// The parsers: pure functions of bytes, sharing only the text checks.
		{mod + "ingest/lineproto", parser},
		{mod + "ingest/graphite", parser},
		{mod + "ingest/collectd", parser},
		{mod + "ingest/statsd", parser},
		{mod + "ingest/sse", stdlib},
		{mod + "ingest/logatron", stdlib},
		{mod + "ingest/glo", stdlib},
		{mod + "ingest/status", parser},
		{mod + "engine/internal/chunk", func(i string) bool { return stdlib(i) || i == sample }},
		{mod + "engine/internal/snapshot", func(i string) bool {
			return stdlib(i) || i == sample || i == mod+"engine/internal/chunk" || i == "go.etcd.io/bbolt" || i == "go.etcd.io/bbolt/errors"
		}},
		{mod + "retention", func(i string) bool { return stdlib(i) || i == sample }},
		// remote_write reads the engine's WAL through DB.ReadPoints and
		// writes the wire format (its logs through boundary's limiter):
		// nothing of ingest or query.
		{mod + "engine/remotewrite", func(i string) bool {
			return stdlib(i) || i == mod+"engine" || i == sample || i == boundary ||
				i == "github.com/klauspost/compress/s2" || i == "google.golang.org/protobuf/encoding/protowire"
		}},
		{mod + "engine", func(i string) bool {
			return stdlib(i) || strings.HasPrefix(i, mod+"engine/") || i == "github.com/tidwall/wal" || i == "github.com/google/btree"
		}},
		{mod + "ingest", func(i string) bool {
			return stdlib(i) || i == sample || i == boundary || strings.HasPrefix(i, mod+"ingest/") || i == "github.com/valyala/fasthttp"
		}},
		{mod + "query", func(i string) bool {
			// ingest/status: the pure parser of the status routes' bodies;
			// ingest/glo: glo's tags and JSONP callback names.
			return stdlib(i) || i == sample || i == boundary || i == mod+"ingest/status" || i == mod+"ingest/glo" ||
				i == "github.com/valyala/fasthttp"
		}},
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imps, _ := strings.Cut(line, ":")
		for _, r := range rules {
			if pkg != r.pkg && !strings.HasPrefix(pkg, r.pkg+"/") {
				continue
			}
			checked++
			for _, imp := range strings.Fields(imps) {
				if !r.allowed(imp) {
					t.Errorf("%s imports %s, which its layer forbids", pkg, imp)
				}
			}
			break // the first, most specific rule decides
		}
	}
	if checked < 8 {
		t.Fatalf("only %d packages checked; the rules no longer match the tree", checked)
	}
}
