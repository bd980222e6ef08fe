#!/usr/bin/env bash
# Soak: the sidecar under a steady load for a long time (issue 15). By hand, on an idle machine:
#
#   tests/soak/run.sh                  # 10 minutes at 80% of the saturated rate
#   SOAK_SECONDS=60 tests/soak/run.sh  # a shorter look
#
# The setup is the benchmark's (tests/bench/common.sh): release binaries, the nginx backend
# (1 KiB answers) and the load generators on core 0, the sidecar alone on core 1 (without
# TOKIO_WORKER_THREADS: one CPU, one worker), the bench policy (trusted ranges, Basic, a limit
# that never triggers, the audit log to a file). First 10 s as fast as possible (wrk, 64
# connections) give the saturated rate R; then SOAK_SECONDS at 0.8 R (oha, 64 connections). The
# sidecar's RSS is read from /proc every 10 s. The run fails (non-zero) when any request was
# not answered 200, or when RSS grew more than 5% from the end of the first minute to the end.
# Results: target/soak/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECONDS_TOTAL=${SOAK_SECONDS:-600}
OUT=$ROOT/target/soak
RUN=$OUT/run
TOOLS=${PORTCULLIS_TOOLS:-$ROOT/target/tools}
export PATH="$TOOLS/bin:$PATH"
rm -rf "$RUN" && mkdir -p "$RUN"
log() { printf '[soak] %s\n' "$*" >&2; }
source tests/bench/common.sh
bench_need nginx:nginx-light wrk:wrk curl:curl pgrep:procps python3:python3 taskset:util-linux
command -v oha >/dev/null || { log "installing oha"; cargo install oha --locked --quiet --root "$TOOLS"; }

# The static release binaries the images ship (tests/lib/release.sh); in CI,
# tests/suite.d/70-images.sh has built the sidecar and the operator already.
log "building release binaries (static, as in the images)"
source tests/lib/release.sh
release_build portcullis-sidecar portcullis-operator
BIN=$(release_dir)

# The backend is on BENCH_PORT_BASE (18080), where the rendered policy routes.
SIDECAR_PORT=$((BENCH_PORT_BASE + 101)) ADMIN_PORT=$((BENCH_PORT_BASE + 110))
bench_ports_free "$BENCH_PORT_BASE" "$SIDECAR_PORT" "$ADMIN_PORT"
bench_render_config "$BIN/portcullis-operator" "$RUN/config"
PIDS=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
bench_start_backend "$RUN/backend"
PIDS+=("$BACKEND_PID")
env -u TOKIO_WORKER_THREADS taskset -c "$BENCH_PROXY_CPU" "$BIN/portcullis-sidecar" --config-dir "$RUN/config" \
  --inbound "127.0.0.1:$SIDECAR_PORT" --inbound-tls 127.0.0.1:0 --egress 127.0.0.1:0 \
  --admin "127.0.0.1:$ADMIN_PORT" --audit-log "$RUN/audit.log" >"$RUN/sidecar.log" 2>&1 & SIDECAR=$!
PIDS+=("$SIDECAR")
URL="http://127.0.0.1:$SIDECAR_PORT/bench"
bench_wait_200 "http://127.0.0.1:$BENCH_PORT_BASE/bench" >/dev/null || { log "the backend does not answer 200"; exit 1; }
bench_wait_200 "$URL" >/dev/null || { log "the sidecar does not answer 200 on $URL"; exit 1; }
workers=$(grep -m1 -o '"workers":[0-9]*' "$RUN/sidecar.log" || echo '"workers":unknown')
log "sidecar runtime: ${workers//\"/} (pinned to CPU $BENCH_PROXY_CPU, no TOKIO_WORKER_THREADS)"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$SIDECAR/status"; }
log "saturated rate (10 s, wrk, 64 connections)"
bench_wrk "$RUN/saturated.json" "$URL" 10 64
R=$(python3 -c "import json,sys; w=json.load(open(sys.argv[1])); print(int(w['requests'] / (w['duration_us'] / 1e6)))" "$RUN/saturated.json")
RATE=$(( R * 8 / 10 ))
log "saturated: $R requests/s; soaking ${SECONDS_TOTAL}s at $RATE requests/s"

: >"$RUN/rss.tsv"
( for t in $(seq 0 10 "$SECONDS_TOTAL"); do echo -e "$t\t$(rss_kib)" >>"$RUN/rss.tsv"; sleep 10; done ) & SAMPLER=$!
taskset -c "$BENCH_LOAD_CPU" oha --no-tui --output-format json -z "${SECONDS_TOTAL}s" -q "$RATE" -c 64 -H "$BENCH_AUTH" "$URL" >"$RUN/soak.json"
kill "$SAMPLER" 2>/dev/null || true
echo -e "$SECONDS_TOTAL\t$(rss_kib)" >>"$RUN/rss.tsv"

status=0
python3 - "$RUN" "$R" "$RATE" "$SECONDS_TOTAL" >"$OUT/results.md" <<'PY' || status=$?
import json, sys
run, saturated, rate, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
soak = json.load(open(f"{run}/soak.json"))
codes = soak.get("statusCodeDistribution", {})
ok = int(codes.get("200", 0))
other = sum(int(v) for k, v in codes.items() if k != "200")
# Requests still in flight when the duration ends are cut by oha itself, not failures.
errors = sum(int(v) for k, v in soak.get("errorDistribution", {}).items() if k != "aborted due to deadline")
rss = [tuple(map(int, l.split())) for l in open(f"{run}/rss.tsv") if len(l.split()) == 2]
base = next((kib for t, kib in rss if t >= 60), rss[0][1])
end = rss[-1][1]
growth = (end - base) / base * 100
lat = soak["latencyPercentiles"]
print(f"# Soak: {total} s at {rate} requests/s (80% of the saturated {saturated} requests/s)\n")
print(f"- answered 200: {ok}; other statuses: {other}; connection errors: {errors}")
print(f"- achieved: {soak['summary']['requestsPerSec']:.0f} requests/s; p50 {lat['p50']*1e3:.2f} ms, p99 {lat['p99']*1e3:.2f} ms")
print(f"- sidecar RSS: {rss[0][1]/1024:.1f} MiB at start, {base/1024:.1f} MiB after the first minute, {end/1024:.1f} MiB at the end ({growth:+.1f}%)")
print(f"- RSS samples (s, KiB): {' '.join(f'{t}:{k}' for t, k in rss)}")
ok_run = other == 0 and errors == 0 and growth < 5
print(f"\n**{'PASS' if ok_run else 'FAIL'}**: zero failed requests and RSS growth under 5% after the first minute")
sys.exit(0 if ok_run else 1)
PY
cat "$OUT/results.md"
exit $status
