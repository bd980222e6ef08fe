#!/usr/bin/env bash
# Inbound HttpSignature profiles against real third-party signers, through the real sidecar:
#   RFC 9421      signed by Python `http-message-signatures` (sidecar/signatures/interop/rfc9421_peer.py)
#   draft-cavage  signed by npm `http-signature`            (sidecar/signatures/interop/cavage_peer.js)
# For every algorithm the sidecar admits what the peer signs (identity = keyId, passed to the
# app and written to the audit log) and refuses (401) the same request replayed, and what the
# peer signs with the wrong key, a stale created / Date, a changed component or a changed body.
# Tools come from tests/setup.d/40-signatures.sh.
source "$(dirname "$0")/../lib/interop.sh"

cargo build -q -p portcullis-sidecar
SIDECAR="$target_dir/debug/portcullis-sidecar"

app=$(free_port)
HMAC_SECRET="portcullis interop shared secret"

# The configuration: one RFC 9421 profile and one draft-cavage profile, each with a key per
# algorithm (keyId = algorithm name), on routes /rfc and /cav toward the demo backend.
mkdir -p "$work/config"
python3 - "$work/config" "$app" "$KEYS" "$HMAC_SECRET" <<'PY'
import json, sys
out, app, keys, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
pem = lambda f: open(f"{keys}/{f}").read()
signature_keys = {
    "hmac-sha256": secret,
    "rsa-v1_5-sha256": pem("rsa2048.pub"),
    "rsa-pss-sha512": pem("test-key-rsa-pss.pem"),
    "ecdsa-p256-sha256": pem("test-key-ecc-p256.pem"),
    "ed25519": pem("test-key-ed25519.pem"),
}
def profile(name, standard, required):
    return {"name": name, "auth": {"type": "HttpSignature", "standard": standard,
            "requiredComponents": required, "maxAgeSeconds": 300}}
def route(name, prefix, profile):
    return {"name": name, "pathPrefix": prefix, "profiles": [profile],
            "backend": {"type": "Local", "port": app}}
config = {"schemaVersion": 1, "generation": "interop-1", "namespace": "interop",
          "profiles": [profile("rfc", "RFC9421", ["@method", "@path", "content-digest"]),
                       profile("cav", "Cavage", ["(request-target)", "host", "date", "digest"])],
          "routes": [route("rfc-api", "/rfc", "rfc"), route("cav-api", "/cav", "cav")]}
secrets = {"schemaVersion": 1, "generation": "interop-1",
           "profiles": {"rfc": {"signatureKeys": signature_keys}, "cav": {"signatureKeys": signature_keys}}}
json.dump(config, open(f"{out}/config.json", "w"), indent=1)
json.dump(secrets, open(f"{out}/secrets.json", "w"), indent=1)
PY

"$SIDECAR" demo-backend --listen "127.0.0.1:$app" >"$work/app.log" 2>&1 &
pids+=($!)
start_sidecar "$work/config" --log-format text

# expect NAME STATUS [SUBSTRING] FILE [BODY]: send FILE to the sidecar; the answer must have
# STATUS (and contain SUBSTRING, when given).
expect() {
  local name="$1" want="$2" sub="$3"; shift 3
  local out
  out=$(python3 "$INTEROP/send_request.py" "$@" 2>&1) || true
  if [ "${out%% *}" = "$want" ] && { [ -z "$sub" ] || grep -qF -- "$sub" <<<"$out"; }; then
    pass "$name ($want)"
  else
    fail "$name" "wanted $want ${sub:+with $sub}, got: $out"
  fi
}

base_url="http://127.0.0.1:$inbound"
host="127.0.0.1:$inbound"

# alg | signing key | wrong signing key (same type)
algs=(
  "hmac-sha256|{\"hmac\":\"$HMAC_SECRET\"}|{\"hmac\":\"not the shared secret\"}"
  "rsa-v1_5-sha256|{\"file\":\"$KEYS/rsa2048-pkcs1.key\"}|{\"file\":\"$KEYS/rsa2048-other.key\"}"
  "rsa-pss-sha512|{\"file\":\"$KEYS/test-key-rsa-pss.key\"}|{\"file\":\"$KEYS/rsa2048-pkcs1.key\"}"
  "ecdsa-p256-sha256|{\"file\":\"$KEYS/test-key-ecc-p256.key\"}|{\"file\":\"$KEYS/ec-other.key\"}"
  "ed25519|{\"file\":\"$KEYS/test-key-ed25519.key\"}|{\"file\":\"$KEYS/ed-other.key\"}"
)

echo "== RFC 9421: Python http-message-signatures signs, the sidecar verifies"
for spec in "${algs[@]}"; do
  IFS='|' read -r alg sk wk <<<"$spec"
  base="$work/rfc-$alg"
  cat >"$base.req.json" <<JSON
{"method": "POST", "url": "$base_url/rfc/orders?id=7&pet=dog",
 "headers": {"Host": "$host", "Content-Type": "application/json"},
 "body": "{\"hello\": \"world\"}", "key_id": "$alg", "alg": "$alg", "digest": "sha-256",
 "components": ["@method", "@authority", "@path", "@query", "content-type", "content-digest"]}
JSON
  edit "$base.req.json" "$base.sign.json" "r['key'] = json.loads('$sk'); r['created'] = now"
  "$PY" "$INTEROP/rfc9421_peer.py" sign "$base.sign.json" >"$base.ok.json"
  expect "$alg: admitted as keyId" 200 "\"x-portcullis-identity\":\"$alg\"" "$base.ok.json"
  expect "$alg: the same request replayed" 401 "" "$base.ok.json"

  # Signed a second earlier than the admitted one, so that it is not a replay of it.
  edit "$base.sign.json" "$base.b0.json" "r['created'] -= 1"
  "$PY" "$INTEROP/rfc9421_peer.py" sign "$base.b0.json" >"$base.body.json"
  expect "$alg: a changed body" 401 "body does not match its signed digest" "$base.body.json" '{"hello": "mallory"}'

  "$PY" "$INTEROP/rfc9421_peer.py" sign "$base.sign.json" >"$base.path.json"
  edit "$base.path.json" "$base.path2.json" "r['url'] = r['url'].replace('/rfc/orders', '/rfc/refunds')"
  expect "$alg: a changed @path" 401 "" "$base.path2.json"
  "$PY" "$INTEROP/rfc9421_peer.py" sign "$base.sign.json" >"$base.q.json"
  edit "$base.q.json" "$base.q2.json" "r['url'] = r['url'].replace('pet=dog', 'pet=cat')"
  expect "$alg: a changed @query" 401 "" "$base.q2.json"

  edit "$base.req.json" "$base.wrong.json" "r['key'] = json.loads('$wk')"
  "$PY" "$INTEROP/rfc9421_peer.py" sign "$base.wrong.json" >"$base.w.json"
  expect "$alg: the wrong key" 401 "" "$base.w.json"

  edit "$base.sign.json" "$base.stale.json" "r['created'] = now - 1000"
  "$PY" "$INTEROP/rfc9421_peer.py" sign "$base.stale.json" >"$base.s.json"
  expect "$alg: a stale created" 401 "" "$base.s.json"

  edit "$base.sign.json" "$base.nodigest.json" "r['components'] = ['@method', '@authority', '@path']; r.pop('digest')"
  "$PY" "$INTEROP/rfc9421_peer.py" sign "$base.nodigest.json" >"$base.nd.json"
  expect "$alg: a required component (content-digest) not covered" 401 "" "$base.nd.json"
done

echo "== draft-cavage: npm http-signature signs, the sidecar verifies"
for spec in "${algs[@]}"; do
  IFS='|' read -r alg sk wk <<<"$spec"
  # http-signature has no rsa-pss-sha512.
  [ "$alg" = rsa-pss-sha512 ] && continue
  base="$work/cav-$alg"
  cat >"$base.req.json" <<JSON
{"method": "POST", "url": "$base_url/cav/orders?id=7",
 "headers": {"Host": "$host", "Content-Type": "application/json"},
 "body": "{\"hello\": \"world\"}", "key_id": "$alg", "alg": "$alg", "digest": "sha-256", "date": true,
 "components": ["(request-target)", "host", "date", "content-type", "digest"]}
JSON
  edit "$base.req.json" "$base.sign.json" "r['key'] = json.loads('$sk'); r['created'] = now"
  node "$INTEROP/cavage_peer.js" sign "$base.sign.json" >"$base.ok.json"
  expect "$alg: admitted as keyId" 200 "\"x-portcullis-identity\":\"$alg\"" "$base.ok.json"
  expect "$alg: the same request replayed" 401 "" "$base.ok.json"

  # Signed a second earlier than the admitted one, so that it is not a replay of it.
  edit "$base.sign.json" "$base.b0.json" "r['created'] -= 1"
  node "$INTEROP/cavage_peer.js" sign "$base.b0.json" >"$base.body.json"
  expect "$alg: a changed body" 401 "body does not match its signed digest" "$base.body.json" '{"hello": "mallory"}'

  edit "$base.sign.json" "$base.m0.json" "r['created'] -= 2"
  node "$INTEROP/cavage_peer.js" sign "$base.m0.json" >"$base.m.json"
  edit "$base.m.json" "$base.m2.json" "r['method'] = 'PUT'"
  expect "$alg: a changed method" 401 "" "$base.m2.json"
  edit "$base.m.json" "$base.c2.json" "r['headers']['content-type'] = 'text/plain'"
  expect "$alg: a changed content-type" 401 "" "$base.c2.json"

  edit "$base.req.json" "$base.wrong.json" "r['key'] = json.loads('$wk'); r['created'] = now"
  node "$INTEROP/cavage_peer.js" sign "$base.wrong.json" >"$base.w.json"
  expect "$alg: the wrong key" 401 "" "$base.w.json"

  edit "$base.sign.json" "$base.stale.json" "r['created'] = now - 1000"
  node "$INTEROP/cavage_peer.js" sign "$base.stale.json" >"$base.s.json"
  expect "$alg: a stale Date" 401 "" "$base.s.json"
done

# The audit log names the keyId of every admitted call, and never a key.
admitted=$(python3 - "$work/audit.log" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [l for l in lines if l.get("decision") == "allow"]
print(" ".join(sorted(f'{l["profile"]}:{l["identity"]}' for l in ok)))
PY
)
want="cav:ecdsa-p256-sha256 cav:ed25519 cav:hmac-sha256 cav:rsa-v1_5-sha256 rfc:ecdsa-p256-sha256 rfc:ed25519 rfc:hmac-sha256 rfc:rsa-pss-sha512 rfc:rsa-v1_5-sha256"
if [ "$admitted" = "$want" ]; then
  pass "audit: one admitted call per peer signature, identity = keyId"
else
  fail "audit" "admitted $admitted, wanted $want"
fi
if grep -qF "$HMAC_SECRET" "$work/audit.log" "$work/sidecar.log"; then
  fail "keys stay out of the logs" "a key reached a log"
fi

summary sidecar-verify-interop
