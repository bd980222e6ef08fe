#!/usr/bin/env bash
# Base tools: rustfmt and clippy for the toolchain, and Debian packages the tests drive
# (openssl for TLS probes, curl for the quickstart, redis-server for the shared limits: a server,
# a cluster, and sentinels with `redis-server --sentinel`; procps for `kill -STOP` of a master;
# wrk, the load generator of tests/bench, which tests/suite.d/90-bench-smoke.sh runs).
# Idempotent.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

missing=()
for pkg in openssl curl ca-certificates python3-pip redis-server procps wrk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
