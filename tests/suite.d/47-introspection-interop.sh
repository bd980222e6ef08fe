#!/usr/bin/env bash
# OAuth 2.0 token introspection (RFC 7662) of inbound opaque bearer tokens, against a real
# authorization server: Authlib's (sidecar/signatures/interop/oauth2_server.py) issues opaque
# tokens with its client credentials grant and answers its IntrospectionEndpoint. The real
# portcullis-sidecar guards a local test app with an OAuth2 profile that introspects there
# (client_secret_basic as the resource server `portcullis-rs`):
#   a token Authlib issued is admitted (identity: the client), and asked about once;
#   an unknown token, and a token Authlib revoked, are refused (401);
#   a token without the required scope is forbidden (403);
#   Authlib saw the sidecar authenticate with client_secret_basic as portcullis-rs;
#   a profile whose introspection secret is wrong is refused by Authlib: 503 at the sidecar;
#   no token and no secret in the sidecar's logs.
# Tools come from tests/setup.d/40-signatures.sh; Authlib is installed here (its own venv,
# shared with suite 45).
source "$(dirname "$0")/../lib/interop.sh"

cargo build -q -p portcullis-sidecar
SIDECAR="$target_dir/debug/portcullis-sidecar"
GW_SECRET="gw-s3cret"
RS_SECRET='rs-s3cret:with/+chars'

oauth_venv=$(authlib_venv)

"$oauth_venv/bin/python" "$INTEROP/oauth2_server.py" "$work/oauth.port" portcullis-gw "$GW_SECRET" 600 \
  portcullis-rs "$RS_SECRET" >"$work/oauth.log" 2>&1 & pids+=($!)

# The app behind the sidecar: echoes the identity the sidecar vouches for.
app_port=$(free_port)
python3 - "$app_port" >"$work/app.log" 2>&1 <<'PY' & pids+=($!)
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ok": True, "identity": self.headers.get("X-Portcullis-Identity"),
                           "profile": self.headers.get("X-Portcullis-Profile")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
wait_file "$work/oauth.port"
read -r token_port origin_port <"$work/oauth.port" || true
idp="http://127.0.0.1:$token_port"

mkdir -p "$work/config"
python3 - "$work/config" "$app_port" "$idp" "$RS_SECRET" <<'PY'
import json, sys
out, app_port, idp, rs_secret = sys.argv[1:5]
def profile(name):
    return {"name": name, "auth": {"type": "OAuth2", "provider": "Generic", "issuer": "https://authlib.interop",
                                   "introspectionUrl": f"{idp}/oauth/introspect", "requiredScopes": ["api"]}}
config = {"schemaVersion": 1, "generation": "interop", "namespace": "interop",
          "profiles": [profile("authlib"), profile("authlib-wrong")],
          "routes": [{"name": "api", "pathPrefix": "/api/", "profiles": ["authlib"],
                      "backend": {"type": "Local", "port": int(app_port)}},
                     {"name": "wrong", "pathPrefix": "/wrong/", "profiles": ["authlib-wrong"],
                      "backend": {"type": "Local", "port": int(app_port)}}]}
secrets = {"schemaVersion": 1, "generation": "interop", "profiles": {
    "authlib": {"introspectionClient": {"clientId": "portcullis-rs", "clientSecret": rs_secret}},
    "authlib-wrong": {"introspectionClient": {"clientId": "portcullis-rs", "clientSecret": "not-the-secret"}}}}
json.dump(config, open(f"{out}/config.json", "w"), indent=1)
json.dump(secrets, open(f"{out}/secrets.json", "w"), indent=1)
PY

start_sidecar "$work/config"

in="http://127.0.0.1:$inbound"
expect() { # expect NAME WANT GOT
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "wanted $2, got $3"; fi
}
stats() { curl -s -m 5 "http://127.0.0.1:$origin_port/_stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
# token SCOPE: an access token Authlib issues to portcullis-gw.
token() {
  curl -s -m 10 -u "portcullis-gw:$GW_SECRET" -d grant_type=client_credentials --data-urlencode "scope=$1" \
    "$idp/oauth/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
# call PATH TOKEN: the status; the body in $work/body.
call() { curl -s -m 10 -o "$work/body" -w '%{http_code}' -H "Authorization: Bearer $2" "$in$1" || true; }

echo "== RFC 7662 introspection: sidecar -> Authlib IntrospectionEndpoint"
good=$(token "api read")
expect "Authlib issues an opaque token (not a JWT)" 0 "$(tr -cd . <<<"$good" | wc -c)"
expect "a token Authlib issued is admitted" 200 "$(call /api/orders "$good")"
expect "... with the client as identity" "portcullis-gw|authlib" \
  "$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{d['identity']}|{d['profile']}\")" "$work/body")"
expect "... after one introspection call" 1 "$(stats introspections)"
expect "Authlib authenticated the sidecar with client_secret_basic" "['client_secret_basic']" \
  "$(stats introspection_auth_methods)"
expect "... as the resource server portcullis-rs" "['portcullis-rs']" "$(stats introspection_clients)"
for _ in 1 2 3; do call /api/orders "$good" >/dev/null; done
expect "the answer is cached: no more introspection calls" 1 "$(stats introspections)"

expect "an unknown token is refused" 401 "$(call /api/orders "not-a-token-authlib-issued")"
expect "... once Authlib said it is not active" 2 "$(stats introspections)"

narrow=$(token "read")
expect "a token without the required scope is forbidden" 403 "$(call /api/orders "$narrow")"

revoked=$(token "api")
curl -s -m 5 -X POST "http://127.0.0.1:$origin_port/_revoke" >/dev/null
expect "a token Authlib revoked is refused" 401 "$(call /api/orders "$revoked")"
expect "... with invalid_token" 1 \
  "$(curl -s -m 10 -D - -o /dev/null -H "Authorization: Bearer $revoked" "$in/api/orders" | grep -ci 'error="invalid_token"')"

status=$(call /wrong/x "$good")
expect "a wrong introspection secret, refused by Authlib: 503 from the sidecar" 503 "$status"
expect "... with a clear JSON body naming the route" 1 \
  "$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(int('introspection' in d['error'] and d['route'] == 'wrong'))" "$work/body")"
expect "... counted" 1 \
  "$(curl -s -m 5 "http://127.0.0.1:$admin/metrics" | grep -c 'portcullis_backend_errors_total{kind="introspection"} 1')"

leaked=0
for secret in "$GW_SECRET" "$RS_SECRET" "$good" "$revoked" "$narrow"; do
  if grep -qF -- "$secret" "$work/sidecar.log" "$work/audit.log"; then leaked=$((leaked + 1)); fi
done
expect "no token and no secret in the sidecar's logs" 0 "$leaked"
summary introspection-interop
