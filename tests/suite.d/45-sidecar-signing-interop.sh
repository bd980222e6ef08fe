#!/usr/bin/env bash
# Credentials the sidecar adds toward origins (backend.origin.auth), checked by real
# third-party implementations:
#   httpSignature RFC 9421     -> sidecar/signatures/interop/rfc9421_origin.py (Python
#                                 `http-message-signatures`)
#   httpSignature draft-cavage -> sidecar/signatures/interop/cavage_origin.js (npm `http-signature`)
#   oauth2ClientCredentials    -> sidecar/signatures/interop/oauth2_server.py (Authlib's
#                                 authorization server, client credentials, client_secret_basic)
# The real portcullis-sidecar runs in gateway mode (and on its egress listener) toward those
# origins; every algorithm, with and without a body digest, must verify there, and a route
# signing with the wrong key must be refused by the origin (so the origins do check). Against
# Authlib: one token for concurrent calls, refresh after expiry, a retry with a fresh token
# after the origin's 401, and a wrong client secret refused by Authlib (503 at the sidecar).
# Tools come from tests/setup.d/40-signatures.sh, and Authlib is installed here (its own venv).
source "$(dirname "$0")/../lib/interop.sh"

cargo build -q -p portcullis-sidecar
SIDECAR="$target_dir/debug/portcullis-sidecar"
HMAC="an origin shared secret"
OAUTH_SECRET='s3cret:with/+chars'

oauth_venv=$(authlib_venv)


# Origins: keyId -> algorithm and verifying key. "wrong" signs with another key at the sidecar.
rfc_keys=$(python3 - "$KEYS" "$HMAC" <<'PY'
import json, sys
k, h = sys.argv[1], sys.argv[2]
print(json.dumps({
  "hmac-sha256": {"alg": "hmac-sha256", "key": {"hmac": h}},
  "rsa-v1_5-sha256": {"alg": "rsa-v1_5-sha256", "key": {"file": f"{k}/rsa2048.pub"}},
  "rsa-pss-sha512": {"alg": "rsa-pss-sha512", "key": {"file": f"{k}/test-key-rsa-pss.pem"}},
  "ecdsa-p256-sha256": {"alg": "ecdsa-p256-sha256", "key": {"file": f"{k}/test-key-ecc-p256.pem"}},
  "ed25519": {"alg": "ed25519", "key": {"file": f"{k}/test-key-ed25519.pem"}},
  "wrong": {"alg": "ed25519", "key": {"file": f"{k}/test-key-ed25519.pem"}},
}))
PY
)
cavage_keys=$(python3 - "$KEYS" "$HMAC" <<'PY'
import json, sys
k, h = sys.argv[1], sys.argv[2]
print(json.dumps({
  "hmac-sha256": {"key": {"hmac": h}},
  "rsa-v1_5-sha256": {"key": {"file": f"{k}/rsa2048.pub"}},
  "ecdsa-p256-sha256": {"key": {"file": f"{k}/test-key-ecc-p256.pem"}},
  "ed25519": {"key": {"file": f"{k}/test-key-ed25519.pem"}},
  "wrong": {"key": {"file": f"{k}/test-key-ed25519.pem"}},
}))
PY
)
"$oauth_venv/bin/python" "$INTEROP/oauth2_server.py" "$work/oauth.port" portcullis-gw "$OAUTH_SECRET" 3 \
  >"$work/oauth.log" 2>&1 & pids+=($!)
"$PY" "$INTEROP/rfc9421_origin.py" "$work/rfc.port" "$rfc_keys" & pids+=($!)
node "$INTEROP/cavage_origin.js" "$work/cavage.port" "$cavage_keys" & pids+=($!)
wait_file "$work/rfc.port"
wait_file "$work/cavage.port"
wait_file "$work/oauth.port"
read -r token_port oauth_origin_port <"$work/oauth.port" || true
rfc_origin="http://127.0.0.1:$(cat "$work/rfc.port")"
cavage_origin="http://127.0.0.1:$(cat "$work/cavage.port")"

# The sidecar's configuration: one route per standard and algorithm, default components and
# explicit ones, the wrong key, and an egress route.
mkdir -p "$work/config"
python3 - "$work/config" "$KEYS" "$HMAC" "$rfc_origin" "$cavage_origin" "$token_port" "$oauth_origin_port" "$OAUTH_SECRET" <<'PY'
import json, sys
out, k, h, rfc, cav, token_port, oauth_port, oauth_secret = sys.argv[1:9]
key = lambda f: open(f"{k}/{f}").read()
private = {
  "hmac-sha256": h,
  "rsa-v1_5-sha256": key("rsa2048-pkcs1.key"),
  "rsa-pss-sha512": key("test-key-rsa-pss.key"),
  "ecdsa-p256-sha256": key("test-key-ecc-p256.key"),
  "ed25519": key("test-key-ed25519.key"),
}
routes, secrets = [], {}
def route(name, prefix, url, standard, key_id, alg, components, pem, egress=False):
    auth = {"type": "HttpSignature", "keyId": key_id, "algorithm": alg, "standard": standard}
    if components:
        auth["components"] = components
    r = {"name": name, "pathPrefix": prefix,
         "backend": {"type": "Origin", "url": url, "tlsMode": "None", "auth": auth}}
    if egress:
        r["egress"] = True
    routes.append(r)
    secrets[name] = {"originAuth": {"type": "HttpSignature", "key": pem}}
for alg, pem in private.items():
    route(f"rfc-{alg}", f"/rfc/{alg}/", rfc, "RFC9421", alg, alg, [], pem)
    route(f"rfc-x-{alg}", f"/rfc-x/{alg}/", rfc, "RFC9421", alg, alg,
          ["@method", "@authority", "@path", "@query", "@target-uri", "@scheme", "@request-target",
           "content-type", "date", "content-digest"], pem)
    if alg != "rsa-pss-sha512":  # draft-cavage has no name for it; npm http-signature neither
        route(f"cavage-{alg}", f"/cavage/{alg}/", cav, "Cavage", alg, alg, [], pem)
        route(f"cavage-x-{alg}", f"/cavage-x/{alg}/", cav, "Cavage", alg, alg,
              ["(request-target)", "host", "date", "content-type"], pem)
route("rfc-wrong", "/rfc/wrong/", rfc, "RFC9421", "wrong", "ed25519", [], key("ed-other.key"))
route("cavage-wrong", "/cavage/wrong/", cav, "Cavage", "wrong", "ed25519", [], key("ed-other.key"))
route("egress-rfc", "/egress/", rfc, "RFC9421", "ed25519", "ed25519", [], private["ed25519"], egress=True)
for name, secret in (("oauth", oauth_secret), ("oauth-wrong", "not-the-secret")):
    routes.append({"name": name, "pathPrefix": f"/{name}/",
                   "backend": {"type": "Origin", "url": f"http://127.0.0.1:{oauth_port}", "tlsMode": "None",
                               "auth": {"type": "OAuth2ClientCredentials",
                                        "tokenUrl": f"http://127.0.0.1:{token_port}/oauth/token",
                                        "scopes": ["api", "read"], "audience": "orders"}}})
    secrets[name] = {"originAuth": {"type": "OAuth2ClientCredentials", "clientId": "portcullis-gw",
                                    "clientSecret": secret}}
json.dump({"schemaVersion": 1, "generation": "interop", "namespace": "interop", "routes": routes},
          open(f"{out}/config.json", "w"), indent=1)
json.dump({"schemaVersion": 1, "generation": "interop", "routes": secrets},
          open(f"{out}/secrets.json", "w"), indent=1)
PY

start_sidecar "$work/config"

# check NAME WANT URL [curl args...]: WANT is the status the origin's verdict must give.
check() {
  local name="$1" want="$2" url="$3"; shift 3
  local out status
  out=$(curl -s -m 10 -o "$work/body" -w '%{http_code}' "$@" "$url") || true
  status="$out"
  if [ "$status" = "$want" ] && { [ "$want" != 200 ] || grep -q '"ok": *true' "$work/body"; }; then
    pass "$name"
  else
    fail "$name" "wanted $want, got $status: $(head -c 400 "$work/body")"
  fi
}
# digest NAME: the last answer says the origin checked a body digest.
digest() {
  if grep -q '"digest_checked": *true' "$work/body"; then pass "$1"
  else fail "$1" "the origin did not check a digest: $(head -c 400 "$work/body")"; fi
}

in="http://127.0.0.1:$inbound"
body='{"order": 42, "items": ["a", "b"]}'
echo "== RFC 9421: sidecar -> Python http-message-signatures"
for alg in hmac-sha256 rsa-v1_5-sha256 rsa-pss-sha512 ecdsa-p256-sha256 ed25519; do
  check "$alg: GET, default components" 200 "$in/rfc/$alg/orders?id=7&x=a%20b" \
    -H 'X-Interop-Require: @method @target-uri @authority content-digest'
  check "$alg: POST with a body, default components" 200 "$in/rfc/$alg/orders" \
    -H 'Content-Type: application/json' --data-binary "$body" \
    -H 'X-Interop-Require: @method @target-uri @authority content-digest'
  digest "$alg: the origin checked Content-Digest"
  check "$alg: POST, explicit components" 200 "$in/rfc-x/$alg/a/b?q=1&Pet=dog" \
    -H 'Content-Type: application/json' --data-binary "$body" \
    -H 'X-Interop-Require: @method @path @query @authority content-type date content-digest'
done
check "the origin refuses a signature made with the wrong key" 401 "$in/rfc/wrong/x"
check "egress listener: the app's own call is signed" 200 "http://127.0.0.1:$egress/egress/out" \
  -H 'Content-Type: text/plain' --data-binary 'from the app'

echo "== draft-cavage: sidecar -> npm http-signature"
for alg in hmac-sha256 rsa-v1_5-sha256 ecdsa-p256-sha256 ed25519; do
  check "$alg: GET, default headers" 200 "$in/cavage/$alg/orders?id=7" \
    -H 'X-Interop-Require: (request-target) host date digest'
  check "$alg: POST with a body, default headers" 200 "$in/cavage/$alg/orders" \
    -H 'Content-Type: application/json' --data-binary "$body" \
    -H 'X-Interop-Require: (request-target) host date digest'
  digest "$alg: the origin checked Digest"
  check "$alg: PUT, explicit headers, body streamed" 200 "$in/cavage-x/$alg/p?z=1" -X PUT \
    -H 'Content-Type: application/json' --data-binary "$body" \
    -H 'X-Interop-Require: (request-target) host date content-type'
done
check "the origin refuses a signature made with the wrong key" 401 "$in/cavage/wrong/x"

echo "== OAuth 2.0 client credentials: sidecar -> Authlib authorization server"
stats() { curl -s -m 5 "http://127.0.0.1:$oauth_origin_port/_stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
expect() { # expect NAME WANT GOT
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "wanted $2, got $3"; fi
}
for i in $(seq 10); do
  curl -s -m 10 -o "$work/c$i" -w '%{http_code}\n' "$in/oauth/concurrent/$i" >"$work/s$i" &
done
wait_all=0
for i in $(seq 10); do
  for _ in $(seq 100); do [ -s "$work/s$i" ] && break; sleep 0.1; done
  [ "$(cat "$work/s$i")" = 200 ] || wait_all=$((wait_all + 1))
done
expect "10 concurrent calls all admitted by the origin" 0 "$wait_all"
expect "one token request for 10 concurrent calls" 1 "$(stats token_requests)"
check "the origin sees the client, scope and audience" 200 "$in/oauth/who"
expect "token issued to portcullis-gw for scope 'api read', audience orders" "portcullis-gw|api read|orders" \
  "$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['client_id']+'|'+d['scope']+'|'+str(d['audience']))" "$work/body")"
expect "the cached token is reused" 1 "$(stats token_requests)"
sleep 3.2
check "after the token's 3 s lifetime: a call with a refreshed token" 200 "$in/oauth/later"
expect "refreshed once after expiry" 2 "$(stats token_requests)"
curl -s -m 5 -X POST "http://127.0.0.1:$oauth_origin_port/_revoke" >/dev/null
check "the origin revoked the token: 401, a fresh token, the call retried with its body" 200 "$in/oauth/retry" \
  --data-binary 'replayed body'
expect "the retried call carried its body" "replayed body" \
  "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['body'])" "$work/body")"
expect "one more token request for the retry" 3 "$(stats token_requests)"
started=$(date +%s%N)
out=$(curl -s -m 10 -w '\n%{http_code}' "$in/oauth-wrong/x")
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
expect "a wrong client secret, refused by Authlib: 503 from the sidecar" 503 "$(tail -n1 <<<"$out")"
expect "... with a clear JSON body" 1 "$(head -n1 <<<"$out" | grep -c 'token endpoint')"
expect "... quickly" 1 "$([ "$elapsed_ms" -lt 3000 ] && echo 1 || echo 0)"
expect "... and Authlib issued no token for it" 4 "$(stats token_requests)"

for secret in "$HMAC" "$OAUTH_SECRET"; do
  if grep -qF -- "$secret" "$work/sidecar.log" "$work/audit.log"; then
    fail "secrets stay out of the logs" "a secret appears in the sidecar's logs"
  fi
done
summary sidecar-signing-interop
