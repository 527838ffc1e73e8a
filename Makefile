# Sonde. `make run` starts the server on its embedded default (data in
# ./data, listeners on 127.0.0.1); `make test` runs every test.
GO       ?= go
BIN      := bin/sonde
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZTIME ?= 30s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run test test-deps fmt-check vet lint bench compare fuzz tidy-check clean

all: build

build:
	$(GO) build -ldflags "-X main.commit=$$(git describe --always --dirty 2>/dev/null || echo unknown)" -o $(BIN) ./cmd/sonde
	$(GO) build -o bin/sonde-bench ./cmd/sonde-bench

run: build
	./$(BIN)

# The end-to-end tests drive real programs from Debian's packages: nc
# (netcat-openbsd, which does not half-close at the end of its input, the
# case the server handles), VictoriaMetrics, the peer of sonde-bench's
# compare mode, and collectd (collectd-core; write_http needs libyajl2 and
# libcurl3-gnutls, which collectd-core does not pull in), promtool
# (prometheus), which checks what /metrics serves, and Chromium, which the
# page's tests drive headless.
TEST_PKGS := netcat-openbsd victoria-metrics collectd-core libyajl2 libcurl3-gnutls prometheus chromium nodejs systemd

test-deps:
	@missing=""; for p in $(TEST_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		command -v apt-get >/dev/null 2>&1 || { echo "the end-to-end tests need:$$missing (Debian packages)"; exit 1; }; \
		echo "installing$$missing for the end-to-end tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The sondetest tag compiles in the panic hook the end-to-end tests use
# (engine/boundary): vet and test those files too.
vet:
	$(GO) vet ./...
	$(GO) vet -tags sondetest ./engine/boundary ./cmd/sonde

test: test-deps fmt-check vet
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -race -count=1 -tags sondetest ./engine/boundary

lint: fmt-check vet
	$(GO) run $(STATICCHECK) ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Sonde against Debian's VictoriaMetrics on the same load (docs/benchmarks.md).
compare: build test-deps
	bin/sonde-bench -crash -out compare.json -plot compare.png compare

# Each fuzz target for FUZZTIME.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./ingest/lineproto
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./ingest/graphite
	$(GO) test -run '^$$' -fuzz '^FuzzParseJSON$$' -fuzztime $(FUZZTIME) ./ingest/collectd
	$(GO) test -run '^$$' -fuzz '^FuzzParseCommand$$' -fuzztime $(FUZZTIME) ./ingest/collectd
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./engine/internal/record
	$(GO) test -run '^$$' -fuzz '^FuzzOpenTail$$' -fuzztime $(FUZZTIME) ./engine/internal/wal
	$(GO) test -run '^$$' -fuzz '^FuzzScan$$' -fuzztime $(FUZZTIME) ./engine/internal/wal
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./ingest/sse
	$(GO) test -run '^$$' -fuzz '^FuzzParseEvents$$' -fuzztime $(FUZZTIME) ./ingest/status
	$(GO) test -run '^$$' -fuzz '^FuzzParsePulse$$' -fuzztime $(FUZZTIME) ./ingest/status
	$(GO) test -run '^$$' -fuzz '^FuzzParseWatchtower$$' -fuzztime $(FUZZTIME) ./ingest/status
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./ingest/logatron
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./ingest/glo
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyFile$$' -fuzztime $(FUZZTIME) ./engine/internal/snapshot
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeChunk$$' -fuzztime $(FUZZTIME) ./engine/internal/snapshot
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./engine/internal/chunk
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) ./engine/internal/chunk
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) ./engine/internal/ring
	$(GO) test -run '^$$' -fuzz '^FuzzMeanRoundTrip$$' -fuzztime $(FUZZTIME) ./engine/internal/chunk
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./retention
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./ingest/statsd
	$(GO) test -run '^$$' -fuzz '^FuzzGraphiteGlob$$' -fuzztime $(FUZZTIME) ./query
	$(GO) test -run '^$$' -fuzz '^FuzzGraphiteTime$$' -fuzztime $(FUZZTIME) ./query
	$(GO) test -run '^$$' -fuzz '^FuzzGraphiteMatch$$' -fuzztime $(FUZZTIME) ./query
	$(GO) test -run '^$$' -fuzz '^FuzzGlobMatch$$' -fuzztime $(FUZZTIME) ./query
	$(GO) test -run '^$$' -fuzz '^FuzzGraphiteWalk$$' -fuzztime $(FUZZTIME) ./query
	$(GO) test -run '^$$' -fuzz '^FuzzParseTokens$$' -fuzztime $(FUZZTIME) ./engine/boundary
	$(GO) test -run '^$$' -fuzz '^FuzzTokenFromHeader$$' -fuzztime $(FUZZTIME) ./engine/boundary
	$(GO) test -run '^$$' -fuzz '^FuzzTagExprs$$' -fuzztime $(FUZZTIME) ./query
	$(GO) test -run '^$$' -fuzz '^FuzzAccount$$' -fuzztime $(FUZZTIME) ./bench

# Fails, changing nothing, when go.mod or go.sum is not what go mod tidy
# would write (prints the diff).
tidy-check:
	$(GO) mod tidy -diff

clean:
	rm -rf bin
