#!/usr/bin/env bash
# Inbound OAuth1 profiles (RFC 5849) against a third-party client, through the real sidecar:
# requests-oauthlib (PyPI, on oauthlib) signs with HMAC-SHA1, HMAC-SHA256, RSA-SHA1 and
# PLAINTEXT (over HTTPS), in the header, the query and the form body, on GET, POST, PUT, PATCH
# and DELETE; the sidecar admits each as its consumer, the app receives the call as sent, and
# the same request replayed, a changed parameter, an old timestamp, a reused nonce, a wrong
# secret or another consumer's token is refused with 401 and the OAuth challenge
# (sidecar/signatures/interop/oauth1_client.py does the calls and the app).
source "$(dirname "$0")/../lib/interop.sh"

cargo build -q -p portcullis-sidecar
SIDECAR="$target_dir/debug/portcullis-sidecar"

venv=$(oauthlib_venv)

# A certificate for the HTTPS route (PLAINTEXT needs TLS).
loopback_certificate

app=$(free_port)
mkdir -p "$work/config"
python3 - "$work" "$app" "$KEYS" <<'PY'
import json, sys
work, app, keys = sys.argv[1], int(sys.argv[2]), sys.argv[3]
read = lambda f: open(f).read()
profile = {"name": "partners", "auth": {"type": "OAuth1", "timestampWindowSeconds": 300,
           "signatureMethods": ["HMAC-SHA1", "HMAC-SHA256", "RSA-SHA1", "PLAINTEXT"]}}
def route(name, prefix, **extra):
    return {"name": name, "pathPrefix": prefix, "profiles": ["partners"],
            "backend": {"type": "Local", "port": app}, **extra}
config = {"schemaVersion": 1, "generation": "oauth1-1", "namespace": "interop",
          "profiles": [profile], "routes": [route("api", "/api"), route("secure", "/secure", tls=True)]}
secrets = {"schemaVersion": 1, "generation": "oauth1-1",
           "profiles": {"partners": {
               "oauth1Consumers": {"hmac-partner": "hmac consumer secret",
                                   "rsa-partner": read(f"{keys}/rsa2048.pub")},
               "oauth1Tokens": {"tok-1": {"consumerKey": "hmac-partner", "secret": "token secret 1"},
                                "tok-2": {"consumerKey": "rsa-partner", "secret": "token secret 2"}}}},
           "routes": {"secure": {"tls": {"certChainPem": read(f"{work}/leaf.pem"),
                                         "keyPem": read(f"{work}/leaf.key")}}}}
json.dump(config, open(f"{work}/config/config.json", "w"), indent=1)
json.dump(secrets, open(f"{work}/config/secrets.json", "w"), indent=1)
PY
start_sidecar "$work/config" --log-format text

echo "== OAuth 1.0a: requests-oauthlib signs, the sidecar verifies"
if "$venv/bin/python" "$INTEROP/oauth1_client.py" "http://127.0.0.1:$inbound" "https://127.0.0.1:$tls" \
  "$work/ca.pem" "$app" "$KEYS/rsa2048-pkcs1.key" >"$work/client.out" 2>&1; then
  pass "requests-oauthlib: every admitted and refused call as expected"
else
  fail "requests-oauthlib" "see below"
fi
cat "$work/client.out"

# Nothing secret in the sidecar's log or audit.
if grep -qE "hmac consumer secret|token secret" "$work/sidecar.log" "$work/audit.log"; then
  fail "no secret in the log or the audit" "found one"
else
  pass "no secret in the log or the audit"
fi
grep -q '"reason":"signature replayed"' "$work/audit.log" && pass "audit names replays" \
  || fail "audit names replays" "$(tail -3 "$work/audit.log")"
summary "oauth1 interop"
