# chatty's build. `make run` and `make test` are the two commands a newcomer needs.
GO        ?= go
BIN       := bin
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := 2026.2.2

.PHONY: all build run test test-short lint fuzz bench bench-pool bench-scale soak clean man

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
	@$(GOBIN_DIR)/staticcheck -version 2>/dev/null | grep -q '$(STATICCHECK_VERSION)' || \
	  $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN_DIR)/staticcheck ./...

# bench measures chattyd against ncat --broker and nats-server, then the
# worker pool, then 50,000 idle clients; see docs/benchmarks.md.
bench: build
	./bench/run.sh $(BENCH_FLAGS)
	$(GO) run ./bench/poolbench -bin $(BIN)/chattyd $(BENCH_POOL_FLAGS)
	$(MAKE) bench-scale

# 50,000 idle clients on one chattyd: resident memory per connection,
# keep-alives answered, time for a line to reach them all. Dials from
# 127.0.0.2-5 and raises the open-file limit (as root). BENCH_SCALE_FLAGS
# adds flags, such as -conns 100000 or -json FILE.
bench-scale: build
	$(GO) build -o $(BIN)/manyconns ./bench/manyconns
	$(BIN)/manyconns -bin $(BIN)/chattyd $(BENCH_SCALE_FLAGS)

# The worker pool with the real chattyd: 0 -> 200 workers connected, and
# respawn latency after SIGKILL over 200 respawns. BENCH_POOL_FLAGS adds
# flags, such as -json FILE.
bench-pool: build
	$(GO) run ./bench/poolbench -bin $(BIN)/chattyd $(BENCH_POOL_FLAGS)

# soak runs chattyd for 10 minutes under churn and checks that nothing is
# lost, mismatched or leaked (docs/reliability.md). SOAK_FLAGS adds flags,
# such as -duration 1h. A 20-second version runs in `make test`.
soak: build
	$(GO) run ./bench/soak -bin $(BIN)/chattyd -ctl $(BIN)/chattyctl $(SOAK_FLAGS)

# chattyctl's manual page, generated from its command definitions.
man:
	@mkdir -p dist/man
	$(GO) run ./ctl man > dist/man/chattyctl.1

clean:
	rm -rf $(BIN) dist
