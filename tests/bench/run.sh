#!/usr/bin/env bash
# The Portcullis load benchmark: direct vs sidecar vs nginx with the same policy, and the
# sidecar again with its limits counted in Redis (--limits-store) beside the in-memory one.
#
#   tests/bench/run.sh            # full run: 5 rounds x 10 s per target and mode
#   tests/bench/run.sh --smoke    # CI smoke: 1 round x 2 s, checks that everything answers
#
# One machine, one run: release binaries; bench-backend (1 KiB answers); the sidecar with one
# tokio worker and nginx with one worker process, both pinned to core 0; the backend and the
# load generator (oha) on core 1. The same policy on both proxies (tests/bench/policy.yaml,
# nginx.conf.in): trusted IP ranges, Basic auth, a rate limit that never triggers, the org
# allowance, an access/audit log written to a file. Each round runs every target in an
# alternating order (A/B/C, C/B/A, ...): a throughput run (64 keep-alive connections, fixed
# duration, as fast as possible) and a latency run (a fixed moderate rate). Medians are
# reported in target/bench/results.md with ratios sidecar/nginx and sidecar/direct.
# `sidecar-redis` is a second sidecar process with the same configuration and flags plus
# `--limits-store` on a redis-server (Debian's, on core 1 with the backend): the cost of
# counting the org allowance and the profile limit across replicas, far from the limits.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

MODE=full
[ "${1:-}" = "--smoke" ] && MODE=smoke
if [ "$MODE" = smoke ]; then ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-2}; else ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-10}; fi
CONNS=${CONNS:-64}
RATE=${RATE:-2000}
OUT=$ROOT/target/bench
RUN=$OUT/run
TOOLS=${PORTCULLIS_TOOLS:-$ROOT/target/tools}
export PATH="$TOOLS/bin:$PATH"
rm -rf "$RUN" && mkdir -p "$RUN"/{config,body,proxy,fastcgi,uwsgi,scgi}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
log() { printf '[bench] %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------------------
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v oha >/dev/null; then
  log "installing oha into $TOOLS"
  cargo install oha --locked --quiet --root "$TOOLS"
fi
command -v taskset >/dev/null || { log "taskset (util-linux) is required"; exit 1; }
if ! command -v redis-server >/dev/null; then
  log "installing redis-server"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# --- build and configure -------------------------------------------------------------------
# The static release binaries the images ship (tests/lib/release.sh); in CI,
# tests/suite.d/70-images.sh has built the sidecar and the operator already.
log "building release binaries (static, as in the images)"
source tests/lib/release.sh
release_build portcullis-sidecar portcullis-operator
release_build portcullis-bench
BIN=$(release_dir)
"$BIN/portcullis-operator" render -f tests/bench/policy.yaml --out "$RUN/config" --org-allowance 100000000 >/dev/null

BACKEND_PORT=18080 SIDECAR_PORT=18081 NGINX_PORT=18082 ADMIN_PORT=18090
REDIS_SIDECAR_PORT=18083 REDIS_ADMIN_PORT=18091 REDIS_PORT=18379
AUTH="Authorization: Basic $(printf 'bench:bench-password' | base64)"
# {PLAIN}: nginx compares the password as the sidecar does, without a deliberately slow hash
# (apr1 costs ~1000 MD5 rounds per request and would make nginx look far slower than it is).
printf 'bench:{PLAIN}bench-password\n' > "$RUN/htpasswd"
sed -e "s#@DIR@#$RUN#g" -e "s#@PORT@#$NGINX_PORT#g" tests/bench/nginx.conf.in > "$RUN/nginx.conf"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

taskset -c 1 "$BIN/bench-backend" "127.0.0.1:$BACKEND_PORT" 2>"$RUN/backend.log" & PIDS+=($!)
TOKIO_WORKER_THREADS=1 taskset -c 0 "$BIN/portcullis-sidecar" --config-dir "$RUN/config" \
  --inbound "127.0.0.1:$SIDECAR_PORT" --inbound-tls 127.0.0.1:0 --egress 127.0.0.1:0 \
  --admin "127.0.0.1:$ADMIN_PORT" --audit-log "$RUN/audit.log" >"$RUN/sidecar.log" 2>&1 & SIDECAR_PID=$!
PIDS+=($SIDECAR_PID)
taskset -c 0 "$NGINX" -c "$RUN/nginx.conf" -p "$RUN" 2>"$RUN/nginx.stderr" & NGINX_PID=$!
PIDS+=($NGINX_PID)
taskset -c 1 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --dir "$RUN" >"$RUN/redis.log" 2>&1 & PIDS+=($!)
TOKIO_WORKER_THREADS=1 taskset -c 0 "$BIN/portcullis-sidecar" --config-dir "$RUN/config" \
  --inbound "127.0.0.1:$REDIS_SIDECAR_PORT" --inbound-tls 127.0.0.1:0 --egress 127.0.0.1:0 \
  --admin "127.0.0.1:$REDIS_ADMIN_PORT" --audit-log "$RUN/audit-redis.log" \
  --limits-store "redis://127.0.0.1:$REDIS_PORT" >"$RUN/sidecar-redis.log" 2>&1 & REDIS_SIDECAR_PID=$!
PIDS+=($REDIS_SIDECAR_PID)

declare -A URL=(
  [direct]="http://127.0.0.1:$BACKEND_PORT/bench"
  [sidecar]="http://127.0.0.1:$SIDECAR_PORT/bench"
  [sidecar-redis]="http://127.0.0.1:$REDIS_SIDECAR_PORT/bench"
  [nginx]="http://127.0.0.1:$NGINX_PORT/bench"
)
for target in direct sidecar sidecar-redis nginx; do
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "${URL[$target]}" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || { log "$target does not answer 200 (got $code)"; cat "$RUN"/*.log "$RUN/nginx.stderr" >&2; exit 1; }
  # The policy must really be enforced: no credentials, no entry.
  if [ "$target" != direct ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[$target]}")
    [ "$code" = 401 ] || { log "$target answered $code without credentials, expected 401"; exit 1; }
  fi
done

# --- load -----------------------------------------------------------------------------------
for round in $(seq "$ROUNDS"); do
  # Alternate the order every round so no target always runs on a warmer (or hotter) machine.
  if [ $((round % 2)) = 1 ]; then order=(direct sidecar sidecar-redis nginx); else order=(nginx sidecar-redis sidecar direct); fi
  for target in "${order[@]}"; do
    log "round $round/$ROUNDS: $target"
    taskset -c 1 oha --no-tui --output-format json -z "${DURATION}s" -c "$CONNS" -H "$AUTH" "${URL[$target]}" \
      > "$RUN/tput-$target-$round.json"
    taskset -c 1 oha --no-tui --output-format json -z "${DURATION}s" -c 8 -q "$RATE" -H "$AUTH" "${URL[$target]}" \
      > "$RUN/lat-$target-$round.json"
  done
done

# The Redis sidecar must have counted in Redis: in shared mode at the end, and at most 1% of
# its round trips failed (on a saturated 2-core machine a round trip can exceed the 100 ms
# store timeout; each such failure is a second or so of local share, reported below).
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
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1 || true)
SIDECAR_RSS=$(rss_kib "$SIDECAR_PID")
NGINX_RSS=$(( $(rss_kib "$NGINX_PID") + $(rss_kib "${NGINX_WORKER:-$NGINX_PID}") ))
AUDIT_LINES=$(wc -l < "$RUN/audit.log" 2>/dev/null || echo 0)

python3 tests/bench/report.py --dir "$RUN" --rounds "$ROUNDS" --duration "$DURATION" --conns "$CONNS" \
  --rate "$RATE" --sidecar-rss-kib "$SIDECAR_RSS" --nginx-rss-kib "$NGINX_RSS" --audit-lines "$AUDIT_LINES" \
  --redis-round-trips "${ROUND_TRIPS:-0}" --redis-errors "${STORE_ERRORS:-0}" \
  --mode "$MODE" --command "tests/bench/run.sh${1:+ $1}" > "$OUT/results.md"
cat "$OUT/results.md"
