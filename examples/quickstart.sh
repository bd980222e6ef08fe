#!/usr/bin/env bash
# Portcullis without a cluster: render examples/ into a configuration directory, start the
# demo backend and the sidecar on 127.0.0.1, and show an admitted call, two 401s (a wrong password, and right credentials from outside the profile's ranges: the same answer) and a
# 429 with curl.
#
#   examples/quickstart.sh           # run the demo, print the commands, wait for Ctrl-C
#   examples/quickstart.sh --check   # run the demo, check every answer, stop (used by CI)
#
# Ports (env): PORTCULLIS_INBOUND (127.0.0.1:15080), PORTCULLIS_ADMIN (127.0.0.1:15090).
# The examples route to the app at 127.0.0.1:8080, where the demo backend listens.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-demo}"
inbound="${PORTCULLIS_INBOUND:-127.0.0.1:15080}"
admin="${PORTCULLIS_ADMIN:-127.0.0.1:15090}"
tls="${PORTCULLIS_INBOUND_TLS:-127.0.0.1:15443}"
egress="${PORTCULLIS_EGRESS:-127.0.0.1:15001}"
backend="127.0.0.1:8080"

echo "==> building portcullis-operator and portcullis-sidecar"
cargo build --quiet -p portcullis-operator -p portcullis-sidecar
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> rendering examples/ into $work/config"
"$bin/portcullis-operator" render -f examples/ --out "$work/config" --org-allowance 100

echo "==> starting the demo backend on $backend and the sidecar on $inbound"
"$bin/portcullis-sidecar" demo-backend --listen "$backend" >"$work/backend.log" 2>&1 &
pids+=($!)
"$bin/portcullis-sidecar" --log-format text --config-dir "$work/config" --inbound "$inbound" \
  --inbound-tls "$tls" --egress "$egress" --admin "$admin" --audit-log "$work/audit.log" \
  >"$work/sidecar.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 200); do  # up to 20 s: readiness waits for the first OAuth2 key-set fetch (10 s at most)
  if curl -fsS "http://$admin/readyz" >/dev/null 2>&1 && curl -sS "http://$backend/" >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
curl -fsS "http://$admin/readyz" >/dev/null || {
  echo "the sidecar did not become ready:" >&2
  cat "$work/sidecar.log" "$work/backend.log" >&2
  exit 1
}

failures=0
# show EXPECTED DESCRIPTION CURL-ARGS...: prints the command, runs it, compares the status.
show() {
  local expected="$1" what="$2"
  shift 2
  printf '\n# %s (expect %s)\n$ curl -i %s\n' "$what" "$expected" "$*"
  local out status
  out="$(curl -sS -i "$@")"
  status="$(printf '%s' "$out" | head -n1 | awk '{print $2}')"
  printf '%s\n' "$out" | sed -n '1p;/^[Ww][Ww][Ww]-[Aa]uthenticate/p;/^[Rr]etry-[Aa]fter/p;/^[Rr]ate[Ll]imit-/p;$p'
  if [ "$status" != "$expected" ]; then
    echo "!! expected $expected, got $status" >&2
    failures=$((failures + 1))
  fi
}

base="http://$inbound"
show 200 "alice (profile accounting) from 127.0.0.1: admitted" -u alice:wonderland "$base/finance/ledger"
show 401 "a wrong password: 401 with a Basic challenge" -u alice:nope "$base/finance/ledger"
show 401 "bob (profile payroll) is right, but payroll admits only 192.168.1.10-50, so his credentials are not looked at there; accounting, which admits 127.0.0.1, refuses them: 401, as for a wrong password (no password oracle)" -u bob:builder "$base/finance/ledger"
for i in 1 2 3 4 5; do
  curl -sS -o /dev/null "$base/public/hello"
done
show 429 "the sixth anonymous call this minute to /public (limit 5): 429" "$base/public/hello"

printf '\n# the audit log (%s), one JSON line per hit:\n' "$work/audit.log"
tail -n 3 "$work/audit.log"
printf '\n# metrics: curl http://%s/metrics | grep portcullis_requests_total\n' "$admin"
curl -sS "http://$admin/metrics" | grep '^portcullis_requests_total' | head -n 5

if [ "$failures" -ne 0 ]; then
  echo "quickstart: $failures unexpected answers" >&2
  exit 1
fi
if [ "$mode" = "--check" ]; then
  echo "quickstart: every answer as expected"
  exit 0
fi
printf '\nThe sidecar keeps running on %s (admin %s); try the commands above. Ctrl-C stops it.\n' "$inbound" "$admin"
wait
