#!/usr/bin/env bash
# cargo-fuzz, for tests/suite.d/60-fuzz.sh (installed under $PORTCULLIS_TOOLS). Idempotent.
set -euo pipefail
tools="${PORTCULLIS_TOOLS:?set by tests/run.sh}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked --root "$tools" cargo-fuzz
fi
cargo fuzz --version
