#!/usr/bin/env bash
# The Builtin provider's user-delegated access (Mashery's OAuth accelerator) against a
# third-party OAuth 2.0 client, through two real sidecars sharing a Redis, over TLS: requests-oauthlib's
# OAuth2Session (PyPI, on oauthlib) runs the authorization-code flow with PKCE S256 while a
# small owner backend (in sidecar/signatures/interop/oauth2_grant_flow.py) approves on its
# consent page through the sidecar's grant API; the client calls the API as the user (the app
# is told user and client), refreshes (the refresh token rotates), and is refused at once after
# the owner revokes the grant, on the other sidecar too within a second; a reused code, a
# wrong verifier and an unregistered redirect
# URI are refused. The provider's metadata passes Authlib's RFC 8414 validation. No code,
# token or credential in the sidecar's log or audit.
source "$(dirname "$0")/../lib/interop.sh"

cargo build -q -p portcullis-sidecar
SIDECAR="$target_dir/debug/portcullis-sidecar"
OWNER_TOKEN="owner-credential-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

client_venv=$(oauthlib_venv)
authlib=$(authlib_venv)
loopback_certificate

app=$(free_port)
owner=$(free_port)
mkdir -p "$work/config"
python3 - "$work" "$app" "$owner" "$OWNER_TOKEN" "$KEYS" <<'PY'
import json, sys
work, app, owner, token, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
read = lambda f: open(f).read()
profile = {"name": "accelerator", "auth": {
    "type": "OAuth2", "provider": "Builtin", "builtinTokenTtlSeconds": 600, "requiredScopes": ["read"],
    "builtinDelegation": {"consentUrl": f"http://127.0.0.1:{owner}/consent",
                          "refreshTokenTtlSeconds": 86400, "maxGrantSeconds": 604800}}}
config = {"schemaVersion": 1, "generation": "grants-1", "namespace": "interop", "profiles": [profile],
          "routes": [{"name": "api", "pathPrefix": "/api", "profiles": ["accelerator"], "tls": True,
                      "sslOnly": True, "backend": {"type": "Local", "port": app}}]}
secrets = {"schemaVersion": 1, "generation": "grants-1",
           "profiles": {"accelerator": {
               "oauth2SigningKeys": [{"name": "key-1", "pem": read(f"{keys}/test-key-ecc-p256.key")}],
               "oauth2Clients": {"app-1": "s3cret"}, "oauth2ClientScopes": {"app-1": ["read"]},
               "oauth2RedirectUris": {"app-1": ["https://app.example.com/cb"]},
               "oauth2OwnerToken": token}},
           "routes": {"api": {"tls": {"certChainPem": read(f"{work}/leaf.pem"), "keyPem": read(f"{work}/leaf.key")}}}}
json.dump(config, open(f"{work}/config/config.json", "w"), indent=1)
json.dump(secrets, open(f"{work}/config/secrets.json", "w"), indent=1)
PY
# Two sidecars sharing a Redis (the limits store): grants, refresh tokens and revocations
# hold for both.
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
store=(--limits-store "redis://127.0.0.1:$redis_port" --limits-store-timeout 500ms)
start_sidecar "$work/config" --log-format text "${store[@]}"
first_tls=$tls
SIDECAR_NAME=second- start_sidecar "$work/config" --log-format text "${store[@]}"
second_tls=$tls

echo "== authorization-code flow: requests-oauthlib, the owner's consent page, two sidecars"
if "$client_venv/bin/python" "$INTEROP/oauth2_grant_flow.py" "https://127.0.0.1:$first_tls/api" "$work/ca.pem" \
  "$app" "$owner" "$OWNER_TOKEN" "$work/metadata.json" "https://127.0.0.1:$second_tls/api" >"$work/client.out" 2>&1; then
  pass "requests-oauthlib: the whole flow, refresh, revocation and refusals as expected"
else
  fail "requests-oauthlib" "see below"
fi
cat "$work/client.out"

echo "== RFC 8414 metadata, validated by Authlib"
if "$authlib/bin/python" - "$work/metadata.json" >"$work/metadata.out" 2>&1 <<'PY'
import json, os, sys
# The sidecar is reached at https://127.0.0.1 here; Authlib checks every endpoint is HTTPS.
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
doc = json.load(open(sys.argv[1]))
AuthorizationServerMetadata(doc).validate()
assert doc["issuer"].startswith("https://"), doc["issuer"]
for grant in ("authorization_code", "refresh_token", "client_credentials"):
    assert grant in doc["grant_types_supported"], grant
assert doc["code_challenge_methods_supported"] == ["S256"]
print("valid:", ", ".join(sorted(doc)))
PY
then
  pass "the metadata document passes Authlib's AuthorizationServerMetadata.validate()"
else
  fail "RFC 8414 metadata" "$(cat "$work/metadata.out")"
fi
cat "$work/metadata.out"

# Nothing secret in the sidecar's log or audit: no credential, code or token.
if grep -qE "$OWNER_TOKEN|s3cret|code=|eyJ" "$work/sidecar.log" "$work/audit.log" "$work/second-sidecar.log" \
  "$work/second-audit.log"; then
  fail "no credential, code or token in the log or the audit" "found one"
else
  pass "no credential, code or token in the log or the audit"
fi
grep -q '"reason":"oauth2 grant made"' "$work/audit.log" && pass "audit names the grant the owner made" \
  || fail "audit names the grant the owner made" "$(tail -3 "$work/audit.log")"
summary "oauth2 grants interop"
