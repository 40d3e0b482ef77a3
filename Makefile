# chatty's build. `make run` and `make test` are the two commands a newcomer needs.
GO        ?= go
BIN       := bin
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
# staticcheck 2026.2.2, by its module version (the proxy knows no other).
STATICCHECK_VERSION := v0.8.2

.PHONY: all build run test test-short lint fuzz bench bench-pool clean man

all: build

build:
	$(GO) build -o $(BIN)/chattyd ./daemon
	$(GO) build -o $(BIN)/chattyctl ./ctl

run: build
	$(BIN)/chattyd demo-feed | $(BIN)/chattyd --demo --verbose

test: lint
	$(GO) test -race -count=1 -timeout 8m ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@$(GOBIN_DIR)/staticcheck -version 2>/dev/null | grep -q '($(STATICCHECK_VERSION:v%=%))' || \
	  $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN_DIR)/staticcheck ./...

# bench measures chattyd against ncat --broker, then the worker pool; see
# docs/benchmarks.md.
bench: build
	./bench/run.sh $(BENCH_FLAGS)
	$(GO) run ./bench/poolbench -bin $(BIN)/chattyd $(BENCH_POOL_FLAGS)
	$(GO) test -run '^$$' -bench 'Fanout' -benchtime 2000x ./pkg/broadcast

# The worker pool with the real chattyd: 0 -> 200 workers connected, and
# respawn latency after SIGKILL over 200 respawns. BENCH_POOL_FLAGS adds
# flags, such as -json FILE.
bench-pool: build
	$(GO) run ./bench/poolbench -bin $(BIN)/chattyd $(BENCH_POOL_FLAGS)

# chattyctl's manual page, generated from its command definitions.
man:
	@mkdir -p dist/man
	$(GO) run ./ctl man > dist/man/chattyctl.1

clean:
	rm -rf $(BIN) dist
