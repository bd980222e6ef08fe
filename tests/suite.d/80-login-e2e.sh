#!/usr/bin/env bash
# Sign-in for people in a real browser: npm `oidc-provider` (an OpenID Provider certified by
# the OpenID Foundation, tests/login-e2e/op.mjs) on 127.0.0.1, the real portcullis-sidecar with
# a login profile in front of a small app that echoes every header it receives, and Debian's
# headless `chromium` driven by `playwright-core` (tests/login-e2e/browser.mjs): the browser
# opens the API URL, lands on the provider's login form, signs in, is sent back and sees the
# app's answer with the identity; the session is refreshed; client-sent identity headers are
# replaced; a replayed callback, a forged state and a tampered cookie are refused; API clients
# keep the 401; a session past its end (a profile whose sessions last 8 s) asks to sign in
# again; sign-out clears the session. The tools come from tests/setup.d/80-login-e2e.sh.
# Everything on 127.0.0.1, every wait bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools="${PORTCULLIS_TOOLS:-$PWD/target/tools}"
PORTCULLIS_TOOLS="$tools" bash tests/setup.d/80-login-e2e.sh >/dev/null
dir="$tools/login-e2e"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cargo build -q -p portcullis-sidecar
SIDECAR="$target_dir/debug/portcullis-sidecar"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 150); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for $1"; return 1; }

op_port=$(free_port); app_port=$(free_port); inbound=$(free_port); admin=$(free_port)
op="http://127.0.0.1:$op_port"
app="http://127.0.0.1:$inbound"
# The scripts import the packages installed beside them.
cp tests/login-e2e/op.mjs tests/login-e2e/browser.mjs "$dir/"

node "$dir/op.mjs" "$op_port" portcullis-e2e 'e2e-s3cret' "$app/oauth2/callback" "$app/" >"$work/op.log" 2>&1 & pids+=($!)

# The app: echoes every header it receives.
python3 - "$app_port" >"$work/app.log" 2>&1 <<'PY' & pids+=($!)
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY

key=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')
mkdir -p "$work/config"
python3 - "$work/config" "$app_port" "$op" "$key" <<'PY'
import json, sys
out, app_port, op, key = sys.argv[1:5]
login = {"issuer": op, "discoveryUrl": f"{op}/.well-known/openid-configuration", "clientId": "portcullis-e2e",
         "redirectPath": "/oauth2/callback", "logoutPath": "/oauth2/logout", "scopes": ["openid", "email"],
         "allowedDomains": ["example.com"], "sessionMaxSeconds": 3600}
brief = dict(login, sessionMaxSeconds=8)  # sessions that end soon (the expiry check)
config = {"schemaVersion": 1, "generation": "login-e2e", "namespace": "e2e",
          "profiles": [{"name": "people", "auth": {"type": "OAuth2", "provider": "Generic", "issuer": op, "login": login}},
                       {"name": "brief", "auth": {"type": "OAuth2", "provider": "Generic", "issuer": op, "login": brief}}],
          "routes": [{"name": "app", "pathPrefix": "/app", "profiles": ["people"],
                      "backend": {"type": "Local", "port": int(app_port)}},
                     {"name": "brief", "pathPrefix": "/brief", "profiles": ["brief"],
                      "backend": {"type": "Local", "port": int(app_port)}}]}
keys = {"login": {"clientSecret": "e2e-s3cret", "sessionKeys": [{"name": "key-1", "key": key}]}}
secrets = {"schemaVersion": 1, "generation": "login-e2e", "profiles": {"people": keys, "brief": keys}}
json.dump(config, open(f"{out}/config.json", "w"))
json.dump(secrets, open(f"{out}/secrets.json", "w"))
PY

wait_http "$op/.well-known/openid-configuration"
"$SIDECAR" --config-dir "$work/config" --inbound "127.0.0.1:$inbound" --admin "127.0.0.1:$admin" \
  --inbound-tls "127.0.0.1:$(free_port)" --egress "127.0.0.1:$(free_port)" --audit-log "$work/audit.log" \
  >"$work/sidecar.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$admin/readyz"
# Discovery is done once a browser is sent to the provider (bounded).
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'accept: text/html' "$app/app/") || true
  [ "$code" = 302 ] && break
  sleep 0.1
done

rc=0
timeout 180 node "$dir/browser.mjs" "$app" "$op" || rc=$?
if grep -q '"identity":"jane"' "$work/audit.log"; then echo "ok   the audit line names the person"; else echo "FAIL the audit line names the person"; rc=1; fi
if [ $rc -ne 0 ]; then
  echo "--- sidecar log"; tail -40 "$work/sidecar.log"
  echo "--- op log"; tail -20 "$work/op.log"
  echo "--- audit"; tail -20 "$work/audit.log"
fi
echo "login e2e: $([ $rc -eq 0 ] && echo passed || echo FAILED)"
exit $rc
