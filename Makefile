# chatty's build. `make run` and `make test` are the two commands a newcomer needs.
GO        ?= go
BIN       := bin
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
# staticcheck 2026.2.2, by its module version (the proxy knows no other).
STATICCHECK_VERSION := v0.8.2

# The package: see docs/systemd.md. nfpm runs through the module proxy, pinned.
VERSION      ?= 0.1.0
NFPM_VERSION := v2.45.0
PKG_ARCH     := $(shell $(GO) env GOARCH)
VERSION_VAR  := github.com/chatty-dev/chatty/internal/version.stamped
PKG_LDFLAGS  := -s -w -X $(VERSION_VAR)=$(VERSION)
# make build stamps git describe; outside a git checkout the binaries say
# what the Go toolchain recorded (internal/version).
GIT_VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null)
BUILD_LDFLAGS := $(if $(GIT_VERSION),-X $(VERSION_VAR)=$(GIT_VERSION))
NFPM         := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

.PHONY: all build run test test-short lint fuzz bench bench-pool bench-queue bench-scale bench-signed bench-retain bench-slots bench-nats bench-websocket soak clean man nats-test \
	package package-files verify-units systemd-test

all: build

build:
	$(GO) build -ldflags '$(BUILD_LDFLAGS)' -o $(BIN)/chattyd ./daemon
	$(GO) build -ldflags '$(BUILD_LDFLAGS)' -o $(BIN)/chattyctl ./ctl

# run takes chattyd's flags in ARGS: make run ARGS='--listen 127.0.0.1:6000 -v'.
# The feed starts once the demo's 4 workers are connected (asked on
# chattyd's default control socket; after 15s it starts anyway), so that
# its first lines reach them.
run: build
	$(BIN)/chattyd demo-feed --wait-clients 4 | $(BIN)/chattyd --demo $(ARGS)

# test runs every package; test/systemd runs verbosely so that its skip
# and the reason show (make systemd-test boots systemd for it).
test: lint
	$(GO) test -race -count=1 -timeout 8m $$($(GO) list ./... | grep -v /test/systemd$$)
	$(GO) test -count=1 -v ./test/systemd/

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@$(GOBIN_DIR)/staticcheck -version 2>/dev/null | grep -q '($(STATICCHECK_VERSION:v%=%))' || \
	  $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN_DIR)/staticcheck ./...

# bench measures chattyd against ncat --broker and nats-server, then the
# worker pool, then 50,000 idle clients; see docs/benchmarks.md.
bench: build
	./bench/run.sh $(BENCH_FLAGS)
	$(GO) run ./bench/poolbench -bin $(BIN)/chattyd $(BENCH_POOL_FLAGS)
	$(GO) test -run '^$$' -bench 'Fanout' -benchtime 2000x ./internal/broadcast
	$(MAKE) bench-queue
	$(MAKE) bench-retain
	$(MAKE) bench-slots
	$(MAKE) bench-scale

# Retention and resume: a client catching up 1,000,000 lines against a
# live one, and live fan-out with retention on against off, at 100 and
# 1000 clients, each pair in one run (docs/benchmarks.md).
bench-retain:
	$(GO) test -run '^$$' -bench 'CatchUp|Retention' -benchtime 1x ./internal/broadcast

# nats-test runs the shared-feed tests in full against a real three-node
# nats-server cluster on loopback, which the tests install into the user's
# cache (docs/scale-out.md); `make test` runs a short version.
nats-test:
	CHATTY_NATS_FULL=1 $(GO) test -race -count=1 -v -timeout 20m ./test/natscluster/

# The shared feed through a three-node NATS cluster on loopback (R3
# stream): publishing batched and not, fan-out and latency through the
# stream against stdin, and the stall when the stream leader is killed;
# see docs/benchmarks.md. BENCH_NATS_FLAGS adds flags, such as -json FILE.
bench-nats: build
	$(GO) run ./bench/natsbench -bin $(BIN)/chattyd $(BENCH_NATS_FLAGS)

# fuzz runs every fuzz target (go test -fuzz) for FUZZTIME each.
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz: $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

# The signed listener end to end, subscribers verifying every message:
# per-message and chained at full speed, and their latency against the
# text listener's (also part of `make bench`); see docs/benchmarks.md.
bench-signed: build
	./bench/run.sh -only signed-per-message,signed-chained,signed-latency $(BENCH_FLAGS)

# 1,000 WebSocket subscribers against 1,000 TCP subscribers in the same
# run, and the idle memory of each (also part of `make bench`); see
# docs/benchmarks.md.
bench-websocket: build
	./bench/run.sh -only websocket $(BENCH_FLAGS)

# 50,000 idle clients on one chattyd: resident memory per connection,
# keep-alives answered, time for a line to reach them all. Dials from
# 127.0.0.2-5 and raises the open-file limit (as root). BENCH_SCALE_FLAGS
# adds flags, such as -conns 100000 or -json FILE.
bench-scale: build
	$(GO) build -o $(BIN)/manyconns ./bench/manyconns
	$(BIN)/manyconns -bin $(BIN)/chattyd $(BENCH_SCALE_FLAGS)

# The work queue (broadcast.delivery: one) with the real chattyd: 16
# acking workers, 64-byte lines, lines/s handed out and acknowledged; and
# the time until the 64 lines of a SIGKILLed worker are acknowledged by
# others (p50, p99 over 200 kills); then the same work through a NATS
# JetStream work-queue consumer with 16 acking subscribers (nats-server as
# test/natscluster installs it), the ratio, and chattyd's work queue across
# machines on that server. Then the queue alone, in process.
# BENCH_QUEUE_FLAGS adds flags, such as -json FILE or -nats=false.
bench-queue: build
	$(GO) run ./bench/queuebench -bin $(BIN)/chattyd $(BENCH_QUEUE_FLAGS)
	$(GO) test -run '^$$' -bench 'Queue' -benchtime 2000000x ./internal/workqueue
# Slot identification (pool.replay): p99 added to a worker's connect-to-
# first-line time with 200 workers respawning, replay on against off;
# see docs/benchmarks.md.
bench-slots:
	$(GO) test -run '^$$' -bench 'SlotIdentification' -benchtime 2000x ./internal/pool
	$(GO) test -run '^$$' -bench 'Find|Inode' -benchtime 2000x ./internal/sockowner

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

# The manual pages, generated from the commands' definitions.
man:
	@mkdir -p dist/man
	$(GO) run ./ctl man > dist/man/chattyctl.1
	$(GO) run ./daemon man > dist/man/chattyd.8

# package-files builds what packaging/nfpm.yaml takes from dist/: static,
# stripped binaries with the version, compressed manual pages, completions.
package-files:
	@mkdir -p dist/bin dist/man dist/completion dist/doc
	CGO_ENABLED=0 $(GO) build -trimpath -buildmode=pie -ldflags '$(PKG_LDFLAGS)' -o dist/bin/chattyd ./daemon
	CGO_ENABLED=0 $(GO) build -trimpath -buildmode=pie -ldflags '$(PKG_LDFLAGS)' -o dist/bin/chattyctl ./ctl
	dist/bin/chattyd man | gzip -9n > dist/man/chattyd.8.gz
	dist/bin/chattyctl man | gzip -9n > dist/man/chattyctl.1.gz
	dist/bin/chattyctl completion bash > dist/completion/chattyctl.bash
	dist/bin/chattyctl completion zsh > dist/completion/_chattyctl
	gzip -9n < packaging/changelog.Debian > dist/doc/changelog.Debian.gz

# package builds dist/chatty_$(VERSION)-1_$(PKG_ARCH).deb and the .rpm.
package: package-files
	rm -f dist/*.deb dist/*.rpm
	VERSION=$(VERSION) GOARCH=$(PKG_ARCH) $(NFPM) pkg --config packaging/nfpm.yaml --packager deb --target dist/
	VERSION=$(VERSION) GOARCH=$(PKG_ARCH) $(NFPM) pkg --config packaging/nfpm.yaml --packager rpm --target dist/

# verify-units runs systemd-analyze verify and security on the units with
# the package's files in place: the package is unpacked and laid over /usr
# in a private mount namespace (root only), so the host is left untouched.
verify-units: package
	./packaging/verify-units dist/chatty_$(VERSION)-1_$(PKG_ARCH).deb

# systemd-test boots systemd in a container (systemd-nspawn, root only),
# installs the package there and drives it; see test/systemd.
systemd-test: package
	CHATTY_SYSTEMD_TEST=1 CHATTY_DEB=$(CURDIR)/dist/chatty_$(VERSION)-1_$(PKG_ARCH).deb \
	  $(GO) test -count=1 -v -timeout 8m ./test/systemd/

clean:
	rm -rf $(BIN) dist
