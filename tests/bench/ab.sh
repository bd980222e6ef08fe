#!/usr/bin/env bash
# A/B of two sidecar binaries under the same load, alternating, for tuning one change:
#
#   tests/bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]     # DUR=8 seconds per run by default
#
# Same setup as run.sh (tests/bench/policy.yaml, bench-backend, one worker pinned to core 0,
# oha with 64 keep-alive connections on core 1); prints requests/s and peak RSS per run.
# Needs the release portcullis-operator and bench-backend (`cargo build --release -p
# portcullis-operator -p portcullis-bench`) and oha (run.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
A=$1 B=$2 ROUNDS=${3:-3} DUR=${DUR:-8}
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
TOOLS=${PORTCULLIS_TOOLS:-$PWD/target/tools}
export PATH="$TOOLS/bin:$PATH"
RUN=$(mktemp -d)
AUTH="Authorization: Basic $(printf 'bench:bench-password' | base64)"
"$BIN/portcullis-operator" render -f tests/bench/policy.yaml --out "$RUN/config" >/dev/null
taskset -c 1 "$BIN/bench-backend" 127.0.0.1:18080 2>/dev/null & BACKEND=$!
trap 'kill $BACKEND 2>/dev/null; rm -rf "$RUN"' EXIT
for round in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$bin" --config-dir "$RUN/config" --inbound 127.0.0.1:19081 \
      --inbound-tls 127.0.0.1:0 --egress 127.0.0.1:0 --admin 127.0.0.1:19091 --audit-log "$RUN/audit.log" \
      >"$RUN/sidecar.log" 2>&1 & SIDECAR=$!
    for _ in $(seq 50); do curl -fs -o /dev/null -H "$AUTH" http://127.0.0.1:19081/bench && break; sleep 0.1; done
    rps=$(taskset -c 1 oha --no-tui -z "${DUR}s" -c 64 -H "$AUTH" http://127.0.0.1:19081/bench | awk '/Requests\/sec/ {print $2}')
    echo "round $round $bin requests/s=$rps peak_rss=$(awk '/VmHWM/ {print $2}' /proc/$SIDECAR/status) kB"
    kill $SIDECAR; wait $SIDECAR 2>/dev/null || true
    rm -f "$RUN/audit.log"
  done
done
