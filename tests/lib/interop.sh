# Shared by the interop suites (tests/suite.d/40- to 49-*.sh); sourced, never run.
#
# After `source tests/lib/interop.sh` the suite runs from the repository root with:
#   tools, PY, NODE_PATH, KEYS, INTEROP, target_dir   the third-party tools (installed by
#                                                     tests/setup.d/40-signatures.sh) and paths
#   work, pids                                        a scratch directory and the background
#                                                     processes, both cleaned up on exit
#   pass NAME / fail NAME WHY / summary SUITE         bookkeeping; summary fails the suite
#                                                     when anything failed
#   free_port, wait_file FILE, edit IN OUT PYTHON     small helpers
#   authlib_venv                                      prints the venv holding Authlib (an
#                                                     authorization server), installing it
#   oauthlib_venv                                     prints the venv holding requests-oauthlib
#                                                     (an OAuth 1.0a and 2.0 client), installing it
#   loopback_certificate                              a CA ($work/ca.pem) and a leaf for
#                                                     127.0.0.1 ($work/leaf.pem, leaf.key)
#   start_sidecar DIR [FLAGS...]                      runs $SIDECAR on DIR (audit log and log
#                                                     in $work) and waits until it is ready;
#                                                     sets inbound, admin, tls, egress (ports)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
tools="${PORTCULLIS_TOOLS:-$PWD/target/tools}"
PORTCULLIS_TOOLS="$tools" bash tests/setup.d/40-signatures.sh >/dev/null
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PY="$tools/venv-sig/bin/python"
INTEROP="$PWD/sidecar/signatures/interop"
KEYS="$PWD/sidecar/signatures/tests/keys"
export NODE_PATH="$tools/node/node_modules"

work=$(mktemp -d)
pids=()
interop_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap interop_cleanup EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1: $2"; }
summary() { echo "$1: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1"; return 1; }

# edit IN OUT PYTHON: apply PYTHON (statements on dict `r`; `now` is the Unix time) to the
# request JSON IN, write OUT.
edit() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys, time
r = json.load(open(sys.argv[1]))
now = int(time.time())
exec(sys.argv[3])
json.dump(r, open(sys.argv[2], "w"))
PY
}

# authlib_venv: installs Authlib (and Flask, its server integration) in their own venv under
# $tools, once, and prints the venv's path.
authlib_venv() {
  local venv="$tools/venv-oauth"
  if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("Authlib"))' 2>/dev/null)" != 1.9.6 ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "Authlib==1.9.6" "Flask==3.1.2" >&2
  fi
  echo "$venv"
}

# oauthlib_venv: installs requests-oauthlib (on oauthlib) in its own venv under $tools, once,
# and prints the venv's path.
oauthlib_venv() {
  local venv="$tools/venv-oauth1"
  if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("requests-oauthlib"), m.version("oauthlib"))' 2>/dev/null)" != "2.0.0 3.3.1" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "requests-oauthlib==2.0.0" "oauthlib==3.3.1" \
      "requests==2.32.5" "cryptography>=42" "PyJWT==2.10.1" >&2
  fi
  echo "$venv"
}

# loopback_certificate: a throwaway CA ($work/ca.pem, ca.key) and a leaf it signed for
# 127.0.0.1 ($work/leaf.pem, leaf.key), for a route served over TLS.
loopback_certificate() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=interop test CA" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$work/leaf.key" -out "$work/leaf.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/leaf.ext"
  openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/leaf.ext" -out "$work/leaf.pem" 2>/dev/null
}

# start_sidecar DIR [FLAGS...]: starts "$SIDECAR" serving the configuration in DIR on free
# ports (inbound, admin, tls, egress), its audit log in $work/audit.log and its log in
# $work/sidecar.log ($SIDECAR_NAME, when set, prefixes both file names: a second sidecar),
# and waits (bounded) until /readyz answers 200. A port found free may be taken by another
# process before the sidecar binds it: then it starts again on other ports (3 tries).
start_sidecar() {
  local dir="$1"; shift
  local log="$work/${SIDECAR_NAME:-}sidecar.log" pid attempt
  for attempt in 1 2 3; do
    inbound=$(free_port); admin=$(free_port); tls=$(free_port); egress=$(free_port)
    "$SIDECAR" --config-dir "$dir" --inbound "127.0.0.1:$inbound" --admin "127.0.0.1:$admin" \
      --inbound-tls "127.0.0.1:$tls" --egress "127.0.0.1:$egress" --audit-log "$work/${SIDECAR_NAME:-}audit.log" \
      --allow-loopback-origins "$@" >"$log" 2>&1 & pid=$!
    pids+=("$pid")
    for _ in $(seq 200); do
      curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return 0
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null || ! grep -q "Address already in use" "$log"; then
      break
    fi
    echo "a port was taken before the sidecar bound it (try $attempt): starting again on others"
  done
  echo "sidecar not ready:"; cat "$log"; exit 1
}
