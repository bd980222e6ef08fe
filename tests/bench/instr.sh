#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind, for one or more sidecar
# binaries: a measure of a change's cost in user space that the machine's noise does not move.
#
#   tests/bench/instr.sh BINARY...        # LOAD_SECONDS=10 of load per binary by default
#
# On a shared 2-core VM the requests/s of one binary swing by a third between runs
# (tests/bench/ab.sh pairs its runs to see past that), and this VM has no hardware counters for
# `perf stat`. Callgrind counts every instruction the sidecar executes in user space, the same
# from run to run to about 0.1%, so a change of 1-2% shows. It counts nothing of the kernel's
# work (the system calls, loopback TCP): ab.sh and run.sh measure time, this measures only what
# a change to our code, or to how it uses its libraries, can move.
#
# Same setup as ab.sh (tests/bench/common.sh, policy.yaml): the nginx backend and wrk on core
# 0, the sidecar (under callgrind, which runs it some 50 times slower) on core 1. For each
# binary: 3 s of wrk (16 keep-alive connections) to warm up, counters zeroed
# (`callgrind_control -z`), LOAD_SECONDS of wrk, counters dumped: instructions (Ir) over the
# requests wrk counted in that window. Prints one line per binary and, with two, NEW/OLD
# (the first binary is OLD). Needs valgrind, wrk, nginx (installed when missing).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }
BINS=()
for b in "$@"; do BINS+=("$(realpath "$b")"); done
SECONDS_OF_LOAD=${LOAD_SECONDS:-10}
cd "$(dirname "$0")/../.."
source tests/bench/common.sh
source tests/lib/release.sh
bench_need nginx:nginx-light wrk:wrk curl:curl valgrind:valgrind python3:python3
release_build portcullis-operator
BIN=$(release_dir)
bench_sidecar_setup "$BIN/portcullis-operator"

: > "$RUN/counts"
for bin in "${BINS[@]}"; do
  rm -f "$RUN"/callgrind.out*
  env -u TOKIO_WORKER_THREADS taskset -c "$BENCH_PROXY_CPU" valgrind --tool=callgrind \
    --callgrind-out-file="$RUN/callgrind.out" "$bin" "${SIDECAR_ARGS[@]}" >"$RUN/sidecar.log" 2>&1 & SIDECAR=$!
  # Under callgrind the start takes seconds: up to a minute.
  code=$(bench_wait_200 "$URL" 600) || { echo "$bin does not answer 200 (got $code)" >&2; cat "$RUN/sidecar.log" >&2; exit 1; }
  bench_wrk "$RUN/warm.json" "$URL" 3 16
  callgrind_control -z "$SIDECAR" >/dev/null 2>&1
  bench_wrk "$RUN/wrk.json" "$URL" "$SECONDS_OF_LOAD" 16
  callgrind_control -d "$SIDECAR" >/dev/null 2>&1
  kill "$SIDECAR"; wait "$SIDECAR" 2>/dev/null || true
  SIDECAR=
  # The dump made by -d (callgrind.out.1), not the one written at exit (callgrind.out).
  dump=$RUN/callgrind.out.1
  [ -f "$dump" ] || { echo "callgrind wrote no dump for $bin" >&2; exit 1; }
  python3 - "$RUN/wrk.json" "$dump" "$bin" >> "$RUN/counts" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))
ir = next(int(l.split()[1]) for l in open(sys.argv[2]) if l.startswith(("summary:", "totals:")))
bad = sum(w["errors"].values()) + w["non2xx"]
if bad:
    sys.exit(f"{sys.argv[3]}: {bad} requests failed")
print(f"{ir / w['requests']:.0f}\t{w['requests']}\t{sys.argv[3]}")
PY
  tail -1 "$RUN/counts" | awk -F'\t' '{printf "instructions/request=%s requests=%s %s\n", $1, $2, $3}'
  rm -f "$RUN/audit.log"
done
if [ ${#BINS[@]} = 2 ]; then
  awk -F'\t' 'NR==1 {old=$1} NR==2 {printf "NEW/OLD: instructions per request %.3fx\n", $1 / old}' "$RUN/counts"
fi
