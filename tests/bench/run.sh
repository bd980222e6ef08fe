#!/usr/bin/env bash
# The Portcullis load benchmark: direct vs sidecar vs nginx with the same policy, and the
# sidecar again with its limits counted in Redis (--limits-store) beside the in-memory one.
#
#   tests/bench/run.sh            # full run: 3 rounds x 6 s per target and mode (ROUNDS, DURATION)
#   tests/bench/run.sh --smoke    # CI smoke: 1 round x 2 s, checks that everything answers
#
# A proxy-bound benchmark on 2 cores (tests/bench/common.sh). Core 0: the load generators (wrk
# for throughput, oha for latency), the backend (nginx, one worker, `return 200` with a 1 KiB
# body) and redis-server. Core 1: the proxy under test, alone: the sidecar (the static release
# binary; no TOKIO_WORKER_THREADS: pinned to one CPU it runs one current-thread worker, which
# its start-up log line "runtime" must say) or nginx (one worker process). The same policy on
# both proxies (tests/bench/policy.yaml, nginx.conf.in): trusted IP ranges, Basic auth, a rate
# limit that never triggers, the org allowance, an access/audit log written to a file.
#
# Each round runs every target in an alternating order (A/B/C/D, D/C/B/A, ...): a throughput
# run (wrk, 64 keep-alive connections, fixed duration, as fast as possible) and a latency run
# (oha, 8 connections at a fixed 2,000 req/s). Around each throughput run the proxy's user and
# system CPU time (/proc/PID/stat; nginx's worker, the sidecar's process) and both cores' use
# (/proc/stat, whose softirq column holds loopback TCP work the kernel does not charge to the
# process) are read: CPU per request is the delta over the requests wrk counted. Medians
# over rounds go to target/bench/results.md, with ratios sidecar/nginx and sidecar/direct.
#
# Validity: "direct" (wrk straight to the backend) must be at least 2.5x the fastest proxy's
# requests/s, or the load side, not the proxy, set the numbers: the run says INVALID and fails.
# In --smoke mode (CI, possibly on a busy machine) the floor is 1.1x (the load side must at
# least outrun a proxy; 1.2-2.0x was seen on a shared machine); CI checks that everything
# answers and enforces the policy (401 without credentials), not the ratios.
#
# `sidecar-redis` is a second sidecar process with the same configuration and flags plus
# `--limits-store` on a redis-server (Debian's, on core 0): the cost of counting the org
# allowance and the profile limit across replicas, far from the limits.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
source tests/bench/common.sh

MODE=full
[ "${1:-}" = "--smoke" ] && MODE=smoke
if [ "$MODE" = smoke ]; then
  ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-2}; MIN_RATIO=1.1
else
  ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-6}; MIN_RATIO=2.5
fi
CONNS=${CONNS:-64}
RATE=${RATE:-2000}
OUT=$ROOT/target/bench
RUN=$OUT/run
TOOLS=${PORTCULLIS_TOOLS:-$ROOT/target/tools}
export PATH="$TOOLS/bin:$PATH"
rm -rf "$RUN" && mkdir -p "$RUN"/{body,proxy,fastcgi,uwsgi,scgi}

log() { printf '[bench] %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------------------
bench_need nginx:nginx-light redis-server:redis-server wrk:wrk curl:curl pgrep:procps python3:python3 \
  taskset:util-linux
if ! command -v oha >/dev/null; then
  log "installing oha into $TOOLS"
  cargo install oha --locked --quiet --root "$TOOLS"
fi
NGINX=$(bench_nginx)
CLK_TCK=$(getconf CLK_TCK)

# --- build and configure -------------------------------------------------------------------
# The static release binaries the images ship (tests/lib/release.sh); in CI,
# tests/suite.d/70-images.sh has built the sidecar and the operator already.
log "building release binaries (static, as in the images)"
source tests/lib/release.sh
release_build portcullis-sidecar portcullis-operator
BIN=$(release_dir)

BACKEND_PORT=$BENCH_PORT_BASE
SIDECAR_PORT=$((BENCH_PORT_BASE + 1)) NGINX_PORT=$((BENCH_PORT_BASE + 2)) REDIS_SIDECAR_PORT=$((BENCH_PORT_BASE + 3))
ADMIN_PORT=$((BENCH_PORT_BASE + 10)) REDIS_ADMIN_PORT=$((BENCH_PORT_BASE + 11)) REDIS_PORT=$((BENCH_PORT_BASE + 299))
bench_ports_free "$BACKEND_PORT" "$SIDECAR_PORT" "$NGINX_PORT" "$REDIS_SIDECAR_PORT" "$ADMIN_PORT" \
  "$REDIS_ADMIN_PORT" "$REDIS_PORT"
bench_render_config "$BIN/portcullis-operator" "$RUN/config"
# {PLAIN}: nginx compares the password as the sidecar does, without a deliberately slow hash
# (apr1 costs ~1000 MD5 rounds per request and would make nginx look far slower than it is).
printf 'bench:{PLAIN}bench-password\n' > "$RUN/htpasswd"
sed -e "s#@DIR@#$RUN#g" -e "s#@PORT@#$NGINX_PORT#g" -e "s#@BACKEND@#127.0.0.1:$BACKEND_PORT#g" \
  tests/bench/nginx.conf.in > "$RUN/nginx.conf"

PIDS=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Core 0: the backend and redis-server (with the load generators, below).
bench_start_backend "$RUN/backend"
PIDS+=("$BACKEND_PID")
taskset -c "$BENCH_LOAD_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --dir "$RUN" >"$RUN/redis.log" 2>&1 & REDIS_PID=$!
PIDS+=("$REDIS_PID")
# Core 1: the proxies, one at a time under load. No TOKIO_WORKER_THREADS (nor one inherited):
# the sidecar sizes its runtime from its affinity.
env -u TOKIO_WORKER_THREADS taskset -c "$BENCH_PROXY_CPU" "$BIN/portcullis-sidecar" --config-dir "$RUN/config" \
  --inbound "127.0.0.1:$SIDECAR_PORT" --inbound-tls 127.0.0.1:0 --egress 127.0.0.1:0 \
  --admin "127.0.0.1:$ADMIN_PORT" --audit-log "$RUN/audit.log" >"$RUN/sidecar.log" 2>&1 & SIDECAR_PID=$!
PIDS+=("$SIDECAR_PID")
taskset -c "$BENCH_PROXY_CPU" "$NGINX" -c "$RUN/nginx.conf" -p "$RUN" 2>"$RUN/nginx.stderr" & NGINX_PID=$!
PIDS+=("$NGINX_PID")
env -u TOKIO_WORKER_THREADS taskset -c "$BENCH_PROXY_CPU" "$BIN/portcullis-sidecar" --config-dir "$RUN/config" \
  --inbound "127.0.0.1:$REDIS_SIDECAR_PORT" --inbound-tls 127.0.0.1:0 --egress 127.0.0.1:0 \
  --admin "127.0.0.1:$REDIS_ADMIN_PORT" --audit-log "$RUN/audit-redis.log" \
  --limits-store "redis://127.0.0.1:$REDIS_PORT" >"$RUN/sidecar-redis.log" 2>&1 & REDIS_SIDECAR_PID=$!
PIDS+=("$REDIS_SIDECAR_PID")

declare -A URL=(
  [direct]="http://127.0.0.1:$BACKEND_PORT/bench"
  [sidecar]="http://127.0.0.1:$SIDECAR_PORT/bench"
  [sidecar-redis]="http://127.0.0.1:$REDIS_SIDECAR_PORT/bench"
  [nginx]="http://127.0.0.1:$NGINX_PORT/bench"
)
for target in direct sidecar sidecar-redis nginx; do
  code=$(bench_wait_200 "${URL[$target]}") || {
    log "$target does not answer 200 (got $code)"
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || log "process $p ($(ps -o args= -p "$p" 2>/dev/null || echo gone)) is not running"; done
    tail -n 20 "$RUN"/*.log "$RUN"/*.stderr "$RUN"/backend/{stderr,error.log} >&2 2>/dev/null || true
    exit 1
  }
  # The policy must really be enforced: no credentials, no entry.
  if [ "$target" != direct ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[$target]}")
    [ "$code" = 401 ] || { log "$target answered $code without credentials, expected 401"; exit 1; }
  fi
done
body_len=$(curl -s -H "$BENCH_AUTH" "${URL[direct]}" | wc -c)
[ "$body_len" = 1024 ] || { log "the backend answered $body_len bytes, expected 1024"; exit 1; }

# The sidecars run one worker: pinned to one CPU, without TOKIO_WORKER_THREADS.
for name in sidecar sidecar-redis; do
  line=$(grep -m1 '"message":"runtime"' "$RUN/$name.log" || true)
  grep -q '"workers":1[,}]' <<<"$line" || {
    log "$name does not run one worker on its one CPU; its start-up log says: ${line:-nothing}"
    exit 1
  }
done

BACKEND_WORKER=$(bench_worker_of "$BACKEND_PID") || { log "no backend nginx worker"; exit 1; }
NGINX_WORKER=$(bench_worker_of "$NGINX_PID") || { log "no nginx worker"; exit 1; }
declare -A PROXY_PID=([sidecar]=$SIDECAR_PID [sidecar-redis]=$REDIS_SIDECAR_PID [nginx]=$NGINX_WORKER)

# snapshot TARGET: the CPU times of the processes that serve TARGET's requests and of both cores.
snapshot() {
  [ "$1" = direct ] || echo "proc proxy $(bench_ticks "${PROXY_PID[$1]}")"
  echo "proc backend $(bench_ticks "$BACKEND_WORKER")"
  echo "proc redis $(bench_ticks "$REDIS_PID")"
  grep -E "^cpu($BENCH_LOAD_CPU|$BENCH_PROXY_CPU) " /proc/stat | sed "s/^cpu$BENCH_LOAD_CPU /core load /; s/^cpu$BENCH_PROXY_CPU /core proxy /"
}

# --- load -----------------------------------------------------------------------------------
for round in $(seq "$ROUNDS"); do
  # Alternate the order every round so no target always runs on a warmer (or hotter) machine.
  if [ $((round % 2)) = 1 ]; then order=(direct sidecar sidecar-redis nginx); else order=(nginx sidecar-redis sidecar direct); fi
  for target in "${order[@]}"; do
    log "round $round/$ROUNDS: $target"
    snapshot "$target" > "$RUN/cpu-$target-$round.before"
    bench_wrk "$RUN/tput-$target-$round.json" "${URL[$target]}" "$DURATION" "$CONNS"
    snapshot "$target" > "$RUN/cpu-$target-$round.after"
    taskset -c "$BENCH_LOAD_CPU" oha --no-tui --output-format json -z "${DURATION}s" -c 8 -q "$RATE" \
      -H "$BENCH_AUTH" "${URL[$target]}" > "$RUN/lat-$target-$round.json"
  done
done

# The Redis sidecar must have counted in Redis: in shared mode at the end, and at most 1% of
# its round trips failed (a round trip over the 100 ms store timeout is a second or so of local
# share, reported below).
REDIS_METRICS=$(curl -s "http://127.0.0.1:$REDIS_ADMIN_PORT/metrics")
ROUND_TRIPS=$(awk '/^portcullis_limits_store_round_trip_seconds_count/ {print $2}' <<<"$REDIS_METRICS")
STORE_ERRORS=$(awk '/^portcullis_limits_store_errors_total/ {print $2}' <<<"$REDIS_METRICS")
if ! grep -q 'portcullis_limits_store_mode{mode="shared"} 1' <<<"$REDIS_METRICS" ||
  [ "${ROUND_TRIPS:-0}" -eq 0 ] || [ $((${STORE_ERRORS:-0} * 100)) -gt "${ROUND_TRIPS:-0}" ]; then
  log "sidecar-redis did not count in Redis:"
  grep portcullis_limits_store <<<"$REDIS_METRICS" >&2 || true
  exit 1
fi

rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
AUDIT_LINES=$(wc -l < "$RUN/audit.log" 2>/dev/null || echo 0)

status=0
python3 tests/bench/report.py --dir "$RUN" --rounds "$ROUNDS" --duration "$DURATION" --conns "$CONNS" \
  --rate "$RATE" --clk-tck "$CLK_TCK" --min-ratio "$MIN_RATIO" \
  --rss-kib "sidecar=$(rss_kib "$SIDECAR_PID")" --rss-kib "sidecar-redis=$(rss_kib "$REDIS_SIDECAR_PID")" \
  --rss-kib "nginx=$(( $(rss_kib "$NGINX_PID") + $(rss_kib "$NGINX_WORKER") ))" \
  --runtime-log "sidecar=$RUN/sidecar.log" --runtime-log "sidecar-redis=$RUN/sidecar-redis.log" \
  --audit-lines "$AUDIT_LINES" --redis-round-trips "${ROUND_TRIPS:-0}" --redis-errors "${STORE_ERRORS:-0}" \
  --mode "$MODE" --command "tests/bench/run.sh${1:+ $1}" > "$OUT/results.md" || status=$?
cat "$OUT/results.md"
exit "$status"
