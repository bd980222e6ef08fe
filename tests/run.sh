#!/usr/bin/env bash
# The Portcullis test command (what CI runs, via .ci/run).
#
# On a fresh Debian 12 machine with a Rust toolchain it installs what the suite needs (each
# tests/setup.d/*.sh, idempotent: apt-get, pip, cargo), then runs, in order:
#   1. cargo fmt --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. cargo test --workspace (unit tests, black-box tests of the real binaries over 127.0.0.1)
#   4. each tests/suite.d/*.sh (suites that drive non-cargo tools: helm, prometheus, ...)
# Any failure stops the run with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One clean build, never edited in place: incremental caches would only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export PORTCULLIS_TOOLS="${PORTCULLIS_TOOLS:-$PWD/target/tools}"
mkdir -p "$PORTCULLIS_TOOLS/bin"
export PATH="$PORTCULLIS_TOOLS/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup) first" >&2; exit 1; }

for setup in tests/setup.d/*.sh; do
  [ -e "$setup" ] || continue
  step "setup: $setup"
  bash "$setup"
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace"
cargo test --workspace

for suite in tests/suite.d/*.sh; do
  [ -e "$suite" ] || continue
  step "suite: $suite"
  bash "$suite"
done

step "all checks passed"
