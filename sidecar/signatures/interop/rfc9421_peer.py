#!/usr/bin/env python3
"""RFC 9421 peer for the interop suite, built on the third-party `http-message-signatures`.

    rfc9421_peer.py sign   FILE   # request JSON (sigtool's format) -> the request, signed
    rfc9421_peer.py verify FILE   # -> {"ok": true} (exit 0) or {"ok": false, "error": ...} (exit 1)

Verification uses the real clock (the library's own freshness checks) and `max_age`.
"""

import base64
import datetime
import hashlib
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures.structures import CaseInsensitiveDict

ALGS = {
    "hmac-sha256": algorithms.HMAC_SHA256,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
    "rsa-v1_5-sha256": algorithms.RSA_V1_5_SHA256,
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
    "ed25519": algorithms.ED25519,
}


def load_key(spec, private):
    if "hmac" in spec:
        return spec["hmac"].encode()
    if "hmac_b64" in spec:
        return base64.b64decode(spec["hmac_b64"])
    data = open(spec["file"], "rb").read() if "file" in spec else spec["pem"].encode()
    if not data.lstrip().startswith(b"-----BEGIN"):
        return data
    if b"PRIVATE KEY" in data:
        key = load_pem_private_key(data, password=None)
        return key if private else key.public_key()
    return load_pem_public_key(data)


class Resolver(HTTPSignatureKeyResolver):
    def __init__(self, key_id, spec):
        self.key_id, self.spec = key_id, spec

    def resolve_public_key(self, key_id):
        return load_key(self.spec, private=False) if key_id == self.key_id else None

    def resolve_private_key(self, key_id):
        return load_key(self.spec, private=True) if key_id == self.key_id else None


class Message:
    def __init__(self, req):
        self.method = req.get("method", "GET")
        self.url = req["url"]
        self.headers = CaseInsensitiveDict()
        for name, value in req.get("headers", {}).items():
            self.headers[name] = ", ".join(value) if isinstance(value, list) else value


def ts(t):
    return None if t is None else datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)


def sign(req):
    msg = Message(req)
    body = req.get("body", "").encode()
    if req.get("digest"):
        alg = req["digest"]
        h = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}[alg](body).digest()
        msg.headers["Content-Digest"] = f"{alg}=:{base64.b64encode(h).decode()}:"
    signer = HTTPMessageSigner(signature_algorithm=ALGS[req["alg"]], key_resolver=Resolver(req["key_id"], req["key"]))
    signer.sign(
        msg,
        key_id=req["key_id"],
        created=ts(req.get("created")) or datetime.datetime.now(datetime.timezone.utc),
        expires=ts(req.get("expires")),
        nonce=req.get("nonce"),
        label=req.get("label", "sig1"),
        tag=req.get("tag"),
        include_alg=req.get("include_alg", True),
        covered_component_ids=tuple(req.get("components", ["@method", "@authority", "@target-uri"])),
        use_existing_digest="content-digest" in msg.headers,
    )
    req["headers"] = dict(msg.headers.items())
    return req


def verify(req):
    msg = Message(req)
    verifier = HTTPMessageVerifier(signature_algorithm=ALGS[req["alg"]], key_resolver=Resolver(req["key_id"], req["key"]))
    body = req.get("body")
    results = verifier.verify(
        msg,
        max_age=datetime.timedelta(seconds=req.get("max_age", 300)),
        require_components=tuple(req.get("required", ())),
        body=body.encode() if body is not None and "content-digest" in msg.headers else None,
    )
    r = results[0]
    return {"ok": True, "label": r.label, "parameters": {k: str(v) for k, v in r.parameters.items()}}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("sign", "verify"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    req = json.load(open(sys.argv[2]))
    if sys.argv[1] == "sign":
        print(json.dumps(sign(req)))
        return
    try:
        print(json.dumps(verify(req)))
    except (InvalidSignature, Exception) as e:  # any refusal is a "no"
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)


if __name__ == "__main__":
    main()
