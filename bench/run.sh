#!/usr/bin/env bash
# Runs chatty's benchmark suite: every scenario against chattyd, ncat --broker
# and nats-server in the same run, then a Markdown table (see
# docs/benchmarks.md).
# Extra arguments go to the suite, e.g. bench/run.sh -duration 10s -only full-100
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

if ! command -v ncat >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then
		apt-get install -y ncat || { apt-get update && apt-get install -y ncat; }
	else
		echo "bench: ncat is missing; install it as root: apt-get install -y ncat" >&2
		exit 1
	fi
fi

# nats-server, pinned, built from the Go module proxy into bin/.
NATS_VERSION=v2.15.2
if ! bin/nats-server --version 2>/dev/null | grep -q "${NATS_VERSION#v}"; then
	echo "bench: installing nats-server $NATS_VERSION into bin/" >&2
	GOBIN="$PWD/bin" "$GO" install "github.com/nats-io/nats-server/v2@$NATS_VERSION" ||
		echo "bench: cannot install nats-server; its column says not measured" >&2
fi

# 10,000 subscribers need more than 10,000 descriptors in the tool and the
# server; root may raise the hard limit too.
want=32768
if [ "$(id -u)" -eq 0 ]; then ulimit -Hn "$want" 2>/dev/null || true; fi
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want" || echo "bench: cannot raise ulimit -n to $want; the 10,000-subscriber runs may fail" >&2

mkdir -p bin bench/results
"$GO" build -o bin/chattyload ./bench/chattyload
"$GO" build -o bin/chattybench ./bench/suite
# Always rebuild chattyd (cheap when nothing changed), so that a stale binary
# is never measured; if it cannot be built, the table says "not measured".
chattyd=bin/chattyd
if [ ! -d daemon ]; then
	echo "bench: no ./daemon yet; measuring ncat only" >&2
	chattyd=
elif ! "$GO" build -o bin/chattyd ./daemon; then
	echo "bench: chattyd does not build; measuring ncat only" >&2
	chattyd=
fi
exec bin/chattybench -chattyload bin/chattyload -chattyd "$chattyd" -nats bin/nats-server -out bench/results "$@"
