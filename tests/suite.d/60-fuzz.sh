#!/usr/bin/env bash
# Every fuzz target (sidecar/fuzz/README.md) runs a few seconds from its seeds: the targets
# build, the seeds pass, and a short search finds no panic. The 10-minute runs are by hand.
set -euo pipefail
cd "$(dirname "$0")/../../sidecar/fuzz"
seconds="${PORTCULLIS_FUZZ_SECONDS:-5}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O --sanitizer none
for target in $(cargo fuzz list); do
  echo "fuzz: $target (${seconds}s)"
  mkdir -p "corpus/$target"
  log="$(mktemp)"
  if ! cargo fuzz run -O --sanitizer none "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "FAIL: fuzz target $target crashed (see sidecar/fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^(stat::number_of_executed_units|Done)" "$log" || true
  rm -f "$log"
done
echo "fuzz suite: every target ran without a crash"
