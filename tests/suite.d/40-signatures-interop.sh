#!/usr/bin/env bash
# Interop of portcullis-signatures with real third-party implementations, both directions:
#   RFC 9421      <-> Python `http-message-signatures` (sidecar/signatures/interop/rfc9421_peer.py)
#   draft-cavage  <-> npm `http-signature`            (sidecar/signatures/interop/cavage_peer.js)
# For every algorithm: the peer verifies what sigtool signs; sigtool verifies what the peer
# signs; sigtool refuses what the peer signs with the wrong key, a stale created/Date, a changed
# component or a changed body. Tools come from tests/setup.d/40-signatures.sh.
source "$(dirname "$0")/../lib/interop.sh"

cargo build -q -p portcullis-signatures --example sigtool
SIGTOOL="$target_dir/debug/examples/sigtool"
PYPEER="$INTEROP/rfc9421_peer.py"
NODEPEER="$INTEROP/cavage_peer.js"

# check NAME WANT CMD...: WANT is "ok" (exit 0) or a substring the refusal must contain.
check() {
  local name="$1" want="$2"; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ "$want" = ok ]; then
    if [ $rc -eq 0 ]; then pass "$name"; return; fi
  elif [ $rc -ne 0 ] && grep -qiF -- "$want" <<<"$out"; then
    pass "$name (refused: $want)"; return
  fi
  fail "$name" "wanted $want, got exit $rc: $out"
}

secret_b64=$(tr -d '\n' <"$KEYS/test-shared-secret.b64")

# alg | signing key | verifying key | wrong signing key (same type)
rfc_algs=(
  "hmac-sha256|{\"hmac_b64\":\"$secret_b64\"}|{\"hmac_b64\":\"$secret_b64\"}|{\"hmac\":\"not-the-shared-secret\"}"
  "rsa-pss-sha512|{\"file\":\"$KEYS/test-key-rsa-pss.key\"}|{\"file\":\"$KEYS/test-key-rsa-pss.pem\"}|{\"file\":\"$KEYS/rsa2048-pkcs1.key\"}"
  "rsa-v1_5-sha256|{\"file\":\"$KEYS/rsa2048-pkcs1.key\"}|{\"file\":\"$KEYS/rsa2048.pub\"}|{\"file\":\"$KEYS/rsa2048-other.key\"}"
  "ecdsa-p256-sha256|{\"file\":\"$KEYS/test-key-ecc-p256.key\"}|{\"file\":\"$KEYS/test-key-ecc-p256.pem\"}|{\"file\":\"$KEYS/ec-other.key\"}"
  "ed25519|{\"file\":\"$KEYS/test-key-ed25519.key\"}|{\"file\":\"$KEYS/test-key-ed25519.pem\"}|{\"file\":\"$KEYS/ed-other.key\"}"
)

echo "== RFC 9421: sigtool <-> Python http-message-signatures"
for spec in "${rfc_algs[@]}"; do
  IFS='|' read -r alg sk vk wk <<<"$spec"
  base="$work/rfc-$alg"
  cat >"$base.req.json" <<JSON
{"standard": "rfc9421", "method": "POST", "url": "https://example.com/foo?param=Value&Pet=dog",
 "headers": {"Host": "example.com", "Content-Type": "application/json"},
 "body": "{\"hello\": \"world\"}", "key_id": "test-key", "alg": "$alg", "digest": "sha-512",
 "components": ["@method", "@authority", "@path", "@query", "@target-uri", "@scheme",
                "@request-target", "\"@query-param\";name=\"Pet\"", "content-type", "content-digest"],
 "required": ["@method", "@path", "content-digest"], "max_age": 300}
JSON
  edit "$base.req.json" "$base.sign.json" "r['key'] = json.loads('$sk')"
  edit "$base.req.json" "$base.wrong.json" "r['key'] = json.loads('$wk')"

  # sigtool signs, Python verifies (and refuses a tampered copy).
  "$SIGTOOL" sign "$base.sign.json" >"$base.ours.json"
  edit "$base.ours.json" "$base.ours.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: python verifies sigtool's signature" ok "$PY" "$PYPEER" verify "$base.ours.v.json"
  edit "$base.ours.v.json" "$base.ours.t.json" "r['url'] = r['url'].replace('/foo', '/bar')"
  check "$alg: python refuses sigtool's signature on a changed @path" "InvalidSignature" "$PY" "$PYPEER" verify "$base.ours.t.json"

  # Python signs, sigtool verifies.
  "$PY" "$PYPEER" sign "$base.sign.json" >"$base.theirs.json"
  edit "$base.theirs.json" "$base.theirs.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: sigtool verifies python's signature" ok "$SIGTOOL" verify "$base.theirs.v.json"

  # ... and refuses: the wrong key, a stale created, a changed component, a changed body.
  "$PY" "$PYPEER" sign "$base.wrong.json" >"$base.w.json"
  edit "$base.w.json" "$base.w.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: sigtool refuses python's signature with the wrong key" "does not verify" "$SIGTOOL" verify "$base.w.v.json"

  edit "$base.sign.json" "$base.stale.json" "r['created'] = now - 1000"
  "$PY" "$PYPEER" sign "$base.stale.json" >"$base.s.json"
  edit "$base.s.json" "$base.s.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: sigtool refuses python's signature with a stale created" "stale" "$SIGTOOL" verify "$base.s.v.json"

  edit "$base.theirs.v.json" "$base.c.json" "r['headers']['Content-Type'] = 'text/plain'"
  check "$alg: sigtool refuses python's signature on a changed content-type" "does not verify" "$SIGTOOL" verify "$base.c.json"
  edit "$base.theirs.v.json" "$base.q.json" "r['url'] = r['url'].replace('Pet=dog', 'Pet=cat')"
  check "$alg: sigtool refuses python's signature on a changed query" "does not verify" "$SIGTOOL" verify "$base.q.json"
  edit "$base.theirs.v.json" "$base.b.json" "r['body'] = '{\"hello\": \"world!\"}'"
  check "$alg: sigtool refuses python's signature on a changed body" "does not match the body" "$SIGTOOL" verify "$base.b.json"
done

cavage_algs=(
  "hmac-sha256|{\"hmac\":\"a shared secret\"}|{\"hmac\":\"a shared secret\"}|{\"hmac\":\"another secret\"}"
  "rsa-v1_5-sha256|{\"file\":\"$KEYS/rsa2048-pkcs1.key\"}|{\"file\":\"$KEYS/rsa2048.pub\"}|{\"file\":\"$KEYS/rsa2048-other.key\"}"
  "ecdsa-p256-sha256|{\"file\":\"$KEYS/test-key-ecc-p256.key\"}|{\"file\":\"$KEYS/test-key-ecc-p256.pem\"}|{\"file\":\"$KEYS/ec-other.key\"}"
  "ed25519|{\"file\":\"$KEYS/test-key-ed25519.key\"}|{\"file\":\"$KEYS/test-key-ed25519.pem\"}|{\"file\":\"$KEYS/ed-other.key\"}"
)

echo "== draft-cavage: sigtool <-> npm http-signature"
for spec in "${cavage_algs[@]}"; do
  IFS='|' read -r alg sk vk wk <<<"$spec"
  base="$work/cavage-$alg"
  cat >"$base.req.json" <<JSON
{"standard": "cavage", "method": "POST", "url": "https://example.com/foo?param=value&pet=dog",
 "headers": {"Host": "example.com", "Content-Type": "application/json"},
 "body": "{\"hello\": \"world\"}", "key_id": "test-key", "alg": "$alg", "digest": "sha-256", "date": true,
 "components": ["(request-target)", "host", "date", "content-type", "digest"],
 "required": ["(request-target)", "host", "date", "digest"], "max_age": 300}
JSON
  edit "$base.req.json" "$base.sign.json" "r['key'] = json.loads('$sk')"
  edit "$base.req.json" "$base.wrong.json" "r['key'] = json.loads('$wk')"

  "$SIGTOOL" sign "$base.sign.json" >"$base.ours.json"
  edit "$base.ours.json" "$base.ours.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: node verifies sigtool's Signature header" ok node "$NODEPEER" verify "$base.ours.v.json"
  edit "$base.sign.json" "$base.auth.json" "r['authorization'] = True"
  "$SIGTOOL" sign "$base.auth.json" >"$base.ours-auth.json"
  edit "$base.ours-auth.json" "$base.ours-auth.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: node verifies sigtool's Authorization: Signature" ok node "$NODEPEER" verify "$base.ours-auth.v.json"
  edit "$base.ours.v.json" "$base.ours.t.json" "r['url'] = r['url'].replace('/foo', '/bar')"
  check "$alg: node refuses sigtool's signature on a changed (request-target)" "does not verify" node "$NODEPEER" verify "$base.ours.t.json"

  node "$NODEPEER" sign "$base.sign.json" >"$base.theirs.json"
  edit "$base.theirs.json" "$base.theirs.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: sigtool verifies node's Signature header" ok "$SIGTOOL" verify "$base.theirs.v.json"
  node "$NODEPEER" sign "$base.auth.json" >"$base.theirs-auth.json"
  edit "$base.theirs-auth.json" "$base.theirs-auth.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: sigtool verifies node's Authorization: Signature" ok "$SIGTOOL" verify "$base.theirs-auth.v.json"

  node "$NODEPEER" sign "$base.wrong.json" >"$base.w.json"
  edit "$base.w.json" "$base.w.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: sigtool refuses node's signature with the wrong key" "does not verify" "$SIGTOOL" verify "$base.w.v.json"

  edit "$base.sign.json" "$base.stale.json" "r['created'] = now - 1000"
  node "$NODEPEER" sign "$base.stale.json" >"$base.s.json"
  edit "$base.s.json" "$base.s.v.json" "r['key'] = json.loads('$vk')"
  check "$alg: sigtool refuses node's signature with a stale Date" "stale" "$SIGTOOL" verify "$base.s.v.json"

  edit "$base.theirs.v.json" "$base.c.json" "r['headers']['content-type'] = 'text/plain'"
  check "$alg: sigtool refuses node's signature on a changed content-type" "does not verify" "$SIGTOOL" verify "$base.c.json"
  edit "$base.theirs.v.json" "$base.m.json" "r['method'] = 'PUT'"
  check "$alg: sigtool refuses node's signature on a changed method" "does not verify" "$SIGTOOL" verify "$base.m.json"
  edit "$base.theirs.v.json" "$base.b.json" "r['body'] = '{\"hello\": \"world!\"}'"
  check "$alg: sigtool refuses node's signature on a changed body" "does not match the body" "$SIGTOOL" verify "$base.b.json"
done

summary signatures-interop
