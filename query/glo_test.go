package query

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sonde-metrics/sonde/engine"
	"github.com/sonde-metrics/sonde/engine/sample"
)

func TestParseGloKey(t *testing.T) {
	k, err := ParseGloKey("stats.*,lvl=2,desc=a, b")
	if err != nil || k.Level != 2 || k.Desc != "a, b" || !k.Pattern.Match("stats.x") {
		t.Fatalf("%+v, %v", k, err)
	}
	for _, bad := range []string{"a,lvl=-1", "a,lvl=x", "a,color=red", strings.Repeat("a", 2000), "a,desc=" + strings.Repeat("d", 2000)} {
		if _, err := ParseGloKey(bad); err == nil {
			t.Fatalf("%.40q: no error", bad)
		}
	}
}

// BenchmarkGloDocument measures the answer to glo's poller page at 10k
// keys (the page gives up after 500 ms), over HTTP, against /data, the
// mesures dump of the same keys, measured in the same run.
func BenchmarkGloDocument(b *testing.B) {
	db, err := engine.Open(b.TempDir(), engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ops := make([]sample.Op, 0, 10_000)
	for i := range 10_000 {
		op := sample.Op{Code: sample.Set, Key: fmt.Sprintf("host%02d.service%03d.requests", i%50, i), Value: float64(i) * 1.5}
		if i%2 == 1 {
			op.Code, op.Value = sample.Incr, float64(i)
		}
		ops = append(ops, op)
	}
	if err := db.Append(context.Background(), ops, make([]error, len(ops))); err != nil {
		b.Fatal(err)
	}
	srv, err := Listen(Options{Addr: "127.0.0.1:0"}, db)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve()
	defer srv.Shutdown(context.Background())
	for _, path := range []string{"/glo?callback=jQuery16_1&_=1", "/data"} {
		b.Run(strings.TrimPrefix(strings.SplitN(path, "?", 2)[0], "/"), func(b *testing.B) {
			size := 0
			for b.Loop() {
				resp, err := http.Get("http://" + srv.Addr().String() + path)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%s: %d", path, resp.StatusCode)
				}
				size = int(n)
			}
			b.ReportMetric(float64(size), "bytes")
		})
	}
}
