#!/usr/bin/env bash
# A real Prometheus (Debian's `prometheus`, from tests/setup.d/50-prometheus.sh) scrapes a
# running sidecar and a running operator, all on 127.0.0.1 with ports chosen here:
#   1. the fake Kubernetes API server (tests/fake-apiserver, binary `fake-apiserver`)
#      seeded with examples/, and `portcullis-operator run` against it (leader election on);
#   2. the demo backend and `portcullis-sidecar` with examples/ rendered by
#      `portcullis-operator render` (backend port rewritten to a free one);
#   3. traffic through the sidecar: admitted (200) and denied (401, 429) calls;
#   4. `promtool check metrics` on the sidecar's and the operator's /metrics;
#   5. `prometheus` scraping both every second; its HTTP API must answer
#      sum(portcullis_requests_total{decision="allow"}) = the admitted calls sent,
#      sum(portcullis_requests_total{decision="deny"}) = the denied calls sent, and
#      portcullis_operator_reconciles_total{result="ok"} >= 1 (the operator reconciled).
# Every process started here is stopped on exit; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v prometheus >/dev/null && command -v promtool >/dev/null || bash tests/setup.d/50-prometheus.sh

echo "==> building portcullis-sidecar, portcullis-operator, fake-apiserver"
cargo build -q -p portcullis-sidecar -p portcullis-operator -p portcullis-fake-apiserver
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/debug"

work=$(mktemp -d)
pids=()
status=0
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Prints each log, then fails.
die() {
  echo "FAIL $*" >&2
  for log in "$work"/*.log; do
    [ -e "$log" ] || continue
    echo "---- $(basename "$log") (last 40 lines)" >&2
    tail -n 40 "$log" >&2
  done
  exit 1
}
pass() { echo "ok   $*"; }

# Free ports: bind them all at once (so they differ), then release them.
read -r p_backend p_inbound p_tls p_egress p_admin p_operator p_prom < <(python3 - <<'PY'
import socket
socks = []
for _ in range(7):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
)
backend="127.0.0.1:$p_backend"
inbound="127.0.0.1:$p_inbound"
admin="127.0.0.1:$p_admin"
operator="127.0.0.1:$p_operator"
prom="127.0.0.1:$p_prom"

# wait_for SECONDS DESCRIPTION CMD...: retries CMD every 0.2 s until it succeeds.
wait_for() {
  local seconds="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what (waited ${seconds}s)"
    sleep 0.2
  done
}

# --- the examples, routed to the backend's free port ---------------------------------------
mkdir -p "$work/examples"
for f in examples/*.yaml; do
  sed "s/^\(\s*port:\) 8080\s*$/\1 $p_backend/" "$f" >"$work/examples/$(basename "$f")"
done
grep -q "port: $p_backend" "$work/examples/basic.yaml" || die "could not rewrite the backend port"

# --- fake API server and operator ----------------------------------------------------------
echo "==> fake API server (seeded with examples/) and portcullis-operator run (admin $operator)"
"$bin/fake-apiserver" --kubeconfig "$work/kubeconfig" --namespace demo --seed "$work/examples" \
  >"$work/apiserver.out" 2>"$work/apiserver.log" &
pids+=($!)
wait_for 30 "the fake API server wrote no kubeconfig" test -s "$work/kubeconfig"
pass "fake API server at $(head -n1 "$work/apiserver.out")"

RUST_LOG=info "$bin/portcullis-operator" run --kubeconfig "$work/kubeconfig" --admin "$operator" \
  --lease-namespace demo --identity prometheus-suite --lease-duration 15 --lease-renew 5 \
  >"$work/operator.log" 2>&1 &
pids+=($!)
operator_reconciled() {
  curl -fsS "http://$operator/metrics" | grep -Eq '^portcullis_operator_reconciles_total\{result="ok"\} [1-9]'
}
wait_for 60 "the operator did not reconcile" operator_reconciled
curl -fsS "http://$operator/metrics" | grep -q '^portcullis_operator_leader 1' || die "the operator is not the leader"
pass "operator leads the Lease and reconciled the examples"

# --- backend and sidecar -------------------------------------------------------------------
echo "==> demo backend ($backend) and sidecar (inbound $inbound, admin $admin)"
"$bin/portcullis-operator" render -f "$work/examples" --out "$work/config" --org-allowance 1000 \
  >"$work/render.log" 2>&1 || die "render"
"$bin/portcullis-sidecar" demo-backend --listen "$backend" >"$work/backend.log" 2>&1 &
pids+=($!)
"$bin/portcullis-sidecar" --log-format text --config-dir "$work/config" --inbound "$inbound" \
  --inbound-tls "127.0.0.1:$p_tls" --egress "127.0.0.1:$p_egress" --admin "$admin" \
  --audit-log "$work/audit.jsonl" >"$work/sidecar.log" 2>&1 &
pids+=($!)
wait_for 30 "the sidecar did not become ready" curl -fsS "http://$admin/readyz"
wait_for 30 "the demo backend did not answer" curl -sS -o /dev/null "http://$backend/"

# --- traffic -------------------------------------------------------------------------------
allowed=0
denied=0
# call EXPECTED CURL-ARGS...: one call through the sidecar; counts it by its answer.
call() {
  local expected="$1" got
  shift
  got=$(curl -sS -o /dev/null -w '%{http_code}' "$@") || die "curl $*"
  [ "$got" = "$expected" ] || die "curl $*: expected $expected, got $got"
  case "$got" in
    2??) allowed=$((allowed + 1)) ;;
    *) denied=$((denied + 1)) ;;
  esac
}
base="http://$inbound"
for _ in 1 2 3 4; do call 200 -u alice:wonderland "$base/finance/ledger"; done
for _ in 1 2; do call 401 -u alice:nope "$base/finance/ledger"; done
# Right credentials from outside payroll's ranges: the same 401 as a wrong password (no oracle).
for _ in 1 2 3; do call 401 -u bob:builder "$base/finance/ledger"; done
for _ in 1 2 3 4 5; do call 200 "$base/public/hello"; done
for _ in 1 2; do call 429 "$base/public/hello"; done
pass "traffic: $allowed admitted, $denied denied"

# --- promtool check metrics ----------------------------------------------------------------
for name in sidecar operator; do
  if [ "$name" = sidecar ]; then addr="$admin"; else addr="$operator"; fi
  curl -fsS "http://$addr/metrics" >"$work/$name.metrics" || die "GET $addr/metrics"
  if promtool check metrics <"$work/$name.metrics" >"$work/promtool-$name.out" 2>&1; then
    pass "promtool check metrics: $name /metrics"
  else
    cat "$work/promtool-$name.out" >&2
    die "promtool check metrics: $name /metrics"
  fi
done
grep -q '^portcullis_requests_total{' "$work/sidecar.metrics" || die "no portcullis_requests_total in the sidecar's /metrics"

# --- prometheus ----------------------------------------------------------------------------
echo "==> prometheus on $prom scraping both every second"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: portcullis-sidecar
    static_configs:
      - targets: ["$admin"]
  - job_name: portcullis-operator
    static_configs:
      - targets: ["$operator"]
EOF
promtool check config "$work/prometheus.yml" >"$work/promtool-config.out" 2>&1 \
  || { cat "$work/promtool-config.out" >&2; die "promtool check config"; }
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="$prom" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_for 60 "prometheus did not become ready" curl -fsS "http://$prom/-/ready"

# query PROMQL: prints the first sample's value of an instant query ("" when there is none).
query() {
  curl -fsS -G --max-time 5 --data-urlencode "query=$1" "http://$prom/api/v1/query" | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["status"] == "success", r
res = r["data"]["result"]
print(res[0]["value"][1] if res else "")'
}
# wait_value SECONDS PROMQL EXPECTED: until the query answers EXPECTED.
wait_value() {
  local seconds="$1" promql="$2" expected="$3" got=""
  local deadline=$((SECONDS + seconds))
  while :; do
    got=$(query "$promql" 2>/dev/null || true)
    [ "$got" = "$expected" ] && break
    [ "$SECONDS" -lt "$deadline" ] || die "prometheus: $promql = '$got', expected $expected (waited ${seconds}s)"
    sleep 0.5
  done
  pass "prometheus: $promql = $got"
}
wait_value 60 'sum(up{job=~"portcullis-.*"})' 2
wait_value 60 'sum(portcullis_requests_total{decision="allow"})' "$allowed"
wait_value 30 'sum(portcullis_requests_total{decision="deny"})' "$denied"
wait_value 30 '(sum(portcullis_operator_reconciles_total{job="portcullis-operator",result="ok"}) >= bool 1)' 1
wait_value 30 'portcullis_operator_leader{job="portcullis-operator"}' 1

echo "prometheus suite: sidecar and operator scraped, promtool clean"
