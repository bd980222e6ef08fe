# shellcheck shell=bash
# The benchmark's machine layout and helpers, shared by tests/bench/run.sh, tests/bench/ab.sh and
# tests/soak/run.sh; sourced (from the repository root), never run.
#
# Two cores. Core 0 (BENCH_LOAD_CPU) holds the load and what the proxy talks to: wrk (or oha),
# the backend (nginx, one worker, `return 200` with a 1 KiB body, keep-alive, no access log) and
# redis-server. Core 1 (BENCH_PROXY_CPU) holds the proxy under test, alone. Together, wrk and
# the backend answer several times faster than a proxy can (run.sh checks it, "validity"), so
# what is measured is the proxy, not the load generator.
#
# Ports: BENCH_PORT_BASE (18080) is the backend; the callers place theirs above it. The policy
# (tests/bench/policy.yaml) routes to the backend's port; bench_render_config rewrites it.

BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}
BENCH_PROXY_CPU=${BENCH_PROXY_CPU:-1}
BENCH_PORT_BASE=${BENCH_PORT_BASE:-18080}
BENCH_AUTH="Authorization: Basic $(printf 'bench:bench-password' | base64)"
# wrk on one core: one thread.
BENCH_WRK_THREADS=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# bench_need COMMAND:DEBIAN_PACKAGE...: installs (apt-get, as root or with sudo) the packages
# whose command is missing. /usr/sbin is looked at too: it is not on every user's PATH.
bench_need() {
  local pair cmd pkg missing=()
  for pair in "$@"; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  printf '[bench] installing %s\n' "${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

bench_nginx() { command -v nginx || echo /usr/sbin/nginx; }

# bench_ports_free PORT...: fails, naming the port, when something already listens on one.
bench_ports_free() {
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      printf '[bench] port %s is already in use on 127.0.0.1: stop what holds it, or move the benchmark'"'"'s ports with BENCH_PORT_BASE (now %s)\n' "$p" "$BENCH_PORT_BASE" >&2
      return 1
    fi
  done
}

# bench_render_config OPERATOR OUT_DIR: the sidecar's configuration from tests/bench/policy.yaml,
# routed to the backend on BENCH_PORT_BASE.
bench_render_config() {
  local operator=$1 out=$2
  sed "s/port: 18080}/port: $BENCH_PORT_BASE}/" tests/bench/policy.yaml > "$out.policy.yaml"
  "$operator" render -f "$out.policy.yaml" --out "$out" --org-allowance 100000000 >/dev/null
}

# bench_start_backend DIR: the nginx backend on BENCH_PORT_BASE, pinned to the load core, its
# files under DIR. Sets BACKEND_PID (the master; bench_worker_of gives its worker).
bench_start_backend() {
  local dir=$1 body
  mkdir -p "$dir"/{body,proxy,fastcgi,uwsgi,scgi}
  body=$(head -c 1024 /dev/zero | tr '\0' x)
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$BENCH_PORT_BASE#g" -e "s#@BODY@#$body#" \
    tests/bench/backend.conf.in > "$dir/nginx.conf"
  taskset -c "$BENCH_LOAD_CPU" "$(bench_nginx)" -c "$dir/nginx.conf" -p "$dir" 2>"$dir/stderr" &
  # shellcheck disable=SC2034  # for the caller
  BACKEND_PID=$!
}

# bench_worker_of MASTER_PID: the pid of an nginx master's (single) worker, once it runs.
bench_worker_of() {
  local w _
  for _ in $(seq 50); do
    w=$(pgrep -P "$1" | head -1 || true)
    [ -n "$w" ] && { echo "$w"; return 0; }
    sleep 0.1
  done
  return 1
}

# bench_wait_200 URL [TRIES]: waits up to TRIES x 0.1 s (10 s by default) for a 200 with the
# bench credentials; prints the last code.
bench_wait_200() {
  local code=000 _
  for _ in $(seq "${2:-100}"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$BENCH_AUTH" "$1" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  echo "$code"
  [ "$code" = 200 ]
}

# bench_ticks PID: "utime stime" of a process (all its threads), in clock ticks (getconf CLK_TCK).
bench_ticks() {
  local line rest
  read -r line < "/proc/$1/stat"
  rest=${line##*) }  # the command name, in parentheses, may hold spaces
  # shellcheck disable=SC2086
  set -- $rest
  echo "${12} ${13}"
}

# bench_core_ticks: the /proc/stat lines of the load core and the proxy core, in that order.
bench_core_ticks() {
  grep -E "^cpu$BENCH_LOAD_CPU " /proc/stat
  grep -E "^cpu$BENCH_PROXY_CPU " /proc/stat
}

# bench_cores_busy BEFORE AFTER: how busy the load core and the proxy core were between two
# bench_core_ticks, in whole percent ("LOAD PROXY"): everything but idle and iowait.
bench_cores_busy() {
  paste <(echo "$1") <(echo "$2") | awk '{
    n = (NF - 2) / 2; total = 0; idle = 0
    for (i = 2; i <= n + 1; i++) { d = $(i + n + 1) - $i; total += d; if (i == 5 || i == 6) idle += d }
    printf "%s%d", (NR > 1 ? " " : ""), (total > 0 ? 100 * (total - idle) / total : 0)
  } END { print "" }'
}

# bench_wrk OUT_JSON URL DURATION_S CONNS: wrk on the load core, keep-alive, as fast as it can;
# its done() (wrk-report.lua) writes requests, duration, errors and latency to OUT_JSON. wrk's
# own text summary goes to OUT_JSON with .txt for .json.
bench_wrk() {
  local out=$1 url=$2 dur=$3 conns=$4
  WRK_JSON=$out taskset -c "$BENCH_LOAD_CPU" wrk -t "$BENCH_WRK_THREADS" -c "$conns" -d "${dur}s" --timeout 2s \
    -s tests/bench/wrk-report.lua -H "$BENCH_AUTH" "$url" > "${out%.json}.txt"
}

# bench_sidecar_setup OPERATOR_BINARY: the setup of the scripts that start sidecar binaries one
# after another under the same load (ab.sh, instr.sh). Sets SIDECAR_PORT and ADMIN_PORT (checked
# free), RUN (a directory, removed at exit) with the policy rendered into RUN/config, URL (the
# bench route on the sidecar) and SIDECAR_ARGS (the sidecar's arguments after its binary: the
# listeners and RUN/audit.log); starts the backend; kills the backend and SIDECAR (the pid the
# caller sets for the sidecar it starts) at exit.
bench_sidecar_setup() {
  SIDECAR_PORT=$((BENCH_PORT_BASE + 1001)) ADMIN_PORT=$((BENCH_PORT_BASE + 1011))
  bench_ports_free "$BENCH_PORT_BASE" "$SIDECAR_PORT" "$ADMIN_PORT"
  RUN=$(mktemp -d)
  bench_render_config "$1" "$RUN/config"
  bench_start_backend "$RUN/backend"
  SIDECAR=
  trap 'kill $SIDECAR $BACKEND_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$RUN"' EXIT
  # shellcheck disable=SC2034  # for the caller
  URL=http://127.0.0.1:$SIDECAR_PORT/bench
  # shellcheck disable=SC2034  # for the caller
  SIDECAR_ARGS=(--config-dir "$RUN/config" --inbound "127.0.0.1:$SIDECAR_PORT" --inbound-tls 127.0.0.1:0
    --egress 127.0.0.1:0 --admin "127.0.0.1:$ADMIN_PORT" --audit-log "$RUN/audit.log")
}
